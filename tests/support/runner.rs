//! Harness for tests that run the real `nanoclaw-runner` binary as a plain process (no container)
//! against the fake Messages API, in a temp workspace laid out like the runner image's mounts.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nanoclaw::core::wire::{FrameStatus, OutputFrame};
use nanoclaw::runner::testing::{FakeApi, Step};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(20);

/// A temp workspace plus a fake API.
pub struct Harness {
    pub tmp: tempfile::TempDir,
    pub api: FakeApi,
    pub env: Vec<(String, String)>,
}

impl Harness {
    pub fn new(script: Vec<Step>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        for d in [
            "workspace/group",
            "workspace/global",
            "workspace/ipc/messages",
            "workspace/ipc/tasks",
            "workspace/ipc/input",
            "scratch",
            "session",
        ] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        let api = FakeApi::start(script).expect("fake api");
        Self {
            tmp,
            api,
            env: Vec::new(),
        }
    }

    pub fn ws(&self) -> PathBuf {
        self.tmp.path().join("workspace")
    }
    pub fn group(&self) -> PathBuf {
        self.ws().join("group")
    }
    pub fn ipc(&self) -> PathBuf {
        self.ws().join("ipc")
    }
    pub fn input_dir(&self) -> PathBuf {
        self.ipc().join("input")
    }
    pub fn session_dir(&self) -> PathBuf {
        self.tmp.path().join("session")
    }
    pub fn scratch(&self) -> PathBuf {
        self.tmp.path().join("scratch")
    }

    pub fn set(&mut self, k: &str, v: &str) {
        self.env.push((k.into(), v.into()));
    }

    /// Starts the runner with `input` on stdin (then closed).
    pub fn spawn(&self, input: &Value) -> RunnerProc {
        self.spawn_raw(input.to_string().as_bytes())
    }

    pub fn spawn_raw(&self, stdin: &[u8]) -> RunnerProc {
        let roots = format!("{}:{}", self.ws().display(), self.scratch().display());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw-runner"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("ANTHROPIC_BASE_URL", self.api.url())
            .env("ANTHROPIC_API_KEY", "run-token-for-test")
            .env("NANOCLAW_WORKSPACE", self.ws())
            .env("NANOCLAW_SESSION_DIR", self.session_dir())
            .env("NANOCLAW_TOOL_ROOTS", roots)
            .env("NANOCLAW_POLL_MS", "20")
            .env("NANOCLAW_RETRY_BASE_MS", "10")
            .env("NANOCLAW_RUNNER_LOG", "debug");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runner");
        let mut pipe = child.stdin.take().expect("stdin");
        // A runner that rejects its settings exits before reading stdin; that is not a test failure.
        match pipe.write_all(stdin) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
            _ => {}
        }
        drop(pipe);
        RunnerProc::new(child)
    }

    /// Publishes a follow-up the way the host does (contract §5.13): temp file, then rename.
    pub fn send_follow_up(&self, text: &str) {
        let name = format!(
            "{}-{:04}.json",
            chrono::Utc::now().timestamp_millis(),
            rand_suffix()
        );
        let tmp = self.input_dir().join(format!("{name}.tmp"));
        std::fs::write(&tmp, json!({"type": "message", "text": text}).to_string()).expect("write");
        std::fs::rename(&tmp, self.input_dir().join(name)).expect("rename");
    }

    /// Writes the close sentinel (contract §5.14).
    pub fn close(&self) {
        std::fs::write(self.input_dir().join("_close"), "").expect("close");
    }

    /// Files currently in `<ipc>/<sub>`, sorted.
    pub fn ipc_files(&self, sub: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.ipc().join(sub))
            .expect("read ipc dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running runner with its frames read as they arrive.
pub struct RunnerProc {
    child: Child,
    frames: mpsc::Receiver<OutputFrame>,
    stderr: Option<std::thread::JoinHandle<String>>,
    pub seen: Vec<OutputFrame>,
}

impl Drop for RunnerProc {
    /// A failed test must not leave an idle runner waiting for `_close` forever.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl RunnerProc {
    fn new(mut child: Child) -> Self {
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if line == "---NANOCLAW_OUTPUT_START---" {
                    let Some(Ok(json)) = lines.next() else { break };
                    let Some(Ok(end)) = lines.next() else { break };
                    assert_eq!(end, "---NANOCLAW_OUTPUT_END---");
                    let frame: OutputFrame = serde_json::from_str(&json).expect("frame json");
                    if tx.send(frame).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            s
        });
        Self {
            child,
            frames,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// The next frame, or a panic naming what was seen so far.
    pub fn next_frame(&mut self) -> OutputFrame {
        match self.frames.recv_timeout(WAIT) {
            Ok(f) => {
                self.seen.push(f.clone());
                f
            }
            Err(_) => panic!("no frame within {WAIT:?}; seen {:?}", self.seen),
        }
    }

    /// Waits for the session frame (`result: null`, success) that ends an idle query.
    pub fn expect_result(&mut self, text: &str) -> OutputFrame {
        let f = self.next_frame();
        assert_eq!(f.status, FrameStatus::Success, "{f:?}");
        assert_eq!(f.result, Some(Value::String(text.into())), "{f:?}");
        f
    }

    pub fn expect_session_frame(&mut self) -> OutputFrame {
        let f = self.next_frame();
        assert_eq!(f.status, FrameStatus::Success, "{f:?}");
        assert_eq!(f.result, None, "expected a session frame, got {f:?}");
        assert!(f.new_session_id.is_some());
        f
    }

    /// Waits for exit (bounded), returning status, the remaining frames and stderr.
    pub fn finish(mut self) -> Finished {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "runner did not exit within {WAIT:?}; frames {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let mut rest: Vec<OutputFrame> = Vec::new();
        while let Ok(f) = self.frames.recv_timeout(Duration::from_millis(200)) {
            rest.push(f);
        }
        Finished {
            status,
            rest,
            stderr,
        }
    }
}

/// How a runner ended.
pub struct Finished {
    pub status: ExitStatus,
    /// Frames not consumed before exit.
    pub rest: Vec<OutputFrame>,
    pub stderr: String,
}

/// A run input (contract §7.7).
pub fn input(prompt: &str, folder: &str, jid: &str, main: bool) -> Value {
    json!({"prompt": prompt, "groupFolder": folder, "chatJid": jid, "isMain": main})
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
