//! Chat channels (contract §11 shape): where messages come from and replies go.
//!
//! A channel pushes inbound messages into a bounded mpsc channel the host drains; the host calls
//! [`Channel`] methods to send replies and typing state. `local` is the embedded default and the test
//! vehicle; the WhatsApp adapter sits behind the `whatsapp` cargo feature.

pub mod client;
pub mod local;
#[cfg(feature = "whatsapp")]
pub mod whatsapp;

use async_trait::async_trait;

use crate::core::types::Message;

/// Errors of the `channel` module.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The channel is not connected (or was shut down).
    #[error("channel {0} is not connected")]
    NotConnected(&'static str),
    /// No client is attached to this chat right now; the reply is kept in the database only.
    #[error("no recipient for chat {0}")]
    NoRecipient(String),
    /// The socket path could not be prepared or bound.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure.
    #[error("channel i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A failure specific to one transport (e.g. `WhatsAppError`); downcast the source for details.
    #[error("{0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// One inbound message as a channel delivers it (contract §3.1): the message plus the chat's display
/// name when the channel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub message: Message,
    pub chat_name: Option<String>,
}

/// A chat transport.
#[async_trait]
pub trait Channel: Send + Sync {
    /// Stable name, e.g. `local`, `whatsapp`.
    fn name(&self) -> &'static str;
    /// Starts receiving; inbound messages go to the sender given at construction.
    async fn connect(&self) -> Result<(), ChannelError>;
    /// Sends text to a chat.
    async fn send_message(&self, jid: &str, text: &str) -> Result<(), ChannelError>;
    /// Shows or hides the typing indicator.
    async fn set_typing(&self, jid: &str, typing: bool) -> Result<(), ChannelError>;
    /// Group subjects `(jid, name)` for the chats table; `force` ignores any cache (contract §11.8).
    async fn sync_group_metadata(&self, force: bool)
    -> Result<Vec<(String, String)>, ChannelError>;
    /// Whether this channel is responsible for a chat JID.
    fn owns_jid(&self, jid: &str) -> bool;
    fn is_connected(&self) -> bool;
    /// Whether replies get the `<assistant>: ` prefix (contract §4.9). Silent channels get it.
    fn wants_prefix(&self) -> bool {
        true
    }
    /// Stops receiving and releases resources.
    async fn disconnect(&self) -> Result<(), ChannelError>;
}
