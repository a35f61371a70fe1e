//! The operator CLI as a user runs it: exit codes, one-line errors, output shape.

mod common;

use std::path::Path;

use common::nanoclaw;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("config.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn version_flag() {
    let out = nanoclaw(&["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("nanoclaw {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn db_check_reports_the_fixture_row_counts() {
    let (_dir, db) = common::fixture_copy();
    let out = nanoclaw(&["db", "check", "--db", db.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The fixture README's table.
    for (table, n) in [
        ("chats", 5),
        ("messages", 50),
        ("scheduled_tasks", 4),
        ("task_run_logs", 2),
        ("router_state", 2),
        ("sessions", 2),
        ("registered_groups", 3),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no line for {table} in {stdout}"));
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(n.to_string().as_str()),
            "{line}"
        );
    }
    assert!(stdout.contains("schema v0"), "{stdout}");
    assert!(stdout.contains("check ok"), "{stdout}");
}

#[test]
fn db_migrate_then_stats() {
    let (dir, db) = common::fixture_copy();
    let legacy = dir.path().join("legacy");
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::write(legacy.join("sessions.json"), r#"{"book-club":"s-1"}"#).unwrap();
    let out = nanoclaw(
        &[
            "db",
            "migrate",
            "--db",
            db.to_str().unwrap(),
            "--legacy-dir",
            legacy.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("schema v0 -> v"), "{stdout}");
    assert!(stdout.contains("imported"), "{stdout}");
    let out = nanoclaw(&["db", "stats", "--db", db.to_str().unwrap()], &[]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("(current)"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("sessions") && l.trim_end().ends_with('3')),
        "{stdout}"
    );
    assert!(
        stdout.contains("journal_mode") && stdout.contains("wal"),
        "{stdout}"
    );
}

#[test]
fn bad_database_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("corrupt.db");
    std::fs::write(&bad, vec![0x42u8; 4096]).unwrap();
    for args in [
        vec!["db", "check", "--db", bad.to_str().unwrap()],
        vec!["db", "check", "--db", "/nonexistent/x.db"],
    ] {
        let out = nanoclaw(&args, &[]);
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("nanoclaw: error: cannot open database"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"));
    }
}

#[test]
fn config_check_show_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "assistant_name = \"Nano\"\ntimezone = \"Europe/Berlin\"\n[runs]\nmax_concurrent = 2\n",
    );
    let out = nanoclaw(&["--config", &cfg, "config", "check"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"Nano\""));

    let out = nanoclaw(
        &["--config", &cfg, "config", "show"],
        &[("NANOCLAW_RUNS_PIDS_MAX", "99")],
    );
    let shown = text(&out.stdout);
    assert!(shown.contains("pids_max = 99"), "{shown}");
    assert!(shown.contains("timezone = \"Europe/Berlin\""), "{shown}");
    // The shown config parses back to the same effective values.
    let back: toml::Table = toml::from_str(&shown).unwrap();
    assert_eq!(back["runs"]["max_concurrent"].as_integer(), Some(2));

    let out = nanoclaw(
        &["--config", "/nonexistent/config.toml", "config", "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr).trim(),
        "nanoclaw: error: config file /nonexistent/config.toml does not exist"
    );

    let bad = write_config(dir.path(), "[runs]\nmax_concurrent = 100\n");
    let out = nanoclaw(&["--config", &bad, "config", "check"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr).trim(),
        "nanoclaw: error: runs.max_concurrent = 100 is out of range (allowed: 1..=64)"
    );

    let unknown = write_config(dir.path(), "[runs]\nbogus = 1\n");
    let out = nanoclaw(&["--config", &unknown, "config", "check"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("bogus"), "{}", text(&out.stderr));
}

#[test]
fn config_show_redacts_credentials() {
    let dir = tempfile::tempdir().unwrap();
    // Someone pastes a key where a URL belongs; show must not echo it.
    let cfg = write_config(
        dir.path(),
        "[model]\nupstream_url = \"https://x.invalid/?key=sk-ant-api03-SECRETSECRETSECRET\"\n",
    );
    let out = nanoclaw(&["--config", &cfg, "config", "show"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(!shown.contains("SECRETSECRET"), "{shown}");
    assert!(shown.contains("[REDACTED]"), "{shown}");
}

#[test]
fn doctor_prints_one_line_per_check_and_exit_code_matches() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("runner.img");
    // doctor checks the squashfs magic, not just that the file exists.
    std::fs::write(&image, b"hsqs-fake-image").unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "data_dir = \"{}\"\n[runs]\nimage = \"{}\"\n",
            dir.path().join("data").display(),
            image.display()
        ),
    );
    let out = nanoclaw(&["--config", &cfg, "doctor"], &[]);
    let stdout = text(&out.stdout);
    let checks: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(checks.len(), 8, "{stdout}");
    for name in [
        "cgroups",
        "namespaces",
        "nftables",
        "veth",
        "image fs",
        "runner image",
        "data dir",
        "database",
    ] {
        assert!(
            checks.iter().any(|l| l[7..].starts_with(name)),
            "missing {name}: {stdout}"
        );
    }
    assert!(checks.iter().any(|l| l.starts_with("[ok  ] runner image")));
    let failed = checks.iter().filter(|l| l.starts_with("[FAIL]")).count();
    assert!(
        checks
            .iter()
            .filter(|l| l.starts_with("[FAIL]"))
            .all(|l| l.contains(" -- fix: "))
    );
    if failed == 0 {
        assert_eq!(out.status.code(), Some(0));
    } else {
        assert_eq!(out.status.code(), Some(5), "{stdout}");
        assert!(stdout.contains(&format!("{failed} of 8 checks failed")));
    }

    // A missing runner image always fails, naming the fix.
    let cfg = write_config(
        dir.path(),
        &format!(
            "data_dir = \"{}\"\n[runs]\nimage = \"/nonexistent/img\"\n",
            dir.path().join("data").display()
        ),
    );
    let out = nanoclaw(&["--config", &cfg, "doctor"], &[]);
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stdout).contains("[FAIL] runner image     /nonexistent/img not found -- fix: build it with runner-rootfs/build.sh"));
}

#[test]
fn usage_errors_exit_2() {
    let out = nanoclaw(&["db", "explode"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.toml");
    let out = nanoclaw(&["--config", path, "config", "check"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn groups_and_tasks_commands_on_the_fixture() {
    let (_dir, db) = common::fixture_copy();
    let db = db.to_str().unwrap();
    let out = nanoclaw(&["groups", "list", "--db", db], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains("work-crew") && l.contains("@Bot") && l.contains(" no ")),
        "{list}"
    );

    let out = nanoclaw(
        &[
            "groups",
            "register",
            "local:kitchen",
            "--folder",
            "kitchen",
            "--no-trigger",
            "--db",
            db,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Folder validation and collision refusal (contract §12.13).
    let out = nanoclaw(
        &[
            "groups", "register", "local:x", "--folder", "../main", "--db", db,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("may contain only lowercase"),
        "{}",
        text(&out.stderr)
    );
    let out = nanoclaw(
        &[
            "groups", "register", "local:y", "--folder", "kitchen", "--db", db,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("already used by chat local:kitchen"),
        "{}",
        text(&out.stderr)
    );
    let out = nanoclaw(&["groups", "unregister", "local:kitchen", "--db", db], &[]);
    assert!(out.status.success());
    let out = nanoclaw(&["groups", "unregister", "local:kitchen", "--db", db], &[]);
    assert_eq!(out.status.code(), Some(1));

    let out = nanoclaw(&["tasks", "list", "--db", db], &[]);
    assert_eq!(text(&out.stdout).lines().count(), 5);
    let out = nanoclaw(&["tasks", "pause", "task-int-1", "--db", db], &[]);
    assert!(out.status.success());
    let out = nanoclaw(&["tasks", "list", "--db", db], &[]);
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("task-int-1") && l.contains("paused"))
    );
    let out = nanoclaw(&["tasks", "cancel", "task-int-1", "--db", db], &[]);
    assert!(out.status.success());
    let out = nanoclaw(&["tasks", "resume", "task-int-1", "--db", db], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "nanoclaw: error: no task with id task-int-1"
    );
}

/// Issue 9 item 3: `status` with no host running fails with exit 6 and says so, also when a crashed
/// host left its pid file behind.
#[test]
fn status_without_a_running_host_exits_6() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = write_config(
        dir.path(),
        &format!("data_dir = \"{d}/data\"\nrun_dir = \"{d}/run\"\n"),
    );
    let out = nanoclaw(&["--config", &config, "status"], &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("nanoclaw: error: no nanoclaw host is running: no pid file"),
        "{err}"
    );
    assert!(err.contains("nanoclaw run"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A pid file whose process is gone (a crash): still not running.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    std::fs::write(dir.path().join("run/nanoclaw.pid"), format!("{pid}\n")).unwrap();
    // A stale control socket, as a killed host leaves it.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("run/control.sock")).unwrap());
    let out = nanoclaw(&["--config", &config, "status"], &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("stale pid file"),
        "{}",
        text(&out.stderr)
    );
}

/// `status` against a host that runs (its pid file names a live `nanoclaw` process) but whose control
/// socket does not answer: what the pid file and the database tell, exit 0.
#[test]
fn status_falls_back_to_the_pid_file_and_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = write_config(
        dir.path(),
        &format!("data_dir = \"{d}/data\"\nrun_dir = \"{d}/run\"\n"),
    );
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let out = nanoclaw(
        &[
            "--config",
            &config,
            "groups",
            "register",
            "local:kitchen",
            "--folder",
            "kitchen",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A stand-in host: a process whose name is `nanoclaw`.
    let sleeper = dir.path().join("nanoclaw");
    std::fs::copy("/bin/sleep", &sleeper).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let host = Kill(
        std::process::Command::new(&sleeper)
            .arg("30")
            .spawn()
            .unwrap(),
    );
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    std::fs::write(
        dir.path().join("run/nanoclaw.pid"),
        format!("{}\n", host.0.id()),
    )
    .unwrap();

    let out = nanoclaw(&["--config", &config, "status"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("nanoclaw host running: pid {}, up ", host.0.id())),
        "{stdout}"
    );
    assert!(stdout.contains("live state unavailable"), "{stdout}");
    assert!(stdout.contains("local:kitchen"), "{stdout}");
    assert!(stdout.contains("tasks: 0 (0 active"), "{stdout}");
    // JSON is the live state only.
    let out = nanoclaw(&["--config", &config, "status", "--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("did not answer"));
}
