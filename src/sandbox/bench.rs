//! `nanoclaw bench sandbox`: create+start and full-lifecycle latency of a trivial run through the
//! backend (helper spawn included), side by side with Debian's `crun run` on the same bundle, plus
//! host and helper peak RSS. Prints figures; asserts nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{
    Backend, ContainerSpec, LibcontainerBackend, LibcontainerConfig, RunEvent, RunSpec, RunStatus,
    SandboxError, spec,
};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Runs per variant.
    pub runs: usize,
    /// The image to run `/bin/true` from.
    pub rootfs: PathBuf,
    /// Backend configuration (helper path, state root, cgroup parent).
    pub backend: LibcontainerConfig,
    /// `crun` binary to compare with, if any.
    pub crun: Option<PathBuf>,
}

/// Latency figures of one variant.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Samples, sorted.
    pub samples: Vec<Duration>,
}

impl Stats {
    fn from(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self { samples }
    }

    /// The median.
    pub fn median(&self) -> Duration {
        self.percentile(50)
    }

    /// The `p`th percentile (nearest rank).
    pub fn percentile(&self, p: usize) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p * self.samples.len()).div_ceil(100).max(1);
        self.samples[rank.min(self.samples.len()) - 1]
    }
}

/// The figures.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Spawn → workload exec'd (helper spawn + create + start).
    pub create_start: Stats,
    /// Spawn → outcome (including wait, delete, cleanup).
    pub lifecycle: Stats,
    /// `crun run` wall time (create, start, wait, delete), if crun was available.
    pub crun: Option<Stats>,
    /// `crun create` + `crun start` wall time.
    pub crun_create_start: Option<Stats>,
    /// Why crun was not measured, if it was not.
    pub crun_skipped: Option<String>,
    /// How crun was run, if not like nanoclaw (e.g. without cgroups on a hybrid host).
    pub crun_note: Option<String>,
    /// Peak RSS of this (host) process, KiB.
    pub host_max_rss_kib: u64,
    /// Largest helper peak RSS seen, KiB.
    pub helper_max_rss_kib: u64,
    /// Inside the helper: checks + create (cgroups, namespaces, mounts, limit read-back).
    pub helper_create: Stats,
    /// Inside the helper: nanoclaw's own preparation before libcontainer's create.
    pub helper_prepare: Stats,
    /// Inside the helper: start until exec confirmed.
    pub helper_start: Stats,
    /// Inside the helper: delete and cleanup.
    pub helper_cleanup: Stats,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, s: &Stats| {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            writeln!(
                f,
                "{name:<40} {:>8.1}ms {:>8.1}ms",
                ms(s.median()),
                ms(s.percentile(95))
            )
        };
        writeln!(
            f,
            "sandbox benchmark ({} runs of /bin/true)",
            self.lifecycle.samples.len()
        )?;
        writeln!(f, "{:<40} {:>10} {:>10}", "", "median", "p95")?;
        row(
            f,
            "nanoclaw create+start (helper incl.)",
            &self.create_start,
        )?;
        row(f, "nanoclaw full lifecycle", &self.lifecycle)?;
        row(f, "  in the helper: create", &self.helper_create)?;
        row(
            f,
            "    of which nanoclaw's own checks",
            &self.helper_prepare,
        )?;
        row(f, "  in the helper: start to exec", &self.helper_start)?;
        row(f, "  in the helper: delete + cleanup", &self.helper_cleanup)?;
        match (&self.crun, &self.crun_skipped) {
            (Some(c), _) => {
                if let Some(cs) = &self.crun_create_start {
                    row(f, "crun create + crun start", cs)?;
                }
                row(f, "crun run (full lifecycle)", c)?;
                if let Some(note) = &self.crun_note {
                    writeln!(f, "  note: {note}")?;
                }
            }
            (None, Some(why)) => writeln!(f, "crun: skipped ({why})")?,
            (None, None) => {}
        }
        writeln!(f, "host peak RSS:   {} KiB", self.host_max_rss_kib)?;
        writeln!(f, "helper peak RSS: {} KiB", self.helper_max_rss_kib)
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the benchmark. Must be called inside a tokio runtime.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, SandboxError> {
    let backend = LibcontainerBackend::new(opts.backend.clone())?;
    let container = ContainerSpec::new(opts.rootfs.clone(), vec!["/bin/true".into()]);
    let mut create_start = Vec::new();
    let mut lifecycle = Vec::new();
    let mut helper_rss = 0;
    let (mut h_create, mut h_start, mut h_cleanup) = (Vec::new(), Vec::new(), Vec::new());
    let mut h_prepare = Vec::new();
    let pid = std::process::id();
    for i in 0..opts.runs {
        let t0 = Instant::now();
        let mut spec = RunSpec::new(format!("bench-{pid}-{i}"), container.clone());
        spec.timeout = Duration::from_secs(60);
        let mut handle = backend.start(spec).await?;
        while let Some(ev) = handle.next_event().await {
            match ev {
                RunEvent::Started => create_start.push(t0.elapsed()),
                RunEvent::Finished(outcome) => {
                    lifecycle.push(t0.elapsed());
                    helper_rss = helper_rss.max(outcome.helper_max_rss_kib);
                    let t = outcome.stage_timings;
                    h_create.push(Duration::from_micros(t.create_us));
                    h_prepare.push(Duration::from_micros(t.prepare_us));
                    h_start.push(Duration::from_micros(t.start_us));
                    h_cleanup.push(Duration::from_micros(t.cleanup_us));
                    if outcome.status != RunStatus::Exited(0) {
                        return Err(SandboxError::Protocol(format!(
                            "benchmark run failed: {:?}",
                            outcome.status
                        )));
                    }
                }
                _ => {}
            }
        }
    }
    let mut report = BenchReport {
        create_start: Stats::from(create_start),
        lifecycle: Stats::from(lifecycle),
        helper_max_rss_kib: helper_rss,
        helper_create: Stats::from(h_create),
        helper_prepare: Stats::from(h_prepare),
        helper_start: Stats::from(h_start),
        helper_cleanup: Stats::from(h_cleanup),
        ..Default::default()
    };
    match &opts.crun {
        Some(crun) if crun.exists() => {
            match crun_runs(crun, &container, &opts.backend, opts.runs, false).await {
                Ok((whole, split)) => {
                    report.crun = Some(whole);
                    report.crun_create_start = Some(split);
                }
                // crun refuses v1 hybrid hosts whose cgroup2 mount has controllers; hide that
                // mount in a private mount namespace so it runs in plain v1 mode.
                Err(e) if e.contains("hybrid") => {
                    match crun_runs(crun, &container, &opts.backend, opts.runs, true).await {
                        Ok((whole, split)) => {
                            report.crun = Some(whole);
                            report.crun_create_start = Some(split);
                            let overhead = wrapper_overhead(opts.runs).await;
                            report.crun_note = Some(format!(
                                "hybrid host: crun ran under `unshare -m` with the cgroup2 mount hidden; \
                                 that wrapper alone takes {:.1}ms (median), included above once per crun call",
                                overhead.median().as_secs_f64() * 1000.0
                            ));
                        }
                        Err(e2) => report.crun_skipped = Some(format!("{e}; wrapped: {e2}")),
                    }
                }
                Err(e) => report.crun_skipped = Some(e),
            }
        }
        Some(crun) => report.crun_skipped = Some(format!("{} not found", crun.display())),
        None => report.crun_skipped = Some("no crun given".into()),
    }
    report.host_max_rss_kib = peak_rss_kib();
    Ok(report)
}

/// `unshare` arguments that run the following command with /sys/fs/cgroup/unified unmounted.
const HIDE_UNIFIED: &[&str] = &[
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"",
];

/// Cost of the [`HIDE_UNIFIED`] wrapper itself, running `true`.
async fn wrapper_overhead(runs: usize) -> Stats {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let ok = tokio::process::Command::new("unshare")
            .args(HIDE_UNIFIED)
            .arg("true")
            .status()
            .await
            .is_ok();
        if ok {
            samples.push(t0.elapsed());
        }
    }
    Stats::from(samples)
}

/// One crun invocation; `Err` carries its stderr. stderr goes to a file, not a pipe: after
/// `crun create` the container's init keeps crun's stdio open until it is started.
async fn crun_cmd(
    crun: &Path,
    hide_unified: bool,
    state: &Path,
    args: &[&std::ffi::OsStr],
) -> Result<(), String> {
    let err_path = state.with_extension("stderr");
    let err_file = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut cmd = if hide_unified {
        let mut c = tokio::process::Command::new("unshare");
        c.args(HIDE_UNIFIED).arg(crun);
        c
    } else {
        tokio::process::Command::new(crun)
    };
    let status = cmd
        .arg("--root")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_file))
        .status()
        .await
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "crun {} failed: {}",
            args.first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default(),
            std::fs::read_to_string(&err_path)
                .unwrap_or_default()
                .trim()
        ))
    }
}

/// The same bundle (our generated spec, same image) with crun: `crun run` (whole lifecycle), and
/// `crun create` + `crun start` (start latency; `crun delete -f` afterwards, untimed).
async fn crun_runs(
    crun: &Path,
    container: &ContainerSpec,
    cfg: &LibcontainerConfig,
    runs: usize,
    hide_unified: bool,
) -> Result<(Stats, Stats), String> {
    let dir = cfg
        .state_root
        .join(format!("bench-crun-{}", std::process::id()));
    let bundle = dir.join("bundle");
    let state = dir.join("state");
    std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
    let result = async {
        let (mut whole, mut create_start) = (Vec::new(), Vec::new());
        for i in 0..runs {
            for split in [false, true] {
                let id = format!("nanoclaw-bench-crun-{}-{i}-{split}", std::process::id());
                let cgroups_path = format!("/{}-crun/{id}", cfg.cgroup_parent.trim_matches('/'));
                let oci =
                    spec::generate(container, &cgroups_path, true).map_err(|e| e.to_string())?;
                oci.save(bundle.join("config.json"))
                    .map_err(|e| e.to_string())?;
                let idos = std::ffi::OsStr::new(&id);
                let t0 = Instant::now();
                if split {
                    let created = crun_cmd(
                        crun,
                        hide_unified,
                        &state,
                        &["create".as_ref(), "-b".as_ref(), bundle.as_os_str(), idos],
                    )
                    .await;
                    let started = match created {
                        Ok(()) => {
                            crun_cmd(crun, hide_unified, &state, &["start".as_ref(), idos]).await
                        }
                        Err(e) => Err(e),
                    };
                    create_start.push(t0.elapsed());
                    let _ = crun_cmd(
                        crun,
                        hide_unified,
                        &state,
                        &["delete".as_ref(), "-f".as_ref(), idos],
                    )
                    .await;
                    started?;
                } else {
                    crun_cmd(
                        crun,
                        hide_unified,
                        &state,
                        &["run".as_ref(), "-b".as_ref(), bundle.as_os_str(), idos],
                    )
                    .await?;
                    whole.push(t0.elapsed());
                }
            }
        }
        Ok((Stats::from(whole), Stats::from(create_start)))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Stats::from((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(s.median(), Duration::from_millis(50));
        assert_eq!(s.percentile(95), Duration::from_millis(95));
        assert_eq!(Stats::default().median(), Duration::ZERO);
        let one = Stats::from(vec![Duration::from_millis(7)]);
        assert_eq!(one.percentile(95), Duration::from_millis(7));
    }
}
