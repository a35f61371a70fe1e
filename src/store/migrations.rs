//! Versioned, additive-only schema migrations tracked in `PRAGMA user_version`.
//!
//! Invariant: a migration only creates tables or indexes (`IF NOT EXISTS`) or adds columns with a default.
//! Nothing is dropped, renamed or retyped, so release N's queries keep working on a database that release
//! N+1 migrated (A/B rollback), and the original TypeScript host can still read the file.

use rusqlite::Connection;

use crate::store::error::{Result, StoreError};

/// One idempotent schema step.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// `CREATE TABLE IF NOT EXISTS …` / `CREATE INDEX IF NOT EXISTS …`, possibly several statements.
    Sql(&'static str),
    /// Adds a column unless it exists; the original swallowed "duplicate column" instead (contract §2.3).
    AddColumn {
        table: &'static str,
        column: &'static str,
        decl: &'static str,
    },
}

/// A numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub steps: &'static [Step],
}

/// The original host's schema, byte for byte in shape (contract §2.2), so a database we create is one
/// the original can open, and one it created needs nothing from us.
const ORIGINAL_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chats (
      jid TEXT PRIMARY KEY,
      name TEXT,
      last_message_time TEXT
    );
CREATE TABLE IF NOT EXISTS messages (
      id TEXT,
      chat_jid TEXT,
      sender TEXT,
      sender_name TEXT,
      content TEXT,
      timestamp TEXT,
      is_from_me INTEGER,
      PRIMARY KEY (id, chat_jid),
      FOREIGN KEY (chat_jid) REFERENCES chats(jid)
    );
CREATE INDEX IF NOT EXISTS idx_timestamp ON messages(timestamp);
CREATE TABLE IF NOT EXISTS scheduled_tasks (
      id TEXT PRIMARY KEY,
      group_folder TEXT NOT NULL,
      chat_jid TEXT NOT NULL,
      prompt TEXT NOT NULL,
      schedule_type TEXT NOT NULL,
      schedule_value TEXT NOT NULL,
      next_run TEXT,
      last_run TEXT,
      last_result TEXT,
      status TEXT DEFAULT 'active',
      created_at TEXT NOT NULL
    );
CREATE INDEX IF NOT EXISTS idx_next_run ON scheduled_tasks(next_run);
CREATE INDEX IF NOT EXISTS idx_status ON scheduled_tasks(status);
CREATE TABLE IF NOT EXISTS task_run_logs (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      task_id TEXT NOT NULL,
      run_at TEXT NOT NULL,
      duration_ms INTEGER NOT NULL,
      status TEXT NOT NULL,
      result TEXT,
      error TEXT,
      FOREIGN KEY (task_id) REFERENCES scheduled_tasks(id)
    );
CREATE INDEX IF NOT EXISTS idx_task_run_logs ON task_run_logs(task_id, run_at);
CREATE TABLE IF NOT EXISTS router_state (
      key TEXT PRIMARY KEY,
      value TEXT NOT NULL
    );
CREATE TABLE IF NOT EXISTS sessions (
      group_folder TEXT PRIMARY KEY,
      session_id TEXT NOT NULL
    );
CREATE TABLE IF NOT EXISTS registered_groups (
      jid TEXT PRIMARY KEY,
      name TEXT NOT NULL,
      folder TEXT NOT NULL UNIQUE,
      trigger_pattern TEXT NOT NULL,
      added_at TEXT NOT NULL,
      container_config TEXT,
      requires_trigger INTEGER DEFAULT 1
    );
";

/// Every migration, in order. Append only.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "original schema",
        steps: &[
            Step::Sql(ORIGINAL_SCHEMA),
            Step::AddColumn {
                table: "scheduled_tasks",
                column: "context_mode",
                decl: "TEXT DEFAULT 'isolated'",
            },
        ],
    },
    Migration {
        version: 2,
        name: "indexes for per-chat scans and due-task lookup",
        steps: &[Step::Sql(
            "CREATE INDEX IF NOT EXISTS idx_messages_chat_timestamp ON messages(chat_jid, timestamp);
             CREATE INDEX IF NOT EXISTS idx_tasks_status_next_run ON scheduled_tasks(status, next_run);",
        )],
    },
    Migration {
        version: 3,
        name: "audit events and egress overrides",
        steps: &[Step::Sql(
            "CREATE TABLE IF NOT EXISTS audit_events (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               time TEXT NOT NULL,
               group_folder TEXT NOT NULL,
               run_id TEXT,
               kind TEXT NOT NULL,
               destination TEXT,
               decision TEXT NOT NULL,
               detail TEXT
             );
             CREATE INDEX IF NOT EXISTS idx_audit_events_time ON audit_events(time);
             CREATE INDEX IF NOT EXISTS idx_audit_events_run ON audit_events(run_id);
             CREATE TABLE IF NOT EXISTS egress_overrides (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               group_folder TEXT NOT NULL,
               host TEXT NOT NULL,
               granted_at TEXT NOT NULL,
               expires_at TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS idx_egress_overrides_expiry ON egress_overrides(expires_at);",
        )],
    },
];

/// The newest schema version this build knows.
pub fn latest_version(migrations: &[Migration]) -> u32 {
    migrations.last().map_or(0, |m| m.version)
}

/// The database's `user_version`.
pub fn current_version(conn: &Connection) -> Result<u32> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))?)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    for name in names {
        if name? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

fn apply_step(conn: &Connection, step: &Step) -> rusqlite::Result<()> {
    match step {
        Step::Sql(sql) => conn.execute_batch(sql),
        Step::AddColumn {
            table,
            column,
            decl,
        } => {
            if !has_column(conn, table, column)? {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
            }
            Ok(())
        }
    }
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub from: u32,
    pub to: u32,
    /// The database was migrated by a newer release; we run against it unchanged (A/B rollback).
    pub newer_than_build: bool,
}

/// Brings the schema up to the newest of `migrations`. Each migration runs in its own transaction together
/// with its `user_version` bump, so a crash leaves the schema at a whole version.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<MigrationReport> {
    let from = current_version(conn)?;
    let latest = latest_version(migrations);
    if from > latest {
        return Ok(MigrationReport {
            from,
            to: from,
            newer_than_build: true,
        });
    }
    for m in migrations.iter().filter(|m| m.version > from) {
        let wrap = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let tx = conn.transaction().map_err(wrap)?;
        for step in m.steps {
            apply_step(&tx, step).map_err(wrap)?;
        }
        tx.pragma_update(None, "user_version", m.version)
            .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
    }
    Ok(MigrationReport {
        from,
        to: latest.max(from),
        newer_than_build: false,
    })
}
