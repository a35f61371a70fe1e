//! The host's control socket (`<run_dir>/control.sock`, mode 0600): a read-only status endpoint for
//! `nanoclaw status`. Each connection gets one JSON line ([`HostStatus`]) and is closed; nothing is read
//! from the client, so there is no request to parse and nothing to authorize beyond the file mode.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::core::time::now_iso;
use crate::core::wire::HostStatus;
use crate::queue::Queue;

/// File name of the control socket in the run dir.
pub const CONTROL_SOCKET: &str = "control.sock";
/// A client gets this long to take its status line; connections are served one at a time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The most a client reads before it gives up on a status line.
pub const MAX_STATUS_BYTES: u64 = 1024 * 1024;

/// Why the control socket could not be served or asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// something other than a socket is in the way
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    /// bind, chmod or remove failed
    #[error("control socket {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    /// nothing listens (no host, or a host without a control socket)
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// the host did not answer in time or the answer is not a status line
    #[error("bad answer on {path}: {reason}")]
    Answer { path: PathBuf, reason: String },
}

/// `<run_dir>/control.sock`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(CONTROL_SOCKET)
}

/// What the status is built from.
pub struct StatusSource {
    pub queue: Queue,
    pub started: Instant,
    pub started_at: String,
    pub credential: bool,
}

impl StatusSource {
    pub fn new(queue: Queue, credential: bool) -> Self {
        Self {
            queue,
            started: Instant::now(),
            started_at: now_iso(),
            credential,
        }
    }

    /// The host's state now.
    pub fn snapshot(&self) -> HostStatus {
        let stats = self.queue.stats();
        HostStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: self.started_at.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            credential: self.credential,
            max_concurrent_runs: self.queue.settings().max_concurrent_runs,
            active_runs: stats.active_runs,
            runs_started: stats.runs_started,
            retries_scheduled: stats.retries_scheduled,
            groups: self.queue.group_statuses(),
        }
    }
}

/// Removes a stale socket left by a crashed host; refuses to delete anything that is not a socket.
fn clear_stale(path: &Path) -> Result<(), ControlError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| ControlError::Listen {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        }),
        Err(_) => Ok(()),
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Binds the socket (mode 0600) and serves status lines until `stop` turns true; then removes it.
pub fn serve(
    path: PathBuf,
    source: StatusSource,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    clear_stale(&path)?;
    let listen_err = |source| ControlError::Listen {
        path: path.clone(),
        source,
    };
    let listener = tokio::net::UnixListener::bind(&path).map_err(listen_err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stopped(&mut stop) => break,
                conn = listener.accept() => {
                    let Ok((mut conn, _)) = conn else { continue };
                    let mut line = match serde_json::to_vec(&source.snapshot()) {
                        Ok(line) => line,
                        Err(e) => {
                            tracing::warn!(cause = %e, "cannot encode status");
                            continue;
                        }
                    };
                    line.push(b'\n');
                    // One at a time, bounded: a client that does not read loses its answer.
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(&line)).await;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

/// Asks the host listening on `path` for its status.
pub fn fetch_status(path: &Path, timeout: Duration) -> Result<HostStatus, ControlError> {
    let conn =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| ControlError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let answer = |reason: String| ControlError::Answer {
        path: path.to_path_buf(),
        reason,
    };
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| answer(e.to_string()))?;
    let mut bytes = Vec::new();
    conn.take(MAX_STATUS_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| answer(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| answer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::testing::{RecordingOutbound, ScriptedLauncher};
    use crate::queue::{QueueSettings, testing::Behavior};
    use crate::store::{Store, StoreHandle};
    use std::sync::Arc;

    #[tokio::test]
    async fn serves_the_status_and_removes_the_socket_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        // A stale socket from a crashed host is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let queue = Queue::new(
            QueueSettings::default(),
            StoreHandle::new(Store::open_in_memory().unwrap()),
            Arc::new(ScriptedLauncher::always(Behavior::reply("x"))),
            Arc::new(RecordingOutbound::new()),
        );
        queue.register_group(crate::queue::tests::group("local:main", "main", false));
        let (stop_tx, stop) = watch::channel(false);
        let task = serve(path.clone(), StatusSource::new(queue, true), stop).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let p = path.clone();
        let status = tokio::task::spawn_blocking(move || fetch_status(&p, Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.pid, std::process::id());
        assert!(status.credential);
        assert_eq!(status.max_concurrent_runs, 5);
        assert_eq!(status.groups.len(), 1);
        assert_eq!(status.groups[0].jid, "local:main");
        assert_eq!(status.groups[0].run, None);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert!(!path.exists());
        assert!(matches!(
            fetch_status(&path, Duration::from_secs(1)),
            Err(ControlError::Connect { .. })
        ));
    }

    #[test]
    fn refuses_to_replace_a_file_that_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        std::fs::write(&path, "precious").unwrap();
        assert!(matches!(
            clear_stale(&path),
            Err(ControlError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }
}
