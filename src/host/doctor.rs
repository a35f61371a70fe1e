//! `nanoclaw doctor`: one line per host capability that later layers need, each failure naming its fix.
//!
//! The kernel's view is read through [`Probe`], whose roots tests point at temporary directories.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::host::config::Config;
use crate::store::Store;

/// Where the probe reads the kernel's state. Production uses [`Probe::system`].
#[derive(Debug, Clone)]
pub struct Probe {
    pub proc_root: PathBuf,
    pub cgroup_root: PathBuf,
    pub sys_module: PathBuf,
    /// `/lib/modules/<release>`: modules that are built in or can be loaded.
    pub modules_dir: PathBuf,
    /// `$PATH` entries searched for user-space tools.
    pub path: Vec<PathBuf>,
    /// Kernel build configs to consult (`/proc/config.gz`, `/boot/config-<release>`); `.gz` is inflated.
    pub kernel_configs: Vec<PathBuf>,
}

impl Probe {
    pub fn system() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let mut path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        // Services often run with a minimal PATH; nft lives in sbin.
        for extra in ["/usr/sbin", "/sbin"] {
            if !path.iter().any(|p| p == Path::new(extra)) {
                path.push(PathBuf::from(extra));
            }
        }
        Self {
            proc_root: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            sys_module: PathBuf::from("/sys/module"),
            modules_dir: PathBuf::from("/lib/modules").join(&release),
            path,
            kernel_configs: vec![
                PathBuf::from("/proc/config.gz"),
                PathBuf::from(format!("/boot/config-{release}")),
            ],
        }
    }

    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn which(&self, tool: &str) -> Option<PathBuf> {
        self.path.iter().map(|d| d.join(tool)).find(|p| p.is_file())
    }

    /// The value of `CONFIG_<symbol>` in the first readable kernel config.
    fn kernel_config(&self, symbol: &str) -> Option<String> {
        let prefix = format!("CONFIG_{symbol}=");
        self.kernel_configs.iter().find_map(|path| {
            let bytes = std::fs::read(path).ok()?;
            let text = if path.extension().is_some_and(|e| e == "gz") {
                let mut s = String::new();
                flate2::read::GzDecoder::new(bytes.as_slice())
                    .read_to_string(&mut s)
                    .ok()?;
                s
            } else {
                String::from_utf8(bytes).ok()?
            };
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        })
    }

    /// Loaded, built in, or loadable from the module tree.
    fn kernel_feature(&self, module: &str) -> Option<&'static str> {
        if self.sys_module.join(module).exists() {
            return Some("loaded");
        }
        let symbol = match module {
            "nf_tables" => "NF_TABLES",
            "veth" => "VETH",
            "squashfs" => "SQUASHFS",
            "erofs" => "EROFS_FS",
            "overlay" => "OVERLAY_FS",
            other => other,
        };
        match self.kernel_config(symbol).as_deref() {
            Some("y") => return Some("built in"),
            Some("m") if self.modules_dir.exists() => return Some("module available"),
            _ => {}
        }
        let needle = format!("/{module}.ko");
        if self
            .read(&self.modules_dir.join("modules.builtin"))
            .is_some_and(|t| t.lines().any(|l| l.contains(&needle)))
        {
            return Some("built in");
        }
        if self
            .read(&self.modules_dir.join("modules.dep"))
            .is_some_and(|t| {
                t.lines()
                    .any(|l| l.split(':').next().is_some_and(|m| m.contains(&needle)))
            })
        {
            return Some("module available");
        }
        None
    }

    fn filesystem(&self, fs: &str) -> Option<&'static str> {
        if self
            .read(&self.proc_root.join("filesystems"))
            .is_some_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fs)))
        {
            return Some("registered");
        }
        self.kernel_feature(fs)
    }
}

/// One doctor line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "[{mark}] {:<16} {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, " -- fix: {fix}")?;
        }
        Ok(())
    }
}

/// Controllers every run's limits need.
const REQUIRED_CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];

fn check_cgroups(p: &Probe) -> Check {
    const NAME: &str = "cgroups";
    if let Some(text) = p.read(&p.cgroup_root.join("cgroup.controllers")) {
        let have: Vec<&str> = text.split_whitespace().collect();
        let missing: Vec<&str> = REQUIRED_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !have.contains(c))
            .collect();
        return if missing.is_empty() {
            Check::pass(
                NAME,
                format!("v2: {} available", REQUIRED_CONTROLLERS.join(", ")),
            )
        } else {
            Check::fail(
                NAME,
                format!("v2: controller(s) {} missing", missing.join(", ")),
                missing_controller_fix(&missing),
            )
        };
    }
    // v1 or hybrid: /proc/cgroups lists "subsys hierarchy num_cgroups enabled".
    let Some(text) = p.read(&p.proc_root.join("cgroups")) else {
        return Check::fail(
            NAME,
            "no cgroup filesystem found",
            "mount cgroup2 at /sys/fs/cgroup (mount -t cgroup2 none /sys/fs/cgroup) and enable CONFIG_CGROUPS",
        );
    };
    let enabled = |name: &str| {
        text.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 4 && f[0] == name && f[3] == "1"
        })
    };
    let missing: Vec<&str> = REQUIRED_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !enabled(c) || !p.cgroup_root.join(c).exists())
        .collect();
    if !missing.is_empty() {
        return Check::fail(
            NAME,
            format!(
                "v1: controller(s) {} missing or not mounted",
                missing.join(", ")
            ),
            missing_controller_fix(&missing),
        );
    }
    if !p
        .cgroup_root
        .join("memory/memory.memsw.limit_in_bytes")
        .exists()
    {
        return Check::fail(
            NAME,
            "v1: memory+swap accounting is off, so swap could bypass the memory limit",
            "boot with swapaccount=1 on the kernel command line",
        );
    }
    Check::pass(
        NAME,
        format!(
            "v1/hybrid: {} enabled, swap accounted",
            REQUIRED_CONTROLLERS.join(", ")
        ),
    )
}

fn missing_controller_fix(missing: &[&str]) -> String {
    if missing.contains(&"memory") {
        "add cgroup_enable=memory (and on v1 swapaccount=1) to the kernel command line; runs refuse to start without a memory limit".to_string()
    } else {
        format!(
            "enable the {} controller(s) in the kernel (CONFIG_CGROUP_PIDS, CONFIG_CFS_BANDWIDTH)",
            missing.join(", ")
        )
    }
}

fn check_namespaces(p: &Probe) -> Check {
    const NAME: &str = "namespaces";
    let ns_dir = p.proc_root.join("self/ns");
    let required = ["pid", "mnt", "ipc", "uts", "net", "cgroup"];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|n| !ns_dir.join(n).exists())
        .collect();
    if !missing.is_empty() {
        return Check::fail(
            NAME,
            format!("missing: {}", missing.join(", ")),
            "enable CONFIG_NAMESPACES with PID_NS, NET_NS, IPC_NS, UTS_NS and CGROUPS in the kernel",
        );
    }
    let user = ns_dir.join("user").exists()
        && p.read(&p.proc_root.join("sys/user/max_user_namespaces"))
            .is_none_or(|v| v.trim() != "0");
    Check::pass(
        NAME,
        format!(
            "pid, mnt, ipc, uts, net, cgroup{}",
            if user {
                ", user"
            } else {
                " (user namespaces unavailable: runs use a fixed non-root uid)"
            }
        ),
    )
}

fn check_nftables(p: &Probe) -> Check {
    const NAME: &str = "nftables";
    let Some(nft) = p.which("nft") else {
        return Check::fail(
            NAME,
            "nft binary not found",
            "install nftables with JSON support (Debian: apt-get install nftables; Buildroot: BR2_PACKAGE_NFTABLES_JSON=y)",
        );
    };
    match p.kernel_feature("nf_tables") {
        Some(how) => Check::pass(NAME, format!("{} and nf_tables ({how})", nft.display())),
        None => Check::fail(
            NAME,
            format!("{} present but the kernel has no nf_tables", nft.display()),
            "enable CONFIG_NF_TABLES, CONFIG_NFT_CT and CONFIG_NF_CONNTRACK in the kernel",
        ),
    }
}

fn check_veth(p: &Probe) -> Check {
    const NAME: &str = "veth";
    match p.kernel_feature("veth") {
        Some(how) => Check::pass(NAME, format!("veth ({how})")),
        None => Check::fail(
            NAME,
            "no veth support",
            "enable CONFIG_VETH in the kernel (per-run networks need a veth pair)",
        ),
    }
}

fn check_image_fs(p: &Probe) -> Check {
    const NAME: &str = "image fs";
    let found: Vec<String> = ["squashfs", "erofs", "overlay"]
        .iter()
        .filter_map(|fs| p.filesystem(fs).map(|how| format!("{fs} ({how})")))
        .collect();
    if found
        .iter()
        .any(|f| f.starts_with("squashfs") || f.starts_with("erofs"))
    {
        Check::pass(NAME, found.join(", "))
    } else {
        Check::fail(
            NAME,
            if found.is_empty() {
                "no squashfs or erofs".to_string()
            } else {
                found.join(", ")
            },
            "enable CONFIG_SQUASHFS (with XZ or ZSTD) or CONFIG_EROFS_FS to mount the read-only runner image",
        )
    }
}

/// What the image path holds: a squashfs or erofs image (by magic), a runner tree, or `None`.
fn image_kind(path: &std::path::Path) -> Option<&'static str> {
    use std::io::{Read, Seek, SeekFrom};
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        return path
            .join("usr/bin/nanoclaw-runner")
            .is_file()
            .then_some("directory");
    }
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 4];
    f.read_exact(&mut head).ok()?;
    if &head == b"hsqs" {
        return Some("squashfs");
    }
    // erofs keeps its superblock at 1024; magic 0xE0F5E1E2, little-endian.
    f.seek(SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut head).ok()?;
    (u32::from_le_bytes(head) == 0xE0F5_E1E2).then_some("erofs")
}

fn check_image(cfg: &Config) -> Check {
    const NAME: &str = "runner image";
    let path = &cfg.runs.image;
    let fix = "build it with runner-rootfs/build.sh --arch <arch> --out <path> and set runs.image";
    match image_kind(path) {
        Some(kind) => Check::pass(NAME, format!("{} ({kind})", path.display())),
        None if path.exists() => Check::fail(
            NAME,
            format!(
                "{} is neither a squashfs/erofs image nor a tree with usr/bin/nanoclaw-runner",
                path.display()
            ),
            fix,
        ),
        None => Check::fail(NAME, format!("{} not found", path.display()), fix),
    }
}

fn check_data_dir(cfg: &Config) -> Check {
    const NAME: &str = "data dir";
    let dir = &cfg.data_dir;
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check::pass(NAME, format!("{} writable", dir.display())),
        Err(e) => Check::fail(
            NAME,
            format!("{} not writable: {e}", dir.display()),
            format!(
                "create {} on the data partition, owned by the nanoclaw service user",
                dir.display()
            ),
        ),
    }
}

fn check_database(cfg: &Config) -> Check {
    const NAME: &str = "database";
    let path = cfg.db_path();
    if !path.exists() {
        return Check::pass(
            NAME,
            format!("{} will be created on first start", path.display()),
        );
    }
    match Store::open_read_only(&path).and_then(|s| s.check().map(|p| (s, p))) {
        Ok((s, problems)) if problems.is_empty() => Check::pass(
            NAME,
            format!("{} healthy (schema v{})", path.display(), s.migration().to),
        ),
        Ok((_, problems)) => Check::fail(
            NAME,
            format!("{}: {}", path.display(), problems.join("; ")),
            "restore the database from a backup, or move it aside to start fresh",
        ),
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "restore the database from a backup, or move it aside to start fresh",
        ),
    }
}

/// Runs every check in a fixed order.
pub fn run(cfg: &Config, probe: &Probe) -> Vec<Check> {
    vec![
        check_cgroups(probe),
        check_namespaces(probe),
        check_nftables(probe),
        check_veth(probe),
        check_image_fs(probe),
        check_image(cfg),
        check_data_dir(cfg),
        check_database(cfg),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_probe(root: &Path) -> Probe {
        Probe {
            proc_root: root.join("proc"),
            cgroup_root: root.join("cgroup"),
            sys_module: root.join("module"),
            modules_dir: root.join("lib-modules"),
            path: vec![root.join("bin")],
            kernel_configs: vec![root.join("config")],
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn cgroup_v2_missing_memory_fails_closed_with_kernel_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let p = fake_probe(dir.path());
        write(
            &p.cgroup_root.join("cgroup.controllers"),
            "cpuset cpu io pids\n",
        );
        let c = check_cgroups(&p);
        assert!(!c.ok);
        assert_eq!(c.detail, "v2: controller(s) memory missing");
        assert!(c.fix.unwrap().contains("cgroup_enable=memory"));

        write(
            &p.cgroup_root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        );
        assert!(check_cgroups(&p).ok);
    }

    #[test]
    fn cgroup_v1_needs_controllers_and_swap_accounting() {
        let dir = tempfile::tempdir().unwrap();
        let p = fake_probe(dir.path());
        write(
            &p.proc_root.join("cgroups"),
            "#subsys_name hierarchy num_cgroups enabled\ncpu 2 1 1\nmemory 3 1 1\npids 4 1 0\n",
        );
        for c in ["cpu", "memory", "pids"] {
            std::fs::create_dir_all(p.cgroup_root.join(c)).unwrap();
        }
        let c = check_cgroups(&p);
        assert!(!c.ok);
        assert!(c.detail.contains("pids"), "{}", c.detail);

        write(
            &p.proc_root.join("cgroups"),
            "cpu 2 1 1\nmemory 3 1 1\npids 4 1 1\n",
        );
        assert!(check_cgroups(&p).detail.contains("swap"));
        write(
            &p.cgroup_root.join("memory/memory.memsw.limit_in_bytes"),
            "0",
        );
        assert!(check_cgroups(&p).ok);
    }

    #[test]
    fn nft_needs_binary_and_kernel_support() {
        let dir = tempfile::tempdir().unwrap();
        let p = fake_probe(dir.path());
        let c = check_nftables(&p);
        assert!(!c.ok && c.detail == "nft binary not found");
        write(&p.path[0].join("nft"), "");
        assert!(!check_nftables(&p).ok);
        write(
            &p.modules_dir.join("modules.dep"),
            "kernel/net/netfilter/nf_tables.ko.xz: kernel/lib/libcrc32c.ko.xz\n",
        );
        let c = check_nftables(&p);
        assert!(c.ok, "{c}");
        assert!(c.detail.contains("module available"));
    }

    #[test]
    fn image_check_recognises_squashfs_erofs_and_trees() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        let sq = tmp.path().join("runner.squashfs");
        std::fs::write(&sq, b"hsqs\0\0\0\0").unwrap();
        cfg.runs.image = sq;
        assert!(check_image(&cfg).ok);
        let erofs = tmp.path().join("runner.erofs");
        let mut bytes = vec![0u8; 2048];
        bytes[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        std::fs::write(&erofs, bytes).unwrap();
        cfg.runs.image = erofs;
        assert!(check_image(&cfg).ok);
        let junk = tmp.path().join("junk");
        std::fs::write(&junk, b"not an image").unwrap();
        cfg.runs.image = junk;
        assert!(!check_image(&cfg).ok);
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
        cfg.runs.image = tree.clone();
        assert!(!check_image(&cfg).ok);
        std::fs::write(tree.join("usr/bin/nanoclaw-runner"), b"").unwrap();
        assert!(check_image(&cfg).ok);
    }

    #[test]
    fn image_fs_accepts_builtin_squashfs() {
        let dir = tempfile::tempdir().unwrap();
        let p = fake_probe(dir.path());
        write(&p.proc_root.join("filesystems"), "nodev\ttmpfs\n\text4\n");
        assert!(!check_image_fs(&p).ok);
        write(
            &p.modules_dir.join("modules.builtin"),
            "kernel/fs/squashfs/squashfs.ko\n",
        );
        assert!(check_image_fs(&p).ok);
    }

    #[test]
    fn kernel_config_marks_builtin_features() {
        let dir = tempfile::tempdir().unwrap();
        let p = fake_probe(dir.path());
        assert!(!check_veth(&p).ok);
        write(
            &dir.path().join("config"),
            "CONFIG_VETH=y\nCONFIG_NF_TABLES=m\n",
        );
        assert_eq!(check_veth(&p).detail, "veth (built in)");
        // A module that the kernel config says exists but no module tree to load it from.
        write(&p.path[0].join("nft"), "");
        assert!(!check_nftables(&p).ok);
    }

    #[test]
    fn display_includes_fix() {
        let c = Check::fail("x", "broken", "mend it");
        assert_eq!(
            c.to_string(),
            "[FAIL] x                broken -- fix: mend it"
        );
    }
}
