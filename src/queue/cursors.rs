//! Reading and writing one chat's agent cursor (`router_state.last_agent_timestamp`, contract §3.9).
//!
//! The queue owns the writes of that key. Each write is a read-modify-write of the JSON map inside one
//! store call, so concurrent actors never lose each other's updates. Whoever else writes the key must do
//! the same (never save a stale copy of the whole map).

use crate::core::cursor::AgentCursors;
use crate::core::types::Message;
use crate::store::{KEY_LAST_AGENT_TIMESTAMP, Result, Store};

/// The whole agent-cursor map. Invalid stored JSON reads as empty (contract §2.8).
pub fn load_agent_cursors(store: &Store) -> Result<AgentCursors> {
    Ok(match store.get_state(KEY_LAST_AGENT_TIMESTAMP)? {
        Some(text) => {
            let (cursors, valid) = AgentCursors::parse(&text);
            if !valid {
                tracing::warn!("last_agent_timestamp is not valid JSON; treating it as empty");
            }
            cursors
        }
        None => AgentCursors::default(),
    })
}

/// One chat's agent cursor; `''` when it has none.
pub fn agent_cursor(store: &Store, chat_jid: &str) -> Result<String> {
    Ok(load_agent_cursors(store)?.get(chat_jid).to_string())
}

/// Sets one chat's agent cursor and persists the map.
pub fn set_agent_cursor(store: &Store, chat_jid: &str, timestamp: &str) -> Result<()> {
    let mut cursors = load_agent_cursors(store)?;
    cursors.set(chat_jid, timestamp);
    store.set_state(KEY_LAST_AGENT_TIMESTAMP, &cursors.to_json())
}

/// The chat's cursor and its pending messages (newer than the cursor, bot echoes excluded), oldest first.
pub fn pending_messages(
    store: &Store,
    chat_jid: &str,
    assistant_name: &str,
) -> Result<(String, Vec<Message>)> {
    let cursor = agent_cursor(store, chat_jid)?;
    let messages = store.messages_since(chat_jid, &cursor, assistant_name)?;
    Ok((cursor, messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_modify_write_keeps_other_chats() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(agent_cursor(&store, "a").unwrap(), "");
        set_agent_cursor(&store, "a", "2026-01-01T00:00:00.000Z").unwrap();
        set_agent_cursor(&store, "b", "2026-01-02T00:00:00.000Z").unwrap();
        assert_eq!(agent_cursor(&store, "a").unwrap(), "2026-01-01T00:00:00.000Z");
        assert_eq!(agent_cursor(&store, "b").unwrap(), "2026-01-02T00:00:00.000Z");
    }
}
