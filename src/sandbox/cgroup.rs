//! cgroup detection and the fail-closed checks around libcontainer's cgroup handling.
//!
//! libcgroups applies the limits; this module makes sure they can be applied before a run starts and
//! that they really were applied before the workload is released:
//! - [`CgroupHost::probe`] finds the hierarchy (v2 unified, or v1 legacy/hybrid) and refuses to work
//!   when a required controller is missing, naming the kernel parameter that enables it;
//! - [`CgroupHost::prepare_parent`] (v2) enables the controllers for our parent cgroup itself and
//!   checks the result, where libcgroups only tries best-effort;
//! - [`CgroupHost::verify_limits`] reads the limit files of a created container back.
//!
//! Every path is relative to an injected root so the file logic is unit-tested against a temp dir.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The standard cgroup mount point.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Controllers a run needs on cgroup v2.
pub const V2_REQUIRED: [&str; 3] = ["memory", "pids", "cpu"];

/// Controllers a run needs on cgroup v1: limits, plus `devices` for the device allowlist and
/// `freezer`, which libcontainer's kill-all uses.
pub const V1_REQUIRED: [&str; 5] = ["memory", "pids", "cpu", "devices", "freezer"];

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupMode {
    /// cgroup v1, legacy or hybrid (libcgroups uses its v1 manager for both).
    V1,
    /// cgroup v2 only (unified).
    V2,
}

/// Why runs cannot be given their limits on this host.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Neither a cgroup2 nor a v1 tmpfs hierarchy is mounted at the root.
    #[error("no usable cgroup hierarchy at {0}: mount cgroup2 there (`mount -t cgroup2 none {0}`)")]
    NoHierarchy(PathBuf),
    /// A required controller is missing or disabled.
    #[error(
        "cgroup controller `{controller}` is not available ({mode:?}); refusing to run without limits. {hint}"
    )]
    MissingController {
        /// The controller's name.
        controller: String,
        /// The layout in use.
        mode: CgroupMode,
        /// What to change on the host.
        hint: String,
    },
    /// A controller is present but lacks a needed feature (e.g. CFS bandwidth control).
    #[error("cgroup file {file} is missing; {hint}")]
    MissingFeature {
        /// The file that should exist.
        file: PathBuf,
        /// What to change on the host.
        hint: String,
    },
    /// A limit file did not hold what libcontainer was asked to write.
    #[error("cgroup limit not applied: {file} holds {found:?}, expected {expected:?}")]
    LimitNotApplied {
        /// The file that was read back.
        file: PathBuf,
        /// Its content.
        found: String,
        /// The expected content.
        expected: String,
    },
    /// A cgroup file could not be read or written.
    #[error("cgroup I/O on {path}: {err}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        err: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |err| CgroupError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// The kernel parameter or option that brings a controller back.
fn hint_for(controller: &str) -> String {
    match controller {
        "memory" => "Boot with `cgroup_enable=memory` (Raspberry Pi: add `cgroup_enable=memory cgroup_memory=1` to cmdline.txt) and make sure CONFIG_MEMCG is set.".into(),
        "pids" => "The kernel needs CONFIG_CGROUP_PIDS.".into(),
        "cpu" => "The kernel needs CONFIG_CGROUP_SCHED and CONFIG_CFS_BANDWIDTH.".into(),
        "devices" => "The kernel needs CONFIG_CGROUP_DEVICE.".into(),
        "freezer" => "The kernel needs CONFIG_CGROUP_FREEZER.".into(),
        other => format!("Enable the `{other}` controller (check `cgroup_disable=` on the kernel command line)."),
    }
}

/// The limits a run's cgroup must end up with; what [`CgroupHost::verify_limits`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// Memory limit in bytes (page-aligned).
    pub memory_bytes: u64,
    /// Maximum number of tasks.
    pub pids: u64,
    /// CFS quota per period, microseconds.
    pub cpu_quota_us: u64,
    /// CFS period, microseconds.
    pub cpu_period_us: u64,
}

/// A probed cgroup host: layout, where each controller lives, and optional features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupHost {
    /// The cgroup root (normally [`DEFAULT_CGROUP_ROOT`]).
    pub root: PathBuf,
    /// The layout.
    pub mode: CgroupMode,
    /// v1 only: every enabled and mounted controller → its mount point.
    pub v1_mounts: BTreeMap<String, PathBuf>,
    /// Whether swap can be limited (v2 `memory.swap.max`, v1 `memory.memsw.*`). Without swap
    /// accounting a run can still not use more swap than exists; see [`CgroupHost::probe`].
    pub swap_limit: bool,
}

impl CgroupHost {
    /// Probes the real host: the layout from `statfs` on the root, `/proc/cgroups` and
    /// `/proc/self/mountinfo`.
    pub fn probe_system(root: &Path) -> Result<Self, CgroupError> {
        let mode = detect_mode(root)?;
        let proc_cgroups =
            fs::read_to_string("/proc/cgroups").map_err(io_err(Path::new("/proc/cgroups")))?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_err(Path::new("/proc/self/mountinfo")))?;
        let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
        Self::probe(root, mode, &proc_cgroups, &mountinfo, &swaps)
    }

    /// Checks that every required controller is there; injectable for tests. `proc_cgroups` is the
    /// text of `/proc/cgroups`, `mountinfo` of `/proc/self/mountinfo`, `swaps` of `/proc/swaps`.
    ///
    /// Swap: if the host has active swap but no swap accounting, a run could escape its memory
    /// limit into swap, so that fails closed too (`swapaccount=1` / CONFIG_MEMCG_SWAP).
    pub fn probe(
        root: &Path,
        mode: CgroupMode,
        proc_cgroups: &str,
        mountinfo: &str,
        swaps: &str,
    ) -> Result<Self, CgroupError> {
        let swap_active = swaps.lines().skip(1).any(|l| !l.trim().is_empty());
        let host = match mode {
            CgroupMode::V2 => {
                let file = root.join("cgroup.controllers");
                let text = fs::read_to_string(&file).map_err(io_err(&file))?;
                let have: Vec<&str> = text.split_whitespace().collect();
                for c in V2_REQUIRED {
                    if !have.contains(&c) {
                        return Err(CgroupError::MissingController {
                            controller: c.into(),
                            mode,
                            hint: hint_for(c),
                        });
                    }
                }
                // memory.swap.max only exists below the root; prepare_parent settles it.
                CgroupHost {
                    root: root.to_path_buf(),
                    mode,
                    v1_mounts: BTreeMap::new(),
                    swap_limit: false,
                }
            }
            CgroupMode::V1 => {
                let enabled = parse_proc_cgroups(proc_cgroups);
                let mounts = parse_v1_mounts(mountinfo);
                // Every enabled, mounted controller: libcontainer creates the run's dir in each.
                let v1_mounts: BTreeMap<String, PathBuf> = mounts
                    .into_iter()
                    .filter(|(c, _)| enabled.get(c) == Some(&true))
                    .collect();
                for c in V1_REQUIRED {
                    if !v1_mounts.contains_key(c) {
                        return Err(CgroupError::MissingController {
                            controller: c.into(),
                            mode,
                            hint: hint_for(c),
                        });
                    }
                }
                let quota = v1_mounts["cpu"].join("cpu.cfs_quota_us");
                if !quota.exists() {
                    return Err(CgroupError::MissingFeature {
                        file: quota,
                        hint: hint_for("cpu"),
                    });
                }
                let swap_limit = v1_mounts["memory"]
                    .join("memory.memsw.limit_in_bytes")
                    .exists();
                CgroupHost {
                    root: root.to_path_buf(),
                    mode,
                    v1_mounts,
                    swap_limit,
                }
            }
        };
        if mode == CgroupMode::V1 && !host.swap_limit && swap_active {
            return Err(swap_error(&host.v1_mounts["memory"]));
        }
        Ok(host)
    }

    /// Creates the parent cgroup (e.g. `nanoclaw`) and, on v2, enables the required controllers
    /// for it in every level's `cgroup.subtree_control`, then checks they took effect. Also settles
    /// whether swap can be limited on v2 (`memory.swap.max` in the parent). Idempotent.
    pub fn prepare_parent(&mut self, parent: &str, swaps: &str) -> Result<(), CgroupError> {
        let parent = parent.trim_matches('/');
        match self.mode {
            CgroupMode::V1 => {
                for mount in self.v1_mounts.values() {
                    let dir = mount.join(parent);
                    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                }
                Ok(())
            }
            CgroupMode::V2 => {
                let mut dir = self.root.clone();
                for part in parent.split('/').filter(|p| !p.is_empty()) {
                    enable_controllers(&dir)?;
                    dir = dir.join(part);
                    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                }
                enable_controllers(&dir)?;
                for (file, c) in [
                    ("memory.max", "memory"),
                    ("pids.max", "pids"),
                    ("cpu.max", "cpu"),
                ] {
                    if !dir.join(file).exists() {
                        return Err(CgroupError::MissingController {
                            controller: c.into(),
                            mode: self.mode,
                            hint: hint_for(c),
                        });
                    }
                }
                self.swap_limit = dir.join("memory.swap.max").exists();
                let swap_active = swaps.lines().skip(1).any(|l| !l.trim().is_empty());
                if !self.swap_limit && swap_active {
                    return Err(swap_error(&dir));
                }
                Ok(())
            }
        }
    }

    /// Directories that hold the run's cgroup (`cgroups_path` as in the OCI spec, e.g.
    /// `/nanoclaw/<id>`): one per v1 controller, or the single v2 directory.
    pub fn run_dirs(&self, cgroups_path: &str) -> Vec<PathBuf> {
        let rel = cgroups_path.trim_start_matches('/');
        match self.mode {
            CgroupMode::V2 => vec![self.root.join(rel)],
            CgroupMode::V1 => {
                let mut dirs: Vec<PathBuf> = self.v1_mounts.values().map(|m| m.join(rel)).collect();
                dirs.dedup();
                dirs
            }
        }
    }

    fn controller_dir(&self, controller: &str, cgroups_path: &str) -> PathBuf {
        let rel = cgroups_path.trim_start_matches('/');
        match self.mode {
            CgroupMode::V2 => self.root.join(rel),
            CgroupMode::V1 => self
                .v1_mounts
                .get(controller)
                .map(|m| m.join(rel))
                .unwrap_or_else(|| self.root.join(controller).join(rel)),
        }
    }

    /// Reads the limit files of a created container back and fails if any differs. Called between
    /// create and start, so a run never starts unlimited.
    pub fn verify_limits(&self, cgroups_path: &str, l: &CgroupLimits) -> Result<(), CgroupError> {
        let mem = self.controller_dir("memory", cgroups_path);
        let pids = self.controller_dir("pids", cgroups_path);
        let cpu = self.controller_dir("cpu", cgroups_path);
        match self.mode {
            CgroupMode::V2 => {
                expect_file(&mem.join("memory.max"), &l.memory_bytes.to_string())?;
                if self.swap_limit {
                    expect_file(&mem.join("memory.swap.max"), "0")?;
                }
                expect_file(&pids.join("pids.max"), &l.pids.to_string())?;
                expect_file(
                    &cpu.join("cpu.max"),
                    &format!("{} {}", l.cpu_quota_us, l.cpu_period_us),
                )?;
            }
            CgroupMode::V1 => {
                expect_file(
                    &mem.join("memory.limit_in_bytes"),
                    &l.memory_bytes.to_string(),
                )?;
                if self.swap_limit {
                    expect_file(
                        &mem.join("memory.memsw.limit_in_bytes"),
                        &l.memory_bytes.to_string(),
                    )?;
                }
                expect_file(&pids.join("pids.max"), &l.pids.to_string())?;
                expect_file(&cpu.join("cpu.cfs_quota_us"), &l.cpu_quota_us.to_string())?;
                expect_file(&cpu.join("cpu.cfs_period_us"), &l.cpu_period_us.to_string())?;
            }
        }
        Ok(())
    }

    /// How many processes the kernel OOM-killed in the run's cgroup (`oom_kill` in v2
    /// `memory.events` or v1 `memory.oom_control`). Read before the cgroup is removed.
    pub fn oom_kills(&self, cgroups_path: &str) -> Option<u64> {
        let dir = self.controller_dir("memory", cgroups_path);
        let file = match self.mode {
            CgroupMode::V2 => dir.join("memory.events"),
            CgroupMode::V1 => dir.join("memory.oom_control"),
        };
        parse_keyed(&fs::read_to_string(file).ok()?, "oom_kill")
    }
}

fn swap_error(dir: &Path) -> CgroupError {
    CgroupError::MissingFeature {
        file: dir.join("memory.swap.max / memory.memsw.limit_in_bytes"),
        hint: "swap is active but swap accounting is off, so a run could escape its memory limit \
               into swap: boot with `swapaccount=1` (CONFIG_MEMCG_SWAP) or disable swap"
            .into(),
    }
}

/// Writes `+c` for every required controller not yet enabled to `dir/cgroup.subtree_control` (one
/// write; the kernel applies the list or fails), then checks each is listed, naming any missing.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).unwrap_or_default();
    let missing: Vec<String> = V2_REQUIRED
        .iter()
        .filter(|c| !has_token(&current, c))
        .map(|c| format!("+{c}"))
        .collect();
    let mut write_error = None;
    if !missing.is_empty()
        && let Err(err) = fs::write(&file, missing.join(" "))
    {
        write_error = Some(err);
    }
    let after = fs::read_to_string(&file).unwrap_or_default();
    for c in V2_REQUIRED {
        if !has_token(&after, c) {
            let why = match &write_error {
                Some(err) => format!("writing +{c} to {} failed ({err})", file.display()),
                None => format!("{} does not list it", file.display()),
            };
            return Err(CgroupError::MissingController {
                controller: c.into(),
                mode: CgroupMode::V2,
                hint: format!("{why}. {}", hint_for(c)),
            });
        }
    }
    Ok(())
}

/// Real files list `memory pids`; a plain file in a test holds what was written, `+memory +pids`.
fn has_token(text: &str, controller: &str) -> bool {
    text.split_whitespace()
        .any(|t| t.trim_start_matches('+') == controller)
}

fn expect_file(path: &Path, expected: &str) -> Result<(), CgroupError> {
    let found = fs::read_to_string(path).map_err(io_err(path))?;
    if found.trim() != expected {
        return Err(CgroupError::LimitNotApplied {
            file: path.to_path_buf(),
            found: found.trim().to_string(),
            expected: expected.to_string(),
        });
    }
    Ok(())
}

/// `statfs` on the root: cgroup2 → v2; tmpfs (v1 controllers below) → v1.
pub fn detect_mode(root: &Path) -> Result<CgroupMode, CgroupError> {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
    let st = statfs(root).map_err(|e| CgroupError::Io {
        path: root.to_path_buf(),
        err: e.into(),
    })?;
    let magic = st.filesystem_type();
    if magic == CGROUP2_SUPER_MAGIC {
        Ok(CgroupMode::V2)
    } else if magic == TMPFS_MAGIC {
        Ok(CgroupMode::V1)
    } else {
        Err(CgroupError::NoHierarchy(root.to_path_buf()))
    }
}

/// `/proc/cgroups`: name → enabled.
fn parse_proc_cgroups(text: &str) -> BTreeMap<String, bool> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[0].to_string(), f[3] == "1"))
        })
        .collect()
}

/// v1 cgroup mounts from mountinfo: controller → mount point (co-mounted controllers share one).
fn parse_v1_mounts(mountinfo: &str) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let post: Vec<&str> = post.split_whitespace().collect();
        if post.first() != Some(&"cgroup") {
            continue;
        }
        let Some(mount_point) = pre.split_whitespace().nth(4) else {
            continue;
        };
        let super_opts = post.get(2).copied().unwrap_or_default();
        for opt in super_opts.split(',') {
            out.entry(opt.to_string())
                .or_insert_with(|| PathBuf::from(unescape_mountinfo(mount_point)));
        }
    }
    out
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// `key value` lines, e.g. `oom_kill 3`.
fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
cpuacct\t2\t1\t1
memory\t4\t32\t1
devices\t5\t1\t1
freezer\t6\t1\t1
pids\t8\t1\t1
";

    fn v1_fixture(root: &Path, memsw: bool) -> String {
        let mut mountinfo = String::new();
        for (i, c) in V1_REQUIRED.iter().enumerate() {
            let dir = root.join(c);
            fs::create_dir_all(&dir).unwrap();
            mountinfo.push_str(&format!(
                "{} 25 0:{} / {} rw,nosuid - cgroup cgroup rw,{}\n",
                30 + i,
                40 + i,
                dir.display(),
                c
            ));
        }
        fs::write(root.join("cpu/cpu.cfs_quota_us"), "-1").unwrap();
        if memsw {
            fs::write(root.join("memory/memory.memsw.limit_in_bytes"), "0").unwrap();
        }
        mountinfo.push_str("22 1 0:21 / /proc rw - proc proc rw\n");
        mountinfo
    }

    #[test]
    fn v1_probe_finds_mounts_and_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = v1_fixture(tmp.path(), true);
        let host = CgroupHost::probe(tmp.path(), CgroupMode::V1, PROC_CGROUPS, &mi, "").unwrap();
        assert_eq!(host.v1_mounts["memory"], tmp.path().join("memory"));
        assert!(host.swap_limit);
        assert_eq!(
            host.run_dirs("/nanoclaw/r1").len(),
            V1_REQUIRED.len(),
            "one dir per controller"
        );
        // Mount options and named hierarchies are not controllers.
        assert!(!host.v1_mounts.contains_key("rw"));
        let named = format!(
            "{mi}40 25 0:50 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        );
        let host = CgroupHost::probe(tmp.path(), CgroupMode::V1, PROC_CGROUPS, &named, "").unwrap();
        assert_eq!(host.v1_mounts.len(), V1_REQUIRED.len());
    }

    #[test]
    fn v1_disabled_memory_fails_closed_with_kernel_parameter() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = v1_fixture(tmp.path(), true);
        let disabled = PROC_CGROUPS.replace("memory\t4\t32\t1", "memory\t0\t1\t0");
        let err = CgroupHost::probe(tmp.path(), CgroupMode::V1, &disabled, &mi, "").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`memory` is not available"), "{msg}");
        assert!(msg.contains("cgroup_enable=memory"), "{msg}");
    }

    #[test]
    fn v1_without_cfs_bandwidth_fails_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = v1_fixture(tmp.path(), true);
        fs::remove_file(tmp.path().join("cpu/cpu.cfs_quota_us")).unwrap();
        let err = CgroupHost::probe(tmp.path(), CgroupMode::V1, PROC_CGROUPS, &mi, "").unwrap_err();
        assert!(err.to_string().contains("CONFIG_CFS_BANDWIDTH"), "{err}");
    }

    #[test]
    fn v1_active_swap_without_accounting_fails_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = v1_fixture(tmp.path(), false);
        let swaps = "Filename Type Size Used Priority\n/swapfile file 1024 0 -2\n";
        let err =
            CgroupHost::probe(tmp.path(), CgroupMode::V1, PROC_CGROUPS, &mi, swaps).unwrap_err();
        assert!(err.to_string().contains("swapaccount=1"), "{err}");
        // Without active swap it is allowed (nothing to escape into).
        let host = CgroupHost::probe(tmp.path(), CgroupMode::V1, PROC_CGROUPS, &mi, "").unwrap();
        assert!(!host.swap_limit);
    }

    #[test]
    fn v2_missing_memory_controller_names_the_boot_parameter() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("cgroup.controllers"),
            "cpuset cpu io pids\n",
        )
        .unwrap();
        let err = CgroupHost::probe(tmp.path(), CgroupMode::V2, "", "", "").unwrap_err();
        assert!(err.to_string().contains("cgroup_enable=memory"), "{err}");
    }

    /// Builds a fake v2 root where the parent's interface files appear as a kernel would create them.
    fn v2_fixture(root: &Path, with_swap: bool) -> CgroupHost {
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        let parent = root.join("nanoclaw");
        fs::create_dir_all(&parent).unwrap();
        for f in [
            "memory.max",
            "pids.max",
            "cpu.max",
            "cgroup.subtree_control",
        ] {
            fs::write(parent.join(f), "").unwrap();
        }
        if with_swap {
            fs::write(parent.join("memory.swap.max"), "max").unwrap();
        }
        CgroupHost::probe(root, CgroupMode::V2, "", "", "").unwrap()
    }

    #[test]
    fn v2_prepare_parent_enables_controllers_at_each_level() {
        let tmp = tempfile::tempdir().unwrap();
        let mut host = v2_fixture(tmp.path(), true);
        host.prepare_parent("/nanoclaw", "").unwrap();
        // Plain files keep the last write; the real kernel accumulates. Each level was written.
        for dir in [tmp.path().to_path_buf(), tmp.path().join("nanoclaw")] {
            let text = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
            assert!(text.starts_with('+'), "{}: {text:?}", dir.display());
        }
        assert!(host.swap_limit);
        assert_eq!(
            host.run_dirs("/nanoclaw/r1"),
            vec![tmp.path().join("nanoclaw/r1")]
        );
    }

    #[test]
    fn v2_prepare_parent_checks_the_kernel_listed_the_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let mut host = v2_fixture(tmp.path(), true);
        // A subtree_control that cannot be written (a directory) stands in for a kernel refusal.
        let sc = tmp.path().join("nanoclaw/cgroup.subtree_control");
        fs::remove_file(&sc).unwrap();
        fs::create_dir(&sc).unwrap();
        let err = host.prepare_parent("nanoclaw", "").unwrap_err();
        assert!(err.to_string().contains("`memory`"), "{err}");
    }

    #[test]
    fn v2_active_swap_without_swap_max_fails_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut host = v2_fixture(tmp.path(), false);
        let swaps = "Filename Type Size Used Priority\n/dev/zram0 partition 1024 0 100\n";
        let err = host.prepare_parent("nanoclaw", swaps).unwrap_err();
        assert!(err.to_string().contains("swapaccount=1"), "{err}");
        host.prepare_parent("nanoclaw", "").unwrap();
        assert!(!host.swap_limit);
    }

    const LIMITS: CgroupLimits = CgroupLimits {
        memory_bytes: 64 << 20,
        pids: 64,
        cpu_quota_us: 50_000,
        cpu_period_us: 100_000,
    };

    #[test]
    fn v2_verify_limits_reads_back_each_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut host = v2_fixture(tmp.path(), true);
        host.prepare_parent("nanoclaw", "").unwrap();
        let run = tmp.path().join("nanoclaw/r1");
        fs::create_dir_all(&run).unwrap();
        fs::write(run.join("memory.max"), "67108864\n").unwrap();
        fs::write(run.join("memory.swap.max"), "0\n").unwrap();
        fs::write(run.join("pids.max"), "64\n").unwrap();
        fs::write(run.join("cpu.max"), "50000 100000\n").unwrap();
        host.verify_limits("/nanoclaw/r1", &LIMITS).unwrap();

        // memory.high alone would throttle forever: memory.max must hold the limit.
        fs::write(run.join("memory.max"), "max\n").unwrap();
        let err = host.verify_limits("/nanoclaw/r1", &LIMITS).unwrap_err();
        assert!(
            err.to_string().contains("memory.max holds \"max\""),
            "{err}"
        );
        fs::write(run.join("memory.max"), "67108864\n").unwrap();
        fs::write(run.join("memory.swap.max"), "max\n").unwrap();
        assert!(host.verify_limits("/nanoclaw/r1", &LIMITS).is_err());
        fs::write(run.join("memory.swap.max"), "0\n").unwrap();
        fs::write(run.join("pids.max"), "max\n").unwrap();
        assert!(host.verify_limits("/nanoclaw/r1", &LIMITS).is_err());
    }

    #[test]
    fn v1_verify_limits_reads_back_each_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mi = v1_fixture(tmp.path(), true);
        let host = CgroupHost::probe(tmp.path(), CgroupMode::V1, PROC_CGROUPS, &mi, "").unwrap();
        let rel = "nanoclaw/r1";
        for c in ["memory", "pids", "cpu"] {
            fs::create_dir_all(tmp.path().join(c).join(rel)).unwrap();
        }
        let w =
            |c: &str, f: &str, v: &str| fs::write(tmp.path().join(c).join(rel).join(f), v).unwrap();
        w("memory", "memory.limit_in_bytes", "67108864\n");
        w("memory", "memory.memsw.limit_in_bytes", "67108864\n");
        w("pids", "pids.max", "64\n");
        w("cpu", "cpu.cfs_quota_us", "50000\n");
        w("cpu", "cpu.cfs_period_us", "100000\n");
        host.verify_limits("/nanoclaw/r1", &LIMITS).unwrap();
        w(
            "memory",
            "memory.memsw.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert!(host.verify_limits("/nanoclaw/r1", &LIMITS).is_err());
    }

    #[test]
    fn oom_kill_counters() {
        let tmp = tempfile::tempdir().unwrap();
        let mut host = v2_fixture(tmp.path(), true);
        host.prepare_parent("nanoclaw", "").unwrap();
        let run = tmp.path().join("nanoclaw/r1");
        fs::create_dir_all(&run).unwrap();
        fs::write(
            run.join("memory.events"),
            "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(host.oom_kills("nanoclaw/r1"), Some(1));
        assert_eq!(
            parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
    }

    #[test]
    fn parses_real_mountinfo_lines() {
        let mi = "35 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct\n\
                  36 25 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let m = parse_v1_mounts(mi);
        assert_eq!(m["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(!m.contains_key("cgroup2"));
    }

    #[test]
    fn this_host_probe_matches_its_layout() {
        // Runs against the real host; only meaningful where /sys/fs/cgroup exists.
        let root = Path::new(DEFAULT_CGROUP_ROOT);
        if !root.exists() {
            eprintln!("skipping: no {DEFAULT_CGROUP_ROOT}");
            return;
        }
        match CgroupHost::probe_system(root) {
            Ok(h) => assert_eq!(h.mode, detect_mode(root).unwrap()),
            Err(e) => eprintln!("skipping: host cannot run sandboxes: {e}"),
        }
    }
}
