//! Outbound routing: replies and typing go to the channel that owns the chat (contract §4.11).

use std::sync::Arc;

use crate::channel::Channel;
use crate::core::route::{ChannelState, route};
use crate::queue::{BoxFuture, Outbound, OutboundError};

/// Every connected channel, in priority order.
#[derive(Clone)]
pub struct Router {
    channels: Vec<Arc<dyn Channel>>,
}

impl Router {
    pub fn new(channels: Vec<Arc<dyn Channel>>) -> Self {
        Self { channels }
    }

    /// The channel that owns `jid` and is connected.
    pub fn channel_for(&self, jid: &str) -> Option<&Arc<dyn Channel>> {
        let states: Vec<ChannelState> = self
            .channels
            .iter()
            .map(|c| ChannelState {
                owns: c.owns_jid(jid),
                connected: c.is_connected(),
            })
            .collect();
        route(&states).and_then(|i| self.channels.get(i))
    }

    pub fn channels(&self) -> &[Arc<dyn Channel>] {
        &self.channels
    }
}

impl Outbound for Router {
    fn send(&self, chat_jid: &str, text: String) -> BoxFuture<'_, Result<(), OutboundError>> {
        let jid = chat_jid.to_string();
        Box::pin(async move {
            let Some(channel) = self.channel_for(&jid) else {
                return Err(OutboundError {
                    chat_jid: jid,
                    reason: "no connected channel owns this chat".to_string(),
                });
            };
            channel
                .send_message(&jid, &text)
                .await
                .map_err(|e| OutboundError {
                    chat_jid: jid.clone(),
                    reason: e.to_string(),
                })
        })
    }

    fn set_typing(&self, chat_jid: &str, on: bool) -> BoxFuture<'_, ()> {
        let jid = chat_jid.to_string();
        Box::pin(async move {
            if let Some(channel) = self.channel_for(&jid) {
                let _ = channel.set_typing(&jid, on).await;
            }
        })
    }

    /// The owning channel decides; a chat no channel owns gets the default (contract §4.9).
    fn wants_prefix(&self, chat_jid: &str) -> bool {
        self.channel_for(chat_jid).is_none_or(|c| c.wants_prefix())
    }
}
