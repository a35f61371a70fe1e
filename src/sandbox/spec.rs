//! What a run looks like inside ([`ContainerSpec`]) and its pure translation into an OCI runtime
//! spec. No I/O here: the helper writes the result to the bundle.
//!
//! Fixed choices, whatever the caller asks:
//! - the root is the shared image, mounted read-only; writable places are `/tmp` (tmpfs with a size
//!   cap) and the bind mounts the caller lists;
//! - namespaces pid, mount, ipc, uts, cgroup and network (fresh, or a pre-created one joined by path);
//! - a non-root uid/gid (uid 0 is refused), every capability set empty, `no_new_privileges`;
//! - cgroup limits on memory (swap = 0 where the kernel can limit it), pids and cpu; devices
//!   deny-all apart from libcontainer's defaults (null, zero, full, random, urandom, tty, ptmx);
//! - `/dev` is a fresh tmpfs, masked and read-only `/proc` paths as runc's defaults, no `/sys`.
//!
//! Seccomp is deliberately **not** in the OCI spec: without libcontainer's `libseccomp` feature it
//! would be dropped with only a warning. Our executor installs it (see `seccomp.rs`).

use std::path::{Component, Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_maskedpaths,
    get_default_readonly_paths,
};
use serde::{Deserialize, Serialize};

use super::cgroup::CgroupLimits;
use crate::core::mount_policy::EXTRA_MOUNT_ROOT;

/// Default uid/gid of the workload (the image's `node` user).
pub const DEFAULT_UID: u32 = 1000;
/// Default memory limit per run.
pub const DEFAULT_MEMORY_BYTES: u64 = 512 << 20;
/// Default maximum number of tasks per run.
pub const DEFAULT_PIDS: u64 = 256;
/// Default CFS period.
pub const DEFAULT_CPU_PERIOD_US: u64 = 100_000;
/// Default CFS quota: one CPU.
pub const DEFAULT_CPU_QUOTA_US: u64 = 100_000;
/// Default size cap of the `/tmp` tmpfs.
pub const DEFAULT_TMP_BYTES: u64 = 64 << 20;
/// Default open-files limit.
pub const DEFAULT_NOFILE: u64 = 1024;
/// Default `PATH` when the caller gives none (libcontainer refuses a spec without one).
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
/// Memory limits are multiples of this, so every page size rounds them the same way.
pub const MEMORY_GRANULE: u64 = 1 << 20;

/// Destinations the sandbox mounts itself; a bind mount may not shadow them.
const RESERVED_DESTINATIONS: [&str; 5] = ["/", "/proc", "/dev", "/sys", "/tmp"];

/// One bind mount from the host into the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute host path. It must be its own real path (no symlink anywhere in it); the helper
    /// re-checks this right before creating the container.
    pub source: PathBuf,
    /// Absolute path inside the run; must already exist in the read-only image.
    pub destination: String,
    /// Mounted read-only.
    pub readonly: bool,
}

/// Resource limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (a multiple of [`MEMORY_GRANULE`]); swap is limited to zero on top.
    pub memory_bytes: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids: u64,
    /// CFS quota per period in microseconds (`100_000` of `100_000` = one CPU).
    pub cpu_quota_us: u64,
    /// CFS period in microseconds.
    pub cpu_period_us: u64,
    /// Size cap of the `/tmp` tmpfs in bytes.
    pub tmp_bytes: u64,
    /// `RLIMIT_NOFILE`.
    pub nofile: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            pids: DEFAULT_PIDS,
            cpu_quota_us: DEFAULT_CPU_QUOTA_US,
            cpu_period_us: DEFAULT_CPU_PERIOD_US,
            tmp_bytes: DEFAULT_TMP_BYTES,
            nofile: DEFAULT_NOFILE,
        }
    }
}

impl Limits {
    /// The cgroup part, as read back by `CgroupHost::verify_limits`.
    pub fn cgroup(&self) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: self.memory_bytes,
            pids: self.pids,
            cpu_quota_us: self.cpu_quota_us,
            cpu_period_us: self.cpu_period_us,
        }
    }
}

/// The run's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NetworkMode {
    /// A fresh namespace with only `lo` (down): no network at all.
    #[default]
    Isolated,
    /// Join a namespace prepared by the caller (e.g. `/run/netns/<name>` with a veth and nftables
    /// rules, from the egress module).
    Join(PathBuf),
}

/// Everything about what runs inside the sandbox. Sent from the host to its own `sandbox-exec`
/// helper (same binary, so not a compatibility boundary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Root of the (shared, read-only) image: a directory, e.g. a mounted squashfs.
    pub rootfs: PathBuf,
    /// Command and arguments; `args[0]` is looked up in `PATH` inside the image.
    pub args: Vec<String>,
    /// The complete environment of the workload. Nothing from the host's environment is passed on;
    /// `PATH` defaults to [`DEFAULT_PATH`] and `HOME` is set by libcontainer from the user.
    pub env: Vec<(String, String)>,
    /// Working directory inside the run.
    pub cwd: String,
    /// uid of the workload (never 0).
    pub uid: u32,
    /// gid of the workload (never 0).
    pub gid: u32,
    /// Host name inside the UTS namespace.
    pub hostname: String,
    /// Bind mounts, in order.
    pub mounts: Vec<BindMount>,
    /// Resource limits.
    pub limits: Limits,
    /// Network namespace.
    pub network: NetworkMode,
}

impl ContainerSpec {
    /// A spec with defaults: uid/gid 1000, cwd `/workspace/group`, isolated network, default limits.
    pub fn new(rootfs: impl Into<PathBuf>, args: Vec<String>) -> Self {
        Self {
            rootfs: rootfs.into(),
            args,
            env: Vec::new(),
            cwd: "/workspace/group".into(),
            uid: DEFAULT_UID,
            gid: DEFAULT_UID,
            hostname: "nanoclaw".into(),
            mounts: Vec::new(),
            limits: Limits::default(),
            network: NetworkMode::Isolated,
        }
    }
}

/// Why a [`ContainerSpec`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No command was given.
    #[error("the command is empty")]
    EmptyCommand,
    /// A string contains a NUL byte (it could not reach the kernel intact).
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    /// An environment variable name is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid environment variable name {0:?}")]
    EnvName(String),
    /// The workload would run as root.
    #[error("the workload may not run as uid or gid 0")]
    Root,
    /// A path that must be absolute and normal (no `.`/`..`) is not.
    #[error("{what} {path:?} must be absolute without `.` or `..`")]
    Path {
        /// Which path.
        what: &'static str,
        /// The path.
        path: String,
    },
    /// A bind mount would cover a place the sandbox mounts itself.
    #[error("mount destination {0:?} is reserved")]
    ReservedDestination(String),
    /// A limit is zero, too small or not aligned.
    #[error("invalid limit: {0}")]
    Limit(String),
    /// The hostname is not a plain label.
    #[error("invalid hostname {0:?}")]
    Hostname(String),
    /// oci-spec refused a value.
    #[error("building the OCI spec: {0}")]
    Oci(String),
}

impl From<libcontainer::oci_spec::OciSpecError> for SpecError {
    fn from(e: libcontainer::oci_spec::OciSpecError) -> Self {
        SpecError::Oci(e.to_string())
    }
}

/// Checks a spec without touching the filesystem.
pub fn validate(spec: &ContainerSpec) -> Result<(), SpecError> {
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return Err(SpecError::EmptyCommand);
    }
    if spec.args.iter().any(|a| a.contains('\0')) {
        return Err(SpecError::Nul("an argument"));
    }
    for (k, v) in &spec.env {
        let mut chars = k.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SpecError::EnvName(k.clone()));
        }
        if v.contains('\0') {
            return Err(SpecError::Nul("an environment value"));
        }
    }
    if spec.uid == 0 || spec.gid == 0 {
        return Err(SpecError::Root);
    }
    check_abs("rootfs", &spec.rootfs.to_string_lossy())?;
    check_abs("working directory", &spec.cwd)?;
    for m in &spec.mounts {
        check_abs("mount source", &m.source.to_string_lossy())?;
        check_abs("mount destination", &m.destination)?;
        let dest = Path::new(&m.destination);
        if RESERVED_DESTINATIONS
            .iter()
            .any(|r| dest == Path::new(r) || (*r != "/" && dest.starts_with(r)))
        {
            return Err(SpecError::ReservedDestination(m.destination.clone()));
        }
    }
    let l = &spec.limits;
    if l.memory_bytes == 0 || !l.memory_bytes.is_multiple_of(MEMORY_GRANULE) {
        return Err(SpecError::Limit(format!(
            "memory {} must be a positive multiple of {MEMORY_GRANULE}",
            l.memory_bytes
        )));
    }
    if l.pids == 0 {
        return Err(SpecError::Limit("pids must be positive".into()));
    }
    if l.cpu_period_us < 1000 || l.cpu_period_us > 1_000_000 || l.cpu_quota_us < 1000 {
        return Err(SpecError::Limit(format!(
            "cpu quota {} / period {} out of range (quota >= 1000, 1000 <= period <= 1000000)",
            l.cpu_quota_us, l.cpu_period_us
        )));
    }
    if l.tmp_bytes == 0 || l.nofile == 0 {
        return Err(SpecError::Limit(
            "tmp size and nofile must be positive".into(),
        ));
    }
    if let NetworkMode::Join(p) = &spec.network {
        check_abs("network namespace path", &p.to_string_lossy())?;
    }
    let h = &spec.hostname;
    if h.is_empty() || h.len() > 63 || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(SpecError::Hostname(h.clone()));
    }
    Ok(())
}

fn check_abs(what: &'static str, path: &str) -> Result<(), SpecError> {
    let bad = || SpecError::Path {
        what,
        path: path.to_string(),
    };
    if path.contains('\0') {
        return Err(SpecError::Nul(what));
    }
    let p = Path::new(path);
    if !p.is_absolute() || path.split('/').any(|s| s == "." || s == "..") {
        return Err(bad());
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad());
    }
    Ok(())
}

/// Builds the OCI spec for one run. `cgroups_path` is absolute (e.g. `/nanoclaw/<run id>`), so
/// libcontainer uses the cgroupfs manager, never systemd. `swap_limit` says whether the kernel can
/// limit swap (then swap is limited to zero beyond the memory limit).
pub fn generate(
    spec: &ContainerSpec,
    cgroups_path: &str,
    swap_limit: bool,
) -> Result<Spec, SpecError> {
    validate(spec)?;
    let l = &spec.limits;

    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !spec.env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }

    let no_caps = std::collections::HashSet::new();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(no_caps.clone())
        .effective(no_caps.clone())
        .inheritable(no_caps.clone())
        .permitted(no_caps.clone())
        .ambient(no_caps)
        .build()?;

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(spec.uid).gid(spec.gid).build()?)
        .args(spec.args.clone())
        .env(env)
        .cwd(spec.cwd.clone())
        .capabilities(capabilities)
        .no_new_privileges(true)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(l.nofile)
                .soft(l.nofile)
                .build()?,
            // No core dumps: they would land in a writable mount.
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitCore)
                .hard(0u64)
                .soft(0u64)
                .build()?,
        ])
        .build()?;

    let mut mounts = vec![
        fs_mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        // A fresh /dev: libcontainer creates its default device nodes here, not in the image.
        fs_mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=256k"],
        )?,
        fs_mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        fs_mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=16m"],
        )?,
    ];
    let tmp_size = format!("size={}", l.tmp_bytes);
    mounts.push(fs_mount(
        "/tmp",
        "tmpfs",
        "tmpfs",
        &["nosuid", "nodev", "mode=1777", &tmp_size],
    )?);
    if spec
        .mounts
        .iter()
        .any(|m| Path::new(&m.destination).starts_with(EXTRA_MOUNT_ROOT))
    {
        // Additional mounts get their mount points on a small root-owned tmpfs: the image is
        // read-only and cannot hold a directory for every possible name.
        mounts.push(fs_mount(
            EXTRA_MOUNT_ROOT,
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "noexec", "mode=755", "size=64k"],
        )?);
    }
    for m in &spec.mounts {
        // `bind`, not `rbind`: submounts of a source are not carried into the run.
        let mode = if m.readonly { "ro" } else { "rw" };
        mounts.push(
            MountBuilder::default()
                .destination(&m.destination)
                .typ("bind")
                .source(&m.source)
                .options(vec![
                    "bind".to_string(),
                    "nosuid".into(),
                    "nodev".into(),
                    mode.into(),
                ])
                .build()?,
        );
    }

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Cgroup,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    let mut net = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let NetworkMode::Join(path) = &spec.network {
        net = net.path(path.clone());
    }
    namespaces.push(net.build()?);

    let limit = i64::try_from(l.memory_bytes)
        .map_err(|_| SpecError::Limit("memory limit too large".into()))?;
    let mut memory = LinuxMemoryBuilder::default().limit(limit);
    if swap_limit {
        // OCI swap is memory+swap (v1 semantics); libcgroups writes swap.max = swap - limit on v2.
        memory = memory.swap(limit);
    }
    let pids = i64::try_from(l.pids).map_err(|_| SpecError::Limit("pids too large".into()))?;
    let quota = i64::try_from(l.cpu_quota_us)
        .map_err(|_| SpecError::Limit("cpu quota too large".into()))?;
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()?,
        ])
        .memory(memory.build()?)
        .pids(LinuxPidsBuilder::default().limit(pids).build()?)
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(l.cpu_period_us)
                .build()?,
        )
        .build()?;

    let mut masked = get_default_maskedpaths();
    for extra in ["/proc/kallsyms", "/sys/devices/virtual/powercap"] {
        masked.push(extra.to_string());
    }
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroups_path))
        .resources(resources)
        .masked_paths(masked)
        .readonly_paths(get_default_readonly_paths())
        .build()?;

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(spec.rootfs.clone())
                .readonly(true)
                .build()?,
        )
        .hostname(spec.hostname.clone())
        .mounts(mounts)
        .process(process)
        .linux(linux)
        .build()?)
}

fn fs_mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

#[cfg(test)]
mod tests {
    use libcontainer::oci_spec::runtime::LinuxNamespaceType;

    use super::*;

    fn base() -> ContainerSpec {
        let mut s = ContainerSpec::new("/img", vec!["/bin/sh".into(), "-c".into(), "true".into()]);
        s.env.push(("LANG".into(), "C.UTF-8".into()));
        s.mounts.push(BindMount {
            source: "/data/groups/g".into(),
            destination: "/workspace/group".into(),
            readonly: false,
        });
        s.mounts.push(BindMount {
            source: "/data/groups/global".into(),
            destination: "/workspace/global".into(),
            readonly: true,
        });
        s
    }

    #[test]
    fn generated_spec_locks_the_run_down() {
        let spec = generate(&base(), "/nanoclaw/r1", true).unwrap();
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.readonly(), Some(true));
        assert_eq!(root.path(), Path::new("/img"));

        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p.capabilities().as_ref().unwrap();
        for set in [
            caps.bounding(),
            caps.effective(),
            caps.inheritable(),
            caps.permitted(),
            caps.ambient(),
        ] {
            assert!(set.as_ref().unwrap().is_empty());
        }
        let env = p.env().as_ref().unwrap();
        assert!(env[0].starts_with("PATH="), "{env:?}");
        assert!(env.contains(&"LANG=C.UTF-8".to_string()));
        assert_eq!(
            p.oom_score_adj(),
            None,
            "would be written to the caller's own process"
        );

        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Network,
        ] {
            assert!(ns.contains(&t), "{t:?}");
        }
        assert!(
            linux.seccomp().is_none(),
            "installed by our executor instead"
        );
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/nanoclaw/r1"))
        );
        let res = linux.resources().as_ref().unwrap();
        let mem = res.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(512 << 20));
        assert_eq!(mem.swap(), Some(512 << 20), "memory+swap = limit: no swap");
        assert_eq!(res.pids().as_ref().unwrap().limit(), 256);
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(100_000));
        let dev = &res.devices().as_ref().unwrap()[0];
        assert!(!dev.allow());

        let mounts = spec.mounts().as_ref().unwrap();
        let find = |d: &str| {
            mounts
                .iter()
                .find(|m| m.destination() == Path::new(d))
                .unwrap()
        };
        assert_eq!(find("/dev").typ().as_deref(), Some("tmpfs"));
        let tmp = find("/tmp").options().as_ref().unwrap();
        assert!(tmp.contains(&format!("size={DEFAULT_TMP_BYTES}")));
        let group = find("/workspace/group").options().as_ref().unwrap();
        assert!(group.contains(&"rw".to_string()) && !group.contains(&"rbind".to_string()));
        let global = find("/workspace/global").options().as_ref().unwrap();
        assert!(global.contains(&"ro".to_string()));
        assert!(!mounts.iter().any(|m| m.destination() == Path::new("/sys")));
    }

    #[test]
    fn extra_mounts_get_a_tmpfs_for_their_mount_points() {
        let mut s = base();
        assert!(
            !generate(&s, "/n/r", true)
                .unwrap()
                .mounts()
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.destination() == Path::new(EXTRA_MOUNT_ROOT))
        );
        s.mounts.push(BindMount {
            source: "/srv/x".into(),
            destination: "/workspace/extra/x".into(),
            readonly: true,
        });
        let spec = generate(&s, "/n/r", true).unwrap();
        let mounts = spec.mounts().as_ref().unwrap();
        let tmpfs = mounts
            .iter()
            .position(|m| m.destination() == Path::new(EXTRA_MOUNT_ROOT))
            .unwrap();
        let bind = mounts
            .iter()
            .position(|m| m.destination() == Path::new("/workspace/extra/x"))
            .unwrap();
        assert!(tmpfs < bind);
    }

    #[test]
    fn without_swap_accounting_swap_is_not_set() {
        let spec = generate(&base(), "/nanoclaw/r1", false).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().swap(), None);
    }

    #[test]
    fn joined_network_namespace_is_passed_by_path() {
        let mut s = base();
        s.network = NetworkMode::Join("/run/netns/nc-r1".into());
        let spec = generate(&s, "/nanoclaw/r1", true).unwrap();
        let ns = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some(Path::new("/run/netns/nc-r1")));
    }

    #[test]
    fn the_spec_round_trips_through_config_json() {
        let spec = generate(&base(), "/nanoclaw/r1", true).unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn invalid_specs_are_refused() {
        type Mutation = Box<dyn Fn(&mut ContainerSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.args.clear()), "the command is empty"),
            (Box::new(|s| s.uid = 0), "may not run as uid or gid 0"),
            (Box::new(|s| s.gid = 0), "may not run as uid or gid 0"),
            (
                Box::new(|s| s.env.push(("A=B".into(), "x".into()))),
                "invalid environment variable name",
            ),
            (
                Box::new(|s| s.env.push(("1A".into(), "x".into()))),
                "invalid environment variable name",
            ),
            (Box::new(|s| s.env.push(("A".into(), "x\0y".into()))), "NUL"),
            (
                Box::new(|s| s.mounts[0].destination = "/workspace/../etc".into()),
                "must be absolute",
            ),
            (
                Box::new(|s| s.mounts[0].destination = "workspace".into()),
                "must be absolute",
            ),
            (
                Box::new(|s| s.mounts[0].source = "rel/dir".into()),
                "must be absolute",
            ),
            (
                Box::new(|s| s.mounts[0].destination = "/proc/sys".into()),
                "reserved",
            ),
            (
                Box::new(|s| s.mounts[0].destination = "/".into()),
                "reserved",
            ),
            (Box::new(|s| s.limits.memory_bytes = 1000), "multiple of"),
            (Box::new(|s| s.limits.pids = 0), "pids must be positive"),
            (Box::new(|s| s.limits.cpu_quota_us = 10), "out of range"),
            (Box::new(|s| s.hostname = "a b".into()), "invalid hostname"),
            (
                Box::new(|s| s.network = NetworkMode::Join("netns".into())),
                "must be absolute",
            ),
        ];
        for (mutate, expect) in cases {
            let mut s = base();
            mutate(&mut s);
            let err = generate(&s, "/nanoclaw/r1", true).unwrap_err().to_string();
            assert!(err.contains(expect), "{err:?} should contain {expect:?}");
        }
    }
}
