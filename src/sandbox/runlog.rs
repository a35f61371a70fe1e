//! The per-run log file (contract §7.15): `<group>/logs/container-<timestamp>.log`.
//!
//! The group folder is writable by the run, so a run can plant `logs` as a symlink (say to `/etc`)
//! to make the host write a file somewhere else. Every component below the group folder is
//! therefore opened with `O_NOFOLLOW` relative to a directory fd, and the file is created with
//! `O_EXCL`; a planted symlink makes the write fail instead of being followed. Output and input
//! pass through the redaction helper.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{RunLogSpec, RunOutcome, RunSpec, RunStatus};
use crate::core::redact::redact;
use crate::core::wire::ContainerInput;

/// What goes into one log file.
#[derive(Debug, Clone)]
pub struct RunLogData {
    timestamp: chrono::DateTime<chrono::Utc>,
    duration_ms: u128,
    status: RunStatus,
    input: Vec<u8>,
    args: Vec<String>,
    mounts: Vec<(String, String, bool)>,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

impl RunLogData {
    /// Collects the log's content from a finished run.
    pub fn new(spec: &RunSpec, outcome: &RunOutcome) -> Self {
        Self {
            timestamp: chrono::Utc::now(),
            duration_ms: outcome.duration.as_millis(),
            status: outcome.status.clone(),
            input: spec.input.clone(),
            args: spec.container.args.clone(),
            mounts: spec
                .container
                .mounts
                .iter()
                .map(|m| {
                    (
                        m.source.display().to_string(),
                        m.destination.clone(),
                        m.readonly,
                    )
                })
                .collect(),
            stdout: outcome.stdout.text(),
            stderr: outcome.stderr.text(),
            stdout_truncated: outcome.stdout.truncated(),
            stderr_truncated: outcome.stderr.truncated(),
        }
    }

    /// The file's text.
    pub fn render(&self, log: &RunLogSpec) -> String {
        let exit_code = match &self.status {
            RunStatus::Exited(c) => c.to_string(),
            _ => "null".to_string(),
        };
        let mut t = String::new();
        t.push_str("=== nanoclaw run log ===\n");
        t.push_str(&format!(
            "Timestamp: {}\n",
            crate::core::time::iso(self.timestamp)
        ));
        t.push_str(&format!("Group: {}\n", log.group_name));
        t.push_str(&format!("IsMain: {}\n", log.is_main));
        t.push_str(&format!("Duration: {}ms\n", self.duration_ms));
        t.push_str(&format!("Status: {:?}\n", self.status));
        t.push_str(&format!("Exit Code: {exit_code}\n"));
        t.push_str(&format!("Stdout Truncated: {}\n", self.stdout_truncated));
        t.push_str(&format!("Stderr Truncated: {}\n\n", self.stderr_truncated));
        let failed = !matches!(self.status, RunStatus::Exited(0));
        if log.verbose || failed {
            t.push_str("=== Input ===\n");
            t.push_str(&redact(&String::from_utf8_lossy(&self.input)));
            t.push_str("\n\n=== Command ===\n");
            t.push_str(&redact(&self.args.join(" ")));
            t.push_str("\n\n=== Mounts ===\n");
            for (src, dst, ro) in &self.mounts {
                t.push_str(&format!(
                    "{src} -> {dst}{}\n",
                    if *ro { " (ro)" } else { "" }
                ));
            }
            t.push_str("\n=== Stderr ===\n");
            t.push_str(&redact(&self.stderr));
            t.push_str("\n=== Stdout ===\n");
            t.push_str(&redact(&self.stdout));
            t.push('\n');
        } else {
            let input: Option<ContainerInput> = serde_json::from_slice(&self.input).ok();
            t.push_str("=== Input Summary ===\n");
            match input {
                Some(i) => {
                    t.push_str(&format!(
                        "Prompt length: {} chars\n",
                        i.prompt.chars().count()
                    ));
                    t.push_str(&format!(
                        "Session ID: {}\n",
                        i.session_id.as_deref().unwrap_or("new")
                    ));
                }
                None => t.push_str(&format!("Input length: {} bytes\n", self.input.len())),
            }
            t.push_str("\n=== Mounts ===\n");
            for (_, dst, ro) in &self.mounts {
                t.push_str(&format!("{dst}{}\n", if *ro { " (ro)" } else { "" }));
            }
        }
        t
    }

    /// `container-<ISO timestamp with ':' and '.' replaced by '-'>.log`.
    pub fn file_name(&self) -> String {
        let ts = crate::core::time::iso(self.timestamp).replace([':', '.'], "-");
        format!("container-{ts}.log")
    }
}

/// Writes the log under `log.group_dir/logs/` without following any symlink below the group dir.
pub fn write(log: &RunLogSpec, data: &RunLogData) -> io::Result<PathBuf> {
    let group = open_dir_nofollow(None, &log.group_dir)?;
    let logs = match open_dir_nofollow(Some(&group), Path::new("logs")) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            mkdirat(&group, "logs")?;
            open_dir_nofollow(Some(&group), Path::new("logs"))?
        }
        Err(e) => return Err(e),
    };
    let name = data.file_name();
    let file = create_exclusive(&logs, &name)?;
    let mut file = File::from(file);
    file.write_all(data.render(log).as_bytes())?;
    Ok(log.group_dir.join("logs").join(name))
}

fn cstr(p: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Opens a directory; with `at`, `path` must be one component and is resolved below `at`.
fn open_dir_nofollow(at: Option<&OwnedFd>, path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let dirfd = at.map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
    // SAFETY: a valid C string and a valid (or AT_FDCWD) dir fd.
    let fd = unsafe {
        libc::openat(
            dirfd,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mkdirat(at: &OwnedFd, name: &str) -> io::Result<()> {
    let c = cstr(Path::new(name))?;
    // SAFETY: a valid dir fd and C string.
    if unsafe { libc::mkdirat(at.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Ok(())
}

fn create_exclusive(at: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    let c = cstr(Path::new(name))?;
    // SAFETY: a valid dir fd and C string; O_EXCL|O_NOFOLLOW never follows a planted link.
    let fd = unsafe {
        libc::openat(
            at.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sandbox::{CapturedOutput, ContainerSpec};

    fn data(status: RunStatus) -> RunLogData {
        let mut spec = RunSpec::new("r1", ContainerSpec::new("/img", vec!["runner".into()]));
        spec.input =
            br#"{"prompt":"hello","groupFolder":"g","chatJid":"j","isMain":false}"#.to_vec();
        let outcome = RunOutcome {
            run_id: "r1".into(),
            status,
            duration: Duration::from_millis(12),
            frames: 0,
            new_session_id: None,
            stdout: CapturedOutput {
                bytes: b"out".to_vec(),
                dropped: 5,
            },
            stderr: CapturedOutput::default(),
            oom_kills: 0,
            log_file: None,
            stop_requested: false,
            cleanup_error: None,
            helper_max_rss_kib: 0,
            stage_timings: Default::default(),
        };
        RunLogData::new(&spec, &outcome)
    }

    fn spec(dir: &Path) -> RunLogSpec {
        RunLogSpec {
            group_dir: dir.to_path_buf(),
            group_name: "Family".into(),
            is_main: false,
            verbose: false,
        }
    }

    #[test]
    fn writes_summary_on_success_and_details_on_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write(&spec(tmp.path()), &data(RunStatus::Exited(0))).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(path.starts_with(tmp.path().join("logs")));
        assert!(
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("container-")
        );
        assert!(!path.to_str().unwrap().contains(':'));
        assert!(text.contains("Group: Family"));
        assert!(text.contains("Exit Code: 0"));
        assert!(text.contains("Stdout Truncated: true"));
        assert!(text.contains("Prompt length: 5 chars"));
        assert!(text.contains("Session ID: new"));
        assert!(!text.contains("hello"), "prompt only in verbose logs");

        let failed = data(RunStatus::Timeout);
        let text = failed.render(&spec(tmp.path()));
        assert!(text.contains("Exit Code: null"));
        assert!(text.contains("\"prompt\":\"hello\""));
        assert!(text.contains("[nanoclaw: output truncated, 5 bytes dropped]"));
    }

    #[test]
    fn a_planted_logs_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), tmp.path().join("logs")).unwrap();
        let err = write(&spec(tmp.path()), &data(RunStatus::Exited(0))).unwrap_err();
        // O_NOFOLLOW|O_DIRECTORY on a symlink: ELOOP or ENOTDIR depending on the kernel path.
        assert!(
            matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }
}
