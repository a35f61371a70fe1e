//! Persisted overrides: `nanoclaw egress allow` writes a row to `egress_overrides` (and an audit
//! event); a running host picks new rows up with [`Egress::sync_overrides`] and enforces their expiry
//! on its own clock. The database row is the hand-off between the CLI process and the host.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;

use crate::core::audit::{AuditEvent, Decision, EgressAction, EgressEvent};
use crate::core::time::{iso, now_iso, parse_iso};
use crate::net::NetError;
use crate::net::egress::Egress;
use crate::net::policy::{AllowEntry, MAX_OVERRIDE, parse_duration};
use crate::store::{OverrideRow, Store, StoreHandle};

/// What [`persist_override`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub id: i64,
    pub entry: String,
    pub expires_at: String,
}

fn db_err(e: crate::store::StoreError) -> NetError {
    NetError::Policy(format!("database: {e}"))
}

/// Validates and stores an override of `host` (allowlist-entry syntax) for `group` lasting `duration`
/// (`10m`, `1h30m`), and records the grant in `audit_events`.
pub fn persist_override(
    store: &Store,
    group: &str,
    host: &str,
    duration: &str,
) -> Result<Granted, NetError> {
    let entry: AllowEntry = host.parse().map_err(NetError::Policy)?;
    let d = parse_duration(duration).map_err(NetError::Policy)?;
    if d > MAX_OVERRIDE {
        return Err(NetError::Policy(format!(
            "override longer than {}h",
            MAX_OVERRIDE.as_secs() / 3600
        )));
    }
    if group.is_empty() {
        return Err(NetError::Policy("group folder is empty".into()));
    }
    let now = Utc::now();
    let expires =
        now + chrono::Duration::from_std(d).map_err(|e| NetError::Policy(e.to_string()))?;
    let (granted_at, expires_at) = (iso(now), iso(expires));
    let text = entry.to_string();
    let id = store
        .insert_override(group, &text, &granted_at, &expires_at)
        .map_err(db_err)?;
    let event = AuditEvent::egress(
        group,
        EgressEvent {
            run: String::new(),
            action: EgressAction::OverrideGranted,
            destination: text.clone(),
            decision: Decision::Allow,
            reason: format!("override #{id} granted from the CLI until {expires_at}"),
        },
    );
    store
        .insert_audit(&event.record(&granted_at))
        .map_err(db_err)?;
    Ok(Granted {
        id,
        entry: text,
        expires_at,
    })
}

/// Database override ids a host has already applied.
#[derive(Debug, Default)]
pub struct Applied(Mutex<HashSet<i64>>);

impl Egress {
    /// Applies stored overrides the host has not seen yet, each for the time it has left. Call with
    /// `store.active_overrides(now)` (the host does at startup, on SIGHUP and on its maintenance
    /// tick). Returns how many were new. `applied` keeps only ids still active, so it stays bounded.
    pub fn sync_overrides(&self, rows: &[OverrideRow], applied: &Applied) -> usize {
        let now = Utc::now();
        let mut seen = applied.0.lock().unwrap_or_else(|e| e.into_inner());
        // A row that left the active set has expired for good; its id can be forgotten.
        seen.retain(|id| rows.iter().any(|r| r.id == *id));
        let mut added = 0;
        for row in rows {
            if seen.contains(&row.id) {
                continue;
            }
            let left = parse_iso(&row.expires_at)
                .and_then(|t| (t - now).to_std().ok())
                .unwrap_or(Duration::ZERO);
            seen.insert(row.id);
            if left.is_zero() {
                continue;
            }
            match self.grant_override(&row.group, &row.host, left) {
                Ok(_) => added += 1,
                Err(e) => tracing::warn!(id = row.id, error = %e, "stored override not applied"),
            }
        }
        added
    }
}

/// Current time in the store's format (for `active_overrides`).
pub fn now() -> String {
    now_iso()
}

/// Reads the active overrides and applies the new ones to the live proxy (see
/// [`Egress::sync_overrides`]). Returns how many were new.
pub async fn sync_from_store(
    egress: &Egress,
    store: &StoreHandle,
    applied: &Applied,
) -> Result<usize, NetError> {
    let rows = store
        .call(|s| s.active_overrides(&now()))
        .await
        .map_err(|e| NetError::Policy(format!("database: {e}")))?;
    Ok(egress.sync_overrides(&rows, applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_path_stores_the_override_and_its_audit_event() {
        let s = Store::open_in_memory().unwrap();
        let g = persist_override(&s, "dev", "PyPI.org", "10m").unwrap();
        assert_eq!(g.entry, "pypi.org:443");
        let active = s.active_overrides(&now()).unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].host, "pypi.org:443");
        let audit = s.audit_events(None).unwrap();
        assert_eq!(audit[0].kind, "egress.override_granted");
        assert_eq!(audit[0].group, "dev");
        assert!(persist_override(&s, "dev", "x.org", "25h").is_err());
        assert!(persist_override(&s, "dev", "bad host", "1m").is_err());
        assert!(persist_override(&s, "", "x.org", "1m").is_err());
    }
}
