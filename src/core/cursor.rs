//! Cursor rules of contract §2.8 and §3.9–3.11 as pure functions.
//!
//! Two cursors exist: the global "seen" cursor `last_timestamp`, which only moves forward, and a per-chat
//! "handed to an agent" cursor, which advances before a run and is rolled back only when a run failed
//! without sending any user-visible text.

use std::collections::HashMap;

use crate::core::time::BEFORE_EVERYTHING;
use crate::core::trigger::is_triggered;
use crate::core::types::{Message, RegisteredGroup};

/// `router_state.last_agent_timestamp`: chat JID → timestamp of the newest message handed to an agent.
/// Keys keep their insertion order, as the original's JSON object does, so the stored text is stable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentCursors(serde_json::Map<String, serde_json::Value>);

impl AgentCursors {
    /// Parses the stored JSON text. Invalid text (or a non-string value) yields an empty map and `false`;
    /// the caller logs a warning and the next save overwrites the value (contract §2.8).
    pub fn parse(text: &str) -> (Self, bool) {
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
            Ok(map) if map.values().all(serde_json::Value::is_string) => (Self(map), true),
            _ => (Self::default(), false),
        }
    }

    /// The stored JSON text.
    pub fn to_json(&self) -> String {
        serde_json::Value::Object(self.0.clone()).to_string()
    }

    /// A missing key means `''`: every stored message of the chat is pending (contract §3.9).
    pub fn get(&self, chat_jid: &str) -> &str {
        self.0
            .get(chat_jid)
            .and_then(serde_json::Value::as_str)
            .unwrap_or(BEFORE_EVERYTHING)
    }

    pub fn set(&mut self, chat_jid: &str, timestamp: &str) {
        self.0.insert(
            chat_jid.to_string(),
            serde_json::Value::String(timestamp.to_string()),
        );
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
    }
}

/// The new global "seen" cursor after a fetch: the maximum of the old value and every fetched timestamp.
/// It never moves backwards (contract §2.6, §3.9).
pub fn advance_seen(current: &str, fetched: &[Message]) -> String {
    fetched
        .iter()
        .map(|m| m.timestamp.as_str())
        .chain(std::iter::once(current))
        .max()
        .unwrap_or(current)
        .to_string()
}

/// What the message loop does with one chat of a fetched batch (contract §3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatDecision {
    /// (a) the chat is not registered (any more).
    NotRegistered,
    /// (c) the group needs a trigger and no message of this batch has it; messages stay pending.
    NoTrigger,
    /// (d)–(e) load the pending set and pipe or enqueue it.
    Deliver,
}

/// Groups a fetched batch by chat in first-appearance order and decides each chat (contract §3.10 a–c).
pub fn plan_batch(
    fetched: &[Message],
    groups: &HashMap<String, RegisteredGroup>,
    assistant_name: &str,
) -> Vec<(String, ChatDecision)> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_chat: HashMap<&str, Vec<Message>> = HashMap::new();
    for m in fetched {
        let entry = by_chat.entry(m.chat_jid.as_str()).or_default();
        if entry.is_empty() {
            order.push(m.chat_jid.as_str());
        }
        entry.push(m.clone());
    }
    order
        .into_iter()
        .map(|jid| {
            let decision = match groups.get(jid) {
                None => ChatDecision::NotRegistered,
                Some(group) => {
                    let batch = by_chat.get(jid).map(Vec::as_slice).unwrap_or_default();
                    if is_triggered(group, assistant_name, batch) {
                        ChatDecision::Deliver
                    } else {
                        ChatDecision::NoTrigger
                    }
                }
            };
            (jid.to_string(), decision)
        })
        .collect()
}

/// The agent cursor after handing `pending` to an agent: the newest message's timestamp (contract §3.11e).
pub fn cursor_after(pending: &[Message], previous: &str) -> String {
    pending
        .last()
        .map(|m| m.timestamp.clone())
        .unwrap_or_else(|| previous.to_string())
}

/// How a finished message run is settled (contract §3.11 g–h, §7.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Keep the advanced cursor; reset the retry count.
    Success,
    /// Restore the cursor to this value and schedule a retry.
    RollbackAndRetry { restore_to: String },
}

/// Settles a message run. `failed` is true when the run resolved with an error or any frame had
/// `status: "error"`. A failed run that already sent user-visible text is still a success, so the user
/// never gets the same reply twice.
pub fn settle_message_run(previous_cursor: &str, failed: bool, output_sent: bool) -> Settlement {
    if !failed || output_sent {
        Settlement::Success
    } else {
        Settlement::RollbackAndRetry {
            restore_to: previous_cursor.to_string(),
        }
    }
}
