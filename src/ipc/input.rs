//! Host → runner piping (contract §5.13, §5.14): follow-up messages as `input/<ms>-<rand>.json` and the
//! `_close` sentinel. Files are published with temp + rename so the runner never reads half a file.

use std::path::PathBuf;

use crate::core::ipc::{InputFile, MessageKind};
use crate::ipc::IpcError;
use crate::ipc::layout::{CLOSE_SENTINEL, IpcLayout};
use crate::ipc::snapshot::{random_suffix, write_atomic};

/// Writes one follow-up for a live run of `folder` and returns its path. Names sort by time, which is the
/// order the runner drains them in (contract §10.4).
pub fn pipe_input(layout: &IpcLayout, folder: &str, text: &str) -> Result<PathBuf, IpcError> {
    let dir = layout.input_dir(folder);
    std::fs::create_dir_all(&dir).map_err(|e| IpcError::io("create", &dir, e))?;
    let body = InputFile {
        kind: MessageKind::Message,
        text: text.to_string(),
    };
    let bytes = serde_json::to_vec(&body).map_err(|source| IpcError::Serialize {
        what: "input file",
        source,
    })?;
    let ms = chrono::Utc::now().timestamp_millis();
    let path = dir.join(format!("{ms}-{}.json", random_suffix(6)));
    write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Asks the runner of `folder` to finish: an empty `input/_close` (contract §5.14).
pub fn write_close(layout: &IpcLayout, folder: &str) -> Result<(), IpcError> {
    let dir = layout.input_dir(folder);
    std::fs::create_dir_all(&dir).map_err(|e| IpcError::io("create", &dir, e))?;
    write_atomic(&dir.join(CLOSE_SENTINEL), b"")
}

/// Removes a stale `_close` (before a new run starts). Missing is fine.
pub fn clear_close(layout: &IpcLayout, folder: &str) -> Result<(), IpcError> {
    let path = layout.input_dir(folder).join(CLOSE_SENTINEL);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(IpcError::io("remove", &path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_files_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let layout = IpcLayout::new(dir.path());
        layout.ensure_group("family").unwrap();
        let a = pipe_input(&layout, "family", "first").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = pipe_input(&layout, "family", "second").unwrap();
        let name = a.file_name().unwrap().to_string_lossy().to_string();
        let re = regex::Regex::new(r"^\d{13}-[0-9a-z]{6}\.json$").unwrap();
        assert!(re.is_match(&name), "{name}");
        assert!(a < b, "names sort by time");
        let body: InputFile = serde_json::from_slice(&std::fs::read(&a).unwrap()).unwrap();
        assert_eq!(body.text, "first");
        assert_eq!(
            std::fs::read_to_string(&a).unwrap(),
            r#"{"type":"message","text":"first"}"#
        );
        write_close(&layout, "family").unwrap();
        let close = layout.input_dir("family").join("_close");
        assert_eq!(std::fs::read(&close).unwrap(), b"");
        clear_close(&layout, "family").unwrap();
        assert!(!close.exists());
        clear_close(&layout, "family").unwrap();
        // Only the two inputs remain: no temp files.
        assert_eq!(
            std::fs::read_dir(layout.input_dir("family"))
                .unwrap()
                .count(),
            2
        );
    }
}
