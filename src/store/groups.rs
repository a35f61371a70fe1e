//! `registered_groups` (contract §2.5, §2.6, fix §12.13).

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::core::types::RegisteredGroup;
use crate::core::wire::ContainerConfig;
use crate::store::{Result, Store, StoreError};

const GROUP_COLUMNS: &str =
    "jid, name, folder, trigger_pattern, added_at, container_config, requires_trigger";

fn group_from_row(row: &Row<'_>) -> rusqlite::Result<RegisteredGroup> {
    let jid: String = row.get(0)?;
    let config_text: Option<String> = row.get(5)?;
    let container_config = config_text.and_then(|text| {
        serde_json::from_str::<ContainerConfig>(&text)
            .inspect_err(|e| {
                tracing::warn!(%jid, cause = %e, "container_config is not valid JSON; ignoring it");
            })
            .ok()
    });
    // NULL → unset, 1 → true, anything else → false (contract §2.6).
    let requires_trigger = row.get::<_, Option<i64>>(6)?.map(|v| v == 1);
    Ok(RegisteredGroup {
        jid,
        name: row.get(1)?,
        folder: row.get(2)?,
        trigger: row.get(3)?,
        added_at: row.get(4)?,
        container_config,
        requires_trigger,
    })
}

/// Inserts or replaces a group row. Refuses a folder already held by another JID, where the original's
/// replace semantics silently deleted the other group (contract §12.13).
pub(crate) fn register_on(conn: &Connection, g: &RegisteredGroup) -> Result<()> {
    let holder: Option<String> = conn
        .query_row(
            "SELECT jid FROM registered_groups WHERE folder = ?1 AND jid != ?2",
            params![g.folder, g.jid],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(existing_jid) = holder {
        return Err(StoreError::FolderTaken {
            folder: g.folder.clone(),
            existing_jid,
        });
    }
    let config = g
        .container_config
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    // Absent requires_trigger is stored as 1 (contract §2.5).
    let requires = i64::from(g.requires_trigger.unwrap_or(true));
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO registered_groups ({GROUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ),
        params![
            g.jid,
            g.name,
            g.folder,
            g.trigger,
            g.added_at,
            config,
            requires
        ],
    )?;
    Ok(())
}

impl Store {
    /// Registers (or updates) a group; see [`register_on`] for the folder rule.
    pub fn register_group(&mut self, g: &RegisteredGroup) -> Result<()> {
        self.count();
        let tx = self.conn.transaction()?;
        register_on(&tx, g)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a group registration. Its messages, sessions and IPC files stay (contract §12.27).
    pub fn unregister_group(&self, jid: &str) -> Result<bool> {
        self.count();
        Ok(self
            .conn
            .execute("DELETE FROM registered_groups WHERE jid = ?1", [jid])?
            > 0)
    }

    pub fn get_group(&self, jid: &str) -> Result<Option<RegisteredGroup>> {
        self.count();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {GROUP_COLUMNS} FROM registered_groups WHERE jid = ?1"
        ))?;
        Ok(stmt.query_row([jid], group_from_row).optional()?)
    }

    /// Every registered group, in insertion order.
    pub fn all_groups(&self) -> Result<Vec<RegisteredGroup>> {
        self.count();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {GROUP_COLUMNS} FROM registered_groups ORDER BY rowid"
        ))?;
        let rows = stmt.query_map([], group_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
