//! Durability load for power-cut tests (`nanoclaw db torture`, hidden): append messages through the
//! production write path, one transaction each, and record every id whose commit returned; after a cut,
//! check that the database opens, is intact, and still holds every recorded id.
//!
//! The id is written to the acknowledgement sink only after `store_inbound` returned, so a recorded id
//! means "the store said it is stored" — exactly what a channel acknowledges to its sender.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::core::time::iso_from_epoch_ms;
use crate::core::types::Message;
use crate::store::{Store, StoreError};

/// The chat every torture message goes to (never a real JID shape).
pub const CHAT: &str = "torture@nanoclaw.test";
/// Upper bound on one append run, so a run that is never cut still ends.
pub const MAX_COUNT: u64 = 1_000_000;
/// Timestamps start here and advance 1 ms per message, so order and ids are deterministic.
const EPOCH_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
/// The most acknowledged ids `verify` accepts from an acks file.
const MAX_ACKS: usize = 10_000_000;

/// Errors of the torture load and its verification.
#[derive(Debug, thiserror::Error)]
pub enum TortureError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("acknowledgement file {path}: {source}")]
    Acks {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("acknowledgement file {path} has more than {MAX_ACKS} ids")]
    TooManyAcks { path: PathBuf },
    #[error("timestamp for message {0} is out of range")]
    Timestamp(u64),
    #[error("writing the report: {0}")]
    Output(#[source] std::io::Error),
}

/// The id of the `seq`-th torture message (1-based).
pub fn message_id(seq: u64) -> String {
    format!("torture-{seq:09}")
}

/// Appends `count` messages (capped at [`MAX_COUNT`]) to the database at `path`, continuing after the
/// torture messages already there, and writes each id to `acks` (one per line, flushed) once its
/// transaction has committed. Returns how many were appended.
pub fn append(
    path: &Path,
    count: u64,
    acks: &mut impl Write,
    acks_path: &Path,
) -> Result<u64, TortureError> {
    let mut store = Store::open(path)?;
    let start = torture_count(&store)?;
    let ack_err = |source| TortureError::Acks {
        path: acks_path.to_path_buf(),
        source,
    };
    let count = count.min(MAX_COUNT);
    for seq in start + 1..=start + count {
        let ms = i64::try_from(seq)
            .ok()
            .and_then(|s| EPOCH_MS.checked_add(s))
            .ok_or(TortureError::Timestamp(seq))?;
        let message = Message {
            id: message_id(seq),
            chat_jid: CHAT.to_string(),
            sender: "torture@nanoclaw.test".to_string(),
            sender_name: "torture".to_string(),
            // Sizes vary so that commits span one to several pages.
            content: format!("message {seq} {}", "x".repeat((seq % 7) as usize * 600)),
            timestamp: iso_from_epoch_ms(ms).ok_or(TortureError::Timestamp(seq))?,
            is_from_me: false,
        };
        store.store_inbound(&message, true)?;
        writeln!(acks, "{}", message.id).map_err(ack_err)?;
        acks.flush().map_err(ack_err)?;
    }
    Ok(count)
}

/// How many torture messages the database holds (ids only; bodies are never loaded).
fn torture_count(store: &Store) -> Result<u64, StoreError> {
    let n: i64 = store.conn.query_row(
        "SELECT count(*) FROM messages WHERE chat_jid = ?1",
        [CHAT],
        |r| r.get(0),
    )?;
    Ok(n.max(0) as u64)
}

/// The ids of the torture messages, streamed (ids only).
fn torture_ids(store: &Store) -> Result<HashSet<String>, StoreError> {
    let mut stmt = store
        .conn
        .prepare("SELECT id FROM messages WHERE chat_jid = ?1")?;
    let ids = stmt
        .query_map([CHAT], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Distinct ids in the acknowledgement file.
    pub acked: usize,
    /// Torture messages in the database.
    pub present: usize,
    /// Acknowledged ids the database no longer has, in acknowledgement order.
    pub missing: Vec<String>,
    /// `Store::check` findings (integrity, foreign keys, tables).
    pub problems: Vec<String>,
}

impl Verdict {
    /// Nothing acknowledged was lost and the database is intact.
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.problems.is_empty()
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acked={} present={} missing={} integrity={}",
            self.acked,
            self.present,
            self.missing.len(),
            if self.problems.is_empty() {
                "ok".to_string()
            } else {
                self.problems.join("; ")
            }
        )?;
        if let Some(first) = self.missing.first() {
            write!(f, " first_missing={first}")?;
        }
        Ok(())
    }
}

/// Opens the database the way the host does after a crash (read-write: WAL recovery, migrations), runs
/// the store's checks, and compares the torture messages with the ids listed in `acks` (blank lines and
/// a torn last line ignored).
pub fn verify(path: &Path, acks: impl BufRead, acks_path: &Path) -> Result<Verdict, TortureError> {
    let mut acked = Vec::new();
    let mut seen = HashSet::new();
    for line in acks.lines() {
        let line = line.map_err(|source| TortureError::Acks {
            path: acks_path.to_path_buf(),
            source,
        })?;
        let id = line.trim();
        // Only whole ids count: the line being written when the power went may be torn.
        if id.len() == message_id(0).len()
            && id.starts_with("torture-")
            && seen.insert(id.to_string())
        {
            if acked.len() == MAX_ACKS {
                return Err(TortureError::TooManyAcks {
                    path: acks_path.to_path_buf(),
                });
            }
            acked.push(id.to_string());
        }
    }
    let store = Store::open(path)?;
    let problems = store.check()?;
    let present = torture_ids(&store)?;
    let missing = acked
        .iter()
        .filter(|id| !present.contains(*id))
        .cloned()
        .collect();
    Ok(Verdict {
        acked: acked.len(),
        present: present.len(),
        missing,
        problems,
    })
}

/// `nanoclaw db torture`: with `verify`, prints the [`Verdict`] and returns whether it is ok; otherwise
/// appends `count` messages, appending each acknowledged id to the file `acks`.
pub fn command(
    db: &Path,
    acks: &Path,
    count: u64,
    verify: bool,
    out: &mut impl Write,
) -> Result<bool, TortureError> {
    let acks_err = |source| TortureError::Acks {
        path: acks.to_path_buf(),
        source,
    };
    if verify {
        let file = std::fs::File::open(acks).map_err(acks_err)?;
        let verdict = self::verify(db, std::io::BufReader::new(file), acks)?;
        writeln!(out, "torture verify: {verdict}").map_err(TortureError::Output)?;
        return Ok(verdict.ok());
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(acks)
        .map_err(acks_err)?;
    let n = append(db, count, &mut file, acks)?;
    writeln!(out, "torture: appended {n} messages to {}", db.display())
        .map_err(TortureError::Output)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_commits_leave_the_connection_at_normal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        append(&db, 1, &mut std::io::sink(), Path::new("sink")).unwrap();
        let mut store = Store::open(&db).unwrap();
        let sync = |s: &Store| -> i64 {
            s.conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(sync(&store), 1, "NORMAL after open");
        let m = Message {
            id: "x".into(),
            chat_jid: CHAT.into(),
            sender: "s".into(),
            sender_name: "s".into(),
            content: "c".into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            is_from_me: false,
        };
        store.store_inbound(&m, true).unwrap();
        assert_eq!(sync(&store), 1, "NORMAL restored after an inbound commit");
        // A failing inbound write (here: a read-only handle) still restores the setting.
        let mut ro = Store::open_read_only(&db).unwrap();
        let before = sync(&ro);
        assert!(ro.store_inbound(&m, true).is_err());
        assert_eq!(sync(&ro), before);
    }

    #[test]
    fn append_acks_each_committed_id_and_continues_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let mut acks = Vec::new();
        assert_eq!(append(&db, 3, &mut acks, Path::new("mem")).unwrap(), 3);
        append(&db, 2, &mut acks, Path::new("mem")).unwrap();
        let text = String::from_utf8(acks).unwrap();
        let ids: Vec<&str> = text.lines().collect();
        assert_eq!(ids, (1..=5).map(message_id).collect::<Vec<_>>());
        let v = verify(&db, text.as_bytes(), Path::new("mem")).unwrap();
        assert!(v.ok(), "{v}");
        assert_eq!((v.acked, v.present), (5, 5));
    }

    #[test]
    fn verify_reports_acked_ids_the_database_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        append(&db, 2, &mut std::io::sink(), Path::new("sink")).unwrap();
        // id 3 acknowledged but never stored; a torn trailing line is ignored.
        let acks = format!(
            "{}\n{}\n{}\ntorture-00",
            message_id(1),
            message_id(3),
            message_id(2)
        );
        let v = verify(&db, acks.as_bytes(), Path::new("mem")).unwrap();
        assert!(!v.ok());
        assert_eq!(v.missing, vec![message_id(3)]);
        assert_eq!((v.acked, v.present), (3, 2));
        assert!(
            v.to_string()
                .contains("missing=1 integrity=ok first_missing=torture-000000003")
        );
    }

    #[test]
    fn verify_fails_on_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        std::fs::write(&db, vec![0x5au8; 8192]).unwrap();
        assert!(matches!(
            verify(&db, &b""[..], Path::new("mem")),
            Err(TortureError::Store(StoreError::Open { .. }))
        ));
    }
}
