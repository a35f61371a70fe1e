//! The product's [`RunLauncher`]: one queue run becomes one sandboxed container with its group's mounts,
//! its own network namespace behind the egress proxy, the IPC directory for follow-ups, and fresh
//! snapshots (contract §7.5, §8.12).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::core::mount_policy::MountPolicy;
use crate::core::time::now_iso;
use crate::ipc::{self, IpcLayout};
use crate::net::Egress;
use crate::queue::{
    BoxFuture, RunControl, RunError, RunHandle, RunKind, RunLauncher, RunOutcome, RunSpec,
};
use crate::sandbox::mounts::{self, DataLayout, FsResolver};
use crate::sandbox::{
    self, Backend, ContainerSpec, KillSwitch, Limits, NetworkMode, RunEvent, RunLogSpec, RunStatus,
};
use crate::store::StoreHandle;

/// Path of the runner inside the image.
pub const RUNNER_PATH: &str = "/usr/bin/nanoclaw-runner";

/// Fixed parts of every run.
#[derive(Debug, Clone)]
pub struct LauncherSettings {
    pub data_dir: PathBuf,
    /// The mounted runner image (a directory).
    pub rootfs: PathBuf,
    pub limits: Limits,
    pub timeout: Duration,
    pub grace: Duration,
    pub output_cap: usize,
    pub uid: u32,
    pub gid: u32,
    /// Write full input and output into every run log (debug logging).
    pub verbose_logs: bool,
    /// Extra environment for the runner (model, limits); never a credential.
    pub runner_env: Vec<(String, String)>,
}

/// Launches runs through the sandbox backend.
pub struct SandboxLauncher {
    settings: LauncherSettings,
    backend: Arc<dyn Backend>,
    /// `None` when no model credential is configured: runs are refused with a clear reason.
    egress: Option<Arc<Egress>>,
    store: StoreHandle,
    mount_policy: Option<MountPolicy>,
    home: PathBuf,
    ipc: IpcLayout,
    seq: AtomicU64,
}

impl SandboxLauncher {
    pub fn new(
        settings: LauncherSettings,
        backend: Arc<dyn Backend>,
        egress: Option<Arc<Egress>>,
        store: StoreHandle,
        mount_policy: Option<MountPolicy>,
        home: PathBuf,
    ) -> Self {
        let ipc = IpcLayout::new(settings.data_dir.join("ipc"));
        Self {
            settings,
            backend,
            egress,
            store,
            mount_policy,
            home,
            ipc,
            seq: AtomicU64::new(0),
        }
    }

    fn run_id(&self, folder: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let ms = chrono::Utc::now().timestamp_millis();
        // Folder names are [a-z0-9-] (validated at registration), so the id is a valid container id.
        let short: String = folder.chars().take(32).collect();
        format!("{short}-{ms}-{n}")
    }

    /// Snapshots the runner reads: tasks before every run, groups before message runs (contract §8.12).
    async fn write_snapshots(&self, folder: &str, kind: RunKind) -> Result<(), RunError> {
        let fail = |e: String| RunError::Start(format!("snapshots for {folder}: {e}"));
        let (tasks, chats, groups) = self
            .store
            .call(|s| Ok((s.all_tasks()?, s.all_chats()?, s.all_groups()?)))
            .await
            .map_err(|e| fail(e.to_string()))?;
        self.ipc
            .ensure_group(folder)
            .map_err(|e| fail(e.to_string()))?;
        ipc::write_tasks_snapshot(&self.ipc, folder, &tasks).map_err(|e| fail(e.to_string()))?;
        if kind == RunKind::Message {
            let list = ipc::available_groups(&chats, &groups);
            ipc::write_groups_snapshot(&self.ipc, folder, &list, &now_iso())
                .map_err(|e| fail(e.to_string()))?;
        }
        ipc::clear_close(&self.ipc, folder).map_err(|e| fail(e.to_string()))?;
        Ok(())
    }

    async fn start_run(&self, spec: RunSpec) -> Result<RunHandle, RunError> {
        let Some(egress) = self.egress.clone() else {
            return Err(RunError::Start(
                "no model credential is configured: put ANTHROPIC_API_KEY=... in the file named by \
                 model.credentials_file (mode 600)"
                    .to_string(),
            ));
        };
        let folder = spec.group.folder.clone();
        let is_main = spec.group.is_main();
        self.write_snapshots(&folder, spec.kind).await?;

        let requested = spec
            .group
            .container_config
            .as_ref()
            .and_then(|c| c.additional_mounts.clone())
            .unwrap_or_default();
        let resolver = FsResolver {
            home: Some(self.home.clone()),
        };
        let extra =
            mounts::validate_additional(self.mount_policy.as_ref(), &requested, is_main, &resolver);
        let layout = DataLayout {
            data_dir: self.settings.data_dir.clone(),
        };
        let owner = (self.settings.uid, self.settings.gid);
        let binds = {
            let folder = folder.clone();
            tokio::task::spawn_blocking(move || {
                mounts::group_mounts(&layout, &folder, owner, &extra)
            })
            .await
            .map_err(|e| RunError::Start(e.to_string()))?
            .map_err(|e| RunError::Start(e.to_string()))?
        };

        let run_id = self.run_id(&folder);
        let net = egress
            .begin_run(&run_id, &folder)
            .await
            .map_err(|e| RunError::Start(format!("network for {run_id}: {e}")))?;

        let mut container =
            ContainerSpec::new(&self.settings.rootfs, vec![RUNNER_PATH.to_string()]);
        container.uid = self.settings.uid;
        container.gid = self.settings.gid;
        container.cwd = mounts::GROUP_MOUNT.to_string();
        container.mounts = binds;
        container.limits = self.settings.limits;
        container.network = NetworkMode::Join(net.link.netns_path());
        container.env = net.env.clone();
        container
            .env
            .extend(self.settings.runner_env.iter().cloned());
        container
            .env
            .push(("NANOCLAW_CHAT_JID".into(), spec.input.chat_jid.clone()));
        container
            .env
            .push(("NANOCLAW_GROUP_FOLDER".into(), folder.clone()));
        container.env.push((
            "NANOCLAW_IS_MAIN".into(),
            if is_main { "1" } else { "0" }.into(),
        ));

        let mut input =
            serde_json::to_vec(&spec.input).map_err(|e| RunError::Start(e.to_string()))?;
        input.push(b'\n');
        let group_timeout = spec
            .group
            .container_config
            .as_ref()
            .and_then(|c| c.timeout.as_ref())
            .and_then(|t| t.as_u64())
            .map(Duration::from_millis);
        let mut run = sandbox::RunSpec::new(run_id.clone(), container);
        run.input = input;
        // Smaller per-group timeouts are honoured too (contract §12.6).
        run.timeout =
            group_timeout.map_or(self.settings.timeout, |t| t.max(Duration::from_secs(10)));
        run.grace = self.settings.grace;
        run.output_cap = self.settings.output_cap;
        run.log = Some(RunLogSpec {
            group_dir: self.settings.data_dir.join("groups").join(&folder),
            group_name: spec.group.name.clone(),
            is_main,
            verbose: self.settings.verbose_logs,
        });

        let handle = match self.backend.start(run).await {
            Ok(h) => h,
            Err(e) => {
                let _ = egress.end_run(&run_id).await;
                return Err(RunError::Start(sandbox::error_chain(&e)));
            }
        };
        let kill = handle.kill_switch();
        let (frames_tx, frames_rx) = mpsc::channel(sandbox::EVENT_CHANNEL_CAPACITY);
        let (outcome_tx, outcome_rx) = oneshot::channel();
        // Ends with the run: the queue observes it through `outcome`, and the network is torn down
        // before the outcome is reported, so a finished run never holds a namespace.
        tokio::spawn(forward(
            handle,
            frames_tx,
            outcome_tx,
            egress,
            run_id.clone(),
            (self.ipc.clone(), folder.clone()),
        ));
        Ok(RunHandle {
            frames: frames_rx,
            outcome: outcome_rx,
            control: Box::new(Control {
                ipc: self.ipc.clone(),
                folder,
                kill,
            }),
        })
    }
}

async fn forward(
    mut handle: sandbox::RunHandle,
    frames: mpsc::Sender<crate::core::wire::OutputFrame>,
    outcome: oneshot::Sender<RunOutcome>,
    egress: Arc<Egress>,
    run_id: String,
    (ipc, folder): (IpcLayout, String),
) {
    let mut result = RunOutcome::Error("run ended without an outcome".to_string());
    while let Some(event) = handle.next_event().await {
        match event {
            RunEvent::Frame(frame) => {
                // The queue stopped listening (shutdown); keep draining so the run can finish.
                let _ = frames.send(frame).await;
            }
            RunEvent::MalformedFrame(why) => tracing::warn!(run = %run_id, %why, "frame skipped"),
            RunEvent::Started => tracing::debug!(run = %run_id, "run started"),
            RunEvent::Finished(o) => {
                result = match &o.status {
                    RunStatus::Exited(0) => RunOutcome::Success,
                    RunStatus::Exited(code) => RunOutcome::Error(format!(
                        "runner exited with code {code}: {}",
                        o.stderr.tail_chars(200)
                    )),
                    other => RunOutcome::Error(format!("run {run_id}: {other:?}")),
                };
                tracing::info!(run = %run_id, status = ?o.status, duration_ms = o.duration.as_millis() as u64, frames = o.frames, "run finished");
                break;
            }
        }
    }
    drop(frames);
    if let Err(e) = egress.end_run(&run_id).await {
        tracing::warn!(run = %run_id, cause = %e, "run network teardown failed");
    }
    if matches!(result, RunOutcome::Error(_)) {
        settle_ipc(&ipc, &folder, &run_id).await;
    }
    let _ = outcome.send(result);
}

/// How long a failed run's outcome waits for the watcher to apply the commands the run left.
const IPC_SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// Waits (bounded) until the watcher has applied the command files a failed run wrote just before it
/// ended, so a message it sent counts as output and the run is not retried (contract §12.15).
async fn settle_ipc(ipc: &IpcLayout, folder: &str, run_id: &str) {
    let deadline = tokio::time::Instant::now() + IPC_SETTLE_LIMIT;
    while ipc.has_pending_commands(folder) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(run = %run_id, %folder, "IPC commands still pending when the failed run is settled");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Control {
    ipc: IpcLayout,
    folder: String,
    kill: KillSwitch,
}

impl RunControl for Control {
    fn send_input(&mut self, text: String) -> BoxFuture<'_, Result<(), RunError>> {
        Box::pin(async move {
            ipc::pipe_input(&self.ipc, &self.folder, &text)
                .map(|_| ())
                .map_err(|e| RunError::Input(e.to_string()))
        })
    }

    fn close_input(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = ipc::write_close(&self.ipc, &self.folder) {
                tracing::warn!(folder = %self.folder, cause = %e, "cannot write _close");
            }
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.kill.kill() })
    }
}

impl RunLauncher for SandboxLauncher {
    fn start(&self, spec: RunSpec) -> BoxFuture<'_, Result<RunHandle, RunError>> {
        Box::pin(self.start_run(spec))
    }
}
