//! Shared setup for the root tests that run a real `nanoclaw run` host as a subprocess: the host
//! with a temp data dir (optionally inside a network namespace the test owns, [`NamedNetns`], so its
//! `inet nanoclaw` table and run links never meet the machine's), the runner image, a local-socket
//! client, wait helpers and leak checks.
//!
//! Hosts share one global nftables table (`inet nanoclaw`) and the `nanoclaw` cgroup parent, so the
//! tests of one binary run their hosts one at a time ([`begin`] returns the guard).
//!
//! Include with `#[path = "support/e2e.rs"] mod e2e;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nanoclaw::net::netns;
use nanoclaw::runner::testing::{FakeApi, Step};
use nanoclaw::store::Store;
use serde_json::Value;

pub const FAKE_KEY: &str = "sk-ant-e2e-REAL-KEY-0123456789abcdef";

static SERIAL: Mutex<()> = Mutex::new(());

/// The runner image: `$NANOCLAW_TEST_IMAGE`, else `target/runner-<arch>.squashfs` (built by
/// `scripts/test.sh` with `runner-rootfs/build.sh`), else what `runner-rootfs/build.sh` or
/// `check-reproducible.sh` left under `target/runner-rootfs/`; `None` when none is a file.
pub fn runner_image() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NANOCLAW_TEST_IMAGE") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let arch = std::env::consts::ARCH;
    [
        target.join(format!("runner-{arch}.squashfs")),
        target.join(format!("runner-rootfs/out/runner-{arch}.squashfs")),
        target.join("runner-rootfs/repro/first.squashfs"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Why the runner image is missing, for a skip line.
pub fn no_image() -> String {
    let arch = std::env::consts::ARCH;
    format!(
        "runner image missing (runner-rootfs/build.sh --arch {arch} --out target/runner-{arch}.squashfs, or NANOCLAW_TEST_IMAGE)"
    )
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns why this machine cannot run the test, if it cannot.
pub fn unsupported() -> Option<String> {
    if !is_root() {
        return Some("needs root".into());
    }
    if runner_image().is_none() {
        return Some(no_image());
    }
    for tool in ["nft", "ip"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("`{tool}` not installed (apt: nftables iproute2)"));
        }
    }
    None
}

/// Polls `f` every 50 ms until it returns `Some`, at most `limit`; `None` after that.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`poll`], panicking with `what` when time runs out.
pub fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(limit, f).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// A named network namespace with `lo` up, deleted on drop.
pub struct NamedNetns(pub String);

impl NamedNetns {
    /// The namespace, or why `ip` could not create it.
    pub fn try_new(name: &str) -> Result<Self, String> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        for args in [
            vec!["netns", "add", name],
            vec!["-n", name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .map_err(|e| format!("ip {args:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!("ip {args:?}: {out:?}"));
            }
        }
        Ok(Self(name.to_string()))
    }

    pub fn new(name: &str) -> Self {
        Self::try_new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }

    /// The fake Messages API listening on this namespace's loopback (`127.0.0.1:<port>`), so only
    /// a process in the namespace (a host started in it, a run joined to it) reaches it.
    pub fn fake_api(&self, script: Vec<Step>) -> FakeApi {
        netns::in_netns(&self.path(), || {
            FakeApi::bind("127.0.0.1:0".parse().unwrap(), script).unwrap()
        })
        .unwrap()
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The guard that serializes hosts in this test binary, or `None` (after printing why) when the
/// machine cannot run these tests.
pub fn begin() -> Option<MutexGuard<'static, ()>> {
    if let Some(why) = unsupported() {
        eprintln!("skipping: {why}");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(PoisonError::into_inner))
}

/// How a test host is configured.
pub struct HostOpts {
    /// 2–3 letters; the interface/netns prefix is `e2<tag>`.
    pub tag: &'static str,
    /// A /24 of its own, so an orphan of one test never meets another.
    pub subnet: &'static str,
    pub upstream: String,
    /// Write the model credential file (false: the host runs without one).
    pub credential: bool,
    pub idle_timeout_secs: u64,
    /// TOML appended to the config.
    pub extra: String,
    /// Start the host inside this network namespace (else the caller's).
    pub netns: Option<PathBuf>,
}

impl HostOpts {
    pub fn new(tag: &'static str, subnet: &'static str, upstream: String) -> Self {
        Self {
            tag,
            subnet,
            upstream,
            credential: true,
            idle_timeout_secs: 5,
            extra: String::new(),
            netns: None,
        }
    }
}

pub struct Host {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub prefix: String,
    netns: Option<PathBuf>,
}

impl Host {
    pub fn start(tag: &'static str, upstream: &str, subnet: &'static str) -> Host {
        Self::start_with(HostOpts::new(tag, subnet, upstream.to_string()))
    }

    pub fn start_with(opts: HostOpts) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        if opts.credential {
            std::fs::write(&creds, format!("ANTHROPIC_API_KEY={FAKE_KEY}\n")).unwrap();
            std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let prefix = format!("e2{}", opts.tag);
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{d}/data\"\nrun_dir = \"{d}/run\"\n\
                 [runs]\nimage = \"{img}\"\ntimeout_secs = 60\nidle_timeout_secs = {idle}\n\
                 [queue]\nshutdown_grace_secs = 3\nretry_base_ms = 500\n\
                 [mounts]\nallowlist = \"{d}/allowlist.json\"\n\
                 [model]\ncredentials_file = \"{creds}\"\nupstream_url = \"{upstream}\"\n\
                 [egress]\nname_prefix = \"{prefix}\"\nsubnet = \"{subnet}\"\n{extra}\n",
                d = dir.path().display(),
                img = runner_image().expect("begin() checked the image").display(),
                idle = opts.idle_timeout_secs,
                creds = creds.display(),
                upstream = opts.upstream,
                subnet = opts.subnet,
                extra = opts.extra,
            ),
        )
        .unwrap();
        let child = Self::spawn(&config, dir.path(), opts.netns.as_deref());
        let mut host = Host {
            child,
            dir,
            config,
            prefix,
            netns: opts.netns,
        };
        host.wait_for_socket();
        host
    }

    fn spawn(config: &Path, dir: &Path, netns: Option<&Path>) -> Child {
        // Appended, so a restarted host's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("host.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
        cmd.args(["--config", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(ns) = netns {
            let file = std::fs::File::open(ns).unwrap();
            // SAFETY: setns(2) is async-signal-safe; `file` outlives the spawn (moved into the
            // closure), and the child joins the namespace before it execs.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.spawn().unwrap()
    }

    /// Starts the host again on the same config, data and namespace (after a kill or a stop).
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.config, self.dir.path(), self.netns.as_deref());
        self.wait_for_socket();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/local.sock")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Returns once the chat socket accepts connections; panics if the host exits first.
    fn wait_for_socket(&mut self) {
        let (socket, child) = (self.socket(), &mut self.child);
        let up = poll(Duration::from_secs(20), || match child.try_wait() {
            Ok(Some(status)) => Some(Err(status)),
            _ => UnixStream::connect(&socket).ok().map(|_| Ok(())),
        });
        match up {
            Some(Ok(())) => {}
            Some(Err(status)) => panic!("host exited ({status}); log:\n{}", self.log()),
            None => panic!("host never listened; log:\n{}", self.log()),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// The host log followed by every run log, for failure messages.
    pub fn diag(&self) -> String {
        let mut text = self.log();
        let groups = self.data().join("groups");
        for group in std::fs::read_dir(groups).into_iter().flatten().flatten() {
            let folder = group.file_name().to_string_lossy().to_string();
            for log in self.run_logs(&folder) {
                text.push_str(&format!("\n==== {}\n", log.display()));
                text.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
            }
        }
        text
    }

    pub fn db(&self) -> Store {
        Store::open_read_only(&self.data().join("nanoclaw.db")).unwrap()
    }

    /// Runs `nanoclaw --config <ours> <args>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    /// [`Host::cli`] that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "nanoclaw {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run logs of a group (`groups/<folder>/logs/container-*.log`): one per container run.
    pub fn run_logs(&self, folder: &str) -> Vec<PathBuf> {
        let dir = self.data().join("groups").join(folder).join("logs");
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("container-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        logs
    }

    /// Run ids the host reported (`run=<id>` in its log), in order, without repeats.
    pub fn run_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for token in self.log().split_whitespace() {
            if let Some(id) = token.strip_prefix("run=") {
                let id = id.trim_matches(|c: char| c == '"' || c == ',');
                if !id.is_empty() && !ids.iter().any(|x| x == id) {
                    ids.push(id.to_string());
                }
            }
        }
        ids
    }

    /// Waits until `pred` holds for the host log.
    pub fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let seen = poll(Duration::from_secs(30), || pred(&self.log()).then_some(()));
        assert!(
            seen.is_some(),
            "timed out waiting for {what}; log:\n{}",
            self.log()
        );
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.wait_exit(Duration::from_secs(30))
    }

    /// SIGKILL, as a crash: nothing of the host's shutdown runs.
    pub fn kill9(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        self.wait_exit(Duration::from_secs(10));
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let status = poll(limit, || self.child.try_wait().unwrap());
        status.unwrap_or_else(|| panic!("host did not stop; log:\n{}", self.log()))
    }

    /// Everything of this host's that must be gone once it has stopped: its network namespaces and
    /// veths, the nft table, its runs' cgroups, sandbox state, mounts under its temp dir, and
    /// processes still in its runs' cgroups. Network objects are looked for in the caller's
    /// namespace, so this is for hosts started without [`HostOpts::netns`].
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = net_leftovers(&self.prefix);
        for id in self.run_ids() {
            for dir in run_cgroups(&id) {
                found.push(format!("cgroup {}", dir.display()));
            }
        }
        let state = self.dir.path().join("run/sandbox");
        if let Ok(d) = std::fs::read_dir(&state) {
            for e in d.flatten() {
                if e.path().is_dir() {
                    found.push(format!("sandbox state {}", e.path().display()));
                }
            }
        }
        for file in ["run/control.sock", "run/nanoclaw.pid", "run/local.sock"] {
            if self.dir.path().join(file).exists() {
                found.push(file.to_string());
            }
        }
        let root = self.dir.path().to_string_lossy().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            if let Some(point) = line.split(' ').nth(4)
                && point.starts_with(&root)
            {
                found.push(format!("mount {point}"));
            }
        }
        found
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run ids with sandbox state under `run/sandbox/` (live or orphaned runs).
impl Host {
    pub fn sandbox_runs(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.dir.path().join("run/sandbox"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// The cgroup directories of run `id` that exist.
pub fn run_cgroups(id: &str) -> Vec<PathBuf> {
    ["memory", "pids", "cpu", "unified", ""]
        .iter()
        .map(|ctrl| {
            Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join("nanoclaw")
                .join(id)
        })
        .filter(|d| d.is_dir())
        .collect()
}

/// `nft list table inet nanoclaw`, empty when there is none.
pub fn nft_table() -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "nanoclaw"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Network objects named with `prefix`, and the nft table.
pub fn net_leftovers(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&out.stdout).to_string();
    let mut found: Vec<String> = links
        .lines()
        .filter(|l| l.contains(prefix))
        .map(str::to_string)
        .collect();
    found.extend(netns::netns_with_prefix(prefix));
    let nft = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&nft.stdout).contains("inet nanoclaw") {
        found.push("nft table inet nanoclaw".into());
    }
    found
}

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
        self.reply_within(chat, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no reply for {chat}; log:\n{}", host.diag()))
    }

    /// The next reply for `chat` within `limit`, or `None`.
    pub fn reply_within(&mut self, chat: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("reading the socket: {e}"),
            }
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["chat"] == chat && v["text"].is_string() {
                return Some(v["text"].as_str().unwrap().to_string());
            }
        }
    }
}
