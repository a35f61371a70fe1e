//! `audit_events` (security decisions) and `egress_overrides` (time-bounded allowlist grants), both
//! added by migration 3.

use rusqlite::params;

use crate::core::audit::AuditRecord;
use crate::store::{Result, Store};

/// One stored override row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideRow {
    pub id: i64,
    pub group: String,
    pub host: String,
    pub granted_at: String,
    pub expires_at: String,
}

/// Rows [`Store::audit_events`] returns at most, newest last.
pub const AUDIT_LIST_CAP: usize = 10_000;

impl Store {
    /// Appends one audit record.
    pub fn insert_audit(&self, r: &AuditRecord) -> Result<()> {
        self.count();
        self.conn
            .prepare_cached(
                "INSERT INTO audit_events (time, group_folder, run_id, kind, destination, decision, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                r.time,
                r.group,
                r.run,
                r.kind,
                r.destination,
                r.decision,
                r.detail
            ])?;
        Ok(())
    }

    /// Audit records, oldest first, optionally only those of one run; at most [`AUDIT_LIST_CAP`].
    pub fn audit_events(&self, run: Option<&str>) -> Result<Vec<AuditRecord>> {
        self.count();
        let mut stmt = self.conn.prepare_cached(
            "SELECT time, group_folder, run_id, kind, destination, decision, detail FROM audit_events
             WHERE ?1 IS NULL OR run_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![run, AUDIT_LIST_CAP as i64], |r| {
            Ok(AuditRecord {
                time: r.get(0)?,
                group: r.get(1)?,
                run: r.get(2)?,
                kind: r.get(3)?,
                destination: r.get(4)?,
                decision: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// Records an override; returns its id.
    pub fn insert_override(
        &self,
        group: &str,
        host: &str,
        granted_at: &str,
        expires_at: &str,
    ) -> Result<i64> {
        self.count();
        self.conn.execute(
            "INSERT INTO egress_overrides (group_folder, host, granted_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![group, host, granted_at, expires_at],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Overrides whose `expires_at` is after `now` (ISO text compares in time order).
    pub fn active_overrides(&self, now: &str) -> Result<Vec<OverrideRow>> {
        self.count();
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, group_folder, host, granted_at, expires_at FROM egress_overrides
             WHERE expires_at > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([now], |r| {
            Ok(OverrideRow {
                id: r.get(0)?,
                group: r.get(1)?,
                host: r.get(2)?,
                granted_at: r.get(3)?,
                expires_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_rows_round_trip_and_filter_by_run() {
        let s = Store::open_in_memory().unwrap();
        let rec = |run: &str, kind: &str| AuditRecord {
            time: "2026-01-01T00:00:00.000Z".into(),
            group: "g".into(),
            run: Some(run.into()),
            kind: kind.into(),
            destination: Some("x:443".into()),
            decision: "deny".into(),
            detail: None,
        };
        s.insert_audit(&rec("r1", "egress.connect")).unwrap();
        s.insert_audit(&rec("r2", "egress.gateway")).unwrap();
        s.insert_audit(&rec("r1", "egress.packets_dropped"))
            .unwrap();
        let all = s.audit_events(None).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], rec("r1", "egress.connect"));
        let r1: Vec<_> = s
            .audit_events(Some("r1"))
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(r1, ["egress.connect", "egress.packets_dropped"]);
    }

    #[test]
    fn only_unexpired_overrides_are_active() {
        let s = Store::open_in_memory().unwrap();
        s.insert_override(
            "g",
            "a.example",
            "2026-01-01T00:00:00.000Z",
            "2026-01-01T00:10:00.000Z",
        )
        .unwrap();
        s.insert_override(
            "g",
            "b.example",
            "2026-01-01T00:00:00.000Z",
            "2026-01-01T00:01:00.000Z",
        )
        .unwrap();
        let active = s.active_overrides("2026-01-01T00:05:00.000Z").unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].host, "a.example");
    }
}
