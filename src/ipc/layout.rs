//! Paths of the IPC tree and creating a group's namespace.

use std::path::{Path, PathBuf};

use crate::core::ipc::{IpcKind, is_valid_source_dir};
use crate::ipc::IpcError;

/// Quarantine for files that failed processing (contract §8.1). Never mounted into a run.
pub const ERRORS_DIR: &str = "errors";
/// Where the watcher holds claimed files while it applies them. The dot keeps it out of the folder
/// namespace (a folder name never contains one).
pub const PROCESSING_DIR: &str = ".processing";
/// The piped-input directory (contract §5.13).
pub const INPUT_DIR: &str = "input";
/// The close sentinel inside `input/` (contract §5.14).
pub const CLOSE_SENTINEL: &str = "_close";
/// Snapshot file names (contract §8.12).
pub const TASKS_SNAPSHOT: &str = "current_tasks.json";
pub const GROUPS_SNAPSHOT: &str = "available_groups.json";

/// The IPC root and the paths below it.
#[derive(Debug, Clone)]
pub struct IpcLayout {
    root: PathBuf,
}

impl IpcLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<folder>`: the directory mounted at `/workspace/ipc` in that group's run.
    pub fn group_dir(&self, folder: &str) -> PathBuf {
        self.root.join(folder)
    }

    pub fn kind_dir(&self, folder: &str, kind: IpcKind) -> PathBuf {
        self.group_dir(folder).join(kind.dir_name())
    }

    pub fn input_dir(&self, folder: &str) -> PathBuf {
        self.group_dir(folder).join(INPUT_DIR)
    }

    pub fn errors_dir(&self, folder: &str) -> PathBuf {
        self.root.join(ERRORS_DIR).join(folder)
    }

    pub fn processing_dir(&self, folder: &str) -> PathBuf {
        self.root.join(PROCESSING_DIR).join(folder)
    }

    /// Creates `<folder>/{messages,tasks,input}/` (what a run needs before it starts). Refuses folder
    /// names that are not valid group folders, so `../x` can never name a directory outside the root.
    pub fn ensure_group(&self, folder: &str) -> Result<PathBuf, IpcError> {
        if !is_valid_source_dir(folder) {
            return Err(IpcError::BadFolder(folder.to_string()));
        }
        let dir = self.group_dir(folder);
        for sub in [
            IpcKind::Messages.dir_name(),
            IpcKind::Tasks.dir_name(),
            INPUT_DIR,
        ] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| IpcError::io("create", &path, e))?;
        }
        Ok(dir)
    }
}
