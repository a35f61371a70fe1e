//! `nanoclaw bench runner`: cold start of the runner, from process start to its first request at a
//! (fake) Messages API, and its peak memory. Figures only, no assertions.
//!
//! [`bench_runner`] measures the runner as a plain process (no container), so it isolates what the
//! runner itself costs. [`bench_runner_in_container`] measures the product's path: a per-run network
//! namespace with its veth link, the runner image mounted read-only, a libcontainer run of the
//! runner with the group's mounts, and the run cgroup's peak memory. Peak memory is the runner's
//! `VmHWM` (peak resident set of its own address space since exec) read from `/proc/<pid>/status`
//! once it has answered and gone idle; the cgroup's `memory.peak` needs a container. (`ru_maxrss` from
//! `wait4` would be wrong here: a child spawned with vfork semantics inherits the parent's high-water
//! mark at exec.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::runner::testing::{FakeApi, Step};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// the runner binary is missing
    #[error("runner binary {0} not found (build it: cargo build --release --bin nanoclaw-runner)")]
    NoRunner(PathBuf),
    /// a run did not behave
    #[error("run {run}: {reason}")]
    Run { run: usize, reason: String },
    /// setting up a run failed
    #[error("setup: {0}")]
    Io(#[from] std::io::Error),
    /// the container variant needs root (namespaces, cgroups, loop mounts)
    #[error("running the runner in a container needs root")]
    NotRoot,
    /// the sandbox refused or failed
    #[error("sandbox: {0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// the runner image could not be mounted
    #[error("runner image: {0}")]
    Image(#[from] crate::sandbox::image::ImageError),
    /// the run's network could not be created
    #[error("run network: {0}")]
    Net(#[from] crate::net::NetError),
}

/// Figures of one benchmark.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub runs: usize,
    /// Spawn → first request seen by the API, per run.
    pub first_request: Vec<Duration>,
    /// Spawn → exit after `_close`, per run.
    pub total: Vec<Duration>,
    /// Peak RSS per run, KiB (plain process: the runner's `VmHWM`; container: the run cgroup's
    /// peak memory, which also counts page cache the run caused).
    pub peak_rss_kib: Vec<u64>,
    /// Whether the runs went through a container (the report's wording).
    pub in_container: bool,
}

fn median<T: Copy + Ord>(v: &[T]) -> Option<T> {
    let mut s = v.to_vec();
    s.sort();
    s.get(s.len() / 2).copied()
}

fn p95<T: Copy + Ord>(v: &[T]) -> Option<T> {
    let mut s = v.to_vec();
    s.sort();
    let i = (s.len() * 95).div_ceil(100).saturating_sub(1);
    s.get(i).copied()
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Option<Duration>| {
            d.map_or("-".into(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1000.0)
            })
        };
        let what = if self.in_container {
            "in a container: netns + veth, image mount, libcontainer run; from before the netns"
        } else {
            "plain process, no container"
        };
        writeln!(f, "runner cold start ({what}), {} runs", self.runs)?;
        writeln!(
            f,
            "  start -> first API request: median {}, p95 {}, min {}",
            ms(median(&self.first_request)),
            ms(p95(&self.first_request)),
            ms(self.first_request.iter().min().copied())
        )?;
        writeln!(
            f,
            "  start -> exit after _close:  median {}, p95 {}",
            ms(median(&self.total)),
            ms(p95(&self.total))
        )?;
        let memory = if self.in_container {
            "run cgroup peak memory"
        } else {
            "peak RSS"
        };
        write!(
            f,
            "  {memory}: median {} KiB, max {} KiB",
            median(&self.peak_rss_kib).unwrap_or(0),
            self.peak_rss_kib.iter().max().copied().unwrap_or(0)
        )
    }
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(run: usize) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "nanoclaw-bench-runner-{}-{run}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Peak resident set size of a live process, KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Reads frames until the session frame that means the runner is idle.
fn wait_idle(stdout: impl std::io::Read) -> bool {
    use std::io::BufRead;
    let mut ends = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { return false };
        if line == crate::core::wire::OUTPUT_END_MARKER {
            ends += 1;
            if ends == 2 {
                return true;
            }
        }
    }
    false
}

/// Runs the runner `runs` times against a fresh fake API each time.
pub fn bench_runner(runner: &Path, runs: usize) -> Result<BenchReport, BenchError> {
    if !runner.is_file() {
        return Err(BenchError::NoRunner(runner.to_path_buf()));
    }
    let mut report = BenchReport {
        runs,
        first_request: Vec::new(),
        total: Vec::new(),
        peak_rss_kib: Vec::new(),
        in_container: false,
    };
    for run in 0..runs {
        let fail = |reason: String| BenchError::Run { run, reason };
        let tmp = TempDir::new(run)?;
        let ws = tmp.0.join("workspace");
        for d in ["group", "ipc/input", "ipc/messages", "ipc/tasks"] {
            std::fs::create_dir_all(ws.join(d))?;
        }
        let api = FakeApi::start(vec![Step::text("ok")])?;
        let input = r#"{"prompt":"<messages><message sender=\"bench\">hi</message></messages>","groupFolder":"bench","chatJid":"1@g.us","isMain":false}"#;
        let start = Instant::now();
        let mut child = Command::new(runner)
            .env_clear()
            .env("ANTHROPIC_BASE_URL", api.url())
            .env("ANTHROPIC_API_KEY", "bench")
            .env("NANOCLAW_WORKSPACE", &ws)
            .env("NANOCLAW_SESSION_DIR", tmp.0.join("session"))
            .env("NANOCLAW_TOOL_ROOTS", &ws)
            .env("NANOCLAW_RUNNER_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        if !api.wait_for_requests(1, Duration::from_secs(30)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail("no request within 30 s".into()));
        }
        let first = api
            .requests()
            .first()
            .map(|r| r.at.saturating_duration_since(start))
            .ok_or_else(|| fail("request vanished".into()))?;
        let idle = child.stdout.take().is_some_and(wait_idle);
        let rss = vm_hwm_kib(child.id());
        std::fs::write(ws.join("ipc/input/_close"), b"")?;
        let status = child.wait()?;
        let total = start.elapsed();
        if !idle || !status.success() {
            return Err(fail(format!(
                "runner did not answer and exit cleanly ({status})"
            )));
        }
        let rss = rss.ok_or_else(|| fail("no VmHWM in /proc".into()))?;
        report.first_request.push(first);
        report.total.push(total);
        report.peak_rss_kib.push(rss);
    }
    Ok(report)
}

/// Where and how [`bench_runner_in_container`] runs.
#[derive(Debug, Clone)]
pub struct ContainerBench {
    /// The runner image (squashfs/erofs file, or a directory).
    pub image: PathBuf,
    pub runs: usize,
    /// The sandbox backend (its `helper_exe` must be a `nanoclaw` binary).
    pub backend: crate::sandbox::LibcontainerConfig,
    /// Scratch space: image mount point, data dir (removed afterwards).
    pub work_dir: PathBuf,
    /// The /24 the per-run links come from.
    pub subnet: ipnet::Ipv4Net,
}

/// Network-namespace and veth name prefix of benchmark runs.
const BENCH_PREFIX: &str = "ncbn";

/// The run cgroup's peak memory in KiB: cgroup v2 `memory.peak`, else v1's
/// `memory.max_usage_in_bytes`. Read while the run is alive (its cgroup goes with it).
fn cgroup_peak_kib(root: &Path, parent: &str, run_id: &str) -> Option<u64> {
    [
        root.join(parent).join(run_id).join("memory.peak"),
        root.join("memory")
            .join(parent)
            .join(run_id)
            .join("memory.max_usage_in_bytes"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|t| t.trim().parse::<u64>().ok())
    .map(|b| b / 1024)
}

/// Runs the runner image's `nanoclaw-runner` in real containers, one run after the other, each with
/// its own network namespace and a fake Messages API listening on the link's host side. Timing starts
/// before the network namespace is created, as in the host. Needs root.
pub async fn bench_runner_in_container(opts: &ContainerBench) -> Result<BenchReport, BenchError> {
    use crate::core::wire::FrameStatus;
    use crate::sandbox::mounts::{self, DataLayout};
    use crate::sandbox::spec::NetworkMode;
    use crate::sandbox::{
        Backend, ContainerSpec, LibcontainerBackend, RunEvent, RunSpec, RunStatus,
    };

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BenchError::NotRoot);
    }
    let backend = LibcontainerBackend::new(opts.backend.clone())?;
    std::fs::create_dir_all(&opts.work_dir)?;
    let root = crate::sandbox::image::prepare(&opts.image, &opts.work_dir.join("root"))?;
    let result = async {
        let mut report = BenchReport {
            runs: opts.runs,
            first_request: Vec::new(),
            total: Vec::new(),
            peak_rss_kib: Vec::new(),
            in_container: true,
        };
        let layout = DataLayout {
            data_dir: opts.work_dir.join("data"),
        };
        let pid = std::process::id();
        for run in 0..opts.runs {
            let fail = |reason: String| BenchError::Run { run, reason };
            let run_id = format!("benchrun-{pid}-{run}");
            let start = Instant::now();
            // The subnet's last slot and a prefix of its own: a host's allocator starts at slot 0.
            let slot = (crate::net::netns::SLOTS - 1) as u8;
            let link = crate::net::netns::create(BENCH_PREFIX, opts.subnet, &run_id, slot)?;
            let outcome = async {
                let api = FakeApi::bind((link.host_ip, 0).into(), vec![Step::text("ok")])?;
                let mut container = ContainerSpec::new(
                    root.root.clone(),
                    vec!["/usr/bin/nanoclaw-runner".into()],
                );
                container.mounts = mounts::group_mounts(&layout, "bench", (1000, 1000), &[])
                    .map_err(|e| fail(e.to_string()))?;
                container.env = vec![
                    ("ANTHROPIC_BASE_URL".into(), api.url()),
                    ("ANTHROPIC_API_KEY".into(), "bench".into()),
                    ("NANOCLAW_RUNNER_LOG".into(), "warn".into()),
                ];
                container.network = NetworkMode::Join(link.netns_path());
                let mut spec = RunSpec::new(run_id.clone(), container);
                spec.timeout = Duration::from_secs(60);
                spec.input = br#"{"prompt":"<messages><message sender=\"bench\">hi</message></messages>","groupFolder":"bench","chatJid":"1@g.us","isMain":false}"#.to_vec();
                let mut handle = backend.start(spec).await?;
                let mut peak = None;
                let mut finished = None;
                while let Some(event) = handle.next_event().await {
                    match event {
                        // Idle after the turn (session frame): read the peak, then close the run.
                        RunEvent::Frame(f) if f.result.is_none() && f.status == FrameStatus::Success => {
                            peak = cgroup_peak_kib(
                                &opts.backend.cgroup_root,
                                &opts.backend.cgroup_parent,
                                &run_id,
                            );
                            std::fs::write(layout.ipc_dir("bench").join("input/_close"), b"")?;
                        }
                        RunEvent::Finished(o) => finished = Some(o),
                        _ => {}
                    }
                }
                let total = start.elapsed();
                let outcome = finished.ok_or_else(|| fail("no outcome".into()))?;
                if outcome.status != RunStatus::Exited(0) {
                    return Err(fail(format!("run ended with {:?}", outcome.status)));
                }
                let first = api
                    .requests()
                    .first()
                    .map(|r| r.at.saturating_duration_since(start))
                    .ok_or_else(|| fail("no request reached the API".into()))?;
                let peak = peak.ok_or_else(|| fail("no cgroup memory peak readable".into()))?;
                Ok::<_, BenchError>((first, total, peak))
            }
            .await;
            crate::net::netns::destroy(&link);
            let (first, total, peak) = outcome?;
            report.first_request.push(first);
            report.total.push(total);
            report.peak_rss_kib.push(peak);
        }
        Ok(report)
    }
    .await;
    // Never walk into a still-mounted image.
    if root.unmount().is_ok() {
        let _ = std::fs::remove_dir_all(&opts.work_dir);
    }
    result
}

/// The runner next to the running executable (how both binaries are installed).
pub fn default_runner_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("nanoclaw-runner")))
        .unwrap_or_else(|| PathBuf::from("nanoclaw-runner"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p95() {
        let v = [5, 1, 3, 2, 4];
        assert_eq!(median(&v), Some(3));
        assert_eq!(p95(&v), Some(5));
        assert_eq!(median::<u32>(&[]), None);
    }
}
