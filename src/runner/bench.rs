//! `nanoclaw bench runner`: cold start of the runner, from process start to its first request at a
//! (fake) Messages API, and its peak memory. Figures only, no assertions.
//!
//! This measures the runner as a plain process (no container), so it isolates what the runner itself
//! costs; the container's own start is the sandbox benchmark's figure. Peak memory is the runner's
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
}

/// Figures of one benchmark.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub runs: usize,
    /// Spawn → first request seen by the API, per run.
    pub first_request: Vec<Duration>,
    /// Spawn → exit after `_close`, per run.
    pub total: Vec<Duration>,
    /// Peak RSS per run, KiB.
    pub peak_rss_kib: Vec<u64>,
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
        writeln!(
            f,
            "runner cold start (plain process, no container), {} runs",
            self.runs
        )?;
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
        write!(
            f,
            "  peak RSS: median {} KiB, max {} KiB",
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
