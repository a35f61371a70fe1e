//! Outbound channel selection (contract §4.11).

/// What routing needs to know about a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelState {
    pub owns: bool,
    pub connected: bool,
}

/// "Route": the first channel that owns the JID **and** is connected.
pub fn route(channels: &[ChannelState]) -> Option<usize> {
    channels.iter().position(|c| c.owns && c.connected)
}

/// "Find": the first owner, connected or not.
pub fn find_owner(channels: &[ChannelState]) -> Option<usize> {
    channels.iter().position(|c| c.owns)
}
