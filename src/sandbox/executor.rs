//! The executor libcontainer calls in the container's init process, right before `execve`.
//!
//! It does three things libcontainer's default executor does not:
//! 1. resets every signal to its default disposition and clears the signal mask — the helper is a
//!    Rust program (SIGPIPE ignored) that blocks SIGTERM/SIGINT/SIGHUP for its signalfd, and both
//!    would otherwise leak into the workload through `execve`;
//! 2. installs the seccomp filter (see `seccomp.rs`), so it is never silently skipped;
//! 3. reports any failure on an exec-status pipe whose write end is close-on-exec: the helper reads
//!    EOF when `execve` succeeded and the reason otherwise (the classic fork/exec error pipe).

use std::os::fd::RawFd;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use seccompiler::BpfProgram;

use super::seccomp;

/// See the module docs. Cloned into the container's init process by libcontainer.
#[derive(Clone)]
pub struct SandboxExecutor {
    programs: Vec<BpfProgram>,
    status_fd: RawFd,
}

impl SandboxExecutor {
    /// `programs` are installed in order; `status_fd` is the close-on-exec write end of the
    /// exec-status pipe, open in the process that calls `exec`.
    pub fn new(programs: Vec<BpfProgram>, status_fd: RawFd) -> Self {
        Self {
            programs,
            status_fd,
        }
    }

    fn report(&self, what: &str) {
        let bytes = what.as_bytes();
        // SAFETY: a plain write of a valid buffer to an fd we own; errors are irrelevant here
        // because the process is about to fail anyway.
        unsafe {
            libc::write(self.status_fd, bytes.as_ptr().cast(), bytes.len());
        }
    }
}

/// Every catchable signal back to SIG_DFL, and an empty mask. The raw syscall is used because
/// libc wrappers refuse the real-time signals libc reserves for itself (32, 33), which were seen
/// ignored in the workload otherwise.
pub fn reset_signals() {
    // The kernel's `struct sigaction` with SIG_DFL (0), no flags and an empty mask is all zeros
    // on x86_64 and aarch64.
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a zeroed, properly sized struct; old action not requested.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8usize,
            );
        }
    }
    // SAFETY: an empty set built by sigemptyset, passed by pointer to sigprocmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

impl Executor for SandboxExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        if let Err(err) = seccomp::install(&self.programs) {
            let msg = format!("seccomp filter not installed: {err}");
            self.report(&msg);
            return Err(ExecutorError::Other(msg));
        }
        // Only returns on failure; on success the pipe closes with execve.
        let result = DefaultExecutor {}.exec(spec);
        if let Err(err) = &result {
            self.report(&format!("exec failed: {err}"));
        }
        result
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
