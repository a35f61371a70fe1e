//! `nanoclaw`: the host binary. Thin: parse arguments, load configuration, dispatch to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nanoclaw::host::commands::{self, CommandError};
use nanoclaw::host::config::{self, Config, DEFAULT_CONFIG_PATH, LogTarget};
use nanoclaw::host::doctor::Probe;
use nanoclaw::host::{exit, observability};
use nanoclaw::store;

#[derive(Parser)]
#[command(name = "nanoclaw", version, about = "Embedded personal-assistant host")]
struct Cli {
    /// Configuration file (default /etc/nanoclaw/config.toml; missing default file = built-in defaults).
    #[arg(long, global = true, env = "NANOCLAW_CONFIG")]
    config: Option<PathBuf>,
    /// Log sink; `auto` picks journald under systemd.
    #[arg(long, global = true, value_enum)]
    log: Option<LogTarget>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check or print the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Check that this host can run agents: cgroups, namespaces, nftables, image, data dir.
    Doctor,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Load and validate; exit non-zero with the offending key on error.
    Check,
    /// Print the effective configuration (defaults + file + environment), secrets redacted.
    Show,
}

#[derive(Subcommand)]
enum DbAction {
    /// Apply pending schema migrations and import legacy JSON state files.
    Migrate {
        #[arg(long)]
        db: Option<PathBuf>,
        /// Directory with router_state.json, sessions.json, registered_groups.json (default: data_dir).
        #[arg(long)]
        legacy_dir: Option<PathBuf>,
    },
    /// Integrity and schema check plus row counts; opens read-only.
    Check {
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Row counts and size figures; opens read-only.
    Stats {
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Power-cut test load (QEMU suite): append messages, recording each committed id in --acks; with
    /// --verify, check the database against those ids instead.
    #[command(hide = true)]
    Torture {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        acks: PathBuf,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        #[arg(long)]
        verify: bool,
    },
}

fn load_config(cli: &Cli) -> Result<(Config, PathBuf), CommandError> {
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let cfg = config::load(&path, explicit, std::env::vars())
        .map_err(|e| CommandError::new(exit::CONFIG, e))?;
    Ok((cfg, path))
}

fn dispatch(cli: Cli) -> Result<u8, CommandError> {
    let (cfg, source) = load_config(&cli)?;
    observability::init(&cfg.log.level, cli.log.unwrap_or(cfg.log.target));
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Config { action } => match action {
            ConfigAction::Check => commands::config_check(&cfg, &source, &mut out),
            ConfigAction::Show => commands::config_show(&cfg, &mut out),
        },
        Command::Db { action } => match action {
            DbAction::Migrate { db, legacy_dir } => {
                let legacy = legacy_dir.unwrap_or_else(|| cfg.data_dir.clone());
                commands::db_migrate(&commands::db_path(db, &cfg), Some(&legacy), &mut out)
            }
            DbAction::Check { db } => commands::db_check(&commands::db_path(db, &cfg), &mut out),
            DbAction::Stats { db } => commands::db_stats(&commands::db_path(db, &cfg), &mut out),
            DbAction::Torture {
                db,
                acks,
                count,
                verify,
            } => match store::torture::command(&db, &acks, count, verify, &mut out) {
                Ok(true) => Ok(exit::OK),
                Ok(false) => Ok(exit::DATABASE),
                Err(e) => Err(CommandError::new(exit::DATABASE, e)),
            },
        },
        Command::Doctor => commands::doctor(&cfg, &Probe::system(), &mut out),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(CommandError { code, error }) => {
            eprintln!("nanoclaw: error: {}", one_line(&error));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the line already holds
/// (rusqlite repeats its message in its source).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
