//! The run's input directory (`/workspace/ipc/input`): follow-up messages piped by the host
//! (contract §5.13) and the `_close` sentinel (contract §5.14), consumed as contract §10.2–10.6 say.
//!
//! While idle the runner waits on inotify for the directory to change, and rescans at least every
//! poll interval, so a missed event (or a kernel without inotify) costs at most one interval.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::core::ipc::{InputFile, MessageKind};

/// Name of the close sentinel.
pub const CLOSE_SENTINEL: &str = "_close";
/// Largest input file read; the host's prompts are far smaller.
pub const MAX_INPUT_FILE_BYTES: u64 = 1024 * 1024;
/// Files taken per drain; the rest wait for the next one, in order.
pub const MAX_FILES_PER_DRAIN: usize = 64;

/// Errors preparing the input directory (reading it later only logs).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// the directory cannot be created
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What woke an idle runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    Close,
    Messages(Vec<String>),
}

/// The input directory of one run.
pub struct InputDir {
    dir: PathBuf,
    inotify: Option<inotify::Inotify>,
}

impl InputDir {
    /// Creates the directory if needed and deletes a stale `_close` left by an earlier run
    /// (contract §10.2).
    pub fn prepare(dir: &Path) -> Result<Self, InputError> {
        std::fs::create_dir_all(dir).map_err(|source| InputError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        let _ = std::fs::remove_file(dir.join(CLOSE_SENTINEL));
        let inotify = inotify::Inotify::init().ok().and_then(|i| {
            let mask = inotify::WatchMask::CREATE
                | inotify::WatchMask::MOVED_TO
                | inotify::WatchMask::CLOSE_WRITE;
            i.watches().add(dir, mask).ok().map(|_| i)
        });
        if inotify.is_none() {
            tracing::debug!("inotify unavailable; polling the input directory");
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            inotify,
        })
    }

    /// Consumes `_close` if it is there.
    pub fn take_close(&self) -> bool {
        std::fs::remove_file(self.dir.join(CLOSE_SENTINEL)).is_ok()
    }

    /// Reads, deletes and returns the texts of the queued `*.json` files in name order (contract §10.4).
    /// Files that do not parse are deleted and logged.
    pub fn drain(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        names.truncate(MAX_FILES_PER_DRAIN);
        let mut texts = Vec::new();
        for name in names {
            let path = self.dir.join(&name);
            let parsed = read_capped(&path).and_then(|bytes| {
                serde_json::from_slice::<InputFile>(&bytes).map_err(|e| e.to_string())
            });
            let _ = std::fs::remove_file(&path);
            match parsed {
                Ok(InputFile {
                    kind: MessageKind::Message,
                    text,
                }) if !text.is_empty() => texts.push(text),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "dropping unreadable input file")
                }
            }
        }
        texts
    }

    /// Blocks until `_close` appears (checked first, as contract §10.5) or messages arrive.
    pub fn wait(&mut self, poll: Duration) -> Wake {
        loop {
            if self.take_close() {
                return Wake::Close;
            }
            let texts = self.drain();
            if !texts.is_empty() {
                return Wake::Messages(texts);
            }
            self.sleep(poll);
        }
    }

    /// Sleeps up to `poll`, returning early when the directory changes.
    fn sleep(&mut self, poll: Duration) {
        let Some(inotify) = self.inotify.as_mut() else {
            std::thread::sleep(poll);
            return;
        };
        let deadline = Instant::now() + poll;
        let timeout = rustix::event::Timespec::try_from(poll).ok();
        let fd = inotify.as_fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let polled = rustix::event::poll(&mut fds, timeout.as_ref());
        match polled {
            Ok(n) if n > 0 => {
                let mut buf = [0u8; 4096];
                // Drain the queue; the events only mean "look again".
                while let Ok(events) = inotify.read_events(&mut buf) {
                    if events.count() == 0 {
                        break;
                    }
                }
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(deadline.saturating_duration_since(Instant::now())),
        }
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_INPUT_FILE_BYTES {
        return Err("larger than 1 MiB".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).unwrap();
    }

    #[test]
    fn prepare_removes_a_stale_close() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("input");
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, CLOSE_SENTINEL, "");
        let input = InputDir::prepare(&dir).unwrap();
        assert!(!dir.join(CLOSE_SENTINEL).exists());
        assert!(!input.take_close());
    }

    #[test]
    fn drain_is_in_name_order_and_deletes_everything_it_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let input = InputDir::prepare(tmp.path()).unwrap();
        write(
            tmp.path(),
            "1700000000002-bbbb.json",
            r#"{"type":"message","text":"second"}"#,
        );
        write(
            tmp.path(),
            "1700000000001-aaaa.json",
            r#"{"type":"message","text":"first"}"#,
        );
        write(tmp.path(), "1700000000003-cccc.json", "not json");
        write(
            tmp.path(),
            "1700000000004-dddd.json",
            r#"{"type":"message","text":""}"#,
        );
        write(
            tmp.path(),
            "1700000000005-eeee.json.tmp",
            r#"{"type":"message","text":"partial"}"#,
        );
        assert_eq!(
            input.drain(),
            vec!["first".to_string(), "second".to_string()]
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec!["1700000000005-eeee.json.tmp".to_string()]);
    }

    #[test]
    fn wait_wakes_on_a_new_file_before_the_poll_interval() {
        let tmp = tempfile::tempdir().unwrap();
        let mut input = InputDir::prepare(tmp.path()).unwrap();
        let dir = tmp.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::write(
                dir.join("x.json.tmp"),
                r#"{"type":"message","text":"late"}"#,
            )
            .unwrap();
            std::fs::rename(dir.join("x.json.tmp"), dir.join("x.json")).unwrap();
        });
        let start = Instant::now();
        let wake = input.wait(Duration::from_secs(5));
        writer.join().unwrap();
        assert_eq!(wake, Wake::Messages(vec!["late".into()]));
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "inotify did not wake the wait"
        );
    }

    #[test]
    fn close_wins_over_queued_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let mut input = InputDir::prepare(tmp.path()).unwrap();
        write(tmp.path(), "1-a.json", r#"{"type":"message","text":"m"}"#);
        write(tmp.path(), CLOSE_SENTINEL, "");
        assert_eq!(input.wait(Duration::from_millis(10)), Wake::Close);
        assert!(!tmp.path().join(CLOSE_SENTINEL).exists());
    }
}
