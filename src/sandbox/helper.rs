//! `nanoclaw sandbox-exec`: the single-threaded helper that drives one container.
//!
//! libcontainer clones the calling process and runs Rust code in the child before `execve`; in a
//! multi-threaded process (the tokio host) that child can inherit a lock held by another thread and
//! hang forever (measured: `notes/libcontainer.md`). So the host never calls libcontainer itself: it
//! re-executes its own binary as this helper, one per run. The helper refuses to run with more than
//! one thread.
//!
//! Protocol (see `protocol.rs`): fds 0/1/2 are the workload's stdio and are passed through
//! untouched; fd 3 is the control socket. The helper reads one [`Request`], then:
//! create (cgroup limits verified by reading them back) → `created` → start → exec-status check →
//! `started` → wait, obeying `terminate`/`kill` → read the OOM counter → delete → `exited`.
//! Every failure path removes what was created. If the control socket closes (the host died) or
//! the helper gets SIGTERM/SIGINT/SIGHUP, the workload is killed and cleaned up all the same.
//!
//! State per run lives in `<state_root>/<run_id>/` (bundle, libcontainer state, a lock file the
//! helper holds for its lifetime). A dir whose lock is free belongs to a dead helper; the orphan
//! sweep ([`Request::CleanupOrphans`]) removes it and its container.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::signal::Signal as LcSignal;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::{FcntlArg, FdFlag, Flock, FlockArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{debug, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::cgroup::CgroupHost;
use super::executor::SandboxExecutor;
use super::protocol::{
    CONTROL_FD, Command, Event, MAX_LINE_BYTES, ProcessExit, Request, RunRequest, StageTimings,
    valid_run_id,
};
use super::{error_chain, seccomp, spec};
use crate::core::mount_policy::EXTRA_MOUNT_ROOT;

/// Exit code of the helper when it could not even report (no control socket, not single-threaded).
pub const EXIT_SETUP: i32 = 70;

/// Grace between SIGTERM and SIGKILL when the helper itself is told to stop by a signal.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// How long `start()` may take to reach `execve` before the run counts as failed.
const EXEC_STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// After SIGKILL, how often to repeat it while waiting for the init to go.
const KILL_REPEAT: Duration = Duration::from_secs(1);

/// A run dir without a lock file younger than this may belong to a helper that is just starting.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// Maximum bytes of one diagnostic line sent to the host.
const MAX_LOG_LINE: usize = 4096;

/// Entry point of `nanoclaw sandbox-exec`. Must be called before anything starts a thread (no
/// tokio runtime, no subscriber with a background worker). Returns the process exit code.
pub fn main() -> i32 {
    // SAFETY: fd 3 is ours by the protocol; we take ownership once, here.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    if fcntl(control.as_raw_fd(), FcntlArg::F_GETFD).is_err() {
        std::mem::forget(control);
        return EXIT_SETUP;
    }
    // Keep the socket out of the workload and any other child.
    let _ = fcntl(control.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let out = control.as_raw_fd();

    if thread_count() != Some(1) {
        send(
            out,
            &Event::Failed {
                reason: "sandbox-exec must run single-threaded (libcontainer would deadlock)"
                    .into(),
                cleanup_error: None,
            },
        );
        return EXIT_SETUP;
    }
    // Not a `failed` event: a panic may leave a running container behind, and the host must
    // treat the run as lost (and sweep) rather than as never started.
    std::panic::set_hook(Box::new(move |info| {
        send(
            out,
            &Event::Log {
                level: "ERROR".into(),
                line: format!("sandbox helper panicked: {info}"),
            },
        );
    }));

    let mut reader = LineReader::new(control.as_raw_fd());
    let request = match reader.read_line_blocking() {
        Ok(Some(line)) => serde_json::from_slice::<Request>(&line),
        Ok(None) => return 0, // host went away before asking anything
        Err(_) => return EXIT_SETUP,
    };
    let request = match request {
        Ok(r) => r,
        Err(err) => {
            send(
                out,
                &Event::Failed {
                    reason: format!("bad request: {err}"),
                    cleanup_error: None,
                },
            );
            return EXIT_SETUP;
        }
    };

    match request {
        Request::Run(req) => {
            install_logging(out, &req.log_filter);
            run(*req, out, reader)
        }
        Request::CleanupOrphans {
            state_root,
            cgroup_parent,
            cgroup_root,
        } => {
            install_logging(out, "warn,libcgroups=error,libcontainer=error");
            let ev = cleanup_orphans(&state_root, &cgroup_parent, &cgroup_root);
            send(out, &ev);
            0
        }
    }
}

/// Writes one event as one line in one `write` (lines from the container's init process, which
/// shares the socket until `execve`, cannot interleave with ours).
fn send(fd: RawFd, event: &Event) {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return;
    };
    line.push(b'\n');
    let mut off = 0;
    while off < line.len() {
        // SAFETY: writing from a valid buffer to an fd we hold.
        let n = unsafe { libc::write(fd, line[off..].as_ptr().cast(), line.len() - off) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return; // host gone; nothing to report to
        }
        off += n as usize;
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn thread_count() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

fn max_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A `tracing` layer that sends each event to the host as a `log` line. It writes to the control
/// socket, never to fd 2: in the container's init fd 2 is already the workload's stderr, and
/// libcontainer's own messages must not land there.
struct ControlLayer {
    fd: RawFd,
}

struct MessageVisitor(String);

impl tracing::field::Visit for MessageVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ControlLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let mut line = format!("{}: {}", event.metadata().target(), visitor.0);
        if line.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        send(
            self.fd,
            &Event::Log {
                level: event.metadata().level().to_string(),
                line,
            },
        );
    }
}

fn install_logging(fd: RawFd, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(ControlLayer { fd })
        .try_init();
}

/// Reads `\n`-terminated lines from a raw fd with a bounded buffer.
struct LineReader {
    fd: RawFd,
    buf: Vec<u8>,
    eof: bool,
}

impl LineReader {
    fn new(fd: RawFd) -> Self {
        Self {
            fd,
            buf: Vec::new(),
            eof: false,
        }
    }

    fn take_line(&mut self) -> Option<Vec<u8>> {
        let pos = self.buf.iter().position(|b| *b == b'\n')?;
        let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
        line.pop();
        Some(line)
    }

    /// One `read`; `Ok(false)` at EOF.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        let n = loop {
            // SAFETY: reading into a valid stack buffer from an fd this reader was given.
            let n = unsafe { libc::read(self.fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n >= 0 {
                break n as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "protocol line too long",
            ));
        }
        Ok(true)
    }

    fn read_line_blocking(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(line) = self.take_line() {
                return Ok(Some(line));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }
}

/// Per-run paths.
struct RunPaths {
    dir: PathBuf,
    bundle: PathBuf,
    lc_root: PathBuf,
    lock: PathBuf,
}

impl RunPaths {
    fn new(state_root: &Path, run_id: &str) -> Self {
        let dir = state_root.join(run_id);
        Self {
            bundle: dir.join("bundle"),
            lc_root: dir.join("lc"),
            lock: dir.join("lock"),
            dir,
        }
    }
}

fn cgroups_path(parent: &str, run_id: &str) -> String {
    format!("/{}/{run_id}", parent.trim_matches('/'))
}

/// Everything between the request and the final event. Returns the helper's exit code.
fn run(req: RunRequest, out: RawFd, mut control: LineReader) -> i32 {
    let mut ctx = RunCtx {
        t0: Instant::now(),
        timings: StageTimings::default(),
        out,
        paths: RunPaths::new(&req.state_root, &req.run_id),
        cgroups_path: cgroups_path(&req.cgroup_parent, &req.run_id),
        cgroups: None,
        created_dir: false,
        lock: None,
    };
    // Block the stop signals before anything is cloned; the executor unblocks them for the workload.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    let _ = mask.thread_block();
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok();

    let container = match ctx.create(&req) {
        Ok(c) => c,
        Err(reason) => {
            let cleanup_error = ctx.cleanup(None);
            send(
                out,
                &Event::Failed {
                    reason,
                    cleanup_error,
                },
            );
            return 0;
        }
    };
    ctx.supervise(container, &mut control, sigfd.as_ref())
}

struct RunCtx {
    t0: Instant,
    timings: StageTimings,
    out: RawFd,
    paths: RunPaths,
    cgroups_path: String,
    cgroups: Option<CgroupHost>,
    created_dir: bool,
    lock: Option<Flock<File>>,
}

impl RunCtx {
    /// Checks, writes the bundle, creates the container and starts it. On `Err` the caller cleans
    /// up; on `Ok` the workload is running (exec succeeded, seccomp installed).
    fn create(&mut self, req: &RunRequest) -> Result<(Container, i32, File), String> {
        if !valid_run_id(&req.run_id) {
            return Err(format!("invalid run id {:?}", req.run_id));
        }
        let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
        let mut cg = CgroupHost::probe_system(&req.cgroup_root).map_err(|e| e.to_string())?;
        cg.prepare_parent(&req.cgroup_parent, &swaps)
            .map_err(|e| e.to_string())?;
        debug!(mode = ?cg.mode, swap_limit = cg.swap_limit, "cgroup layout");
        let oci = spec::generate(&req.container, &self.cgroups_path, cg.swap_limit)
            .map_err(|e| e.to_string())?;
        self.cgroups = Some(cg);
        preflight_mounts(&req.container)?;

        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&req.state_root)
            .map_err(|e| format!("creating {}: {e}", req.state_root.display()))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.paths.dir)
            .map_err(|e| format!("run id in use? creating {}: {e}", self.paths.dir.display()))?;
        self.created_dir = true;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.paths.lock)
            .map_err(|e| format!("creating lock: {e}"))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| format!("locking {}: {e}", self.paths.lock.display()))?;
        // Held until the helper exits: a free lock tells the orphan sweep this run is dead.
        self.lock = Some(lock);
        fs::create_dir(&self.paths.bundle).map_err(|e| format!("creating bundle: {e}"))?;
        oci.save(self.paths.bundle.join("config.json"))
            .map_err(|e| format!("writing config.json: {e}"))?;

        let programs = seccomp::native_arch()
            .and_then(seccomp::compile)
            .map_err(|e| e.to_string())?;
        let (status_r, status_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let stdio = |fd: RawFd| -> Result<OwnedFd, String> {
            // SAFETY: 0/1/2 are open for the life of the process (the host passes pipes).
            unsafe { BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .map_err(|e| format!("dup stdio {fd}: {e}"))
        };
        let executor = SandboxExecutor::new(programs, status_w.as_raw_fd());
        self.timings.prepare_us = micros(self.t0.elapsed());
        let builder = ContainerBuilder::new(req.run_id.clone(), SyscallType::default())
            .with_root_path(&self.paths.lc_root)
            .map_err(|e| error_chain(&e))?
            .with_stdin(stdio(0)?)
            .with_stdout(stdio(1)?)
            .with_stderr(stdio(2)?)
            .with_executor(executor)
            .validate_id()
            .map_err(|e| error_chain(&e))?;
        let mut container = builder
            .as_init(&self.paths.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| format!("create failed: {}", error_chain(&e)))?;
        drop(status_w);
        detach_stdio();

        let pid = container
            .pid()
            .map(|p| p.as_raw())
            .ok_or("libcontainer reported no init pid")?;
        let pidfd = pidfd_open(pid).map_err(|e| format!("pidfd_open: {e}"));
        let fail = |container: &mut Container, reason: String| {
            if container
                .kill(LcSignal::from(Signal::SIGKILL), true)
                .is_err()
            {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            reap(pid);
            reason
        };
        let pidfd = match pidfd {
            Ok(fd) => fd,
            Err(reason) => return Err(fail(&mut container, reason)),
        };
        let limits = req.container.limits.cgroup();
        if let Some(cg) = &self.cgroups
            && let Err(e) = cg.verify_limits(&self.cgroups_path, &limits)
        {
            return Err(fail(&mut container, e.to_string()));
        }
        send(
            self.out,
            &Event::Created {
                pid,
                cgroup: self.cgroups_path.clone(),
            },
        );
        let t_start = Instant::now();
        self.timings.create_us = micros(t_start - self.t0);
        if let Err(e) = container.start() {
            let reason = format!("start failed: {}", error_chain(&e));
            return Err(fail(&mut container, reason));
        }
        match read_exec_status(status_r) {
            Ok(None) => {}
            Ok(Some(reason)) => return Err(fail(&mut container, reason)),
            Err(e) => return Err(fail(&mut container, e)),
        }
        send(self.out, &Event::Started);
        self.timings.start_us = micros(t_start.elapsed());
        Ok((container, pid, File::from(pidfd)))
    }

    fn supervise(
        mut self,
        (mut container, pid, pidfd): (Container, i32, File),
        control: &mut LineReader,
        sigfd: Option<&SignalFd>,
    ) -> i32 {
        let t_run = Instant::now();
        let mut deadline: Option<Instant> = None;
        let mut killed_at: Option<Instant> = None;
        let mut escalated = false;
        let mut host_lost = false;
        let dirs = self
            .cgroups
            .as_ref()
            .map(|cg| cg.run_dirs(&self.cgroups_path))
            .unwrap_or_default();
        let signal =
            |container: &mut Container, sig: Signal| signal_all(container, &pidfd, &dirs, sig);
        let exit = loop {
            // Commands may already sit in the buffer (read together with the request, or with
            // an earlier command): handle them before sleeping in poll.
            while let Some(line) = control.take_line() {
                match serde_json::from_slice::<Command>(&line) {
                    Ok(Command::Terminate { grace_ms }) => {
                        let d = Instant::now() + Duration::from_millis(grace_ms);
                        deadline = Some(deadline.map_or(d, |old| old.min(d)));
                        signal(&mut container, Signal::SIGTERM);
                    }
                    Ok(Command::Kill) => {
                        killed_at = Some(Instant::now());
                        signal(&mut container, Signal::SIGKILL);
                    }
                    Err(e) => warn!(%e, "ignoring a bad command"),
                }
            }
            if control.eof && !host_lost {
                // The host died or dropped us: nobody reads the output any more.
                warn!("control socket closed; killing the run");
                host_lost = true;
                killed_at = Some(Instant::now());
                signal(&mut container, Signal::SIGKILL);
            }
            let now = Instant::now();
            if let Some(d) = deadline.filter(|d| *d <= now) {
                debug!(?d, "grace period over");
                escalated = true;
                deadline = None;
                killed_at = Some(now);
                signal(&mut container, Signal::SIGKILL);
            }
            if let Some(k) = killed_at.filter(|k| now.duration_since(*k) >= KILL_REPEAT) {
                debug!(?k, "repeating SIGKILL");
                killed_at = Some(now);
                signal(&mut container, Signal::SIGKILL);
            }
            let wake = [deadline, killed_at.map(|k| k + KILL_REPEAT)]
                .into_iter()
                .flatten()
                .min();
            let timeout = match wake {
                Some(w) => {
                    let ms = w.saturating_duration_since(now).as_millis() + 1;
                    PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            // SAFETY: the control fd lives as long as the reader.
            let control_fd = unsafe { BorrowedFd::borrow_raw(control.fd) };
            let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            if !control.eof {
                fds.push(PollFd::new(control_fd, PollFlags::POLLIN));
            }
            if let Some(s) = sigfd {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    warn!(%e, "poll failed; killing the run");
                    signal(&mut container, Signal::SIGKILL);
                    break reap(pid);
                }
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let (pid_ready, ctl_ready) = (ready(0), !control.eof && ready(1));
            let sig_ready = sigfd.is_some() && ready(if control.eof { 1 } else { 2 });
            if pid_ready {
                break reap(pid);
            }
            if ctl_ready && control.fill().is_err() {
                // A broken or oversized stream counts as a lost host.
                control.eof = true;
            }
            if sig_ready {
                if let Some(s) = sigfd {
                    let _ = s.read_signal();
                }
                warn!("helper got a stop signal; terminating the run");
                let d = Instant::now() + SIGNAL_GRACE;
                deadline = Some(deadline.map_or(d, |old| old.min(d)));
                signal(&mut container, Signal::SIGTERM);
            }
        };
        drop(pidfd);
        let t_cleanup = Instant::now();
        self.timings.run_us = micros(t_cleanup - t_run);
        let oom_kills = self
            .cgroups
            .as_ref()
            .and_then(|cg| cg.oom_kills(&self.cgroups_path))
            .unwrap_or(0);
        let cleanup_error = self.cleanup(Some(container));
        self.timings.cleanup_us = micros(t_cleanup.elapsed());
        send(
            self.out,
            &Event::Exited {
                exit,
                oom_kills,
                escalated,
                host_lost,
                cleanup_error,
                helper_max_rss_kib: max_rss_kib(),
                timings: self.timings,
            },
        );
        0
    }

    /// Deletes the container (cgroups, libcontainer state), any cgroup dir left over, and the run
    /// dir. Returns what could not be removed.
    fn cleanup(&mut self, container: Option<Container>) -> Option<String> {
        let mut errors = Vec::new();
        if let Some(mut c) = container {
            let mut last = None;
            for attempt in 0..3 {
                match c.delete(true) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => {
                        last = Some(error_chain(&e));
                        std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
                    }
                }
            }
            if let Some(e) = last {
                errors.push(format!("delete: {e}"));
            }
        }
        // Only a run that created its state dir owns the cgroup of that name: a duplicate run id
        // must never touch the live run's cgroup.
        if let Some(cg) = self.cgroups.as_ref().filter(|_| self.created_dir) {
            for dir in cg.run_dirs(&self.cgroups_path) {
                if dir.exists()
                    && let Err(e) = remove_cgroup_dir(&dir)
                {
                    errors.push(e);
                }
            }
        }
        if self.created_dir
            && let Err(e) = fs::remove_dir_all(&self.paths.dir)
        {
            errors.push(format!("removing {}: {e}", self.paths.dir.display()));
        }
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

/// Checks, right before creating the container, what the pure spec check cannot: every bind source
/// exists and is its own real path (a symlink planted anywhere in it is refused rather than
/// followed), and every destination already exists in the read-only image with a matching type,
/// without symlinks (libcontainer would otherwise create it inside the shared image).
fn preflight_mounts(spec: &spec::ContainerSpec) -> Result<(), String> {
    let rootfs_real = fs::canonicalize(&spec.rootfs)
        .map_err(|e| format!("rootfs {}: {e}", spec.rootfs.display()))?;
    if rootfs_real != spec.rootfs {
        return Err(format!(
            "rootfs {} is not a real path (resolves to {})",
            spec.rootfs.display(),
            rootfs_real.display()
        ));
    }
    for m in &spec.mounts {
        let real = fs::canonicalize(&m.source)
            .map_err(|e| format!("mount source {}: {e}", m.source.display()))?;
        if real != m.source {
            return Err(format!(
                "mount source {} is not a real path (resolves to {}); refusing to follow symlinks",
                m.source.display(),
                real.display()
            ));
        }
        let src_dir = fs::metadata(&real)
            .map_err(|e| format!("mount source {}: {e}", real.display()))?
            .is_dir();
        // Under the extra root, libcontainer creates the mount point on the tmpfs the spec puts
        // there; only the root itself must be in the image.
        let in_extra = Path::new(&m.destination).starts_with(EXTRA_MOUNT_ROOT);
        let image_dest = if in_extra {
            EXTRA_MOUNT_ROOT
        } else {
            m.destination.as_str()
        };
        let mut inside = spec.rootfs.clone();
        for part in image_dest.split('/').filter(|p| !p.is_empty()) {
            inside.push(part);
            let meta = fs::symlink_metadata(&inside).map_err(|_| {
                format!("mount point {} does not exist in the image", m.destination)
            })?;
            if meta.file_type().is_symlink() {
                return Err(format!(
                    "mount point {} goes through a symlink in the image",
                    m.destination
                ));
            }
        }
        let dest_dir = fs::symlink_metadata(&inside)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if in_extra && !dest_dir {
            return Err(format!(
                "{EXTRA_MOUNT_ROOT} in the image is not a directory"
            ));
        }
        if !in_extra && dest_dir != src_dir {
            return Err(format!(
                "mount point {} in the image is not a {}",
                m.destination,
                if src_dir { "directory" } else { "file" }
            ));
        }
    }
    Ok(())
}

/// After create, the helper's own copies of the workload's stdio would keep the host's pipes open
/// past the workload's exit; point them at /dev/null.
fn detach_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard fds; `null` stays valid for the call.
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    Ok(fd)
}

/// Waits for `execve` in the init: EOF means it happened; bytes are the executor's error.
fn read_exec_status(fd: OwnedFd) -> Result<Option<String>, String> {
    let mut file = File::from(fd);
    let deadline = Instant::now() + EXEC_STATUS_TIMEOUT;
    let mut msg = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the workload did not reach execve in time".into());
        }
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll exec status: {e}")),
        }
        let mut chunk = [0u8; 1024];
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if msg.len() < 4096 {
                    msg.extend_from_slice(&chunk[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read exec status: {e}")),
        }
    }
    Ok((!msg.is_empty()).then(|| String::from_utf8_lossy(&msg).into_owned()))
}

/// Signals every process of the run through libcontainer (freeze, signal each, thaw). If that
/// fails — e.g. its state files are gone — the signal goes to the init through its pidfd and, for
/// SIGKILL, to every pid in the run's cgroups: a stop request must never depend on libcontainer's
/// bookkeeping.
fn signal_all(container: &mut Container, pidfd: &File, cgroup_dirs: &[PathBuf], sig: Signal) {
    let Err(e) = container.kill(LcSignal::from(sig), true) else {
        return;
    };
    debug!(error = %error_chain(&e), ?sig, "libcontainer kill failed; signalling directly");
    // SAFETY: pidfd_send_signal with our pidfd, a valid signal, no siginfo and no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        );
    }
    if sig == Signal::SIGKILL {
        for dir in cgroup_dirs {
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
        }
    }
}

/// Waits for the init and turns its status into a [`ProcessExit`].
fn reap(pid: i32) -> ProcessExit {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return ProcessExit::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return ProcessExit::Signal(sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                warn!(%e, pid, "waitpid");
                return ProcessExit::Signal(libc::SIGKILL);
            }
        }
    }
}

/// Kills what is left in a cgroup dir and removes it, with a few retries.
fn remove_cgroup_dir(dir: &Path) -> Result<(), String> {
    for attempt in 0..10u64 {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(_) => std::thread::sleep(Duration::from_millis(20 * (attempt + 1))),
        }
    }
    Err(format!("cgroup {} could not be removed", dir.display()))
}

/// Reaps zombies of earlier runs of this helper (none expected; cheap insurance).
fn reap_any() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// The orphan sweep: every run dir whose lock is free belongs to a dead helper. Its container (if
/// libcontainer state is there) is force-deleted, its cgroups removed, and the dir deleted.
fn cleanup_orphans(state_root: &Path, cgroup_parent: &str, cgroup_root: &Path) -> Event {
    let mut removed = Vec::new();
    let mut busy = Vec::new();
    let mut errors = Vec::new();
    let cg = CgroupHost::probe_system(cgroup_root).ok();
    let entries = match fs::read_dir(state_root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Event::Cleaned {
                removed,
                busy,
                errors,
            };
        }
        Err(e) => {
            errors.push(format!("{}: {e}", state_root.display()));
            return Event::Cleaned {
                removed,
                busy,
                errors,
            };
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_dir() || !valid_run_id(&name) || meta.uid() != nix::unistd::geteuid().as_raw() {
            continue;
        }
        let paths = RunPaths::new(state_root, &name);
        let lock = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&paths.lock);
        let _guard = match lock {
            Ok(f) => match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(l) => Some(l),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    busy.push(name);
                    continue;
                }
                Err((_, e)) => {
                    errors.push(format!("{name}: lock: {e}"));
                    continue;
                }
            },
            // No lock file: either a helper died between mkdir and locking, or one is there
            // right now. Only an old dir is taken for dead.
            Err(_) => {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .unwrap_or_default();
                if age < UNLOCKED_GRACE {
                    busy.push(name);
                    continue;
                }
                None
            }
        };
        let mut problems = Vec::new();
        let state = paths.lc_root.join(&name);
        if state.exists() {
            match Container::load(state) {
                Ok(mut c) => {
                    if let Err(e) = c.delete(true) {
                        problems.push(format!("delete: {}", error_chain(&e)));
                    }
                }
                Err(e) => problems.push(format!("load: {}", error_chain(&e))),
            }
        }
        if let Some(cg) = &cg {
            for dir in cg.run_dirs(&cgroups_path(cgroup_parent, &name)) {
                if dir.exists()
                    && let Err(e) = remove_cgroup_dir(&dir)
                {
                    problems.push(e);
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&paths.dir) {
            problems.push(format!("remove dir: {e}"));
        }
        if problems.is_empty() {
            info!(run = %name, "removed orphaned run");
            removed.push(name);
        } else {
            errors.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    reap_any();
    Event::Cleaned {
        removed,
        busy,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_path_is_absolute_under_the_parent() {
        assert_eq!(cgroups_path("nanoclaw", "r1"), "/nanoclaw/r1");
        assert_eq!(cgroups_path("/a/b/", "r1"), "/a/b/r1");
    }

    #[test]
    fn line_reader_splits_and_bounds() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::io::Write;
        (&a).write_all(b"one\ntwo\nthr").unwrap();
        let mut r = LineReader::new(b.as_raw_fd());
        assert_eq!(r.read_line_blocking().unwrap().unwrap(), b"one");
        assert_eq!(r.read_line_blocking().unwrap().unwrap(), b"two");
        (&a).write_all(b"ee\n").unwrap();
        assert_eq!(r.read_line_blocking().unwrap().unwrap(), b"three");
        drop(a);
        assert_eq!(r.read_line_blocking().unwrap(), None);
    }

    #[test]
    fn preflight_refuses_symlinked_sources_and_missing_mount_points() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let image = root.join("image");
        fs::create_dir_all(image.join("workspace/group")).unwrap();
        std::os::unix::fs::symlink("/etc", image.join("workspace/link")).unwrap();
        let real = root.join("group");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, root.join("alias")).unwrap();

        let mut s = spec::ContainerSpec::new(image.clone(), vec!["true".into()]);
        let mount = |src: &Path, dst: &str| spec::BindMount {
            source: src.to_path_buf(),
            destination: dst.into(),
            readonly: false,
        };
        s.mounts = vec![mount(&real, "/workspace/group")];
        preflight_mounts(&s).unwrap();

        s.mounts = vec![mount(&root.join("alias"), "/workspace/group")];
        assert!(
            preflight_mounts(&s)
                .unwrap_err()
                .contains("not a real path")
        );

        s.mounts = vec![mount(&real, "/workspace/missing")];
        assert!(
            preflight_mounts(&s)
                .unwrap_err()
                .contains("does not exist in the image")
        );

        s.mounts = vec![mount(&real, "/workspace/link/x")];
        assert!(preflight_mounts(&s).unwrap_err().contains("symlink"));
    }
}
