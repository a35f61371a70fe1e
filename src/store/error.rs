//! Store errors. Every variant names what failed and, where there is one, the file.

use std::path::PathBuf;

/// Errors of the `store` module.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or is not a SQLite database.
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The directory holding the database could not be created.
    #[error("cannot create database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A migration step failed; the transaction was rolled back and the schema is unchanged.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: u32,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// Registration would take a folder that another chat already uses (contract §12.13 fix).
    #[error("folder {folder:?} is already used by chat {existing_jid}")]
    FolderTaken {
        folder: String,
        existing_jid: String,
    },
    /// A legacy JSON file could not be renamed out of the way before import.
    #[error("cannot rename legacy file {path}: {source}")]
    LegacyRename {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Any other SQLite failure.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;
