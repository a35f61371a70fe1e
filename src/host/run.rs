//! `nanoclaw run`: wires every layer into the running host (contract §3.13, in our order):
//! store → orphan cleanup → egress (nftables + proxy) → runner image → channels → group actors →
//! scheduler → IPC watcher → recovery → `READY=1`. Shutdown runs the other way with a grace period.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::channel::local::{LocalChannel, MAIN_CHAT};
use crate::channel::{Channel, Inbound};
use crate::core::mount_policy::MountPolicy;
use crate::core::types::{MAIN_GROUP_FOLDER, RegisteredGroup};
use crate::core::wire::LocalHistoryEntry;
use crate::host::config::Config;
use crate::host::control;
use crate::host::effects::HostEffects;
use crate::host::launcher::{LauncherSettings, SandboxLauncher};
use crate::host::router::Router;
use crate::host::systemd;
use crate::ipc::{HandlerConfig, IpcLayout, IpcWatcher, WatcherConfig};
use crate::net::Egress;
use crate::net::audit::{AuditSink, spawn_store_writer};
use crate::net::overrides::{self, Applied};
use crate::net::proxy::{Resolver, Upstream, webpki_roots_store};
use crate::net::secret::Credential;
use crate::queue::{Outbound, Queue, QueueSettings, RetryPolicy};
use crate::sandbox::mounts::{FsResolver, load_allowlist};
use crate::sandbox::{Backend, LibcontainerBackend, LibcontainerConfig, Limits};
use crate::scheduler::{Clock, Scheduler, SchedulerSettings};
use crate::store::{Store, StoreHandle};

/// Inbound messages buffered between the channels and the store; a full buffer slows the channel
/// (back-pressure), it never drops a message.
pub const INBOUND_BUFFER: usize = 256;
/// Audit events buffered for the database writer.
pub const AUDIT_BUFFER: usize = 1024;
/// How long shutdown waits for queued audit events to reach the database.
pub const AUDIT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the maintenance tick runs (egress counters, overrides, `PRAGMA optimize` cadence).
pub const MAINTENANCE_TICK: Duration = Duration::from_secs(30);

/// The pid file other `nanoclaw` commands signal (SIGHUP) after changing groups or tasks.
pub fn pid_file(run_dir: &Path) -> PathBuf {
    run_dir.join("nanoclaw.pid")
}

/// Asks a running host to reload groups, tasks and allowlists. Returns whether one was signalled.
pub fn notify_running_host(run_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file(run_dir)) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill(2) with a positive pid and a valid signal number has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGHUP) == 0 }
}

fn load_credential(cfg: &Config) -> Option<Credential> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let path = Credential::source(&cfg.model.credentials_file, dir.as_deref());
    match Credential::load(&path) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(
                cause = %e,
                "no model credential is configured; agent runs are refused until one is \
                 (write ANTHROPIC_API_KEY=... to {} with mode 600 and restart)",
                path.display()
            );
            None
        }
    }
}

fn limits(cfg: &Config) -> Limits {
    let r = &cfg.runs;
    Limits {
        memory_bytes: r.memory_max_mib << 20,
        pids: r.pids_max,
        cpu_quota_us: r.cpu_percent * 1000,
        cpu_period_us: 100_000,
        tmp_bytes: r.tmp_size_mib << 20,
        ..Limits::default()
    }
}

fn mount_policy(cfg: &Config) -> Option<MountPolicy> {
    let allowlist = load_allowlist(&cfg.mounts.allowlist, &cfg.data_dir)?;
    let resolver = FsResolver {
        home: Some(cfg.mounts.home.clone()),
    };
    Some(MountPolicy::new(&allowlist, &resolver))
}

/// Applies overrides stored by `nanoclaw egress allow` that the live proxy does not have yet.
async fn sync_overrides(egress: Option<&Arc<Egress>>, store: &StoreHandle, applied: &Applied) {
    let Some(egress) = egress else { return };
    match overrides::sync_from_store(egress, store, applied).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(new = n, "applied egress overrides"),
        Err(e) => tracing::warn!(cause = %e, "egress overrides not synced"),
    }
}

async fn reload_groups(store: &StoreHandle, queue: &Queue) -> anyhow::Result<usize> {
    let groups = store.call(|s| s.all_groups()).await?;
    let n = groups.len();
    for g in groups {
        queue.register_group(g);
    }
    Ok(n)
}

/// Runs the host until `shutdown` resolves (SIGTERM/SIGINT in production).
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = Instant::now();
    for dir in [&cfg.data_dir, &cfg.run_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let data_dir = std::fs::canonicalize(&cfg.data_dir)
        .with_context(|| format!("resolving {}", cfg.data_dir.display()))?;
    for sub in ["groups", "sessions", "ipc"] {
        std::fs::create_dir_all(data_dir.join(sub))?;
    }

    // Store, then the legacy JSON import (contract §2.4).
    let db = cfg.db_path();
    let mut store = Store::open(&db)?;
    let report = store.import_legacy_json(&data_dir)?;
    for p in &report.imported {
        tracing::info!(file = %p.display(), "imported legacy state");
    }
    let store = StoreHandle::new(store);
    std::fs::write(pid_file(&cfg.run_dir), format!("{}\n", std::process::id()))?;

    // Orphans of a crashed host: containers first, then (inside Egress::start) their networks.
    let backend = Arc::new(LibcontainerBackend::new(LibcontainerConfig {
        state_root: cfg.run_dir.join("sandbox"),
        ..LibcontainerConfig::default()
    })?);
    let orphans = backend.cleanup_orphans().await?;
    if !orphans.removed.is_empty() {
        tracing::warn!(removed = ?orphans.removed, "cleaned up runs left by a previous host");
    }

    let (audit, audit_rx) = AuditSink::new(AUDIT_BUFFER);
    let audit_writer = spawn_store_writer(db.clone(), audit_rx);
    let credential = load_credential(&cfg);
    let egress = match credential {
        Some(credential) => {
            let upstream = Upstream::new(&cfg.model.upstream_url, webpki_roots_store())?;
            let resolver = Resolver::new(cfg.egress.hosts.clone(), true);
            Some(Egress::start(&cfg.egress, upstream, credential, resolver, audit.clone()).await?)
        }
        None => None,
    };

    // The runner image, mounted read-only once and shared by every run.
    let image_root = cfg.run_dir.join("runner-root");
    let runner_root = match crate::sandbox::image::prepare(&cfg.runs.image, &image_root) {
        Ok(root) => Some(root),
        Err(e) => {
            tracing::error!(image = %cfg.runs.image.display(), cause = %e, "runner image unavailable; runs will fail");
            None
        }
    };
    let rootfs = runner_root
        .as_ref()
        .map_or_else(|| image_root.clone(), |r| r.root.clone());

    // Channels.
    let (inbound_tx, mut inbound_rx) = mpsc::channel::<Inbound>(INBOUND_BUFFER);
    let history_store = store.clone();
    let local = Arc::new(LocalChannel::new(
        cfg.run_dir.join("local.sock"),
        cfg.assistant_name.clone(),
        inbound_tx.clone(),
        Some(Arc::new(move |chat: &str, limit: usize| {
            history_store.blocking(|s| {
                s.messages_since(chat, "", "")
                    .map(|msgs| {
                        let skip = msgs.len().saturating_sub(limit);
                        msgs.into_iter()
                            .skip(skip)
                            .map(|m| LocalHistoryEntry {
                                sender_name: m.sender_name,
                                text: m.content,
                                time: m.timestamp,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
        })),
    ));
    local.connect().await?;
    #[cfg(feature = "whatsapp")]
    let whatsapp = crate::host::whatsapp::start(&data_dir, &store, inbound_tx.clone()).await?;
    #[allow(unused_mut)]
    let mut channels: Vec<Arc<dyn Channel>> = vec![local.clone()];
    #[cfg(feature = "whatsapp")]
    if let Some(w) = &whatsapp {
        channels.push(w.clone());
    }
    let router = Router::new(channels.clone());

    // First start: the local main chat becomes the main group.
    let has_main = store
        .call(|s| Ok(s.all_groups()?.iter().any(RegisteredGroup::is_main)))
        .await?;
    if !has_main {
        let main = RegisteredGroup {
            jid: MAIN_CHAT.to_string(),
            name: "Main".to_string(),
            folder: MAIN_GROUP_FOLDER.to_string(),
            trigger: format!("@{}", cfg.assistant_name),
            added_at: crate::core::time::now_iso(),
            container_config: None,
            requires_trigger: Some(false),
        };
        store.call(move |s| s.register_group(&main)).await?;
        tracing::info!(
            chat = MAIN_CHAT,
            "registered the local main chat as the main group"
        );
    }

    // Actors, scheduler, IPC watcher.
    let launcher = Arc::new(SandboxLauncher::new(
        LauncherSettings {
            data_dir: data_dir.clone(),
            rootfs,
            limits: limits(&cfg),
            timeout: Duration::from_secs(cfg.runs.timeout_secs),
            grace: Duration::from_secs(cfg.queue.shutdown_grace_secs.max(1)),
            output_cap: cfg.runs.max_output_bytes as usize,
            uid: crate::sandbox::spec::DEFAULT_UID,
            gid: crate::sandbox::spec::DEFAULT_UID,
            verbose_logs: matches!(cfg.log.level.as_str(), "debug" | "trace"),
            runner_env: Vec::new(),
        },
        backend.clone(),
        egress.clone(),
        store.clone(),
        mount_policy(&cfg),
        cfg.mounts.home.clone(),
    ));
    let timezone: chrono_tz::Tz = cfg.timezone.parse().unwrap_or(chrono_tz::UTC);
    let queue = Queue::new(
        QueueSettings {
            mailbox_capacity: cfg.queue.mailbox_capacity as usize,
            max_concurrent_runs: cfg.runs.max_concurrent as usize,
            idle_timeout: Duration::from_secs(cfg.runs.idle_timeout_secs),
            retry: RetryPolicy {
                base: Duration::from_millis(cfg.queue.retry_base_ms),
                max_retries: cfg.queue.max_retries as usize,
                ..RetryPolicy::default()
            },
            shutdown_grace: Duration::from_secs(cfg.queue.shutdown_grace_secs),
            assistant_name: cfg.assistant_name.clone(),
        },
        store.clone(),
        launcher,
        Arc::new(router.clone()),
    );
    let groups = reload_groups(&store, &queue).await?;
    let scheduler = Scheduler::new(
        SchedulerSettings {
            timezone,
            ..SchedulerSettings::default()
        },
        queue.clone(),
        Clock::system(),
    );
    let scheduler_task = scheduler.start();

    let (stop_tx, stop_rx) = watch::channel(false);
    let effects = Arc::new(HostEffects {
        store: store.clone(),
        queue: queue.clone(),
        scheduler: scheduler.clone(),
        router: router.clone(),
        assistant_name: cfg.assistant_name.clone(),
        groups_root: data_dir.join("groups"),
        audit: audit.clone(),
    });
    let watcher = IpcWatcher::new(
        IpcLayout::new(data_dir.join("ipc")),
        effects,
        WatcherConfig {
            handler: HandlerConfig { timezone },
            max_file_bytes: cfg.ipc.max_file_bytes as usize,
            files_per_second: cfg.ipc.files_per_second as u32,
            queue_cap: cfg.ipc.queue_capacity as usize,
            ..WatcherConfig::default()
        },
    )?;
    let mut watcher_stop = stop_rx.clone();
    let watcher_task = tokio::spawn(watcher.run(async move {
        let _ = watcher_stop.wait_for(|s| *s).await;
    }));

    let control = match control::serve(
        control::socket_path(&cfg.run_dir),
        control::StatusSource::new(queue.clone(), egress.is_some()),
        stop_rx.clone(),
    ) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::warn!(cause = %e, "no control socket; `nanoclaw status` falls back to the database");
            None
        }
    };

    queue.recover();
    let watchdog =
        systemd::watchdog_interval().map(|i| tokio::spawn(systemd::watchdog(i, stop_rx.clone())));
    systemd::ready();
    tracing::info!(
        groups,
        ready_ms = started.elapsed().as_millis() as u64,
        credential = egress.is_some(),
        "nanoclaw ready"
    );

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // Overrides granted while no host ran, then on every SIGHUP (the CLI sends one) and tick.
    let applied = Applied::default();
    sync_overrides(egress.as_ref(), &store, &applied).await;
    let mut tick = tokio::time::interval(MAINTENANCE_TICK);
    #[cfg(feature = "whatsapp")]
    let shutdown = crate::host::whatsapp::or_link_end(shutdown, whatsapp.clone());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(inbound) = inbound_rx.recv() => {
                let m = inbound.message;
                let jid = m.chat_jid.clone();
                let registered = queue.has_group(&jid);
                let stored = store.call(move |s| s.store_inbound(&m, registered)).await;
                if let Err(e) = stored {
                    tracing::error!(chat = %jid, cause = %e, "inbound message not stored");
                    continue;
                }
                if registered {
                    if egress.is_none() {
                        let _ = router
                            .send(&jid, "No model credential is configured on this host: write ANTHROPIC_API_KEY=... \
                                  to the model credentials file (mode 600) and restart nanoclaw.".to_string())
                            .await;
                    }
                    queue.notify_messages(&jid);
                }
            }
            _ = hangup.recv() => {
                match reload_groups(&store, &queue).await {
                    Ok(n) => tracing::info!(groups = n, "reloaded groups and tasks (SIGHUP)"),
                    Err(e) => tracing::warn!(cause = %e, "reload failed"),
                }
                scheduler.tasks_changed();
                sync_overrides(egress.as_ref(), &store, &applied).await;
            }
            _ = tick.tick() => {
                if let Some(e) = &egress {
                    e.sweep_counters().await;
                }
                sync_overrides(egress.as_ref(), &store, &applied).await;
                let now = Instant::now();
                if let Err(e) = store.call(move |s| s.maybe_optimize(now)).await {
                    tracing::warn!(cause = %e, "PRAGMA optimize failed");
                }
                let stats = queue.stats();
                systemd::status(&format!(
                    "{} groups, {} active runs, {} runs started",
                    stats.groups, stats.active_runs, stats.runs_started
                ));
            }
        }
    }

    // Shutdown: stop intake, let live runs finish (grace), then stop everything else.
    systemd::stopping();
    tracing::info!("shutting down");
    let _ = local.disconnect().await;
    queue.shutdown().await;
    scheduler.stop();
    let _ = scheduler_task.await;
    let _ = stop_tx.send(true);
    let _ = watcher_task.await;
    if let Some(task) = control {
        let _ = task.await;
    }
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    if let Some(e) = &egress
        && let Err(err) = e.shutdown().await
    {
        tracing::warn!(cause = %err, "egress shutdown incomplete");
    }
    // Every audit sender lives in something dropped here (the queue holds the launcher, which holds the
    // egress); the writer drains what is queued and ends when the last sender is gone.
    drop(scheduler);
    drop(queue);
    drop(router);
    drop(egress);
    drop(audit);
    drop(inbound_tx);
    let joined = tokio::time::timeout(
        AUDIT_DRAIN_TIMEOUT,
        tokio::task::spawn_blocking(move || audit_writer.join()),
    )
    .await;
    if joined.is_err() {
        tracing::warn!("audit writer still busy at exit; unwritten events are in the log only");
    }
    if let Some(root) = runner_root
        && let Err(e) = root.unmount()
    {
        tracing::warn!(cause = %e, "runner image unmount failed");
    }
    let _ = std::fs::remove_file(pid_file(&cfg.run_dir));
    tracing::info!("stopped");
    #[cfg(feature = "whatsapp")]
    crate::host::whatsapp::finish(whatsapp).await?;
    Ok(())
}
