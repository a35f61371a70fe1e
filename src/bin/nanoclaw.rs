//! `nanoclaw`: the host binary. Thin: parse arguments, load configuration, dispatch to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use clap::{Parser, Subcommand};
use nanoclaw::channel::client::{self, ChatOptions};
use nanoclaw::host::commands::{self, CommandError, TaskAction};
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
    /// Egress policy (docs/egress.md).
    Egress {
        #[command(subcommand)]
        action: EgressAction,
    },
    /// Registered groups.
    Groups {
        #[arg(long, global = true)]
        db: Option<PathBuf>,
        #[command(subcommand)]
        action: GroupsAction,
    },
    /// Scheduled tasks.
    Tasks {
        #[arg(long, global = true)]
        db: Option<PathBuf>,
        #[command(subcommand)]
        action: TasksAction,
    },
    /// Run the host: channels, group actors, scheduler, IPC, sandboxed agent runs (the main job).
    Run,
    /// The running host: groups, live runs, queue depths, tasks, uptime (exit 6 when none runs).
    Status {
        /// The live state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Talk to the running host over the local channel.
    Chat {
        /// Chat to talk in.
        #[arg(long, default_value = "local:main")]
        chat: String,
        /// Socket of the local channel (default: <run_dir>/local.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// How many earlier messages to show first.
        #[arg(long, default_value_t = 20)]
        history: u32,
        /// After input ends, wait up to this many seconds for a reply (for scripts).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// WhatsApp account linking (built with the `whatsapp` feature).
    #[cfg(feature = "whatsapp")]
    Whatsapp {
        #[command(subcommand)]
        action: WhatsappAction,
    },
    /// Print performance figures (no pass/fail).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Queue throughput: groups x messages through the real actors with a scripted launcher.
    Queue {
        #[arg(long, default_value_t = 1000)]
        groups: usize,
        #[arg(long, default_value_t = 10)]
        messages: usize,
        #[arg(long, default_value_t = 2)]
        max_concurrent: usize,
    },
    /// Sandbox create+start and lifecycle latency, beside `crun run` if installed.
    Sandbox {
        /// Read-only image directory to run `/bin/true` from (e.g. target/test-rootfs).
        #[arg(long)]
        rootfs: PathBuf,
        /// Runs per variant.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// crun binary to compare with.
        #[arg(long, default_value = "/usr/bin/crun")]
        crun: PathBuf,
    },
    /// Runner cold start: process start to first request at a fake Messages API, and peak memory.
    Runner {
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// The nanoclaw-runner binary (default: next to this executable).
        #[arg(long, conflicts_with = "image")]
        runner: Option<PathBuf>,
        /// Run the runner from this image in real containers, each with its own network
        /// namespace, as the host does (root).
        #[arg(long)]
        image: Option<PathBuf>,
    },
}

#[cfg(feature = "whatsapp")]
#[derive(Subcommand)]
enum WhatsappAction {
    /// Link this host: a QR code in the terminal (also saved as a PNG under data_dir/whatsapp/),
    /// or with --phone an 8-character code to enter on the phone.
    Pair {
        /// Phone number with country code (e.g. 15551234567) for "link with phone number".
        #[arg(long)]
        phone: Option<String>,
        /// Delete the stored credentials first (needed after a logout).
        #[arg(long)]
        reset: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum EgressAction {
    /// Time-bounded allowlist override for one group; a running host applies it within seconds.
    Allow {
        #[arg(long)]
        group: String,
        /// Allowlist entry: host, *.suffix, IP or CIDR, optionally :port[,port] (default 443).
        #[arg(long)]
        host: String,
        /// Duration, e.g. 10m, 1h30m (at most 24h).
        #[arg(long = "for")]
        duration: String,
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum GroupsAction {
    /// List registered groups.
    List,
    /// Register a chat as a group.
    Register {
        /// Chat JID, e.g. `local:kitchen` or `1203…@g.us`.
        jid: String,
        /// Folder under the data dir: lowercase letters, digits and '-'; `main` for the main chat.
        #[arg(long)]
        folder: String,
        /// Display name (default: the folder).
        #[arg(long)]
        name: Option<String>,
        /// Trigger word (default: `@<assistant_name>`).
        #[arg(long)]
        trigger: Option<String>,
        /// Answer every message, without a trigger.
        #[arg(long)]
        no_trigger: bool,
    },
    /// Remove a registration (messages and files stay).
    Unregister { jid: String },
}

#[derive(Subcommand)]
enum TasksAction {
    /// List tasks, newest first.
    List,
    /// Pause an active task.
    Pause { id: String },
    /// Resume a paused task (next_run is not recomputed).
    Resume { id: String },
    /// Delete a task and its run logs.
    Cancel { id: String },
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
        Command::Status { json } => commands::status(&cfg, json, &mut out),
        Command::Bench {
            what:
                BenchWhat::Runner {
                    runs,
                    runner,
                    image,
                },
        } => {
            use nanoclaw::runner::bench;
            let report = match image {
                Some(image) => {
                    let opts = bench::ContainerBench {
                        image,
                        runs: runs.max(1),
                        backend: nanoclaw::sandbox::LibcontainerConfig {
                            state_root: cfg.run_dir.join("sandbox"),
                            ..Default::default()
                        },
                        work_dir: cfg
                            .run_dir
                            .join(format!("bench-runner-{}", std::process::id())),
                        subnet: cfg
                            .egress
                            .subnet()
                            .map_err(|e| CommandError::new(exit::CONFIG, e))?,
                    };
                    tokio::runtime::Runtime::new()
                        .map_err(|e| CommandError::new(exit::FAILURE, e))?
                        .block_on(bench::bench_runner_in_container(&opts))
                }
                None => {
                    let path = runner.unwrap_or_else(bench::default_runner_path);
                    bench::bench_runner(&path, runs.max(1))
                }
            }
            .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            std::io::Write::write_fmt(&mut out, format_args!("{report}\n"))
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            Ok(exit::OK)
        }
        Command::Egress {
            action:
                EgressAction::Allow {
                    group,
                    host,
                    duration,
                    db,
                },
        } => {
            let store = nanoclaw::store::Store::open(&commands::db_path(db, &cfg))
                .map_err(|e| CommandError::new(exit::DATABASE, e))?;
            let g = nanoclaw::net::overrides::persist_override(&store, &group, &host, &duration)
                .map_err(|e| CommandError::new(exit::USAGE, e))?;
            use std::io::Write;
            writeln!(
                out,
                "override #{}: {} for group {group} until {}",
                g.id, g.entry, g.expires_at
            )
            .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            // A running host applies it at once (SIGHUP); otherwise at its next maintenance tick.
            nanoclaw::host::run::notify_running_host(&cfg.run_dir);
            Ok(exit::OK)
        }
        Command::Groups { db, action } => {
            let db = commands::db_path(db, &cfg);
            let mutates = !matches!(action, GroupsAction::List);
            let result = match action {
                GroupsAction::List => commands::groups_list(&db, &mut out),
                GroupsAction::Register {
                    jid,
                    folder,
                    name,
                    trigger,
                    no_trigger,
                } => {
                    let reg = commands::GroupRegistration {
                        name: name.unwrap_or_else(|| folder.clone()),
                        jid,
                        folder,
                        trigger,
                        requires_trigger: !no_trigger,
                    };
                    commands::groups_register(&db, &reg, &cfg, &mut out)
                }
                GroupsAction::Unregister { jid } => {
                    commands::groups_unregister(&db, &jid, &mut out)
                }
            };
            if mutates && result.is_ok() {
                // A running host picks the change up at once (SIGHUP reload).
                nanoclaw::host::run::notify_running_host(&cfg.run_dir);
            }
            result
        }
        Command::Tasks { db, action } => {
            let db = commands::db_path(db, &cfg);
            let mutates = !matches!(action, TasksAction::List);
            let result = match action {
                TasksAction::List => commands::tasks_list(&db, &mut out),
                TasksAction::Pause { id } => {
                    commands::tasks_act(&db, &id, TaskAction::Pause, &mut out)
                }
                TasksAction::Resume { id } => {
                    commands::tasks_act(&db, &id, TaskAction::Resume, &mut out)
                }
                TasksAction::Cancel { id } => {
                    commands::tasks_act(&db, &id, TaskAction::Cancel, &mut out)
                }
            };
            if mutates && result.is_ok() {
                nanoclaw::host::run::notify_running_host(&cfg.run_dir);
            }
            result
        }
        Command::Chat {
            chat,
            socket,
            history,
            wait,
        } => {
            drop(out);
            let socket = socket.unwrap_or_else(|| cfg.run_dir.join("local.sock"));
            let opts = ChatOptions {
                chat,
                sender_name: std::env::var("USER").unwrap_or_else(|_| "user".to_string()),
                history,
                wait_after_eof: Duration::from_secs(wait),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            rt.block_on(client::run(
                &socket,
                &opts,
                tokio::io::BufReader::new(tokio::io::stdin()),
                tokio::io::stdout(),
            ))
            .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            Ok(exit::OK)
        }
        Command::Run => {
            drop(out);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            rt.block_on(nanoclaw::host::run::run(cfg, shutdown_signal()))
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            Ok(exit::OK)
        }
        Command::Bench {
            what:
                BenchWhat::Queue {
                    groups,
                    messages,
                    max_concurrent,
                },
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            let options = nanoclaw::queue::bench::LoadOptions {
                groups,
                messages_per_group: messages,
                max_concurrent_runs: max_concurrent,
                ..Default::default()
            };
            let report = rt
                .block_on(nanoclaw::queue::bench::run_queue_load(options))
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            use std::io::Write as _;
            writeln!(out, "{report}").map_err(|e| CommandError::new(exit::FAILURE, e))?;
            Ok(if report.ok() { exit::OK } else { exit::FAILURE })
        }
        Command::Bench {
            what: BenchWhat::Sandbox { rootfs, runs, crun },
        } => {
            let opts = nanoclaw::sandbox::bench::BenchOptions {
                runs,
                rootfs,
                backend: nanoclaw::sandbox::LibcontainerConfig {
                    state_root: cfg.run_dir.join("sandbox"),
                    ..Default::default()
                },
                crun: Some(crun),
            };
            let rt =
                tokio::runtime::Runtime::new().map_err(|e| CommandError::new(exit::FAILURE, e))?;
            let report = rt
                .block_on(nanoclaw::sandbox::bench::run(&opts))
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            std::io::Write::write_fmt(&mut out, format_args!("{report}"))
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            Ok(exit::OK)
        }
        #[cfg(feature = "whatsapp")]
        Command::Whatsapp {
            action:
                WhatsappAction::Pair {
                    phone,
                    reset,
                    timeout,
                },
        } => {
            use nanoclaw::channel::whatsapp::{auth::WaPaths, pair};
            let options = pair::PairOptions {
                phone,
                timeout: Duration::from_secs(timeout),
                reset,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            let outcome = rt
                .block_on(pair::pair(&WaPaths::new(&cfg.data_dir), &options, &mut out))
                .map_err(|e| CommandError::new(exit::FAILURE, e))?;
            let what = match outcome {
                pair::PairOutcome::AlreadyAuthenticated => "already linked",
                pair::PairOutcome::Authenticated => "linked",
            };
            use std::io::Write;
            let _ = writeln!(out, "whatsapp: {what}");
            Ok(exit::OK)
        }
    }
}

fn main() -> ExitCode {
    // The sandbox helper must run before anything can start a thread (libcontainer clones the
    // calling process), so it is dispatched ahead of argument parsing, logging and any runtime.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(nanoclaw::sandbox::HELPER_SUBCOMMAND))
    {
        std::process::exit(nanoclaw::sandbox::helper::main());
    }
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

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the host would be unstoppable except by SIGKILL; never resolve
        // here and let the operator see the error in the log instead of a silent exit.
        tracing::error!("cannot install SIGTERM/SIGINT handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
