//! The private protocol between the host and its `nanoclaw sandbox-exec` helper: JSON lines over a
//! Unix socket at the helper's fd 3. Both ends are the same binary, so this is not a compatibility
//! boundary; it is still strict (unknown fields refused) and size-capped.
//!
//! ```text
//! host   → helper   one Request line, then Command lines (terminate / kill)
//! helper → host     Event lines: created, started, log, exited | failed | cleaned
//! ```
//! The helper's stdin, stdout and stderr are the workload's, passed through untouched. If the
//! socket closes (the host died), the helper kills the workload and cleans up by itself.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::spec::ContainerSpec;

/// The fd the helper finds its control socket on.
pub const CONTROL_FD: i32 = 3;

/// Upper bound for one protocol line in either direction.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// The first line the host sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Create, start, supervise and delete one container.
    Run(Box<RunRequest>),
    /// Remove whatever crashed hosts left under `state_root`.
    CleanupOrphans {
        /// The state root to scan.
        state_root: PathBuf,
        /// The cgroup parent runs were created under (e.g. `/nanoclaw`).
        cgroup_parent: String,
        /// The cgroup root, normally `/sys/fs/cgroup`.
        cgroup_root: PathBuf,
    },
}

/// One run, as the helper needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Unique run id (`[A-Za-z0-9_-]`, at most 64 chars); names the state dir and the cgroup.
    pub run_id: String,
    /// Where per-run state lives (`<state_root>/<run_id>/`).
    pub state_root: PathBuf,
    /// The cgroup parent, e.g. `/nanoclaw`; the run's cgroup is `<parent>/<run_id>`.
    pub cgroup_parent: String,
    /// The cgroup root to probe, normally `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// What to run.
    pub container: ContainerSpec,
    /// `tracing` filter for the helper's own diagnostics (sent back as `log` events).
    pub log_filter: String,
}

/// Host → helper after the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// SIGTERM to every process of the run, then SIGKILL after `grace_ms`.
    Terminate {
        /// Grace period in milliseconds.
        grace_ms: u64,
    },
    /// SIGKILL to every process of the run now.
    Kill,
}

/// How the workload's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessExit {
    /// It exited with a code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// Where a run's time went inside the helper, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTimings {
    /// Request read → just before libcontainer's create: cgroup probe, spec, mount checks, bundle,
    /// seccomp compile (nanoclaw's own work; part of `create_us`).
    pub prepare_us: u64,
    /// Request read → container created (checks, bundle, cgroups, namespaces, mounts, limits read back).
    pub create_us: u64,
    /// `start` until the workload's `execve` was confirmed.
    pub start_us: u64,
    /// Workload running until its init was reaped.
    pub run_us: u64,
    /// OOM counter, delete (cgroups, state), run dir removal.
    pub cleanup_us: u64,
}

/// Helper → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The container exists (namespaces, mounts, cgroup with verified limits); the workload has
    /// not started yet. `pid` is the init's pid in the host's pid namespace.
    Created {
        /// Host pid of the container's init.
        pid: i32,
        /// The run's cgroup path.
        cgroup: String,
    },
    /// The workload was exec'd with its seccomp filter installed.
    Started,
    /// One line of the helper's (or libcontainer's) diagnostics.
    Log {
        /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
        level: String,
        /// The formatted line.
        line: String,
    },
    /// The workload ended and everything was cleaned up (or `cleanup_error` says what was left).
    Exited {
        /// How the init ended.
        exit: ProcessExit,
        /// Processes the kernel OOM-killed in the run's cgroup.
        oom_kills: u64,
        /// Whether the helper sent SIGKILL because the grace period ran out.
        escalated: bool,
        /// Whether the host's control socket closed during the run.
        host_lost: bool,
        /// Cleanup problem, if any (the orphan sweep retries it).
        cleanup_error: Option<String>,
        /// The helper's peak RSS in KiB.
        helper_max_rss_kib: u64,
        /// Where the time went.
        timings: StageTimings,
    },
    /// The run could not be started; nothing is left behind unless `cleanup_error` says so.
    Failed {
        /// Why.
        reason: String,
        /// Cleanup problem, if any.
        cleanup_error: Option<String>,
    },
    /// Result of [`Request::CleanupOrphans`].
    Cleaned {
        /// Run ids whose leftovers were removed.
        removed: Vec<String>,
        /// Run ids skipped because a live helper still holds them.
        busy: Vec<String>,
        /// Problems, one per run id.
        errors: Vec<String>,
    },
}

/// Whether a run id is safe as a path component, a cgroup name and a libcontainer id.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !id.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_tagged_and_strict() {
        let cmd = serde_json::to_string(&Command::Terminate { grace_ms: 5 }).unwrap();
        assert_eq!(cmd, r#"{"cmd":"terminate","grace_ms":5}"#);
        let ev = serde_json::to_string(&Event::Started).unwrap();
        assert_eq!(ev, r#"{"event":"started"}"#);
        assert!(
            serde_json::from_str::<Command>(r#"{"cmd":"terminate","grace_ms":1,"x":1}"#).is_err()
        );
        let exit = Event::Exited {
            exit: ProcessExit::Signal(9),
            oom_kills: 1,
            escalated: false,
            host_lost: false,
            cleanup_error: None,
            helper_max_rss_kib: 1,
            timings: StageTimings::default(),
        };
        let text = serde_json::to_string(&exit).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), exit);
    }

    #[test]
    fn run_ids() {
        for ok in ["a", "run-1_x", "nanoclaw-main-1732000000000"] {
            assert!(valid_run_id(ok), "{ok}");
        }
        for bad in ["", "-x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_run_id(bad), "{bad}");
        }
    }
}
