//! The library calls the adapter makes, behind a trait so the adapter logic is testable without
//! WhatsApp. The real implementation is a thin pass-through to [`whatsapp_rust::Client`].

use std::sync::Arc;

use async_trait::async_trait;
use whatsapp_rust::{ChatStateType, Client, Jid};

use crate::channel::whatsapp::jid::to_host_jid;

/// A library call that failed; the text is the library's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpsError(pub String);

/// What the adapter needs from a connected client.
#[async_trait]
pub trait WaOps: Send + Sync + 'static {
    /// Sends a plain text message.
    async fn send_text(&self, to: &Jid, text: &str) -> Result<(), OpsError>;
    /// `composing` (true) or `paused` (false) chat state.
    async fn chat_state(&self, to: &Jid, composing: bool) -> Result<(), OpsError>;
    /// Groups the account participates in, as `(host jid, subject)`.
    async fn participating_groups(&self) -> Result<Vec<(String, String)>, OpsError>;
    /// The phone-number user part the library knows for a LID user part.
    async fn lid_to_phone(&self, lid_user: &str) -> Result<Option<String>, OpsError>;
    /// The account's own `(phone JID, LID)`, once paired.
    fn own_ids(&self) -> (Option<Jid>, Option<Jid>);
}

/// [`WaOps`] on a live library client.
pub struct ClientOps(pub Arc<Client>);

fn err(e: impl std::fmt::Display) -> OpsError {
    OpsError(e.to_string())
}

#[async_trait]
impl WaOps for ClientOps {
    async fn send_text(&self, to: &Jid, text: &str) -> Result<(), OpsError> {
        self.0
            .send_text(to.clone(), text.to_string())
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn chat_state(&self, to: &Jid, composing: bool) -> Result<(), OpsError> {
        let state = if composing {
            ChatStateType::Composing
        } else {
            ChatStateType::Paused
        };
        self.0.chatstate().send(to, state).await.map_err(err)
    }

    async fn participating_groups(&self) -> Result<Vec<(String, String)>, OpsError> {
        let groups = self.0.groups().get_participating().await.map_err(err)?;
        Ok(groups
            .into_iter()
            .map(|(jid, meta)| (to_host_jid(&jid), meta.subject))
            .collect())
    }

    async fn lid_to_phone(&self, lid_user: &str) -> Result<Option<String>, OpsError> {
        let entry = self
            .0
            .get_lid_pn_entry(&Jid::lid(lid_user))
            .await
            .map_err(err)?;
        Ok(entry.map(|e| e.phone_number.to_string()))
    }

    fn own_ids(&self) -> (Option<Jid>, Option<Jid>) {
        (self.0.pn(), self.0.lid())
    }
}
