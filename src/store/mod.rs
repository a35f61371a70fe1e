//! The SQLite store: the original host's schema (contract §2), typed queries, versioned additive
//! migrations, and the PRAGMAs an SD-card appliance wants.
//!
//! `Store` is synchronous and not `Sync`: the host gives it one dedicated thread (or `spawn_blocking`),
//! never a runtime worker (style guide: blocking rusqlite calls stall every actor).

mod audit;
mod error;
mod groups;
mod handle;
mod legacy;
mod messages;
pub mod migrations;
mod state;
mod tasks;
pub mod torture;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

pub use audit::{AUDIT_LIST_CAP, OverrideRow};
pub use error::{Result, StoreError};
pub use handle::{StoreHandle, StoreHandleError};
pub use legacy::LegacyImportReport;
pub use migrations::{MIGRATIONS, Migration, MigrationReport};
pub use state::{Cursors, KEY_LAST_AGENT_TIMESTAMP, KEY_LAST_TIMESTAMP};

/// How long a writer waits for a lock held by another connection (e.g. an operator's `sqlite3`).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The tables of contract §2.2, in the order `stats` reports them.
pub const TABLES: &[&str] = &[
    "chats",
    "messages",
    "scheduled_tasks",
    "task_run_logs",
    "router_state",
    "sessions",
    "registered_groups",
];

/// How often [`Store::maybe_optimize`] lets SQLite refresh planner statistics.
pub const OPTIMIZE_INTERVAL: Duration = Duration::from_secs(3600);

/// An open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Counts statements issued through the typed API; tests use it to prove an idle host is silent.
    queries: AtomicU64,
    migration: MigrationReport,
    /// When `PRAGMA optimize` last ran; `None` until the first call.
    last_optimize: Option<Instant>,
}

/// Row counts and file figures for `nanoclaw db stats|check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub schema_version: u32,
    pub rows: Vec<(&'static str, u64)>,
    pub page_size: u64,
    pub page_count: u64,
    pub journal_mode: String,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it to this build's schema.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, MIGRATIONS)
    }

    /// Opens with a given migration list; tests use a prefix of [`MIGRATIONS`] to act as an older release.
    pub fn open_with(path: &Path, migrations: &[Migration]) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure(&conn, true).map_err(open_err)?;
        let migration = migrations::migrate(&mut conn, migrations)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            queries: AtomicU64::new(0),
            migration,
            last_optimize: None,
        })
    }

    /// Opens an existing database read-only, without migrating or changing the journal mode: what
    /// `db check` and `db stats` use, so inspecting a file never alters it.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            return Err(open_err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some("no such file".to_string()),
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        configure(&conn, false).map_err(open_err)?;
        let version = migrations::current_version(&conn)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            queries: AtomicU64::new(0),
            migration: MigrationReport {
                from: version,
                to: version,
                newer_than_build: version > migrations::latest_version(MIGRATIONS),
            },
            last_optimize: None,
        })
    }

    /// An in-memory database with the full schema, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn, false)?;
        let migration = migrations::migrate(&mut conn, MIGRATIONS)?;
        Ok(Self {
            conn,
            path: PathBuf::from(":memory:"),
            queries: AtomicU64::new(0),
            migration,
            last_optimize: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What migration did when this handle was opened.
    pub fn migration(&self) -> &MigrationReport {
        &self.migration
    }

    /// Statements issued through the typed API since open.
    pub fn query_count(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// Lets SQLite refresh planner statistics (cheap when nothing changed).
    pub fn optimize(&mut self, now: Instant) -> Result<()> {
        self.count();
        self.conn.execute_batch("PRAGMA optimize")?;
        self.last_optimize = Some(now);
        Ok(())
    }

    /// Runs [`Store::optimize`] when [`OPTIMIZE_INTERVAL`] has passed since the last run; the host calls
    /// this from its periodic maintenance tick. Returns whether it ran.
    pub fn maybe_optimize(&mut self, now: Instant) -> Result<bool> {
        match self.last_optimize {
            Some(last) if now.saturating_duration_since(last) < OPTIMIZE_INTERVAL => Ok(false),
            Some(_) => self.optimize(now).map(|()| true),
            // The first tick only starts the clock: a fresh process has no query history to learn from.
            None => {
                self.last_optimize = Some(now);
                Ok(false)
            }
        }
    }

    /// Row counts and page figures.
    pub fn stats(&self) -> Result<Stats> {
        let mut rows = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let exists: bool = self.conn.query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )?;
            let n = if exists {
                self.conn
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                        r.get::<_, i64>(0).map(|v| v.max(0) as u64)
                    })?
            } else {
                0
            };
            rows.push((*table, n));
        }
        let pragma_u64 = |name: &str| -> Result<u64> {
            Ok(self.conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, i64>(0).map(|v| v.max(0) as u64)
            })?)
        };
        Ok(Stats {
            schema_version: migrations::current_version(&self.conn)?,
            rows,
            page_size: pragma_u64("page_size")?,
            page_count: pragma_u64("page_count")?,
            journal_mode: self
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))?,
        })
    }

    /// Integrity, foreign keys and the presence of every table of contract §2.2. Returns the problems
    /// found; an empty list means the database is healthy.
    pub fn check(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        for line in stmt.query_map([], |r| r.get::<_, String>(0))? {
            let line = line?;
            if line != "ok" {
                problems.push(format!("integrity: {line}"));
            }
        }
        let mut stmt = self.conn.prepare("PRAGMA foreign_key_check")?;
        let fk = stmt.query_map([], |r| {
            Ok(format!(
                "foreign key: table {} rowid {} references missing {}",
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?.unwrap_or(-1),
                r.get::<_, String>(2)?
            ))
        })?;
        for line in fk {
            problems.push(line?);
        }
        for table in TABLES {
            let exists: bool = self.conn.query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )?;
            if !exists {
                problems.push(format!("schema: table {table} is missing"));
            }
        }
        Ok(problems)
    }

    /// Raw connection for the contract tests that run the original's reader SQL.
    #[doc(hidden)]
    pub fn raw(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SQLite recommends `PRAGMA optimize` before closing a long-lived connection.
        if !self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            let _ = self.conn.execute_batch("PRAGMA optimize");
        }
    }
}

/// PRAGMAs every connection gets. `writable` ones also switch to WAL (persisted in the file).
fn configure(conn: &Connection, writable: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The original relied on a driver compiled with foreign keys on; we say it (contract §2.1).
    conn.pragma_update(None, "foreign_keys", true)?;
    if writable {
        // WAL + NORMAL: one fsync per checkpoint instead of per commit; a power cut may lose the last
        // transactions but never corrupts the file. The one write a sender is told about, an inbound
        // message, commits with FULL instead (`Store::store_inbound`).
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    // Fails here, with a clear error, when the file is not a database at all.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    Ok(())
}
