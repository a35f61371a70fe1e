//! A real `nanoclaw run` host as a subprocess (optionally inside a network namespace the test owns,
//! so its `inet nanoclaw` table and run links never meet the machine's or another test's), the
//! runner image it needs, and a client for its local chat socket.
//!
//! Include with `#[path = "support/host.rs"] mod host_support;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nanoclaw::store::Store;
use serde_json::Value;

/// The runner image: `$NANOCLAW_TEST_IMAGE`, else `target/runner-<arch>.squashfs` (built by
/// `scripts/test.sh` with `runner-rootfs/build.sh`).
pub fn runner_image() -> Option<PathBuf> {
    let p = std::env::var_os("NANOCLAW_TEST_IMAGE").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("target/runner-{}.squashfs", std::env::consts::ARCH))
        },
        PathBuf::from,
    );
    p.is_file().then_some(p)
}

/// A named network namespace with `lo` up, deleted on drop.
pub struct NamedNetns(pub String);

impl NamedNetns {
    pub fn new(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        for args in [
            vec!["netns", "add", name],
            vec!["-n", name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
        Self(name.to_string())
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The host process, its temp dir (config, credentials, data, run dir) and log.
pub struct Host {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    netns: Option<PathBuf>,
}

impl Host {
    /// Writes a config (the runner image, `upstream` as the model API, egress prefix and subnet,
    /// then `extra` TOML appended), a mode-600 credentials file with `key`, and starts the host in
    /// `netns` (or the caller's namespace). Returns once its chat socket accepts connections.
    pub fn start(
        image: &Path,
        key: &str,
        upstream: &str,
        prefix: &str,
        subnet: &str,
        extra: &str,
        netns: Option<PathBuf>,
    ) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(&creds, format!("ANTHROPIC_API_KEY={key}\n")).unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{d}/data\"\nrun_dir = \"{d}/run\"\n\
                 [runs]\nimage = \"{img}\"\ntimeout_secs = 60\nidle_timeout_secs = 5\n\
                 [queue]\nshutdown_grace_secs = 3\nretry_base_ms = 500\n\
                 [mounts]\nallowlist = \"{d}/allowlist.json\"\n\
                 [model]\ncredentials_file = \"{creds}\"\nupstream_url = \"{upstream}\"\n\
                 [egress]\nname_prefix = \"{prefix}\"\nsubnet = \"{subnet}\"\n{extra}\n",
                d = dir.path().display(),
                img = image.display(),
                creds = creds.display(),
            ),
        )
        .unwrap();
        let mut host = Host {
            child: Self::spawn(&config, dir.path(), netns.as_deref()),
            dir,
            config,
            netns,
        };
        host.wait_for_socket();
        host
    }

    fn spawn(config: &Path, dir: &Path, netns: Option<&Path>) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("host.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
        cmd.args(["--config", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(ns) = netns {
            let file = std::fs::File::open(ns).unwrap();
            let fd = file.as_raw_fd();
            // SAFETY: setns(2) is async-signal-safe; `file` outlives the spawn (moved into the
            // closure), and the child joins the namespace before it execs.
            unsafe {
                cmd.pre_exec(move || {
                    let _keep = &file;
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.spawn().unwrap()
    }

    /// Starts the host again on the same config and data (after a kill or a stop).
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.config, self.dir.path(), self.netns.as_deref());
        self.wait_for_socket();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/local.sock")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("host exited ({status}); log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("host never listened; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    pub fn db(&self) -> Store {
        Store::open_read_only(&self.dir.path().join("data/nanoclaw.db")).unwrap()
    }

    /// Runs `nanoclaw --config <this host's> <args>`; returns stdout, panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nanoclaw {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGTERM, then waits (at most 30 s) for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "host did not stop; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no destructor or shutdown path runs.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of the host's local chat socket (JSON lines).
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    pub fn say(&mut self, chat: &str, text: &str) {
        let line = serde_json::json!({"chat": chat, "sender": "local:tester", "sender_name": "Tester", "text": text});
        writeln!(self.writer, "{line}").unwrap();
    }

    /// The next reply for `chat` (typing events skipped).
    pub fn reply(&mut self, chat: &str, host: &Host) -> String {
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("no reply ({e}); log:\n{}", host.log()));
            assert!(n > 0, "socket closed; log:\n{}", host.log());
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["chat"] == chat && v["text"].is_string() {
                return v["text"].as_str().unwrap().to_string();
            }
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
