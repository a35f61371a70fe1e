//! One-time import of the pre-SQLite JSON state files (contract §2.4). The setup flow of the original
//! tells users to register the main chat by writing `registered_groups.json`, so this path stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::core::types::RegisteredGroup;
use crate::core::wire::{LegacyGroup, LegacyRouterState};
use crate::store::groups::register_on;
use crate::store::state::{
    KEY_LAST_AGENT_TIMESTAMP, KEY_LAST_TIMESTAMP, set_session_on, set_state_on,
};
use crate::store::{Result, Store, StoreError};

/// What the import did with each file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyImportReport {
    /// Files parsed, renamed to `*.migrated` and imported.
    pub imported: Vec<PathBuf>,
    /// Files left in place because they were unreadable or invalid JSON; retried at the next start.
    pub skipped: Vec<(PathBuf, String)>,
    /// Group entries refused (e.g. a folder collision), with the reason.
    pub rejected_groups: Vec<(String, String)>,
}

enum Parsed {
    Router(LegacyRouterState),
    Sessions(BTreeMap<String, String>),
    Groups(BTreeMap<String, LegacyGroup>),
}

fn parse(name: &str, text: &str) -> std::result::Result<Parsed, serde_json::Error> {
    Ok(match name {
        "router_state.json" => Parsed::Router(serde_json::from_str(text)?),
        "sessions.json" => Parsed::Sessions(serde_json::from_str(text)?),
        _ => Parsed::Groups(serde_json::from_str(text)?),
    })
}

impl Store {
    /// Imports `router_state.json`, `sessions.json` and `registered_groups.json` from `dir`. A file that
    /// parses is renamed to `<file>.migrated` **before** it is imported, so a crash mid-import never
    /// imports it twice; a file that does not parse is left for the next start.
    pub fn import_legacy_json(&mut self, dir: &Path) -> Result<LegacyImportReport> {
        let mut report = LegacyImportReport::default();
        for name in [
            "router_state.json",
            "sessions.json",
            "registered_groups.json",
        ] {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let parsed = match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| parse(name, &text).map_err(|e| e.to_string()))
            {
                Ok(p) => p,
                Err(reason) => {
                    tracing::warn!(file = %path.display(), %reason, "legacy state file not imported; will retry at next start");
                    report.skipped.push((path, reason));
                    continue;
                }
            };
            let migrated = dir.join(format!("{name}.migrated"));
            std::fs::rename(&path, &migrated).map_err(|source| StoreError::LegacyRename {
                path: path.clone(),
                source,
            })?;
            self.count();
            let tx = self.conn.transaction()?;
            match parsed {
                Parsed::Router(state) => {
                    if let Some(ts) = state.last_timestamp.filter(|s| !s.is_empty()) {
                        set_state_on(&tx, KEY_LAST_TIMESTAMP, &ts)?;
                    }
                    if let Some(map) = state.last_agent_timestamp {
                        let json = serde_json::to_string(&map)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                        set_state_on(&tx, KEY_LAST_AGENT_TIMESTAMP, &json)?;
                    }
                }
                Parsed::Sessions(map) => {
                    for (folder, id) in &map {
                        set_session_on(&tx, folder, id)?;
                    }
                }
                Parsed::Groups(map) => {
                    for (jid, g) in map {
                        let group = RegisteredGroup {
                            jid: jid.clone(),
                            name: g.name,
                            folder: g.folder,
                            trigger: g.trigger,
                            added_at: g.added_at,
                            container_config: g.container_config,
                            requires_trigger: g.requires_trigger,
                        };
                        match register_on(&tx, &group) {
                            Ok(()) => {}
                            Err(StoreError::FolderTaken { .. }) => {
                                let reason =
                                    format!("folder {:?} already registered", group.folder);
                                tracing::warn!(%jid, %reason, "legacy group not imported");
                                report.rejected_groups.push((jid, reason));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            tx.commit()?;
            report.imported.push(migrated);
        }
        Ok(report)
    }
}
