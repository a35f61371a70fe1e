//! The IPC watcher against a real directory tree while it runs (contract §8.3–8.5): files are written
//! the way the runner writes them (temp + rename) or the way a shell `echo` does, and the watcher must
//! pick them up through inotify, in name order, within its limits, surviving hostile input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoclaw::core::audit::AuditKind;
use nanoclaw::core::ipc::IpcRejection;
use nanoclaw::core::types::RegisteredGroup;
use nanoclaw::ipc::{IpcLayout, IpcWatcher, StoreEffects, WatcherConfig, WatcherStats};
use nanoclaw::store::Store;
use tokio::sync::oneshot;

struct Harness {
    effects: Arc<StoreEffects>,
    layout: IpcLayout,
    stats: Arc<WatcherStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), nanoclaw::ipc::IpcError>>>,
    dir: tempfile::TempDir,
}

fn group(jid: &str, folder: &str) -> RegisteredGroup {
    RegisteredGroup {
        jid: jid.into(),
        name: folder.into(),
        folder: folder.into(),
        trigger: "@Andy".into(),
        added_at: "2024-01-01T00:00:00.000Z".into(),
        container_config: None,
        requires_trigger: None,
    }
}

/// Limits high enough that only the test's own subject limits anything.
fn fast() -> WatcherConfig {
    WatcherConfig {
        files_per_second: 1_000_000,
        burst: 1_000_000,
        queue_cap: 20_000,
        max_quarantined_per_group: 20_000,
        ..WatcherConfig::default()
    }
}

async fn start(config: WatcherConfig) -> Harness {
    start_with(config, |_| {}).await
}

/// Starts the watcher; `before` runs on the IPC root before the watcher exists.
async fn start_with(config: WatcherConfig, before: impl FnOnce(&IpcLayout)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("db.sqlite")).unwrap();
    store.register_group(&group("main@g.us", "main")).unwrap();
    store
        .register_group(&group("other@g.us", "other-group"))
        .unwrap();
    let layout = IpcLayout::new(dir.path().join("ipc"));
    layout.ensure_group("main").unwrap();
    layout.ensure_group("other-group").unwrap();
    before(&layout);
    let effects = Arc::new(StoreEffects::new(store, "Andy", None));
    let watcher = IpcWatcher::new(layout.clone(), Arc::clone(&effects), config).unwrap();
    let stats = watcher.stats();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(watcher.run(async move {
        let _ = rx.await;
    }));
    Harness {
        effects,
        layout,
        stats,
        stop: Some(tx),
        task: Some(task),
        dir,
    }
}

impl Harness {
    fn kind_dir(&self, folder: &str, kind: &str) -> PathBuf {
        self.layout.group_dir(folder).join(kind)
    }

    /// Publishes a file the way the runner does: write `<name>.tmp`, then rename.
    fn publish(&self, folder: &str, kind: &str, name: &str, body: &[u8]) {
        publish(&self.kind_dir(folder, kind), name, body);
    }

    async fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; stats: claimed {} applied {} denied {} rejected {}",
                WatcherStats::get(&self.stats.claimed),
                WatcherStats::get(&self.stats.applied),
                WatcherStats::get(&self.stats.denied),
                WatcherStats::get(&self.stats.rejected),
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn audits_matching(&self, f: impl Fn(&AuditKind) -> bool) -> usize {
        self.effects.audits().iter().filter(|a| f(&a.kind)).count()
    }

    async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("watcher stops promptly")
                .unwrap()
                .unwrap();
        }
        self.dir
    }
}

fn publish(dir: &Path, name: &str, body: &[u8]) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn message(jid: &str, text: &str) -> Vec<u8> {
    serde_json::json!({"type":"message","chatJid":jid,"text":text,"groupFolder":"x","timestamp":"t"})
        .to_string()
        .into_bytes()
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_commands_written_while_running() {
    let h = start(fast()).await;
    // Files appear after the watcher started: only inotify can tell it about them.
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.publish(
        "other-group",
        "messages",
        "1700000000001-aaaaaa.json",
        &message("other@g.us", "first"),
    );
    h.publish(
        "other-group",
        "messages",
        "1700000000002-bbbbbb.json",
        &message("other@g.us", "second"),
    );
    h.publish(
        "other-group",
        "messages",
        "1700000000003-cccccc.json",
        &message("main@g.us", "not yours"),
    );
    h.publish(
        "other-group",
        "tasks",
        "1700000000004-dddddd.json",
        serde_json::json!({"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"60000","targetJid":"other@g.us","createdBy":"other-group","timestamp":"t"}).to_string().as_bytes(),
    );
    h.wait_for("the schedule_task", Duration::from_secs(10), |h| {
        h.effects.wakeups() == 1
    })
    .await;
    h.wait_for("the sends", Duration::from_secs(10), |h| {
        h.effects.sent_count() == 2
    })
    .await;
    let texts: Vec<String> = h.effects.sent().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["Andy: first", "Andy: second"], "arrival order");
    let tasks = h.effects.with_store(|s| s.all_tasks()).unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].group_folder, "other-group");
    h.wait_for("the denial", Duration::from_secs(10), |h| {
        h.audits_matching(|k| {
            matches!(
                k,
                AuditKind::IpcDenied {
                    command: "message",
                    ..
                }
            )
        }) == 1
    })
    .await;
    // Every file was consumed, none quarantined, nothing left in processing.
    assert_eq!(count_files(&h.kind_dir("other-group", "messages")), 0);
    assert_eq!(count_files(&h.kind_dir("other-group", "tasks")), 0);
    assert_eq!(
        count_files(&h.layout.root().join(".processing/other-group")),
        0
    );
    assert_eq!(count_files(&h.layout.errors_dir("other-group")), 0);
    // A group directory created after start is picked up too.
    h.effects
        .with_store(|s| s.register_group(&group("late@g.us", "late")))
        .unwrap();
    h.layout.ensure_group("late").unwrap();
    h.publish(
        "late",
        "messages",
        "1700000000005-eeeeee.json",
        &message("late@g.us", "late hello"),
    );
    h.wait_for("the late group's message", Duration::from_secs(10), |h| {
        h.effects.sent_count() == 3
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_10000_files_in_order() {
    const N: usize = 10_000;
    let h = start(fast()).await;
    let dir = h.kind_dir("main", "messages");
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            publish(
                &dir,
                &format!("1700000000000-{i:06}.json"),
                &message("main@g.us", &format!("m{i:06}")),
            );
        }
    });
    h.wait_for("10,000 sends", Duration::from_secs(120), |h| {
        h.effects.sent_count() == N
    })
    .await;
    writer.join().unwrap();
    let elapsed = started.elapsed();
    let texts: Vec<String> = h.effects.sent().into_iter().map(|m| m.text).collect();
    // Files arrive while earlier passes run, so each pass sees a prefix; within and across passes the
    // order is name order.
    let expected: Vec<String> = (0..N).map(|i| format!("Andy: m{i:06}")).collect();
    assert!(texts == expected, "sends out of order");
    assert_eq!(count_files(&h.kind_dir("main", "messages")), 0);
    assert_eq!(count_files(&h.layout.root().join(".processing/main")), 0);
    eprintln!(
        "burst: {N} files in {elapsed:?}; {} inotify events, {} passes, {} rescans",
        WatcherStats::get(&h.stats.events),
        WatcherStats::get(&h.stats.passes),
        WatcherStats::get(&h.stats.rescans)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_file_storm_is_quarantined_and_survived() {
    let config = WatcherConfig {
        max_quarantined_per_group: 300,
        max_file_bytes: 4096,
        ..fast()
    };
    let h = start(config).await;
    let msgs = h.kind_dir("other-group", "messages");
    let tasks = h.kind_dir("other-group", "tasks");
    let outside = h.dir.path().join("secret.json");
    std::fs::write(&outside, message("other@g.us", "from outside")).unwrap();
    // Hostile specials first: a symlink to a host file, a FIFO (would block a naive reader), a directory.
    std::os::unix::fs::symlink(&outside, msgs.join("0000-link.json")).unwrap();
    let fifo = std::ffi::CString::new(msgs.join("0001-fifo.json").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::create_dir(msgs.join("0002-dir.json")).unwrap();
    // Then a storm: 1,000 malformed files of assorted kinds, with valid ones interleaved.
    let big = "x".repeat(5000);
    let bad: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        br#"{"type":"nope"}"#.to_vec(),
        br#"{"type":"message","chatJid":"other@g.us"}"#.to_vec(),
        br#"{"type":"message","chatJid":"other@g.us","text":5}"#.to_vec(),
        br#"{"type":"message","chatJid":"not-a-jid","text":"x"}"#.to_vec(),
        format!(r#"{{"type":"message","chatJid":"other@g.us","text":"{big}"}}"#).into_bytes(),
        vec![0xff, 0xfe, 0x00],
    ];
    let writer = std::thread::spawn(move || {
        for i in 0..1000 {
            let body = &bad[i % bad.len()];
            publish(&msgs, &format!("1{i:05}-bad.json"), body);
            if i % 100 == 0 {
                publish(
                    &msgs,
                    &format!("1{i:05}-good.json"),
                    &message("other@g.us", &format!("ok {i}")),
                );
            }
        }
        publish(
            &tasks,
            "2-bad-task.json",
            br#"{"type":"register_group","jid":"x@g.us","name":"n","folder":"../main","trigger":"t"}"#,
        );
    });
    writer.join().unwrap();
    h.wait_for("all files handled", Duration::from_secs(60), |h| {
        WatcherStats::get(&h.stats.rejected) == 1000 + 3 + 1 && h.effects.sent_count() == 10
    })
    .await;
    // The host file behind the symlink was neither read nor moved.
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        message("other@g.us", "from outside")
    );
    assert!(
        h.effects
            .sent()
            .iter()
            .all(|m| m.text != "Andy: from outside")
    );
    // Quarantine holds exactly its cap (each with a reason file); the rest were dropped, once audited.
    let errors = h.layout.errors_dir("other-group");
    let names: Vec<String> = std::fs::read_dir(&errors)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| !n.ends_with(".reason")).count(),
        300
    );
    assert_eq!(names.iter().filter(|n| n.ends_with(".reason")).count(), 300);
    let link_reason =
        std::fs::read_to_string(errors.join("messages-0000-link.json.reason")).unwrap();
    assert_eq!(link_reason, "not a regular file\n");
    assert_eq!(
        std::fs::read_to_string(errors.join("messages-0001-fifo.json.reason")).unwrap(),
        "not a regular file\n"
    );
    assert_eq!(
        std::fs::read_to_string(errors.join("messages-100005-bad.json.reason")).unwrap(),
        format!("{}\n", IpcRejection::TooLarge)
    );
    assert_eq!(
        h.audits_matching(|k| matches!(k, AuditKind::IpcQuarantineFull { .. })),
        1
    );
    assert_eq!(
        h.audits_matching(|k| matches!(k, AuditKind::IpcRejected { .. })),
        1004
    );
    // Still alive and serving.
    h.publish(
        "other-group",
        "messages",
        "3-after.json",
        &message("other@g.us", "still here"),
    );
    h.wait_for("a send after the storm", Duration::from_secs(10), |h| {
        h.effects.sent_count() == 11
    })
    .await;
    assert_eq!(count_files(&h.kind_dir("other-group", "messages")), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_defers_and_audits() {
    let config = WatcherConfig {
        files_per_second: 100,
        burst: 10,
        ..fast()
    };
    // All 60 files wait when the watcher starts, so its first pass meets the limit however slowly the
    // machine runs. Timed from before the watcher exists, i.e. before its bucket starts filling.
    let started = Instant::now();
    let h = start_with(config, |layout| {
        let dir = layout.group_dir("other-group").join("messages");
        for i in 0..60 {
            publish(
                &dir,
                &format!("{i:04}.json"),
                &message("other@g.us", &format!("r{i:02}")),
            );
        }
    })
    .await;
    h.wait_for("all 60 sends", Duration::from_secs(10), |h| {
        h.effects.sent_count() == 60
    })
    .await;
    // 60 files at 100/s after a burst of 10 need at least 0.5 s.
    assert!(
        started.elapsed() >= Duration::from_millis(490),
        "{:?}",
        started.elapsed()
    );
    assert!(WatcherStats::get(&h.stats.rate_limited) >= 1);
    assert!(h.audits_matching(|k| matches!(k, AuditKind::IpcRateLimited { .. })) >= 1);
    let texts: Vec<String> = h.effects.sent().into_iter().map(|m| m.text).collect();
    let expected: Vec<String> = (0..60).map(|i| format!("Andy: r{i:02}")).collect();
    assert_eq!(texts, expected);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_cap_takes_files_in_batches() {
    let config = WatcherConfig {
        queue_cap: 50,
        ..fast()
    };
    // Files exist before the watcher starts; the start-up scan finds them.
    let h = start_with(config, |layout| {
        let dir = layout.group_dir("main").join("messages");
        for i in 0..200 {
            publish(
                &dir,
                &format!("{i:04}.json"),
                &message("main@g.us", &format!("q{i:03}")),
            );
        }
    })
    .await;
    h.wait_for("all 200 sends", Duration::from_secs(10), |h| {
        h.effects.sent_count() == 200
    })
    .await;
    assert!(h.audits_matching(|k| matches!(k, AuditKind::IpcQueueOverflow { cap: 50 })) >= 1);
    assert!(WatcherStats::get(&h.stats.passes) >= 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_style_partial_write_waits_for_close() {
    // A long grace: the retry comes from the writer's close, not from the grace running out.
    let config = WatcherConfig {
        settle: Duration::from_secs(30),
        ..fast()
    };
    let h = start(config).await;
    let path = h.kind_dir("main", "tasks").join("refresh_1700000000.json");
    // `echo '…' > tasks/x.json`: created, then written, then closed. Stall between the halves and make
    // the watcher look meanwhile (another file triggers a pass).
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(br#"{"type":"refr"#).unwrap();
    file.flush().unwrap();
    h.publish(
        "main",
        "messages",
        "1.json",
        &message("main@g.us", "trigger a pass"),
    );
    h.wait_for("the other file", Duration::from_secs(10), |h| {
        h.effects.sent_count() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    file.write_all(br#"esh_groups"}"#).unwrap();
    drop(file);
    h.wait_for("the refresh", Duration::from_secs(10), |h| {
        h.effects.syncs() == 1
    })
    .await;
    assert_eq!(WatcherStats::get(&h.stats.rejected), 0);
    assert_eq!(count_files(&h.layout.errors_dir("main")), 0);
    assert!(
        h.layout
            .group_dir("main")
            .join("available_groups.json")
            .is_file()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_partial_write_is_quarantined_after_settle() {
    let config = WatcherConfig {
        settle: Duration::from_millis(300),
        ..fast()
    };
    let h = start(config).await;
    let path = h.kind_dir("main", "tasks").join("stuck.json");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(br#"{"type":"refr"#).unwrap();
    file.flush().unwrap();
    h.publish(
        "main",
        "messages",
        "1.json",
        &message("main@g.us", "trigger a pass"),
    );
    // The writer never finishes: after `settle` the file is rejected, not retried forever.
    h.wait_for("the stuck file's rejection", Duration::from_secs(10), |h| {
        WatcherStats::get(&h.stats.rejected) == 1
    })
    .await;
    assert!(
        h.layout
            .errors_dir("main")
            .join("tasks-stuck.json.reason")
            .is_file()
    );
    drop(file);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_files_are_quarantined_not_replayed() {
    let h = start_with(fast(), |layout| {
        let processing = layout.root().join(".processing/main");
        std::fs::create_dir_all(&processing).unwrap();
        std::fs::write(
            processing.join("messages-1.json"),
            message("main@g.us", "half done"),
        )
        .unwrap();
    })
    .await;
    h.wait_for("the recovery", Duration::from_secs(10), |h| {
        h.audits_matching(|k| {
            matches!(
                k,
                AuditKind::IpcRejected {
                    reason: IpcRejection::Interrupted,
                    ..
                }
            )
        }) == 1
    })
    .await;
    assert_eq!(h.effects.sent_count(), 0, "at most once: not re-sent");
    assert!(
        h.layout
            .errors_dir("main")
            .join("messages-1.json")
            .is_file()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_command_directory_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("1.json"),
        message("main@g.us", "via symlink"),
    )
    .unwrap();
    let target = outside.path().to_path_buf();
    // The runner replaced its messages/ directory with a symlink to a host directory.
    let h = start_with(fast(), move |layout| {
        let msgs = layout.group_dir("other-group").join("messages");
        std::fs::remove_dir(&msgs).unwrap();
        std::os::unix::fs::symlink(&target, &msgs).unwrap();
    })
    .await;
    h.wait_for("the unsafe-entry audit", Duration::from_secs(10), |h| {
        h.audits_matching(|k| matches!(k, AuditKind::IpcUnsafeEntry { .. })) >= 1
    })
    .await;
    // The group's other directory is still served.
    h.publish(
        "other-group",
        "tasks",
        "1.json",
        br#"{"type":"refresh_groups"}"#,
    );
    h.wait_for("the denied refresh", Duration::from_secs(10), |h| {
        WatcherStats::get(&h.stats.denied) == 1
    })
    .await;
    assert!(
        outside.path().join("1.json").is_file(),
        "the file behind the symlink is untouched"
    );
    assert_eq!(h.effects.sent_count(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_and_recreated_group_directory() {
    let h = start(fast()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::remove_dir_all(h.layout.group_dir("other-group")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.audits_matching(|k| matches!(k, AuditKind::IpcUnsafeEntry { .. })),
        0,
        "a vanished group is forgotten quietly"
    );
    // Recreated (as the host does before the group's next run): watched again.
    h.layout.ensure_group("other-group").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.publish(
        "other-group",
        "messages",
        "1.json",
        &message("other@g.us", "back again"),
    );
    h.wait_for("the send after re-creation", Duration::from_secs(10), |h| {
        h.effects.sent_count() == 1
    })
    .await;
    h.stop().await;
}
