//! Store behaviour beyond the contract rules: migrations are additive and roll-back safe, read-only
//! inspection never changes a file, maintenance cadence, clear errors on bad files.

mod common;

use std::time::{Duration, Instant};

use common::{fixture_copy, msg};
use nanoclaw::core::cursor::AgentCursors;
use nanoclaw::core::types::{
    ContextMode, RegisteredGroup, RunLogStatus, ScheduleType, ScheduledTask, TaskRunLog, TaskStatus,
};
use nanoclaw::store::migrations::{MIGRATIONS, Step, latest_version};
use nanoclaw::store::{OPTIMIZE_INTERVAL, Store};

const CHAT: &str = "120363000000000001@g.us";

/// Every typed query this release uses, run once. Any schema incompatibility fails here.
fn exercise_every_query(s: &mut Store) {
    s.store_inbound(
        &msg("q1", CHAT, "@Andy hi", "2027-01-01T00:00:00.000Z"),
        true,
    )
    .unwrap();
    s.upsert_chat(CHAT, "2027-01-01T00:00:01.000Z", Some("Named"))
        .unwrap();
    s.rename_chat(CHAT, "Renamed", "2027-01-01T00:00:02.000Z")
        .unwrap();
    s.set_group_sync("2027-01-01T00:00:03.000Z").unwrap();
    assert!(s.group_sync_time().unwrap().is_some());
    assert!(!s.all_chats().unwrap().is_empty());
    let (new, _) = s
        .new_messages(&[CHAT.to_string()], "2026-12-31T00:00:00.000Z", "Andy")
        .unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(
        s.messages_since(CHAT, "", "Andy")
            .unwrap()
            .last()
            .unwrap()
            .id,
        "q1"
    );
    let g = RegisteredGroup {
        jid: CHAT.into(),
        name: "G".into(),
        folder: "migr-test".into(),
        trigger: "@Andy".into(),
        added_at: "2027-01-01T00:00:00.000Z".into(),
        container_config: None,
        requires_trigger: Some(false),
    };
    s.register_group(&g).unwrap();
    assert!(s.get_group(CHAT).unwrap().is_some());
    assert!(!s.all_groups().unwrap().is_empty());
    let t = ScheduledTask {
        id: "migr-task".into(),
        group_folder: "migr-test".into(),
        chat_jid: CHAT.into(),
        prompt: "p".into(),
        schedule_type: ScheduleType::Interval,
        schedule_value: "1000".into(),
        next_run: Some("2027-01-01T00:00:00.000Z".into()),
        last_run: None,
        last_result: None,
        status: TaskStatus::Active,
        created_at: "2027-01-01T00:00:00.000Z".into(),
        context_mode: ContextMode::Group,
    };
    s.create_task(&t).unwrap();
    assert!(
        s.due_tasks("2027-01-02T00:00:00.000Z")
            .unwrap()
            .iter()
            .any(|x| x.id == t.id)
    );
    assert!(s.next_due_time().unwrap().is_some());
    let log = TaskRunLog {
        task_id: t.id.clone(),
        run_at: "2027-01-01T00:00:05.000Z".into(),
        duration_ms: 5,
        status: RunLogStatus::Success,
        result: Some("r".into()),
        error: None,
    };
    assert!(s.finish_task_run(&t.id, None, "r", &log).unwrap());
    assert_eq!(s.task_run_logs(&t.id).unwrap().len(), 1);
    assert_eq!(s.tasks_for_group("migr-test").unwrap().len(), 1);
    assert!(s.delete_task(&t.id).unwrap());
    s.set_session("migr-test", "sess").unwrap();
    assert_eq!(s.get_session("migr-test").unwrap().as_deref(), Some("sess"));
    let mut agent = AgentCursors::default();
    agent.set(CHAT, "2027-01-01T00:00:00.000Z");
    s.save_cursors("2027-01-01T00:00:00.000Z", &agent).unwrap();
    assert_eq!(s.load_cursors().unwrap().agent, agent);
    assert!(s.check().unwrap().is_empty());
}

#[test]
fn every_older_release_works_on_a_database_migrated_by_this_one() {
    // Release k knows MIGRATIONS[..k]. After an A/B rollback it opens a DB at the newest version.
    for k in 1..=MIGRATIONS.len() {
        let (_dir, path) = fixture_copy();
        drop(Store::open(&path).unwrap());
        let mut older = Store::open_with(&path, &MIGRATIONS[..k]).unwrap();
        assert_eq!(
            older.migration().newer_than_build,
            k < MIGRATIONS.len(),
            "release {k}"
        );
        exercise_every_query(&mut older);
        drop(older);
        // Rolling forward again is a no-op.
        let newest = Store::open(&path).unwrap();
        assert_eq!(newest.migration().from, latest_version(MIGRATIONS));
    }
}

#[test]
fn each_migration_upgrades_from_every_older_version() {
    for k in 0..MIGRATIONS.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        if k > 0 {
            drop(Store::open_with(&path, &MIGRATIONS[..k]).unwrap());
        }
        let mut s = Store::open(&path).unwrap();
        assert_eq!(
            s.migration().from,
            MIGRATIONS.get(k.wrapping_sub(1)).map_or(0, |m| m.version)
        );
        assert_eq!(s.migration().to, latest_version(MIGRATIONS));
        exercise_every_query(&mut s);
    }
}

#[test]
fn migrations_are_additive_only() {
    let mut last = 0;
    for m in MIGRATIONS {
        assert!(m.version > last, "versions strictly increase");
        last = m.version;
        for step in m.steps {
            match step {
                Step::Sql(sql) => {
                    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                        let upper = stmt.to_ascii_uppercase();
                        let allowed = [
                            "CREATE TABLE IF NOT EXISTS",
                            "CREATE INDEX IF NOT EXISTS",
                            "CREATE UNIQUE INDEX IF NOT EXISTS",
                        ];
                        assert!(
                            allowed.iter().any(|a| upper.starts_with(a)),
                            "migration {} has a non-additive statement: {stmt}",
                            m.version
                        );
                    }
                }
                Step::AddColumn { decl, .. } => {
                    let upper = decl.to_ascii_uppercase();
                    assert!(
                        !upper.contains("NOT NULL") || upper.contains("DEFAULT"),
                        "added column must be nullable or defaulted: {decl}"
                    );
                }
            }
        }
    }
}

#[test]
fn read_only_open_never_changes_the_file() {
    let (_dir, path) = fixture_copy();
    let before = std::fs::read(&path).unwrap();
    let s = Store::open_read_only(&path).unwrap();
    assert_eq!(s.migration().from, 0);
    assert_eq!(s.stats().unwrap().rows[1], ("messages", 50));
    assert!(s.check().unwrap().is_empty());
    drop(s);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!path.with_extension("db-wal").exists());
}

#[test]
fn corrupt_and_missing_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.db");
    std::fs::write(
        &bad,
        b"this is not sqlite at all, not even close............",
    )
    .unwrap();
    let err = Store::open(&bad).err().expect("corrupt file must fail");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot open database {}", bad.display())),
        "{err}"
    );
    assert!(err.to_string().contains("not a database"), "{err}");
    let missing = dir.path().join("missing.db");
    let err = Store::open_read_only(&missing)
        .err()
        .expect("missing file must fail");
    assert!(err.to_string().contains("no such file"), "{err}");
    assert!(!missing.exists(), "read-only open must not create the file");
}

#[test]
fn optimize_runs_hourly() {
    let mut s = Store::open_in_memory().unwrap();
    let t0 = Instant::now();
    assert!(
        !s.maybe_optimize(t0).unwrap(),
        "the first tick only starts the clock"
    );
    assert!(!s.maybe_optimize(t0 + Duration::from_secs(60)).unwrap());
    let before = s.query_count();
    assert!(s.maybe_optimize(t0 + OPTIMIZE_INTERVAL).unwrap());
    assert_eq!(s.query_count(), before + 1);
    assert!(
        !s.maybe_optimize(t0 + OPTIMIZE_INTERVAL + Duration::from_secs(1))
            .unwrap()
    );
}

#[test]
fn writes_that_belong_together_are_atomic() {
    let mut s = Store::open_in_memory().unwrap();
    // If the message insert fails, the chat-metadata upsert of the same inbound event is rolled back.
    s.raw()
        .execute_batch(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .unwrap();
    assert!(
        s.store_inbound(&msg("x", CHAT, "hi", "2027-01-01T00:00:00.000Z"), true)
            .is_err()
    );
    assert!(
        s.all_chats().unwrap().is_empty(),
        "chat upsert rolled back with the message"
    );
}
