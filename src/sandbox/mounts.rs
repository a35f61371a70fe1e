//! The mounts of a group's run (contract §7.4) and the filesystem side of the mount policy (§9).
//!
//! Differences from the original, all on purpose:
//! - main sees `groups/` at `/workspace/project/groups` instead of the whole project: no database,
//!   no credentials, no other group's sessions or IPC (contract §12.4);
//! - no env-file mount (credentials never enter a run) and no `/app/src` mount (the runner is
//!   prebuilt, §12.3);
//! - every source is created if needed and then checked to be its own real path, so a symlink
//!   planted by an earlier run is refused, not followed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::spec::BindMount;
use crate::core::mount_policy::{
    self, EXTRA_MOUNT_ROOT, MountAllowlist, MountPolicy, PathResolver, ValidatedMount,
};
use crate::core::types::{FolderError, MAIN_GROUP_FOLDER, validate_folder};
use crate::core::wire::AdditionalMount;
use crate::ipc::GROUP_SUBDIRS;

/// Group folder inside the run.
pub const GROUP_MOUNT: &str = "/workspace/group";
/// Shared memory folder (non-main, read-only).
pub const GLOBAL_MOUNT: &str = "/workspace/global";
/// Main's view of every group folder.
pub const PROJECT_GROUPS_MOUNT: &str = "/workspace/project/groups";
/// The group's session state.
pub const SESSION_MOUNT: &str = "/home/node/.claude";
/// The group's IPC directory.
pub const IPC_MOUNT: &str = "/workspace/ipc";
/// The shared folder for all groups' memory.
pub const GLOBAL_FOLDER: &str = "global";

/// Directories the runner image must contain, because the image is read-only and mount points
/// cannot be created in it at run time.
pub const IMAGE_MOUNT_POINTS: &[&str] = &[
    "/proc",
    "/dev",
    "/tmp",
    GROUP_MOUNT,
    GLOBAL_MOUNT,
    PROJECT_GROUPS_MOUNT,
    SESSION_MOUNT,
    IPC_MOUNT,
    EXTRA_MOUNT_ROOT,
];

/// Why a group's mounts could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    /// The folder name is not a valid group folder.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// `global` is the shared memory folder, not a group.
    #[error("folder \"global\" is reserved for shared memory")]
    ReservedGlobal,
    /// A source is (or goes through) a symlink.
    #[error("{path} is not a real path (resolves to {real}); refusing to follow symlinks")]
    Symlink {
        /// The path as built.
        path: PathBuf,
        /// Where it resolves.
        real: PathBuf,
    },
    /// Filesystem error with its path.
    #[error("{path}: {err}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        err: io::Error,
    },
}

/// The data directory layout the mounts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLayout {
    /// `groups/`, `sessions/`, `ipc/` live here.
    pub data_dir: PathBuf,
}

impl DataLayout {
    /// `groups/<folder>`.
    pub fn group_dir(&self, folder: &str) -> PathBuf {
        self.data_dir.join("groups").join(folder)
    }
    /// `sessions/<folder>`.
    pub fn session_dir(&self, folder: &str) -> PathBuf {
        self.data_dir.join("sessions").join(folder)
    }
    /// `ipc/<folder>`.
    pub fn ipc_dir(&self, folder: &str) -> PathBuf {
        self.data_dir.join("ipc").join(folder)
    }
}

/// Creates `path` (and parents) if missing, then insists it is a real directory path. With `owner`,
/// the directory is handed to the run's uid/gid so the non-root workload can write in it.
fn real_dir(path: &Path, owner: Option<(u32, u32)>) -> Result<PathBuf, MountsError> {
    let io_err = |err| MountsError::Io {
        path: path.to_path_buf(),
        err,
    };
    if fs::symlink_metadata(path).is_err() {
        fs::create_dir_all(path).map_err(io_err)?;
    }
    let real = fs::canonicalize(path).map_err(io_err)?;
    if real != path {
        return Err(MountsError::Symlink {
            path: path.to_path_buf(),
            real,
        });
    }
    let meta = fs::symlink_metadata(&real).map_err(io_err)?;
    if !meta.is_dir() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    if let Some((uid, gid)) = owner {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != uid || meta.gid() != gid {
            // lchown: `real` was just checked to be a directory, not a link.
            std::os::unix::fs::lchown(&real, Some(uid), Some(gid)).map_err(io_err)?;
        }
    }
    Ok(real)
}

/// The bind mounts of one run of `folder` (contract §7.4 with the fixes above), followed by the
/// validated additional mounts. `layout.data_dir` must itself be a real path. The group's writable
/// directories are created if missing and owned by `owner` (the run's uid, gid).
pub fn group_mounts(
    layout: &DataLayout,
    folder: &str,
    owner: (u32, u32),
    extra: &[ValidatedMount],
) -> Result<Vec<BindMount>, MountsError> {
    let is_main = folder == MAIN_GROUP_FOLDER;
    validate_folder(folder, is_main)?;
    if folder == GLOBAL_FOLDER {
        return Err(MountsError::ReservedGlobal);
    }
    let bind = |source: PathBuf, destination: &str, readonly: bool| BindMount {
        source,
        destination: destination.to_string(),
        readonly,
    };
    let mut mounts = Vec::new();
    if is_main {
        mounts.push(bind(
            real_dir(&layout.data_dir.join("groups"), None)?,
            PROJECT_GROUPS_MOUNT,
            false,
        ));
    }
    mounts.push(bind(
        real_dir(&layout.group_dir(folder), Some(owner))?,
        GROUP_MOUNT,
        false,
    ));
    if !is_main {
        let global = layout.group_dir(GLOBAL_FOLDER);
        if global.is_dir() {
            mounts.push(bind(real_dir(&global, None)?, GLOBAL_MOUNT, true));
        }
    }
    mounts.push(bind(
        real_dir(&layout.session_dir(folder), Some(owner))?,
        SESSION_MOUNT,
        false,
    ));
    let ipc = real_dir(&layout.ipc_dir(folder), Some(owner))?;
    // The runner publishes commands into messages/ and tasks/ and consumes (deletes) follow-ups and
    // `_close` in input/, so those must be the run's too; the host creates them as root.
    for sub in GROUP_SUBDIRS {
        real_dir(&ipc.join(sub), Some(owner))?;
    }
    mounts.push(bind(ipc, IPC_MOUNT, false));
    for m in extra {
        mounts.push(BindMount {
            source: m.host_path.clone(),
            destination: m.container_path.clone(),
            // Belt and braces: the policy already forces this for non-main.
            readonly: m.readonly || !is_main,
        });
    }
    Ok(mounts)
}

/// [`PathResolver`] on the real filesystem.
#[derive(Debug, Clone)]
pub struct FsResolver {
    /// `$HOME` for `~` expansion.
    pub home: Option<PathBuf>,
}

impl PathResolver for FsResolver {
    fn home(&self) -> Option<PathBuf> {
        self.home.clone()
    }

    fn realpath(&self, absolute: &Path) -> Option<PathBuf> {
        fs::canonicalize(absolute).ok()
    }
}

/// Loads the allowlist (contract §9.1–9.2). Missing, unreadable, malformed, or located inside the
/// data directory (where a run could edit it) all mean "no allowlist": every additional mount is
/// then rejected. Load once per process.
pub fn load_allowlist(path: &Path, data_dir: &Path) -> Option<MountAllowlist> {
    let real = fs::canonicalize(path).ok()?;
    if let Ok(data) = fs::canonicalize(data_dir)
        && real.starts_with(&data)
    {
        warn!(path = %real.display(), "mount allowlist inside the data directory is ignored");
        return None;
    }
    let text = match fs::read_to_string(&real) {
        Ok(t) => t,
        Err(e) => {
            warn!(path = %real.display(), error = %e, "mount allowlist unreadable");
            return None;
        }
    };
    match MountAllowlist::parse(&text) {
        Ok(a) => Some(a),
        Err(e) => {
            warn!(path = %real.display(), error = %e, "mount allowlist refused");
            None
        }
    }
}

/// Applies the policy to a group's requested mounts; rejected ones are dropped with a warning
/// (contract §9.10).
pub fn validate_additional(
    policy: Option<&MountPolicy>,
    requested: &[AdditionalMount],
    is_main: bool,
    resolver: &dyn PathResolver,
) -> Vec<ValidatedMount> {
    requested
        .iter()
        .filter_map(
            |m| match mount_policy::evaluate(policy, m, is_main, resolver) {
                Ok(v) => Some(v),
                Err(e) => {
                    warn!(host_path = %m.host_path, reason = %e, "additional mount rejected");
                    None
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The test process's own ids, so the tests need no root.
    fn owner() -> (u32, u32) {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }

    fn layout() -> (tempfile::TempDir, DataLayout) {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().canonicalize().unwrap();
        (tmp, DataLayout { data_dir })
    }

    fn dests(m: &[BindMount]) -> Vec<(&str, bool)> {
        m.iter()
            .map(|b| (b.destination.as_str(), b.readonly))
            .collect()
    }

    #[test]
    fn non_main_table() {
        let (_t, l) = layout();
        fs::create_dir_all(l.group_dir("global")).unwrap();
        let m = group_mounts(&l, "family", owner(), &[]).unwrap();
        assert_eq!(
            dests(&m),
            vec![
                (GROUP_MOUNT, false),
                (GLOBAL_MOUNT, true),
                (SESSION_MOUNT, false),
                (IPC_MOUNT, false)
            ]
        );
        assert_eq!(m[0].source, l.group_dir("family"));
        assert!(l.session_dir("family").is_dir() && l.ipc_dir("family").is_dir());
    }

    #[test]
    fn ipc_subdirs_belong_to_the_run() {
        if !nix::unistd::getuid().is_root() {
            eprintln!("skipping: chown needs root");
            return;
        }
        let (_t, l) = layout();
        // As the host leaves them: created by root before the run (snapshots, `_close` cleanup).
        for sub in ["messages", "tasks", "input"] {
            fs::create_dir_all(l.ipc_dir("family").join(sub)).unwrap();
        }
        group_mounts(&l, "family", (4242, 4243), &[]).unwrap();
        use std::os::unix::fs::MetadataExt;
        for sub in ["", "messages", "tasks", "input"] {
            let meta = fs::metadata(l.ipc_dir("family").join(sub)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4243), "ipc/family/{sub}");
        }
    }

    #[test]
    fn main_table_has_groups_but_no_global_and_no_database() {
        let (_t, l) = layout();
        let m = group_mounts(&l, "main", owner(), &[]).unwrap();
        assert_eq!(
            dests(&m),
            vec![
                (PROJECT_GROUPS_MOUNT, false),
                (GROUP_MOUNT, false),
                (SESSION_MOUNT, false),
                (IPC_MOUNT, false)
            ]
        );
        assert!(m.iter().all(|b| b.source != l.data_dir));
    }

    #[test]
    fn extra_mounts_follow_and_non_main_stays_read_only() {
        let (_t, l) = layout();
        let extra = ValidatedMount {
            host_path: l.data_dir.clone(),
            container_path: "/workspace/extra/x".into(),
            readonly: false,
        };
        let m = group_mounts(&l, "family", owner(), std::slice::from_ref(&extra)).unwrap();
        assert_eq!(m.last().unwrap().destination, "/workspace/extra/x");
        assert!(m.last().unwrap().readonly);
        let m = group_mounts(&l, "main", owner(), &[extra]).unwrap();
        assert!(!m.last().unwrap().readonly);
    }

    #[test]
    fn planted_symlinks_and_bad_folders_are_refused() {
        let (_t, l) = layout();
        fs::create_dir_all(l.data_dir.join("sessions")).unwrap();
        std::os::unix::fs::symlink("/etc", l.session_dir("family")).unwrap();
        let err = group_mounts(&l, "family", owner(), &[]).unwrap_err();
        assert!(
            err.to_string().contains("refusing to follow symlinks"),
            "{err}"
        );
        assert!(group_mounts(&l, "../x", owner(), &[]).is_err());
        assert!(group_mounts(&l, "global", owner(), &[]).is_err());
    }

    #[test]
    fn allowlist_inside_the_data_dir_is_ignored() {
        let (_t, l) = layout();
        let text = r#"{"allowedRoots":[],"blockedPatterns":[],"nonMainReadOnly":true}"#;
        let inside = l.data_dir.join("mount-allowlist.json");
        fs::write(&inside, text).unwrap();
        assert!(load_allowlist(&inside, &l.data_dir).is_none());
        let out = tempfile::tempdir().unwrap();
        let outside = out.path().join("mount-allowlist.json");
        fs::write(&outside, text).unwrap();
        assert!(load_allowlist(&outside, &l.data_dir).is_some());
        fs::write(&outside, "{").unwrap();
        assert!(load_allowlist(&outside, &l.data_dir).is_none());
    }

    #[test]
    fn validate_additional_drops_rejections() {
        let out = tempfile::tempdir().unwrap();
        let root = out.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("ok")).unwrap();
        let allow = MountAllowlist::parse(&format!(
            r#"{{"allowedRoots":[{{"path":"{}","allowReadWrite":true}}],"blockedPatterns":[],"nonMainReadOnly":false}}"#,
            root.display()
        ))
        .unwrap();
        let r = FsResolver { home: None };
        let policy = MountPolicy::new(&allow, &r);
        let req = |p: &Path| AdditionalMount {
            host_path: p.display().to_string(),
            container_path: None,
            readonly: Some(false),
            extra: BTreeMap::new(),
        };
        let got = validate_additional(
            Some(&policy),
            &[
                req(&root.join("ok")),
                req(&root.join("missing")),
                req(Path::new("/etc")),
            ],
            true,
            &r,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].container_path, "/workspace/extra/ok");
        assert!(!got[0].readonly);
    }
}
