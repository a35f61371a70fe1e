//! Reading and writing one chat's agent cursor (`router_state.last_agent_timestamp`, contract §3.9).
//!
//! The key holds one JSON map for all chats (the original's schema), so every read would parse it and every
//! write re-serialize it. The queue therefore keeps the map in an [`AgentCursorCache`]: loaded once, read
//! from memory, written through to the database on every change. All access happens inside store calls
//! (under the store's lock), so concurrent actors never lose each other's updates and the database always
//! holds what the cache says. While a queue runs, other writers must go through its cache
//! ([`crate::queue::Queue::agent_cursors`]).

use std::sync::{Arc, Mutex, PoisonError};

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

/// The agent-cursor map, cached in memory and written through. Cloning shares the cache.
#[derive(Debug, Clone, Default)]
pub struct AgentCursorCache(Arc<Mutex<Option<AgentCursors>>>);

impl AgentCursorCache {
    fn with<T>(&self, store: &Store, f: impl FnOnce(&mut AgentCursors) -> T) -> Result<T> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let cursors = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(load_agent_cursors(store)?),
        };
        Ok(f(cursors))
    }

    /// One chat's cursor; `''` when it has none. Reads the database only the first time.
    pub fn get(&self, store: &Store, chat_jid: &str) -> Result<String> {
        self.with(store, |c| c.get(chat_jid).to_string())
    }

    /// Sets one chat's cursor and persists the whole map. Call inside a store call so writes are ordered.
    pub fn set(&self, store: &Store, chat_jid: &str, timestamp: &str) -> Result<()> {
        let json = self.with(store, |c| {
            c.set(chat_jid, timestamp);
            c.to_json()
        })?;
        store.set_state(KEY_LAST_AGENT_TIMESTAMP, &json)
    }

    /// The chat's cursor and its pending messages (newer than the cursor, bot echoes excluded), oldest
    /// first.
    pub fn pending_messages(
        &self,
        store: &Store,
        chat_jid: &str,
        assistant_name: &str,
    ) -> Result<(String, Vec<Message>)> {
        let cursor = self.get(store, chat_jid)?;
        let messages = store.messages_since(chat_jid, &cursor, assistant_name)?;
        Ok((cursor, messages))
    }
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
        assert_eq!(
            agent_cursor(&store, "a").unwrap(),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(
            agent_cursor(&store, "b").unwrap(),
            "2026-01-02T00:00:00.000Z"
        );
    }

    #[test]
    fn cache_reads_once_and_writes_through() {
        let store = Store::open_in_memory().unwrap();
        set_agent_cursor(&store, "a", "2026-01-01T00:00:00.000Z").unwrap();
        let cache = AgentCursorCache::default();
        assert_eq!(cache.get(&store, "a").unwrap(), "2026-01-01T00:00:00.000Z");
        let before = store.query_count();
        assert_eq!(cache.get(&store, "b").unwrap(), "");
        assert_eq!(store.query_count(), before, "served from memory");
        cache.set(&store, "b", "2026-01-02T00:00:00.000Z").unwrap();
        assert_eq!(
            agent_cursor(&store, "b").unwrap(),
            "2026-01-02T00:00:00.000Z"
        );
        assert_eq!(
            agent_cursor(&store, "a").unwrap(),
            "2026-01-01T00:00:00.000Z"
        );
    }
}
