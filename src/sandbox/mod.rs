//! Sandboxed agent runs: the [`Backend`] trait and its libcontainer implementation.
//!
//! A run is described by a [`RunSpec`] (image, command, mounts, env, uid/gid, limits, network
//! namespace, input, timeout). [`Backend::start`] returns a [`RunHandle`] that streams
//! [`RunEvent`]s — output frames as they are parsed, then one [`RunEvent::Finished`] carrying the
//! [`RunOutcome`] with a structured [`RunStatus`].
//!
//! Layout:
//! - `spec.rs`: [`ContainerSpec`] and the pure OCI spec generation;
//! - `cgroup.rs`: v1/v2 detection, fail-closed controller checks, limit read-back, OOM counter;
//! - `seccomp.rs`, `executor.rs`: the seccomp profile and the executor that installs it and
//!   resets signals right before `execve`;
//! - `helper.rs`: `nanoclaw sandbox-exec`, the single-threaded process that drives libcontainer;
//! - `protocol.rs`: host ↔ helper lines;
//! - `libcontainer.rs`: [`LibcontainerBackend`], the async host side (spawns helpers, streams
//!   output, timeouts, run log);
//! - `output.rs`: frame parser and bounded capture; `runlog.rs`: the per-run log file;
//! - `image.rs`: the runner image as the runs' root (a directory, or a squashfs/erofs loop mount);
//! - `mounts.rs`: the group mount table (contract §7.4) and additional mounts through
//!   [`crate::core::mount_policy`];
//! - `bench.rs`: `nanoclaw bench sandbox`.

pub mod bench;
pub mod cgroup;
pub mod executor;
pub mod helper;
pub mod image;
pub mod libcontainer;
pub mod mounts;
pub mod output;
pub mod protocol;
pub mod runlog;
pub mod seccomp;
pub mod spec;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::core::wire::OutputFrame;

pub use self::libcontainer::{LibcontainerBackend, LibcontainerConfig};
pub use self::output::CapturedOutput;
pub use self::spec::{BindMount, ContainerSpec, Limits, NetworkMode};

/// The hidden subcommand that runs [`helper::main`]; dispatch it before anything starts a thread.
pub const HELPER_SUBCOMMAND: &str = "sandbox-exec";

/// Default wall-clock timeout of a run (restarted by every output frame).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default grace between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Capacity of a run's event channel; a slow consumer slows the run's output, never loses it.
pub const EVENT_CHANNEL_CAPACITY: usize = 64;

/// A boxed future, so [`Backend`] stays object-safe (`Arc<dyn Backend>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors of the sandbox module.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The run spec was refused before anything was created.
    #[error("invalid run spec: {0}")]
    Spec(#[from] spec::SpecError),
    /// The run id is not `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid run id {0:?}")]
    RunId(String),
    /// This host cannot enforce the limits (fail closed).
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// The seccomp profile cannot be built for this host.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// The sandbox needs root (libcontainer's rootless mode is not supported).
    #[error("the sandbox must run as root (euid {0})")]
    NotRoot(u32),
    /// The helper process could not be spawned or talked to.
    #[error("sandbox helper {path}: {err}")]
    Helper {
        /// The helper executable.
        path: PathBuf,
        /// What went wrong.
        err: std::io::Error,
    },
    /// The helper answered something unexpected.
    #[error("sandbox helper protocol: {0}")]
    Protocol(String),
    /// Filesystem error with its path.
    #[error("{path}: {err}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        err: std::io::Error,
    },
}

/// Formats an error with its whole `source()` chain (libcontainer nests the useful part).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Where and how to write the per-run log file (contract §7.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLogSpec {
    /// The group's folder on the host (`groups/<folder>`). The log goes to its `logs/` subdir,
    /// which is opened without following symlinks: the run can write in this folder.
    pub group_dir: PathBuf,
    /// Group name for the header.
    pub group_name: String,
    /// Whether the group is main.
    pub is_main: bool,
    /// Write input, mounts and full output even on success (debug logging).
    pub verbose: bool,
}

/// One run to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Unique id (`[A-Za-z0-9_-]{1,64}`): names the state dir, cgroup and container.
    pub run_id: String,
    /// What runs inside.
    pub container: ContainerSpec,
    /// Bytes written to the workload's stdin, which is then closed (contract §7.7).
    pub input: Vec<u8>,
    /// Wall-clock limit; starts at spawn and restarts at every parsed frame (contract §7.13).
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL when the run is stopped.
    pub grace: Duration,
    /// Bytes of stdout and of stderr kept for the outcome and the log (each).
    pub output_cap: usize,
    /// Largest accepted frame payload.
    pub max_frame_bytes: usize,
    /// The per-run log file, if wanted.
    pub log: Option<RunLogSpec>,
}

impl RunSpec {
    /// A spec with default timeout, grace, caps and no log file.
    pub fn new(run_id: impl Into<String>, container: ContainerSpec) -> Self {
        Self {
            run_id: run_id.into(),
            container,
            input: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            grace: DEFAULT_GRACE,
            output_cap: output::DEFAULT_OUTPUT_CAP_BYTES,
            max_frame_bytes: output::DEFAULT_MAX_FRAME_BYTES,
            log: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// The workload exited with this code.
    Exited(i32),
    /// The workload's init was killed by this signal (not by the timeout or the OOM killer).
    Killed(i32),
    /// The kernel OOM-killed a process of the run and the run did not exit cleanly.
    Oom,
    /// The timeout fired and the run was stopped (SIGTERM, grace, SIGKILL).
    Timeout,
    /// The run never reached its workload (bad spec on the host, missing limits, exec failure…).
    FailedToStart(String),
    /// Supervision was lost (the helper died); the orphan sweep has cleaned up after it.
    Lost(String),
}

/// Everything known about a finished run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run id.
    pub run_id: String,
    /// How it ended.
    pub status: RunStatus,
    /// From spawn to the end of cleanup.
    pub duration: Duration,
    /// Frames parsed (valid ones).
    pub frames: usize,
    /// The last `newSessionId` seen in a frame.
    pub new_session_id: Option<String>,
    /// Captured stdout (bounded).
    pub stdout: CapturedOutput,
    /// Captured stderr (bounded).
    pub stderr: CapturedOutput,
    /// Processes the kernel OOM-killed in the run's cgroup.
    pub oom_kills: u64,
    /// The per-run log file, if one was written.
    pub log_file: Option<PathBuf>,
    /// Whether the caller asked for the run to be stopped.
    pub stop_requested: bool,
    /// Anything cleanup could not remove (also logged).
    pub cleanup_error: Option<String>,
    /// The helper process's peak RSS in KiB.
    pub helper_max_rss_kib: u64,
    /// Where the time went inside the helper (zero if it did not report).
    pub stage_timings: protocol::StageTimings,
}

/// What a run reports while it runs.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The workload was exec'd inside its sandbox.
    Started,
    /// An output frame, in stream order.
    Frame(OutputFrame),
    /// A frame that was skipped (bad JSON, too long); the text says why.
    MalformedFrame(String),
    /// The run is over and cleaned up; always the last event.
    Finished(RunOutcome),
}

/// A stop request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// SIGTERM, then SIGKILL after the run's grace period.
    Terminate,
    /// SIGKILL now.
    Kill,
}

/// Stops a run from anywhere (cloneable, idempotent; `Kill` wins over `Terminate`).
#[derive(Debug, Clone)]
pub struct KillSwitch(Arc<watch::Sender<Option<StopRequest>>>);

impl KillSwitch {
    /// A switch and the receiver a backend watches.
    pub fn new() -> (Self, watch::Receiver<Option<StopRequest>>) {
        let (tx, rx) = watch::channel(None);
        (Self(Arc::new(tx)), rx)
    }

    /// Graceful stop: SIGTERM, grace, SIGKILL.
    pub fn terminate(&self) {
        self.0.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(StopRequest::Terminate);
                true
            } else {
                false
            }
        });
    }

    /// Immediate SIGKILL.
    pub fn kill(&self) {
        self.0.send_if_modified(|cur| {
            let changed = *cur != Some(StopRequest::Kill);
            *cur = Some(StopRequest::Kill);
            changed
        });
    }
}

/// A live run. Dropping it before [`RunEvent::Finished`] kills the run (its supervisor still
/// cleans up).
#[derive(Debug)]
pub struct RunHandle {
    run_id: String,
    events: mpsc::Receiver<RunEvent>,
    kill: KillSwitch,
    finished: bool,
}

impl RunHandle {
    /// Wraps a backend's event stream; the backend stops the run when `kill` fires.
    pub fn new(run_id: String, events: mpsc::Receiver<RunEvent>, kill: KillSwitch) -> Self {
        Self {
            run_id,
            events,
            kill,
            finished: false,
        }
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The next event; `None` after [`RunEvent::Finished`].
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        if self.finished {
            return None;
        }
        let ev = self.events.recv().await;
        if matches!(ev, Some(RunEvent::Finished(_)) | None) {
            self.finished = true;
        }
        ev
    }

    /// A switch that stops this run from elsewhere.
    pub fn kill_switch(&self) -> KillSwitch {
        self.kill.clone()
    }

    /// Drains the remaining events and returns the outcome.
    pub async fn wait(mut self) -> RunOutcome {
        while let Some(ev) = self.next_event().await {
            if let RunEvent::Finished(outcome) = ev {
                return outcome;
            }
        }
        RunOutcome {
            run_id: self.run_id.clone(),
            status: RunStatus::Lost("the backend ended without an outcome".into()),
            duration: Duration::ZERO,
            frames: 0,
            new_session_id: None,
            stdout: CapturedOutput::default(),
            stderr: CapturedOutput::default(),
            oom_kills: 0,
            log_file: None,
            stop_requested: false,
            cleanup_error: None,
            helper_max_rss_kib: 0,
            stage_timings: Default::default(),
        }
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        if !self.finished {
            self.kill.kill();
        }
    }
}

/// What an orphan sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanReport {
    /// Run ids whose leftovers were removed.
    pub removed: Vec<String>,
    /// Run ids still owned by a live helper.
    pub busy: Vec<String>,
    /// Problems, one line per run.
    pub errors: Vec<String>,
}

/// Runs workloads in sandboxes (architecture §4). Object-safe: hold it as `Arc<dyn Backend>`.
pub trait Backend: Send + Sync {
    /// Starts a run. Errors here mean nothing was started; problems after that are reported in
    /// the outcome's [`RunStatus`].
    fn start(&self, spec: RunSpec) -> BoxFuture<'_, Result<RunHandle, SandboxError>>;

    /// Removes what runs of a crashed host left behind. Call once at startup, before any run.
    fn cleanup_orphans(&self) -> BoxFuture<'_, Result<OrphanReport, SandboxError>>;
}
