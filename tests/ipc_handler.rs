//! IPC commands applied end to end against a real SQLite store (contract §8.4–8.11): the original's
//! ipc-auth cases restated (main folder `main`, groups `other-group` and `third-group`), plus the
//! §12.13 / §12.14 fixes.

use chrono::{DateTime, Utc};
use nanoclaw::core::audit::AuditKind;
use nanoclaw::core::ipc::{IpcKind, IpcRejection, parse_command};
use nanoclaw::core::ipc_auth::DenyReason;
use nanoclaw::core::types::{
    ContextMode, RegisteredGroup, ScheduleType, ScheduledTask, TaskStatus,
};
use nanoclaw::ipc::{HandlerConfig, IpcLayout, Outcome, StoreEffects, apply_command};
use nanoclaw::store::Store;

struct World {
    effects: StoreEffects,
    layout: IpcLayout,
    _dir: tempfile::TempDir,
}

fn group(jid: &str, name: &str, folder: &str) -> RegisteredGroup {
    RegisteredGroup {
        jid: jid.into(),
        name: name.into(),
        folder: folder.into(),
        trigger: "@Andy".into(),
        added_at: "2024-01-01T00:00:00.000Z".into(),
        container_config: None,
        requires_trigger: None,
    }
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_in_memory().unwrap();
    store
        .register_group(&group("main@g.us", "Main", "main"))
        .unwrap();
    store
        .register_group(&group("other@g.us", "Other", "other-group"))
        .unwrap();
    store
        .register_group(&group("third@g.us", "Third", "third-group"))
        .unwrap();
    let layout = IpcLayout::new(dir.path().join("ipc"));
    for f in ["main", "other-group", "third-group"] {
        layout.ensure_group(f).unwrap();
    }
    World {
        effects: StoreEffects::new(store, "Andy", Some(dir.path().join("groups"))),
        layout,
        _dir: dir,
    }
}

fn task(id: &str, folder: &str, jid: &str, status: TaskStatus) -> ScheduledTask {
    ScheduledTask {
        id: id.into(),
        group_folder: folder.into(),
        chat_jid: jid.into(),
        prompt: "p".into(),
        schedule_type: ScheduleType::Once,
        schedule_value: "2025-06-01T00:00:00".into(),
        next_run: Some("2025-06-01T00:00:00.000Z".into()),
        last_run: None,
        last_result: None,
        status,
        created_at: "2024-01-01T00:00:00.000Z".into(),
        context_mode: ContextMode::Isolated,
    }
}

const NOW: &str = "2026-02-10T09:00:00Z";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(NOW)
        .unwrap()
        .with_timezone(&Utc)
}

impl World {
    fn add_task(&self, t: ScheduledTask) {
        self.effects.with_store(|s| s.create_task(&t)).unwrap();
    }

    /// Parses `json` as a file of `kind` from `source` and applies it. Parse failures come back as
    /// `Outcome::Rejected`.
    async fn run(&self, source: &str, kind: IpcKind, json: serde_json::Value) -> Outcome {
        let command = match parse_command(kind, json.to_string().as_bytes()) {
            Ok(c) => c,
            Err(r) => return Outcome::Rejected(r),
        };
        let mut groups = self.effects.with_store(|s| s.all_groups()).unwrap();
        apply_command(
            source,
            "f.json",
            command,
            &mut groups,
            &self.effects,
            &self.layout,
            &HandlerConfig {
                timezone: chrono_tz::UTC,
            },
            now(),
        )
        .await
        .unwrap()
    }

    async fn task_cmd(&self, source: &str, json: serde_json::Value) -> Outcome {
        self.run(source, IpcKind::Tasks, json).await
    }

    fn tasks(&self) -> Vec<ScheduledTask> {
        self.effects.with_store(|s| s.all_tasks()).unwrap()
    }

    fn status(&self, id: &str) -> Option<TaskStatus> {
        self.effects
            .with_store(|s| s.get_task(id))
            .unwrap()
            .map(|t| t.status)
    }
}

fn schedule(target: &str, kind: &str, value: &str) -> serde_json::Value {
    serde_json::json!({"type":"schedule_task","prompt":"do something","schedule_type":kind,"schedule_value":value,"targetJid":target})
}

#[tokio::test]
async fn schedule_task_authorization() {
    let w = world();
    // main can schedule for another group; the task belongs to the target's folder.
    assert_eq!(
        w.task_cmd(
            "main",
            schedule("other@g.us", "once", "2025-06-01T00:00:00")
        )
        .await,
        Outcome::Applied
    );
    let tasks = w.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].group_folder, "other-group");
    assert_eq!(tasks[0].chat_jid, "other@g.us");
    assert_eq!(tasks[0].status, TaskStatus::Active);
    assert!(
        regex::Regex::new(r"^task-\d{13}-[0-9a-z]{6}$")
            .unwrap()
            .is_match(&tasks[0].id),
        "{}",
        tasks[0].id
    );
    assert_eq!(tasks[0].created_at, "2026-02-10T09:00:00.000Z");
    // The scheduler was woken: the new task needs no poll to be seen.
    assert_eq!(w.effects.wakeups(), 1);

    // non-main can schedule for itself
    assert_eq!(
        w.task_cmd(
            "other-group",
            schedule("other@g.us", "once", "2025-06-01T00:00:00")
        )
        .await,
        Outcome::Applied
    );
    assert_eq!(w.tasks().len(), 2);

    // non-main cannot schedule for another group
    assert_eq!(
        w.task_cmd(
            "other-group",
            schedule("main@g.us", "once", "2025-06-01T00:00:00")
        )
        .await,
        Outcome::Denied(DenyReason::ForeignTarget {
            target_folder: "main".into()
        })
    );
    // unregistered target is rejected even for main
    assert_eq!(
        w.task_cmd(
            "main",
            schedule("unknown@g.us", "once", "2025-06-01T00:00:00")
        )
        .await,
        Outcome::Denied(DenyReason::UnregisteredTarget)
    );
    assert_eq!(w.tasks().len(), 2);
    // Denials are audit events.
    let denials = w
        .effects
        .audits()
        .into_iter()
        .filter(|a| matches!(a.kind, AuditKind::IpcDenied { .. }))
        .count();
    assert_eq!(denials, 2);
    // ...stored in the audit table like every other security decision.
    let rows = w.effects.with_store(|s| s.audit_events(None)).unwrap();
    let denied: Vec<_> = rows.iter().filter(|r| r.kind == "ipc.denied").collect();
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[0].group, "other-group");
    assert_eq!(denied[0].decision, "deny");
    assert_eq!(
        denied[1].detail.as_deref(),
        Some("schedule_task: target JID is not registered")
    );
}

#[tokio::test]
async fn pause_resume_cancel_authorization() {
    let w = world();
    w.add_task(task("task-main", "main", "main@g.us", TaskStatus::Active));
    w.add_task(task(
        "task-other",
        "other-group",
        "other@g.us",
        TaskStatus::Active,
    ));
    let cmd = |kind: &str, id: &str| serde_json::json!({"type": kind, "taskId": id, "groupFolder": "main", "isMain": true});

    // pause: main any, non-main own, non-main not another's (payload isMain/groupFolder are ignored)
    assert_eq!(
        w.task_cmd("main", cmd("pause_task", "task-other")).await,
        Outcome::Applied
    );
    assert_eq!(w.status("task-other"), Some(TaskStatus::Paused));
    assert_eq!(
        w.task_cmd("other-group", cmd("resume_task", "task-other"))
            .await,
        Outcome::Applied
    );
    assert_eq!(w.status("task-other"), Some(TaskStatus::Active));
    assert_eq!(
        w.task_cmd("other-group", cmd("pause_task", "task-other"))
            .await,
        Outcome::Applied
    );
    assert_eq!(w.status("task-other"), Some(TaskStatus::Paused));
    assert!(matches!(
        w.task_cmd("other-group", cmd("pause_task", "task-main"))
            .await,
        Outcome::Denied(_)
    ));
    assert_eq!(w.status("task-main"), Some(TaskStatus::Active));

    // resume: main any; third-group cannot resume other-group's task
    assert!(matches!(
        w.task_cmd("third-group", cmd("resume_task", "task-other"))
            .await,
        Outcome::Denied(_)
    ));
    assert_eq!(w.status("task-other"), Some(TaskStatus::Paused));
    assert_eq!(
        w.task_cmd("main", cmd("resume_task", "task-other")).await,
        Outcome::Applied
    );
    assert_eq!(w.status("task-other"), Some(TaskStatus::Active));

    // cancel: non-main cannot cancel another's, can cancel its own, main can cancel any
    assert!(matches!(
        w.task_cmd("other-group", cmd("cancel_task", "task-main"))
            .await,
        Outcome::Denied(_)
    ));
    assert!(w.status("task-main").is_some());
    assert_eq!(
        w.task_cmd("other-group", cmd("cancel_task", "task-other"))
            .await,
        Outcome::Applied
    );
    assert_eq!(w.status("task-other"), None);
    assert_eq!(
        w.task_cmd("main", cmd("cancel_task", "task-main")).await,
        Outcome::Applied
    );
    assert_eq!(w.status("task-main"), None);

    // unknown task id: a warned no-op
    assert_eq!(
        w.task_cmd("main", cmd("pause_task", "task-gone")).await,
        Outcome::Denied(DenyReason::UnknownTask)
    );
}

#[tokio::test]
async fn register_group_rules() {
    let w = world();
    let reg = |jid: &str, folder: &str| serde_json::json!({"type":"register_group","jid":jid,"name":"New Group","folder":folder,"trigger":"@Andy","timestamp":"t"});
    // non-main cannot register
    assert_eq!(
        w.task_cmd("other-group", reg("new@g.us", "new-group"))
            .await,
        Outcome::Denied(DenyReason::MainOnly)
    );
    assert!(
        w.effects
            .with_store(|s| s.get_group("new@g.us"))
            .unwrap()
            .is_none()
    );
    // unsafe folder paths are rejected before anything else
    for bad in ["../../outside", "/abs", "a\u{0}b", "../main"] {
        assert!(
            matches!(
                w.task_cmd("main", reg("new@g.us", bad)).await,
                Outcome::Rejected(IpcRejection::BadFolder(_))
            ),
            "{bad:?}"
        );
    }
    // missing fields
    assert!(matches!(
        w.task_cmd(
            "main",
            serde_json::json!({"type":"register_group","jid":"partial@g.us","name":"Partial"})
        )
        .await,
        Outcome::Rejected(IpcRejection::Malformed(_))
    ));
    // a second "main" and a taken folder are refused (§12.13)
    assert_eq!(
        w.task_cmd("main", reg("new@g.us", "main")).await,
        Outcome::Denied(DenyReason::ReservedFolder)
    );
    assert_eq!(
        w.task_cmd("main", reg("new@g.us", "third-group")).await,
        Outcome::Denied(DenyReason::FolderTaken {
            existing_jid: "third@g.us".into()
        })
    );
    // main registers a new group: store row, logs dir, requiresTrigger settable
    let mut body = reg("new@g.us", "new-group");
    body["requiresTrigger"] = serde_json::json!(false);
    assert_eq!(w.task_cmd("main", body).await, Outcome::Applied);
    let g = w
        .effects
        .with_store(|s| s.get_group("new@g.us"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (g.name.as_str(), g.folder.as_str(), g.trigger.as_str()),
        ("New Group", "new-group", "@Andy")
    );
    assert_eq!(g.requires_trigger, Some(false));
    assert_eq!(g.added_at, "2026-02-10T09:00:00.000Z");
    assert!(w._dir.path().join("groups/new-group/logs").is_dir());
}

#[tokio::test]
async fn refresh_groups_main_only_and_writes_snapshot() {
    let w = world();
    w.effects
        .with_store(|s| s.upsert_chat("fam@g.us", "2026-02-01T00:00:00.000Z", Some("Family")))
        .unwrap();
    assert_eq!(
        w.task_cmd("other-group", serde_json::json!({"type":"refresh_groups"}))
            .await,
        Outcome::Denied(DenyReason::MainOnly)
    );
    assert_eq!(w.effects.syncs(), 0);
    assert_eq!(
        w.task_cmd("main", serde_json::json!({"type":"refresh_groups"}))
            .await,
        Outcome::Applied
    );
    assert_eq!(w.effects.syncs(), 1);
    let text =
        std::fs::read_to_string(w.layout.group_dir("main").join("available_groups.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["groups"][0]["jid"], "fam@g.us");
    assert_eq!(v["groups"][0]["name"], "Family");
    assert_eq!(v["groups"][0]["isRegistered"], false);
    assert_eq!(v["lastSync"], "2026-02-10T09:00:00.000Z");
}

#[tokio::test]
async fn schedule_types_and_next_run() {
    let w = world();
    assert_eq!(
        w.task_cmd("main", schedule("other@g.us", "cron", "0 9 * * *"))
            .await,
        Outcome::Applied
    );
    assert_eq!(
        w.tasks()[0].next_run.as_deref(),
        Some("2026-02-11T09:00:00.000Z")
    );
    assert_eq!(
        w.task_cmd("main", schedule("other@g.us", "interval", "3600000"))
            .await,
        Outcome::Applied
    );
    assert!(
        w.tasks()
            .iter()
            .any(|t| t.schedule_type == ScheduleType::Interval
                && t.next_run.as_deref() == Some("2026-02-10T10:00:00.000Z"))
    );
    for (kind, value) in [
        ("cron", "not a cron"),
        ("interval", "abc"),
        ("interval", "0"),
        ("once", "not-a-date"),
    ] {
        assert!(
            matches!(
                w.task_cmd("main", schedule("other@g.us", kind, value))
                    .await,
                Outcome::Rejected(IpcRejection::BadSchedule(_))
            ),
            "{kind} {value}"
        );
    }
    assert_eq!(w.tasks().len(), 2);
}

#[tokio::test]
async fn context_mode_defaulting() {
    let w = world();
    for (mode, expected) in [
        (Some("group"), ContextMode::Group),
        (Some("isolated"), ContextMode::Isolated),
        (Some("bogus"), ContextMode::Isolated),
        (None, ContextMode::Isolated),
    ] {
        let prompt = format!("mode {mode:?}");
        let mut body = schedule("other@g.us", "once", "2025-06-01T00:00:00");
        body["prompt"] = serde_json::json!(prompt);
        if let Some(m) = mode {
            body["context_mode"] = serde_json::json!(m);
        }
        assert_eq!(w.task_cmd("main", body).await, Outcome::Applied);
        let stored = w.tasks().into_iter().find(|t| t.prompt == prompt).unwrap();
        assert_eq!(stored.context_mode, expected, "{mode:?}");
    }
}

#[tokio::test]
async fn messages_are_authorized_and_formatted() {
    let w = world();
    let msg = |jid: &str, text: &str| serde_json::json!({"type":"message","chatJid":jid,"text":text,"groupFolder":"main"});
    assert_eq!(
        w.run(
            "main",
            IpcKind::Messages,
            msg("stranger@s.whatsapp.net", "hi")
        )
        .await,
        Outcome::Applied
    );
    assert_eq!(
        w.run(
            "other-group",
            IpcKind::Messages,
            msg("other@g.us", "<internal>plan</internal> done")
        )
        .await,
        Outcome::Applied
    );
    // Entirely internal text sends nothing (§12.14).
    assert_eq!(
        w.run(
            "other-group",
            IpcKind::Messages,
            msg("other@g.us", "<internal>x</internal>")
        )
        .await,
        Outcome::Applied
    );
    assert!(matches!(
        w.run("other-group", IpcKind::Messages, msg("main@g.us", "sneaky"))
            .await,
        Outcome::Denied(_)
    ));
    assert!(matches!(
        w.run(
            "other-group",
            IpcKind::Messages,
            msg("unknown@g.us", "sneaky")
        )
        .await,
        Outcome::Denied(_)
    ));
    let sent: Vec<(String, String)> = w
        .effects
        .sent()
        .into_iter()
        .map(|m| (m.chat_jid, m.text))
        .collect();
    assert_eq!(
        sent,
        vec![
            (
                "stranger@s.whatsapp.net".to_string(),
                "Andy: hi".to_string()
            ),
            ("other@g.us".to_string(), "Andy: done".to_string()),
        ]
    );
}
