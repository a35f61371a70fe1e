//! Errors of the `ipc` module. Every filesystem error carries its path.

use std::path::PathBuf;

/// Errors of the `ipc` module.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A folder name is not a valid group folder, so it has no IPC namespace.
    #[error("invalid group folder {0:?}")]
    BadFolder(String),
    /// A snapshot could not be serialized.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// inotify could not be set up.
    #[error("inotify: {0}")]
    Inotify(#[source] std::io::Error),
}

impl IpcError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
