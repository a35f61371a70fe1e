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

/// The agent-cursor map, cached in memory. Cloning shares the cache.
///
/// It keeps two views. `live` is what the queue works with: advanced when a batch is handed to an agent
/// (contract §3.11e) or piped (§3.10e). `durable` is what the database holds. The original persisted the
/// advance before the run, so a crash mid-run lost the batch (§12.7). Here an advance reaches the database
/// only once the run has sent visible output, or has ended successfully ([`Self::commit`]); a crash before
/// that leaves the old cursor on disk and startup recovery hands the batch to an agent again. Once output
/// was sent the advance is durable, so a restart never repeats a reply.
#[derive(Debug, Clone, Default)]
pub struct AgentCursorCache(Arc<Mutex<Option<CursorViews>>>);

#[derive(Debug)]
struct CursorViews {
    live: AgentCursors,
    durable: AgentCursors,
}

impl AgentCursorCache {
    fn with<T>(&self, store: &Store, f: impl FnOnce(&mut CursorViews) -> T) -> Result<T> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let views = match slot.as_mut() {
            Some(v) => v,
            None => {
                let durable = load_agent_cursors(store)?;
                slot.insert(CursorViews {
                    live: durable.clone(),
                    durable,
                })
            }
        };
        Ok(f(views))
    }

    /// One chat's live cursor; `''` when it has none. Reads the database only the first time.
    pub fn get(&self, store: &Store, chat_jid: &str) -> Result<String> {
        self.with(store, |v| v.live.get(chat_jid).to_string())
    }

    /// Moves the live cursor forward without writing it: the batch is in flight.
    pub fn advance(&self, store: &Store, chat_jid: &str, timestamp: &str) -> Result<()> {
        self.with(store, |v| v.live.set(chat_jid, timestamp))
    }

    /// Makes the chat's live cursor durable. Writes only when it differs from the stored one.
    pub fn commit(&self, store: &Store, chat_jid: &str) -> Result<()> {
        let json = self.with(store, |v| {
            let live = v.live.get(chat_jid).to_string();
            (v.durable.get(chat_jid) != live).then(|| {
                v.durable.set(chat_jid, &live);
                v.durable.to_json()
            })
        })?;
        match json {
            Some(json) => store.set_state(KEY_LAST_AGENT_TIMESTAMP, &json),
            None => Ok(()),
        }
    }

    /// Sets the chat's cursor in both views and persists it (a rollback, or an external writer). Call
    /// inside a store call so writes are ordered.
    pub fn set(&self, store: &Store, chat_jid: &str, timestamp: &str) -> Result<()> {
        self.advance(store, chat_jid, timestamp)?;
        self.commit(store, chat_jid)
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
