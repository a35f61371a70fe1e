//! Operator commands behind the CLI: `config`, `db`, `doctor`. Each prints to stdout and returns an exit
//! code; errors are returned for the binary to print as one line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::host::config::Config;
use crate::host::doctor::{self, Probe};
use crate::host::exit;
use crate::store::{MIGRATIONS, Store, migrations};

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct CommandError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CommandError {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

pub type CommandResult = Result<u8, CommandError>;

fn db_err(e: impl Into<anyhow::Error>) -> CommandError {
    CommandError::new(exit::DATABASE, e)
}

fn io_err(e: std::io::Error) -> CommandError {
    CommandError::new(exit::FAILURE, e)
}

/// `config check`: the configuration loaded and validated.
pub fn config_check(cfg: &Config, source: &Path, out: &mut impl Write) -> CommandResult {
    writeln!(
        out,
        "config ok: {} (assistant {:?}, {} concurrent run(s), timezone {})",
        source.display(),
        cfg.assistant_name,
        cfg.runs.max_concurrent,
        cfg.timezone
    )
    .map_err(io_err)?;
    Ok(exit::OK)
}

/// `config show`: the effective configuration, secrets redacted.
pub fn config_show(cfg: &Config, out: &mut impl Write) -> CommandResult {
    out.write_all(cfg.to_redacted_toml().as_bytes())
        .map_err(io_err)?;
    Ok(exit::OK)
}

fn print_counts(store: &Store, out: &mut impl Write) -> CommandResult {
    let stats = store.stats().map_err(db_err)?;
    for (table, n) in &stats.rows {
        writeln!(out, "{table:<20}{n:>10}").map_err(io_err)?;
    }
    Ok(exit::OK)
}

fn schema_line(version: u32) -> String {
    let latest = migrations::latest_version(MIGRATIONS);
    match version {
        0 => format!(
            "schema v0 (original host layout; `nanoclaw db migrate` brings it to v{latest})"
        ),
        v if v < latest => format!("schema v{v} (this release migrates it to v{latest})"),
        v if v > latest => format!(
            "schema v{v} (newer than this release's v{latest}; compatible, migrations are additive)"
        ),
        v => format!("schema v{v} (current)"),
    }
}

/// `db check`: opens read-only (nothing is changed), checks integrity, foreign keys and tables, and prints
/// the row counts.
pub fn db_check(path: &Path, out: &mut impl Write) -> CommandResult {
    let store = Store::open_read_only(path).map_err(db_err)?;
    let stats = store.stats().map_err(db_err)?;
    writeln!(
        out,
        "database {}: {}, journal {}",
        path.display(),
        schema_line(stats.schema_version),
        stats.journal_mode
    )
    .map_err(io_err)?;
    print_counts(&store, out)?;
    let problems = store.check().map_err(db_err)?;
    if problems.is_empty() {
        writeln!(out, "check ok: integrity, foreign keys, tables").map_err(io_err)?;
        Ok(exit::OK)
    } else {
        for p in &problems {
            writeln!(out, "problem: {p}").map_err(io_err)?;
        }
        Err(db_err(anyhow::anyhow!(
            "{} problem(s) found in {}",
            problems.len(),
            path.display()
        )))
    }
}

/// `db stats`: row counts and size figures, read-only.
pub fn db_stats(path: &Path, out: &mut impl Write) -> CommandResult {
    let store = Store::open_read_only(path).map_err(db_err)?;
    let stats = store.stats().map_err(db_err)?;
    writeln!(
        out,
        "database {}: {}",
        path.display(),
        schema_line(stats.schema_version)
    )
    .map_err(io_err)?;
    print_counts(&store, out)?;
    writeln!(
        out,
        "{:<20}{:>10}\n{:<20}{:>10}\n{:<20}{:>10}",
        "page_size",
        stats.page_size,
        "page_count",
        stats.page_count,
        "journal_mode",
        stats.journal_mode
    )
    .map_err(io_err)?;
    Ok(exit::OK)
}

/// `db migrate`: opens read-write, applies pending migrations and imports legacy JSON state.
pub fn db_migrate(path: &Path, legacy_dir: Option<&Path>, out: &mut impl Write) -> CommandResult {
    let mut store = Store::open(path).map_err(db_err)?;
    let m = store.migration().clone();
    if m.newer_than_build {
        writeln!(
            out,
            "database {} is at schema v{}, newer than this release; left unchanged",
            path.display(),
            m.from
        )
        .map_err(io_err)?;
    } else {
        writeln!(
            out,
            "database {}: schema v{} -> v{}",
            path.display(),
            m.from,
            m.to
        )
        .map_err(io_err)?;
    }
    if let Some(dir) = legacy_dir {
        let report = store
            .import_legacy_json(dir)
            .with_context(|| format!("importing legacy JSON from {}", dir.display()))
            .map_err(db_err)?;
        for p in &report.imported {
            writeln!(out, "imported {}", p.display()).map_err(io_err)?;
        }
        for (p, why) in &report.skipped {
            writeln!(out, "skipped {}: {why}", p.display()).map_err(io_err)?;
        }
        for (jid, why) in &report.rejected_groups {
            writeln!(out, "rejected group {jid}: {why}").map_err(io_err)?;
        }
    }
    Ok(exit::OK)
}

/// `doctor`: one line per check; exit 0 only when all pass.
pub fn doctor(cfg: &Config, probe: &Probe, out: &mut impl Write) -> CommandResult {
    let checks = doctor::run(cfg, probe);
    for c in &checks {
        writeln!(out, "{c}").map_err(io_err)?;
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        writeln!(out, "all {} checks passed", checks.len()).map_err(io_err)?;
        Ok(exit::OK)
    } else {
        writeln!(out, "{failed} of {} checks failed", checks.len()).map_err(io_err)?;
        Ok(exit::CHECKS_FAILED)
    }
}

/// The DB path a command uses: `--db`, else the configured one.
pub fn db_path(explicit: Option<PathBuf>, cfg: &Config) -> PathBuf {
    explicit.unwrap_or_else(|| cfg.db_path())
}

/// What `groups register` stores.
#[derive(Debug, Clone)]
pub struct GroupRegistration {
    pub jid: String,
    pub name: String,
    pub folder: String,
    pub trigger: Option<String>,
    pub requires_trigger: bool,
}

/// `groups list`: registered groups, one per line.
pub fn groups_list(db: &Path, out: &mut impl Write) -> CommandResult {
    let store = Store::open_read_only(db).map_err(db_err)?;
    let groups = store.all_groups().map_err(db_err)?;
    writeln!(
        out,
        "{:<32} {:<16} {:<10} {:<8} NAME",
        "JID", "FOLDER", "TRIGGER", "NEEDS"
    )
    .map_err(io_err)?;
    for g in &groups {
        let needs = if crate::core::trigger::needs_trigger(g) {
            "yes"
        } else {
            "no"
        };
        writeln!(
            out,
            "{:<32} {:<16} {:<10} {:<8} {}",
            g.jid, g.folder, g.trigger, needs, g.name
        )
        .map_err(io_err)?;
    }
    Ok(exit::OK)
}

/// `groups register`: validates the folder (contract §12.13) and refuses collisions.
pub fn groups_register(
    db: &Path,
    reg: &GroupRegistration,
    cfg: &Config,
    out: &mut impl Write,
) -> CommandResult {
    let registering_main = reg.folder == crate::core::types::MAIN_GROUP_FOLDER;
    crate::core::types::validate_folder(&reg.folder, registering_main)
        .map_err(|e| CommandError::new(exit::FAILURE, e))?;
    if reg.jid.trim().is_empty() || reg.name.trim().is_empty() {
        return Err(CommandError::new(
            exit::FAILURE,
            anyhow::anyhow!("jid and name must not be empty"),
        ));
    }
    let mut store = Store::open(db).map_err(db_err)?;
    let group = crate::core::types::RegisteredGroup {
        jid: reg.jid.clone(),
        name: reg.name.clone(),
        folder: reg.folder.clone(),
        trigger: reg
            .trigger
            .clone()
            .unwrap_or_else(|| format!("@{}", cfg.assistant_name)),
        added_at: crate::core::time::now_iso(),
        container_config: None,
        requires_trigger: Some(reg.requires_trigger),
    };
    store.register_group(&group).map_err(db_err)?;
    writeln!(out, "registered {} as folder {}", group.jid, group.folder).map_err(io_err)?;
    Ok(exit::OK)
}

/// `groups unregister`: removes the registration; messages, sessions and files stay (contract §12.27).
pub fn groups_unregister(db: &Path, jid: &str, out: &mut impl Write) -> CommandResult {
    let store = Store::open(db).map_err(db_err)?;
    if store.unregister_group(jid).map_err(db_err)? {
        writeln!(out, "unregistered {jid}").map_err(io_err)?;
        Ok(exit::OK)
    } else {
        Err(CommandError::new(
            exit::FAILURE,
            anyhow::anyhow!("no registered group with jid {jid}"),
        ))
    }
}

/// `tasks list`: every task, newest first.
pub fn tasks_list(db: &Path, out: &mut impl Write) -> CommandResult {
    let store = Store::open_read_only(db).map_err(db_err)?;
    writeln!(
        out,
        "{:<36} {:<12} {:<10} {:<9} {:<24} SCHEDULE",
        "ID", "FOLDER", "TYPE", "STATUS", "NEXT RUN"
    )
    .map_err(io_err)?;
    for t in store.all_tasks().map_err(db_err)? {
        writeln!(
            out,
            "{:<36} {:<12} {:<10} {:<9} {:<24} {}",
            t.id,
            t.group_folder,
            t.schedule_type,
            t.status,
            t.next_run.as_deref().unwrap_or("-"),
            t.schedule_value
        )
        .map_err(io_err)?;
    }
    Ok(exit::OK)
}

/// Operator actions on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAction {
    Pause,
    Resume,
    Cancel,
}

/// `tasks pause|resume|cancel ID` with the status transitions of contract §6.13.
pub fn tasks_act(db: &Path, id: &str, action: TaskAction, out: &mut impl Write) -> CommandResult {
    use crate::core::types::{TaskStatus, TaskUpdate};
    let mut store = Store::open(db).map_err(db_err)?;
    let missing = || CommandError::new(exit::FAILURE, anyhow::anyhow!("no task with id {id}"));
    let done = match action {
        TaskAction::Cancel => store.delete_task(id).map_err(db_err)?,
        TaskAction::Pause | TaskAction::Resume => {
            let status = if action == TaskAction::Pause {
                TaskStatus::Paused
            } else {
                TaskStatus::Active
            };
            store
                .update_task(
                    id,
                    &TaskUpdate {
                        status: Some(status),
                        ..Default::default()
                    },
                )
                .map_err(db_err)?
        }
    };
    if !done {
        return Err(missing());
    }
    let verb = match action {
        TaskAction::Pause => "paused",
        TaskAction::Resume => "resumed",
        TaskAction::Cancel => "cancelled",
    };
    writeln!(out, "{verb} {id}").map_err(io_err)?;
    Ok(exit::OK)
}

/// `1h02m03s`, `4m05s`, `7s`.
fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// The pid in the pid file, if that process is alive and is a `nanoclaw`.
fn running_pid(run_dir: &Path) -> Result<(i32, Option<std::time::SystemTime>), String> {
    let pid_file = crate::host::run::pid_file(run_dir);
    let text = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("no pid file {} ({e})", pid_file.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| format!("pid file {} holds no pid", pid_file.display()))?;
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) == 0 }
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !alive {
        return Err(format!(
            "pid {pid} from {} is not running (stale pid file)",
            pid_file.display()
        ));
    }
    // A recycled pid belongs to some other program.
    if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        && comm.trim() != "nanoclaw"
    {
        return Err(format!(
            "pid {pid} from {} is {:?}, not nanoclaw (stale pid file)",
            pid_file.display(),
            comm.trim()
        ));
    }
    let since = std::fs::metadata(&pid_file).and_then(|m| m.modified()).ok();
    Ok((pid, since))
}

fn print_tasks(db: &Path, out: &mut impl Write) -> CommandResult {
    let tasks = match Store::open_read_only(db).and_then(|s| s.all_tasks()) {
        Ok(t) => t,
        Err(e) => {
            writeln!(out, "tasks: unavailable ({e})").map_err(io_err)?;
            return Ok(exit::OK);
        }
    };
    let count = |s: &str| tasks.iter().filter(|t| t.status.to_string() == s).count();
    writeln!(
        out,
        "tasks: {} ({} active, {} paused, {} completed)",
        tasks.len(),
        count("active"),
        count("paused"),
        count("completed")
    )
    .map_err(io_err)?;
    for t in &tasks {
        writeln!(
            out,
            "  {:<36} {:<12} {:<9} next {}",
            t.id,
            t.group_folder,
            t.status,
            t.next_run.as_deref().unwrap_or("-")
        )
        .map_err(io_err)?;
    }
    Ok(exit::OK)
}

/// `status`: the live host over its control socket (groups, live runs, queue depths, uptime), plus the
/// tasks from the database. A host without a reachable control socket is described from its pid file
/// and the database. No running host is an error ([`exit::NOT_RUNNING`]).
pub fn status(cfg: &Config, json: bool, out: &mut impl Write) -> CommandResult {
    let socket = crate::host::control::socket_path(&cfg.run_dir);
    let live = crate::host::control::fetch_status(&socket, std::time::Duration::from_secs(5));
    let s = match live {
        Ok(s) => s,
        Err(control_err) => {
            let (pid, since) = running_pid(&cfg.run_dir).map_err(|why| {
                CommandError::new(
                    exit::NOT_RUNNING,
                    anyhow::anyhow!(
                        "no nanoclaw host is running: {why}; start one with `nanoclaw run`"
                    ),
                )
            })?;
            if json {
                return Err(CommandError::new(
                    exit::FAILURE,
                    anyhow::anyhow!("host pid {pid} is running but did not answer: {control_err}"),
                ));
            }
            let up = since
                .and_then(|t| t.elapsed().ok())
                .map_or_else(|| "?".to_string(), |d| human_duration(d.as_secs()));
            writeln!(
                out,
                "nanoclaw host running: pid {pid}, up {up}\n\
                 live state unavailable ({control_err}); from the database:"
            )
            .map_err(io_err)?;
            let db = cfg.db_path();
            groups_list(&db, out)?;
            return print_tasks(&db, out);
        }
    };
    if json {
        let text =
            serde_json::to_string_pretty(&s).map_err(|e| CommandError::new(exit::FAILURE, e))?;
        writeln!(out, "{text}").map_err(io_err)?;
        return Ok(exit::OK);
    }
    writeln!(
        out,
        "nanoclaw {} host running: pid {}, up {} (since {})",
        s.version,
        s.pid,
        human_duration(s.uptime_secs),
        s.started_at
    )
    .map_err(io_err)?;
    writeln!(
        out,
        "model credential: {}",
        if s.credential {
            "configured"
        } else {
            "MISSING (runs are refused; write ANTHROPIC_API_KEY=... to the credentials file)"
        }
    )
    .map_err(io_err)?;
    writeln!(
        out,
        "runs: {} active of {} max; {} started, {} retries since start",
        s.active_runs, s.max_concurrent_runs, s.runs_started, s.retries_scheduled
    )
    .map_err(io_err)?;
    writeln!(
        out,
        "{:<32} {:<16} {:<8} {:<8} {:<7} MAILBOX",
        "GROUP", "FOLDER", "RUN", "PENDING", "TASKS"
    )
    .map_err(io_err)?;
    for g in &s.groups {
        let run = match (&g.run, &g.running_task) {
            (Some(kind), Some(task)) if kind == "task" => format!("task {task}"),
            (Some(kind), _) => kind.clone(),
            (None, _) => "-".to_string(),
        };
        writeln!(
            out,
            "{:<32} {:<16} {:<8} {:<8} {:<7} {}",
            g.jid,
            g.folder,
            run,
            if g.pending_messages { "yes" } else { "no" },
            g.queued_tasks,
            g.mailbox_depth
        )
        .map_err(io_err)?;
    }
    print_tasks(&cfg.db_path(), out)
}
