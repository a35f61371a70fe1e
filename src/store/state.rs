//! `router_state` cursors and `sessions` (contract §2.8, §2.9).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::core::cursor::AgentCursors;
use crate::store::{Result, Store};

/// The two router_state keys; there are no others (contract §2.8).
pub const KEY_LAST_TIMESTAMP: &str = "last_timestamp";
pub const KEY_LAST_AGENT_TIMESTAMP: &str = "last_agent_timestamp";

/// Both cursors as loaded at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursors {
    /// Global "seen" cursor; `''` before anything was seen.
    pub last_timestamp: String,
    pub agent: AgentCursors,
    /// False when the stored agent-cursor JSON did not parse and was treated as `{}` (contract §2.8).
    pub agent_valid: bool,
}

pub(crate) fn set_state_on(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT OR REPLACE INTO router_state (key, value) VALUES (?1, ?2)",
        params![key, value],
    )
}

pub(crate) fn set_session_on(conn: &Connection, folder: &str, id: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT OR REPLACE INTO sessions (group_folder, session_id) VALUES (?1, ?2)",
        params![folder, id],
    )
}

impl Store {
    pub fn get_state(&self, key: &str) -> Result<Option<String>> {
        self.count();
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM router_state WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_state(&self, key: &str, value: &str) -> Result<()> {
        self.count();
        set_state_on(&self.conn, key, value)?;
        Ok(())
    }

    /// Loads both cursors; missing keys mean `''` and `{}`.
    pub fn load_cursors(&self) -> Result<Cursors> {
        let last_timestamp = self.get_state(KEY_LAST_TIMESTAMP)?.unwrap_or_default();
        let (agent, agent_valid) = match self.get_state(KEY_LAST_AGENT_TIMESTAMP)? {
            Some(text) => AgentCursors::parse(&text),
            None => (AgentCursors::default(), true),
        };
        Ok(Cursors {
            last_timestamp,
            agent,
            agent_valid,
        })
    }

    /// Persists both cursors together in one transaction, as the original always writes both keys
    /// (contract §2.8).
    pub fn save_cursors(&mut self, last_timestamp: &str, agent: &AgentCursors) -> Result<()> {
        self.count();
        let tx = self.conn.transaction()?;
        set_state_on(&tx, KEY_LAST_TIMESTAMP, last_timestamp)?;
        set_state_on(&tx, KEY_LAST_AGENT_TIMESTAMP, &agent.to_json())?;
        tx.commit()?;
        Ok(())
    }

    pub fn get_session(&self, folder: &str) -> Result<Option<String>> {
        self.count();
        Ok(self
            .conn
            .query_row(
                "SELECT session_id FROM sessions WHERE group_folder = ?1",
                [folder],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_session(&self, folder: &str, session_id: &str) -> Result<()> {
        self.count();
        set_session_on(&self.conn, folder, session_id)?;
        Ok(())
    }

    /// folder → session id.
    pub fn all_sessions(&self) -> Result<BTreeMap<String, String>> {
        self.count();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT group_folder, session_id FROM sessions")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
