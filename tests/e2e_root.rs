//! End to end, as root: a message on the local socket → the host (a subprocess) → a real container from
//! the runner image, in its own network namespace behind the egress gateway → the fake model API on
//! loopback → the reply back on the socket; DB rows as contract §2–3 say.
//!
//! Needs root, `nft`, and the runner image at `target/runner-x86_64.squashfs` (`scripts/test.sh`
//! builds it with `runner-rootfs/build.sh`). Without them each test prints why it skips.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nanoclaw::runner::testing::{FakeApi, Step};
use nanoclaw::store::Store;
use serde_json::Value;

const FAKE_KEY: &str = "sk-ant-e2e-REAL-KEY-0123456789abcdef";

fn image() -> PathBuf {
    std::env::var_os("NANOCLAW_TEST_IMAGE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/runner-x86_64.squashfs"),
        PathBuf::from,
    )
}

/// Returns why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    if !image().is_file() {
        return Some(format!(
            "runner image {} missing (runner-rootfs/build.sh --arch x86_64 --out <it>)",
            image().display()
        ));
    }
    if Command::new("nft").arg("--version").output().is_err() {
        return Some("nft not installed".into());
    }
    None
}

macro_rules! require_e2e {
    () => {
        if let Some(why) = unsupported() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

struct Host {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Host {
    fn start(tag: &str, upstream: &str, subnet: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(&creds, format!("ANTHROPIC_API_KEY={FAKE_KEY}\n")).unwrap();
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
                 [egress]\nname_prefix = \"e2{tag}\"\nsubnet = \"{subnet}\"\n",
                d = dir.path().display(),
                img = image().display(),
                creds = creds.display(),
            ),
        )
        .unwrap();
        let child = Self::spawn(&config, dir.path());
        let host = Host { child, dir, config };
        host.wait_for_socket();
        host
    }

    fn spawn(config: &Path, dir: &Path) -> Child {
        Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("host.log")).unwrap())
            .spawn()
            .unwrap()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/local.sock")
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("host never listened; log:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    fn db(&self) -> Store {
        Store::open_read_only(&self.dir.path().join("data/nanoclaw.db")).unwrap()
    }

    fn stop(&mut self) -> std::process::ExitStatus {
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
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn say(&mut self, chat: &str, text: &str) {
        let line = serde_json::json!({"chat": chat, "sender": "local:tester", "sender_name": "Tester", "text": text});
        writeln!(self.writer, "{line}").unwrap();
    }

    /// The next reply for `chat` (typing events skipped).
    fn reply(&mut self, chat: &str, host: &Host) -> String {
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

fn leftovers(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&out.stdout).to_string();
    let mut found: Vec<String> = links
        .lines()
        .filter(|l| l.contains(prefix))
        .map(str::to_string)
        .collect();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        found.extend(
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(prefix)),
        );
    }
    let nft = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&nft.stdout).contains("inet nanoclaw") {
        found.push("nft table inet nanoclaw".into());
    }
    found
}

#[test]
fn message_round_trip_through_a_real_container() {
    require_e2e!();
    let api = FakeApi::start(vec![Step::text("Hello from the fake model")]).unwrap();
    let mut host = Host::start("rt", &api.url(), "10.231.0.0/24");
    let mut c = Client::connect(&host.socket());
    c.say("local:main", "hi there");
    let reply = c.reply("local:main", &host);
    assert_eq!(reply, "Hello from the fake model");

    // The upstream saw the real key; the run only ever had its token.
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1, "one model request");
    assert_eq!(reqs[0].header("x-api-key"), Some(FAKE_KEY));
    assert!(reqs[0].last_user_text().contains("hi there"));

    // DB rows (contract §2–3): the message is stored, the agent cursor advanced past it.
    // The reply is sent before the cursor commit lands, so give the commit a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let db = host.db();
        let msgs = db.messages_since("local:main", "", "Andy").unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].content, "hi there");
        let cursor = db
            .load_cursors()
            .unwrap()
            .agent
            .get("local:main")
            .to_string();
        if cursor == msgs[0].timestamp {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent cursor stayed at {cursor:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    assert!(host.stop().success(), "log:\n{}", host.log());
    assert!(
        leftovers("e2rt").is_empty(),
        "left behind: {:?}",
        leftovers("e2rt")
    );
    assert!(
        !host.log().contains(FAKE_KEY),
        "the real key appeared in the host log"
    );
}

#[test]
fn untriggered_group_waits_then_gets_context() {
    require_e2e!();
    let api = FakeApi::start(vec![Step::text("Noted both.")]).unwrap();
    let mut host = Host::start("tg", &api.url(), "10.232.0.0/24");
    let reg = Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .args([
            "--config",
            host.config.to_str().unwrap(),
            "groups",
            "register",
            "local:kitchen",
            "--folder",
            "kitchen",
        ])
        .output()
        .unwrap();
    assert!(
        reg.status.success(),
        "{}",
        String::from_utf8_lossy(&reg.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut c = Client::connect(&host.socket());
    c.say("local:kitchen", "we are out of milk");
    std::thread::sleep(Duration::from_secs(2));
    assert!(api.requests().is_empty(), "no run without the trigger");
    c.say("local:kitchen", "@Andy add it to the list");
    assert_eq!(c.reply("local:kitchen", &host), "Noted both.");
    let prompt = api.requests()[0].last_user_text();
    assert!(
        prompt.contains("we are out of milk") && prompt.contains("@Andy add it to the list"),
        "{prompt}"
    );
    assert!(host.stop().success());
}
