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
/// A group's IPC subdirectories: what a run writes commands into and reads follow-ups from. The
/// run's uid must own them (`sandbox::mounts`).
pub const GROUP_SUBDIRS: [&str; 3] = [
    IpcKind::Messages.dir_name(),
    IpcKind::Tasks.dir_name(),
    INPUT_DIR,
];
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

    /// Whether `folder` has command files the watcher has not finished applying: `*.json` in its
    /// `messages/` or `tasks/`, or anything claimed in its processing directory. The host asks before
    /// it reports a failed run, so what the run sent still counts as output (contract §12.15).
    pub fn has_pending_commands(&self, folder: &str) -> bool {
        let dirs = [
            (self.kind_dir(folder, IpcKind::Messages), true),
            (self.kind_dir(folder, IpcKind::Tasks), true),
            (self.processing_dir(folder), false),
        ];
        dirs.iter().any(|(dir, json_only)| {
            std::fs::read_dir(dir).is_ok_and(|mut entries| {
                entries.any(|e| {
                    e.is_ok_and(|e| {
                        !json_only || e.file_name().to_string_lossy().ends_with(".json")
                    })
                })
            })
        })
    }

    /// Creates `<folder>/{messages,tasks,input}/` (what a run needs before it starts). Refuses folder
    /// names that are not valid group folders, so `../x` can never name a directory outside the root.
    pub fn ensure_group(&self, folder: &str) -> Result<PathBuf, IpcError> {
        if !is_valid_source_dir(folder) {
            return Err(IpcError::BadFolder(folder.to_string()));
        }
        let dir = self.group_dir(folder);
        for sub in GROUP_SUBDIRS {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| IpcError::io("create", &path, e))?;
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_commands_are_json_files_in_the_command_dirs_or_anything_being_processed() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = IpcLayout::new(tmp.path());
        assert!(!layout.has_pending_commands("fam"), "no directories yet");
        layout.ensure_group("fam").unwrap();
        assert!(!layout.has_pending_commands("fam"));
        let msg = layout.kind_dir("fam", IpcKind::Messages).join("1.json");
        std::fs::write(msg.with_extension("json.tmp"), "{}").unwrap();
        assert!(
            !layout.has_pending_commands("fam"),
            "a file still being written"
        );
        std::fs::write(&msg, "{}").unwrap();
        assert!(layout.has_pending_commands("fam"));
        std::fs::remove_file(&msg).unwrap();
        std::fs::create_dir_all(layout.processing_dir("fam")).unwrap();
        std::fs::write(layout.processing_dir("fam").join("tasks-2.json"), "{}").unwrap();
        assert!(layout.has_pending_commands("fam"));
        assert!(!layout.has_pending_commands("other"));
    }
}
