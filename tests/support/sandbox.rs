//! Shared setup for root tests that start real containers through the libcontainer backend: the
//! busybox test rootfs (`tests/support/build-test-rootfs.sh`, cached under `target/`), a backend
//! with its own state root and cgroup parent, and that cgroup parent's removal on drop.
//!
//! Include with `#[path = "support/sandbox.rs"] mod sandbox_support;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nanoclaw::sandbox::{LibcontainerBackend, LibcontainerConfig, SandboxError};

/// The nanoclaw binary, which is also the sandbox helper (`nanoclaw sandbox-exec`).
pub const HELPER: &str = env!("CARGO_BIN_EXE_nanoclaw");

/// The busybox rootfs (`$NANOCLAW_TEST_ROOTFS`, else `target/test-rootfs`), built on first use.
pub fn test_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let dir = std::env::var_os("NANOCLAW_TEST_ROOTFS")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-rootfs")
                });
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/build-test-rootfs.sh");
            let out = Command::new(&script).arg(&dir).output().unwrap();
            assert!(
                out.status.success(),
                "{} failed (CI must install busybox-static): {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            dir.canonicalize().unwrap()
        })
        .clone()
}

/// A test's own cgroup parent (`nanoclaw-test-<pid>-<name>`), which the backend leaves behind:
/// removed on drop with any run cgroups left in it, under every controller (v1 or v2).
pub struct CgroupParent(pub String);

impl CgroupParent {
    pub fn new(name: &str) -> Self {
        Self(format!("nanoclaw-test-{}-{name}", std::process::id()))
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let mut dirs = vec![Path::new("/sys/fs/cgroup").join(&self.0)];
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            dirs.extend(ctrls.filter_map(|e| e.ok()).map(|e| e.path().join(&self.0)));
        }
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            if let Ok(children) = std::fs::read_dir(dir) {
                for c in children
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Whether real containers can run here at all; prints why not.
pub fn can_run_containers(name: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!("skipping {name}: needs root for real containers (euid {euid})");
    }
    euid == 0
}

/// A backend whose runs live under their own state root and cgroup parent.
pub struct Sandbox {
    pub backend: LibcontainerBackend,
    /// Canonical temp dir: `state/` for the backend, free for the test otherwise.
    pub base: PathBuf,
    _cgroup: CgroupParent,
    _tmp: tempfile::TempDir,
}

impl Sandbox {
    /// The sandbox, or `None` with the reason printed where real containers cannot run.
    pub fn new(name: &str) -> Option<Self> {
        Self::with_config(name, |_| {})
    }

    /// [`Sandbox::new`] with the backend's config adjusted by `tweak`.
    pub fn with_config(name: &str, tweak: impl FnOnce(&mut LibcontainerConfig)) -> Option<Self> {
        if !can_run_containers(name) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let cgroup = CgroupParent::new(name);
        let mut cfg = LibcontainerConfig {
            helper_exe: PathBuf::from(HELPER),
            state_root: base.join("state"),
            cgroup_parent: cgroup.0.clone(),
            ..Default::default()
        };
        tweak(&mut cfg);
        let backend = match LibcontainerBackend::new(cfg) {
            Ok(b) => b,
            Err(SandboxError::Cgroup(e)) => {
                eprintln!("skipping {name}: this host cannot enforce run limits: {e}");
                return None;
            }
            Err(e) => panic!("{e}"),
        };
        Some(Self {
            backend,
            base,
            _cgroup: cgroup,
            _tmp: tmp,
        })
    }

    /// The busybox test rootfs (built on first use).
    pub fn rootfs(&self) -> PathBuf {
        test_rootfs()
    }

    /// Nothing of any run is left: no supervisor task, state dir or run cgroup.
    pub fn assert_clean(&self) {
        assert_eq!(
            self.backend.live_runs(),
            0,
            "supervisor tasks still running"
        );
        let state = &self.backend.config().state_root;
        if state.exists() {
            let left: Vec<_> = std::fs::read_dir(state).unwrap().flatten().collect();
            assert!(left.is_empty(), "state dirs left: {left:?}");
        }
        for dir in self.cgroup_parents() {
            if dir.exists() {
                let left: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path())
                    .collect();
                assert!(left.is_empty(), "cgroups left: {left:?}");
            }
        }
    }

    /// The cgroup dirs the runs live under (one per v1 controller, or one on v2).
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        let parent = format!("/{}", self.backend.config().cgroup_parent);
        self.backend.cgroup_host().run_dirs(&parent)
    }
}
