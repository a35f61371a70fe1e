//! The libcontainer backend, host side: spawns one `nanoclaw sandbox-exec` helper per run (never
//! calls libcontainer itself — this side lives in the multi-threaded tokio host), feeds the input,
//! parses frames as they arrive, enforces the timeout, and turns the helper's report into a
//! [`RunOutcome`].

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::process::{Child, Command as TokioCommand};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

use super::cgroup::{CgroupHost, DEFAULT_CGROUP_ROOT};
use super::output::{BoundedCapture, FrameParser, LineSplitter, ParsedFrame};
use super::protocol::{
    CONTROL_FD, Command, Event, MAX_LINE_BYTES, ProcessExit, Request, RunRequest, StageTimings,
    valid_run_id,
};
use super::runlog::{self, RunLogData};
use super::{
    Backend, BoxFuture, EVENT_CHANNEL_CAPACITY, HELPER_SUBCOMMAND, KillSwitch, OrphanReport,
    RunEvent, RunHandle, RunOutcome, RunSpec, RunStatus, SandboxError, StopRequest, seccomp, spec,
};

/// Default directory for per-run state.
pub const DEFAULT_STATE_ROOT: &str = "/run/nanoclaw/sandbox";
/// Default cgroup parent of runs.
pub const DEFAULT_CGROUP_PARENT: &str = "nanoclaw";
/// Default filter for the helper's diagnostics: libcgroups warns about absent optional
/// controllers on every run, and libcontainer about the seccomp feature we replace.
pub const DEFAULT_HELPER_LOG_FILTER: &str = "warn,libcgroups=error,libcontainer=error";

/// How long the helper may take beyond the grace period to report after a stop.
const HELPER_SLACK: Duration = Duration::from_secs(15);
/// After the helper is gone, how long to keep reading output and reports.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest stderr line logged as one event.
const STDERR_LINE_MAX: usize = 4096;
/// How long an orphan sweep may take.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Configuration of [`LibcontainerBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibcontainerConfig {
    /// The binary re-executed as `sandbox-exec`. `/proc/self/exe` (the default) is the running
    /// binary even after its file was replaced by an update.
    pub helper_exe: PathBuf,
    /// Per-run state: `<state_root>/<run_id>/` (tmpfs; root-only).
    pub state_root: PathBuf,
    /// cgroup parent of the runs (`<parent>/<run_id>`).
    pub cgroup_parent: String,
    /// The cgroup root to probe.
    pub cgroup_root: PathBuf,
    /// `tracing` filter for the helper's diagnostics.
    pub helper_log_filter: String,
}

impl Default for LibcontainerConfig {
    fn default() -> Self {
        Self {
            helper_exe: PathBuf::from("/proc/self/exe"),
            state_root: PathBuf::from(DEFAULT_STATE_ROOT),
            cgroup_parent: DEFAULT_CGROUP_PARENT.into(),
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
            helper_log_filter: DEFAULT_HELPER_LOG_FILTER.into(),
        }
    }
}

/// Runs workloads with youki's libcontainer through `sandbox-exec` helpers.
#[derive(Debug, Clone)]
pub struct LibcontainerBackend {
    cfg: Arc<LibcontainerConfig>,
    cgroups: Arc<CgroupHost>,
    live: Arc<AtomicUsize>,
}

impl LibcontainerBackend {
    /// Checks the host can sandbox at all — root, every required cgroup controller (fail closed,
    /// naming the kernel parameter), a seccomp profile for this architecture — and returns the
    /// backend. Reads files only; nothing is created until the first run.
    pub fn new(cfg: LibcontainerConfig) -> Result<Self, SandboxError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            return Err(SandboxError::NotRoot(euid));
        }
        if !cfg
            .cgroup_parent
            .split('/')
            .filter(|p| !p.is_empty())
            .all(valid_run_id)
            || cfg.cgroup_parent.trim_matches('/').is_empty()
        {
            return Err(SandboxError::Protocol(format!(
                "invalid cgroup parent {:?}",
                cfg.cgroup_parent
            )));
        }
        let cgroups = CgroupHost::probe_system(&cfg.cgroup_root)?;
        info!(mode = ?cgroups.mode, swap_limit = cgroups.swap_limit, "sandbox cgroup layout");
        seccomp::compile(seccomp::native_arch()?)?;
        Ok(Self {
            cfg: Arc::new(cfg),
            cgroups: Arc::new(cgroups),
            live: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &LibcontainerConfig {
        &self.cfg
    }

    /// The probed cgroup layout.
    pub fn cgroup_host(&self) -> &CgroupHost {
        &self.cgroups
    }

    /// Runs whose supervisor has not finished yet.
    pub fn live_runs(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    async fn start_run(&self, spec: RunSpec) -> Result<RunHandle, SandboxError> {
        if !valid_run_id(&spec.run_id) {
            return Err(SandboxError::RunId(spec.run_id));
        }
        spec::validate(&spec.container)?;
        let request = Request::Run(Box::new(RunRequest {
            run_id: spec.run_id.clone(),
            state_root: self.cfg.state_root.clone(),
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            cgroup_root: self.cfg.cgroup_root.clone(),
            container: spec.container.clone(),
            log_filter: self.cfg.helper_log_filter.clone(),
        }));
        let (child, control) = spawn_helper(&self.cfg.helper_exe, &request, true).await?;
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let (kill, stop_rx) = KillSwitch::new();
        let handle = RunHandle::new(spec.run_id.clone(), rx, kill);
        let guard = LiveGuard::new(self.live.clone());
        let backend = self.clone();
        tokio::spawn(Supervisor::new(backend, spec, tx, guard).run(child, control, stop_rx));
        Ok(handle)
    }

    async fn sweep(&self) -> Result<OrphanReport, SandboxError> {
        let request = Request::CleanupOrphans {
            state_root: self.cfg.state_root.clone(),
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            cgroup_root: self.cfg.cgroup_root.clone(),
        };
        let (mut child, control) = spawn_helper(&self.cfg.helper_exe, &request, false).await?;
        let (mut read, _write) = control.into_split();
        let mut lines = LineBuf::default();
        let result = tokio::time::timeout(SWEEP_TIMEOUT, async {
            let mut buf = [0u8; 8192];
            loop {
                let n = read.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return Err(SandboxError::Protocol(
                        "orphan sweep ended without a report".into(),
                    ));
                }
                for line in lines.push(&buf[..n])? {
                    match serde_json::from_slice::<Event>(&line) {
                        Ok(Event::Cleaned {
                            removed,
                            busy,
                            errors,
                        }) => {
                            return Ok(OrphanReport {
                                removed,
                                busy,
                                errors,
                            });
                        }
                        Ok(Event::Log { level, line }) => log_helper_line("sweep", &level, &line),
                        Ok(Event::Failed { reason, .. }) => {
                            return Err(SandboxError::Protocol(reason));
                        }
                        Ok(other) => debug!(?other, "unexpected sweep event"),
                        Err(e) => warn!(%e, "bad sweep line"),
                    }
                }
            }
        })
        .await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        let report =
            result.map_err(|_| SandboxError::Protocol("orphan sweep timed out".into()))??;
        if !report.removed.is_empty() || !report.errors.is_empty() {
            warn!(removed = ?report.removed, errors = ?report.errors, busy = ?report.busy, "orphaned runs swept");
        }
        Ok(report)
    }
}

impl Backend for LibcontainerBackend {
    fn start(&self, spec: RunSpec) -> BoxFuture<'_, Result<RunHandle, SandboxError>> {
        Box::pin(self.start_run(spec))
    }

    fn cleanup_orphans(&self) -> BoxFuture<'_, Result<OrphanReport, SandboxError>> {
        Box::pin(self.sweep())
    }
}

struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Spawns the helper with the control socket on fd 3 and sends the request. `stdio` gives it
/// pipes for the workload; otherwise /dev/null.
async fn spawn_helper(
    exe: &Path,
    request: &Request,
    stdio: bool,
) -> Result<(Child, UnixStream), SandboxError> {
    let helper_err = |err| SandboxError::Helper {
        path: exe.to_path_buf(),
        err,
    };
    // std creates both ends close-on-exec; only the child's dup onto fd 3 survives its exec.
    let (host_end, helper_end) = std::os::unix::net::UnixStream::pair().map_err(helper_err)?;
    let helper_fd = helper_end.as_raw_fd();
    let mut cmd = TokioCommand::new(exe);
    cmd.arg(HELPER_SUBCOMMAND)
        .env_clear()
        .current_dir("/")
        // Own process group: a terminal's ^C must not kill helpers behind the host's back.
        .process_group(0)
        .kill_on_drop(false);
    if stdio {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) are made, on fds
    // that exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            if helper_fd == CONTROL_FD {
                if libc::fcntl(CONTROL_FD, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(helper_fd, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(helper_err)?;
    drop(helper_end);
    host_end.set_nonblocking(true).map_err(helper_err)?;
    let mut control = UnixStream::from_std(host_end).map_err(helper_err)?;
    let mut line =
        serde_json::to_vec(request).map_err(|e| SandboxError::Protocol(e.to_string()))?;
    line.push(b'\n');
    control.write_all(&line).await.map_err(helper_err)?;
    Ok((child, control))
}

/// Splits the control stream into lines, bounded by [`MAX_LINE_BYTES`].
#[derive(Default)]
struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, SandboxError> {
        self.buf.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            lines.push(line);
        }
        if self.buf.len() > MAX_LINE_BYTES {
            self.buf.clear();
            return Err(SandboxError::Protocol("helper line too long".into()));
        }
        Ok(lines)
    }
}

fn log_helper_line(run_id: &str, level: &str, line: &str) {
    match level {
        "ERROR" => error!(run = run_id, "helper: {line}"),
        "WARN" => warn!(run = run_id, "helper: {line}"),
        "INFO" => info!(run = run_id, "helper: {line}"),
        _ => debug!(run = run_id, "helper: {line}"),
    }
}

async fn read_some<R: AsyncRead + Unpin>(src: &mut Option<R>, buf: &mut [u8]) -> usize {
    match src {
        Some(r) => r.read(buf).await.unwrap_or(0),
        None => 0,
    }
}

/// The per-run task: everything between spawn and [`RunEvent::Finished`].
struct Supervisor {
    backend: LibcontainerBackend,
    spec: RunSpec,
    tx: mpsc::Sender<RunEvent>,
    started_at: Instant,
    deadline: Instant,
    parser: FrameParser,
    stdout: BoundedCapture,
    stderr: BoundedCapture,
    stderr_lines: LineSplitter,
    frames: usize,
    new_session_id: Option<String>,
    timed_out: bool,
    stop_requested: bool,
    final_event: Option<Event>,
    lost: Option<String>,
    started: bool,
    live: Option<LiveGuard>,
}

impl Supervisor {
    fn new(
        backend: LibcontainerBackend,
        spec: RunSpec,
        tx: mpsc::Sender<RunEvent>,
        live: LiveGuard,
    ) -> Self {
        let started_at = Instant::now();
        Self {
            deadline: started_at + spec.timeout,
            parser: FrameParser::new(spec.max_frame_bytes),
            stdout: BoundedCapture::new(spec.output_cap),
            stderr: BoundedCapture::new(spec.output_cap),
            stderr_lines: LineSplitter::new(STDERR_LINE_MAX),
            backend,
            spec,
            tx,
            started_at,
            frames: 0,
            new_session_id: None,
            timed_out: false,
            stop_requested: false,
            final_event: None,
            lost: None,
            started: false,
            live: Some(live),
        }
    }

    async fn emit(&self, ev: RunEvent) {
        // A dropped receiver only means nobody listens; the run still finishes and cleans up.
        let _ = self.tx.send(ev).await;
    }

    async fn command(&self, w: &mut OwnedWriteHalf, cmd: Command) {
        if let Ok(mut line) = serde_json::to_vec(&cmd) {
            line.push(b'\n');
            if let Err(e) = w.write_all(&line).await {
                debug!(run = %self.spec.run_id, %e, "control write failed");
            }
        }
    }

    fn grace_ms(&self) -> u64 {
        u64::try_from(self.spec.grace.as_millis()).unwrap_or(u64::MAX)
    }

    async fn on_stdout(&mut self, chunk: &[u8]) {
        if self.stdout.push(chunk) {
            warn!(run = %self.spec.run_id, cap = self.spec.output_cap, "stdout truncated");
        }
        for parsed in self.parser.push(chunk) {
            match parsed {
                ParsedFrame::Frame(frame) => {
                    self.frames += 1;
                    if let Some(id) = &frame.new_session_id {
                        self.new_session_id = Some(id.clone());
                    }
                    if !self.timed_out {
                        // contract §7.9: every parsed frame restarts the hard timeout.
                        self.deadline = Instant::now() + self.spec.timeout;
                    }
                    self.emit(RunEvent::Frame(frame)).await;
                }
                ParsedFrame::Malformed(why) => {
                    warn!(run = %self.spec.run_id, %why, "skipping output frame");
                    self.emit(RunEvent::MalformedFrame(why)).await;
                }
            }
        }
    }

    fn on_stderr(&mut self, chunk: &[u8]) {
        if self.stderr.push(chunk) {
            warn!(run = %self.spec.run_id, cap = self.spec.output_cap, "stderr truncated");
        }
        for line in self.stderr_lines.push(chunk) {
            debug!(run = %self.spec.run_id, "stderr: {line}");
        }
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Created { pid, cgroup } => {
                debug!(run = %self.spec.run_id, pid, %cgroup, "container created")
            }
            Event::Started => {
                self.started = true;
                self.emit(RunEvent::Started).await
            }
            Event::Log { level, line } => log_helper_line(&self.spec.run_id, &level, &line),
            Event::Exited { .. } | Event::Failed { .. } => self.final_event = Some(ev),
            Event::Cleaned { .. } => debug!("unexpected cleaned event"),
        }
    }

    async fn run(
        mut self,
        mut child: Child,
        control: UnixStream,
        mut stop_rx: watch::Receiver<Option<StopRequest>>,
    ) {
        let (mut ctl_r, mut ctl_w) = control.into_split();
        let mut ctl_lines = LineBuf::default();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let input = std::mem::take(&mut self.spec.input);
        let mut stdin = child.stdin.take();
        let mut stdin_fut = Box::pin(async move {
            if let Some(s) = stdin.as_mut() {
                // EPIPE just means the workload did not read its input.
                let _ = s.write_all(&input).await;
                let _ = s.shutdown().await;
            }
            drop(stdin); // EOF for the workload (contract §7.7)
        });
        let (mut out_buf, mut err_buf, mut ctl_buf) = ([0u8; 16384], [0u8; 8192], [0u8; 8192]);
        let (mut stdin_done, mut out_eof, mut err_eof, mut ctl_eof) = (false, false, false, false);
        let mut stop_open = true;
        let mut child_status = None;
        let mut helper_deadline: Option<Instant> = None;
        let mut drain_deadline: Option<Instant> = None;

        loop {
            let done_reading = out_eof && err_eof && ctl_eof;
            if child_status.is_some()
                && (done_reading || self.final_event.is_some() && out_eof && err_eof)
            {
                break;
            }
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                _ = &mut stdin_fut, if !stdin_done => stdin_done = true,
                // Output only exists after exec; waiting for `started` keeps that event first.
                n = read_some(&mut stdout, &mut out_buf), if !out_eof && (self.started || self.final_event.is_some() || child_status.is_some()) => {
                    if n == 0 { out_eof = true } else { self.on_stdout(&out_buf[..n]).await }
                }
                n = read_some(&mut stderr, &mut err_buf), if !err_eof => {
                    if n == 0 { err_eof = true } else { self.on_stderr(&err_buf[..n]) }
                }
                r = ctl_r.read(&mut ctl_buf), if !ctl_eof => {
                    match r {
                        Ok(0) | Err(_) => ctl_eof = true,
                        Ok(n) => match ctl_lines.push(&ctl_buf[..n]) {
                            Ok(lines) => for line in lines {
                                match serde_json::from_slice::<Event>(&line) {
                                    Ok(ev) => self.on_event(ev).await,
                                    Err(e) => warn!(run = %self.spec.run_id, %e, "bad helper line"),
                                }
                            },
                            Err(e) => {
                                warn!(run = %self.spec.run_id, %e, "dropping helper output");
                            }
                        },
                    }
                }
                st = child.wait(), if child_status.is_none() => {
                    child_status = Some(st);
                    drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                }
                _ = sleep_until(self.deadline), if !self.timed_out && self.final_event.is_none() => {
                    warn!(run = %self.spec.run_id, timeout = ?self.spec.timeout, "run timed out; stopping it");
                    self.timed_out = true;
                    self.command(&mut ctl_w, Command::Terminate { grace_ms: self.grace_ms() }).await;
                    helper_deadline = Some(Instant::now() + self.spec.grace + HELPER_SLACK);
                }
                r = stop_rx.changed(), if stop_open => {
                    if r.is_err() { stop_open = false; continue; }
                    let req = *stop_rx.borrow_and_update();
                    if let Some(req) = req {
                        self.stop_requested = true;
                        let cmd = match req {
                            StopRequest::Terminate => Command::Terminate { grace_ms: self.grace_ms() },
                            StopRequest::Kill => Command::Kill,
                        };
                        self.command(&mut ctl_w, cmd).await;
                        let extra = if req == StopRequest::Kill { Duration::ZERO } else { self.spec.grace };
                        let d = Instant::now() + extra + HELPER_SLACK;
                        helper_deadline = Some(helper_deadline.map_or(d, |old| old.min(d)));
                    }
                }
                _ = sleep_until(helper_deadline.unwrap_or(far)), if helper_deadline.is_some() && self.final_event.is_none() => {
                    error!(run = %self.spec.run_id, "helper did not finish after a stop; killing it");
                    self.lost = Some("the helper did not finish after a stop request".into());
                    let _ = child.start_kill();
                    helper_deadline = None;
                }
                _ = sleep_until(drain_deadline.unwrap_or(far)), if drain_deadline.is_some() => {
                    // The helper is gone; output still open means a workload outlived it.
                    out_eof = true;
                    err_eof = true;
                    ctl_eof = true;
                }
            }
        }
        drop(ctl_w);
        self.finish().await;
    }

    async fn finish(mut self) {
        let lines = std::mem::replace(&mut self.stderr_lines, LineSplitter::new(1));
        if let Some(tail) = lines.finish() {
            debug!(run = %self.spec.run_id, "stderr: {tail}");
        }
        let mut cleanup_error = None;
        let mut oom_kills = 0;
        let mut helper_max_rss_kib = 0;
        let mut stage_timings = StageTimings::default();
        let status = match self.final_event.take() {
            Some(Event::Failed {
                reason,
                cleanup_error: c,
            }) => {
                cleanup_error = c;
                RunStatus::FailedToStart(reason)
            }
            Some(Event::Exited {
                exit,
                oom_kills: o,
                escalated,
                host_lost,
                cleanup_error: c,
                helper_max_rss_kib: rss,
                timings,
            }) => {
                stage_timings = timings;
                cleanup_error = c;
                oom_kills = o;
                helper_max_rss_kib = rss;
                debug!(run = %self.spec.run_id, ?exit, escalated, host_lost, "run exited");
                if self.timed_out {
                    RunStatus::Timeout
                } else if o > 0 && exit != ProcessExit::Code(0) {
                    RunStatus::Oom
                } else {
                    match exit {
                        ProcessExit::Code(c) => RunStatus::Exited(c),
                        ProcessExit::Signal(s) => RunStatus::Killed(s),
                    }
                }
            }
            _ => {
                let why = self
                    .lost
                    .take()
                    .unwrap_or_else(|| "the sandbox helper exited without a report".into());
                error!(run = %self.spec.run_id, %why, "lost the run; sweeping orphans");
                if let Err(e) = self.backend.sweep().await {
                    cleanup_error = Some(e.to_string());
                }
                RunStatus::Lost(why)
            }
        };
        if let Some(e) = &cleanup_error {
            error!(run = %self.spec.run_id, error = %e, "sandbox cleanup incomplete");
        }
        let mut outcome = RunOutcome {
            run_id: self.spec.run_id.clone(),
            status,
            duration: self.started_at.elapsed(),
            frames: self.frames,
            new_session_id: self.new_session_id.take(),
            stdout: std::mem::replace(&mut self.stdout, BoundedCapture::new(0)).finish(),
            stderr: std::mem::replace(&mut self.stderr, BoundedCapture::new(0)).finish(),
            oom_kills,
            log_file: None,
            stop_requested: self.stop_requested,
            cleanup_error,
            helper_max_rss_kib,
            stage_timings,
        };
        if let Some(log) = self.spec.log.clone() {
            let data = RunLogData::new(&self.spec, &outcome);
            match tokio::task::spawn_blocking(move || runlog::write(&log, &data)).await {
                Ok(Ok(path)) => outcome.log_file = Some(path),
                Ok(Err(e)) => warn!(run = %self.spec.run_id, error = %e, "run log not written"),
                Err(e) => warn!(run = %self.spec.run_id, error = %e, "run log task failed"),
            }
        }
        // Everything is cleaned up: the run no longer counts as live once its outcome is out.
        self.live.take();
        self.emit(RunEvent::Finished(outcome)).await;
    }
}
