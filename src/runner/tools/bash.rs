//! The `bash` tool: one command through the image's shell (busybox `sh`), in the group folder, with a
//! per-call timeout that kills the whole process group, and output capped while it is read.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::runner::config::{ENV_API_TOKEN, MAX_BASH_TIMEOUT};

#[derive(Deserialize)]
pub struct BashParams {
    pub command: String,
    /// Seconds; default from the runner's settings, at most 600.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// How long output pipes may stay open after the shell exits (a background job holding them).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Output read so far: the first `cap` bytes kept, the rest counted.
type Captured = Arc<Mutex<(Vec<u8>, u64)>>;

/// Reads a pipe on a thread until EOF; `done` fires at EOF.
fn capture(mut pipe: impl Read + Send + 'static, cap: usize) -> (Captured, mpsc::Receiver<()>) {
    let captured: Captured = Arc::default();
    let (tx, done) = mpsc::channel();
    let sink = Arc::clone(&captured);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut guard = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    let room = cap.saturating_sub(guard.0.len());
                    let take = room.min(n);
                    guard.0.extend_from_slice(&buf[..take]);
                    guard.1 += (n - take) as u64;
                }
            }
        }
        let _ = tx.send(());
    });
    (captured, done)
}

fn take(captured: &Captured, done: &mpsc::Receiver<()>, deadline: Instant) -> (Vec<u8>, u64) {
    let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    let mut guard = captured.lock().unwrap_or_else(PoisonError::into_inner);
    (std::mem::take(&mut guard.0), guard.1)
}

/// Runs the command; `Err` carries a result the model should see as an error.
pub fn run(
    shell: &Path,
    cwd: &Path,
    p: BashParams,
    default_timeout: Duration,
    cap: usize,
) -> Result<String, String> {
    if p.command.trim().is_empty() {
        return Err("command is empty".into());
    }
    let timeout = p
        .timeout
        .map_or(default_timeout, Duration::from_secs)
        .clamp(Duration::from_secs(1), MAX_BASH_TIMEOUT);
    let mut child = Command::new(shell)
        .arg("-c")
        .arg(&p.command)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The run's gateway token is for the runner, not for the agent's shell.
        .env_remove(ENV_API_TOKEN)
        // Own process group, so a timeout kills the command's children too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", shell.display()))?;
    let pid = child.id();
    let out = capture(child.stdout.take().ok_or("no stdout pipe")?, cap);
    let err = capture(child.stderr.take().ok_or("no stderr pipe")?, cap);
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    let timed_out = rx.recv_timeout(timeout).is_err();
    if timed_out && let Ok(pgid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals the process group we created above; no memory is
        // touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    let status = waiter
        .join()
        .map_err(|_| "waiter thread panicked".to_string())?
        .map_err(|e| format!("waiting for the command: {e}"))?;
    let deadline = Instant::now() + PIPE_GRACE;
    let (stdout, out_dropped) = take(&out.0, &out.1, deadline);
    let (stderr, err_dropped) = take(&err.0, &err.1, deadline);
    let mut text = String::new();
    text.push_str(&String::from_utf8_lossy(&stdout));
    if out_dropped > 0 {
        text.push_str(&format!("\n[stdout: {out_dropped} more bytes cut]\n"));
    }
    if !stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("[stderr]\n");
        text.push_str(&String::from_utf8_lossy(&stderr));
    }
    if err_dropped > 0 {
        text.push_str(&format!("\n[stderr: {err_dropped} more bytes cut]\n"));
    }
    if timed_out {
        return Err(format!(
            "{text}\n[command timed out after {} s and was killed]",
            timeout.as_secs()
        ));
    }
    match status.code() {
        Some(0) => Ok(if text.is_empty() {
            "(no output)".into()
        } else {
            text
        }),
        Some(code) => Err(format!("{text}\n[exit code {code}]")),
        None => Err(format!("{text}\n[killed by a signal]")),
    }
}
