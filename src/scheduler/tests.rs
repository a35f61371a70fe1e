//! Scheduler tests: the engine under a paused tokio clock with a real SQLite store and the scripted
//! launcher. The pure schedule tests live with the parser in `core::schedule`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use tokio::time::sleep;

use crate::core::time::parse_iso;
use crate::core::types::{ContextMode, RunLogStatus, ScheduleType, ScheduledTask, TaskStatus};
use crate::core::wire::{FrameStatus, OutputFrame};
use crate::queue::testing::{Behavior, RecordingOutbound, ScriptedLauncher, Step};
use crate::queue::tests::group;
use crate::queue::{Queue, QueueSettings, RunKind};
use crate::scheduler::{Clock, NewTask, Scheduler, SchedulerError, SchedulerSettings};
use crate::store::{Store, StoreHandle};

fn utc(s: &str) -> DateTime<Utc> {
    parse_iso(s).unwrap()
}

// ---- the engine ---------------------------------------------------------------------------------------

const T0: &str = "2026-01-03T12:00:00.000Z";

struct Env {
    store: StoreHandle,
    queue: Queue,
    scheduler: Scheduler,
    launcher: ScriptedLauncher,
    out: RecordingOutbound,
}

impl Env {
    /// Groups `main` (main@s.whatsapp.net) and `family` (family@g.us) registered; engine not started.
    fn new(launcher: ScriptedLauncher, tz: Tz) -> Self {
        let store = StoreHandle::new(Store::open_in_memory().unwrap());
        let out = RecordingOutbound::new();
        let queue = Queue::new(
            QueueSettings {
                idle_timeout: Duration::from_secs(60),
                ..QueueSettings::default()
            },
            store.clone(),
            Arc::new(launcher.clone()),
            Arc::new(out.clone()),
        );
        for g in [
            group("main@s.whatsapp.net", "main", false),
            group("family@g.us", "family", true),
        ] {
            store.blocking(|s| s.register_group(&g)).unwrap();
            queue.register_group(g);
        }
        let scheduler = Scheduler::new(
            SchedulerSettings {
                timezone: tz,
                ..SchedulerSettings::default()
            },
            queue.clone(),
            Clock::anchored(utc(T0)),
        );
        Self {
            store,
            queue,
            scheduler,
            launcher,
            out,
        }
    }

    fn started(launcher: ScriptedLauncher) -> Self {
        let env = Self::new(launcher, Tz::UTC);
        env.scheduler.start();
        env
    }

    async fn create(&self, kind: &str, value: &str) -> ScheduledTask {
        self.scheduler
            .create_task(NewTask {
                group_folder: "family".into(),
                chat_jid: "family@g.us".into(),
                prompt: format!("{kind} {value}"),
                schedule_type: kind.into(),
                schedule_value: value.into(),
                context_mode: None,
            })
            .await
            .unwrap()
    }

    async fn task(&self, id: &str) -> Option<ScheduledTask> {
        let id = id.to_string();
        self.store.call(move |s| s.get_task(&id)).await.unwrap()
    }

    async fn logs(&self, id: &str) -> Vec<crate::core::types::TaskRunLog> {
        let id = id.to_string();
        self.store
            .call(move |s| s.task_run_logs(&id))
            .await
            .unwrap()
    }

    fn task_runs(&self) -> Vec<crate::queue::testing::RunRecord> {
        self.launcher
            .records()
            .into_iter()
            .filter(|r| r.spec.kind == RunKind::Task)
            .collect()
    }
}

fn since_t0(at: tokio::time::Instant, start: tokio::time::Instant) -> Duration {
    at - start
}

#[tokio::test(start_paused = true)]
async fn contract_6_12_interval_task_runs_and_reschedules_from_completion() {
    let env = Env::started(ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_secs(2)),
        Step::Reply("<internal>note</internal>done".into()),
    ])));
    let start = tokio::time::Instant::now();
    let task = env.create("interval", "60000").await;
    assert_eq!(task.next_run.as_deref(), Some("2026-01-03T12:01:00.000Z"));
    assert_eq!(task.context_mode, ContextMode::Isolated, "§6.4 default");
    assert!(
        task.id.starts_with("task-1767441600000-") && task.id.len() == 25,
        "{}",
        task.id
    );
    sleep(Duration::from_secs(90)).await;
    let runs = env.task_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        since_t0(runs[0].started_at, start),
        Duration::from_secs(60),
        "on time, no poll lag"
    );
    let input = &runs[0].spec.input;
    assert!(input.is_scheduled_task && !input.is_main && input.session_id.is_none());
    assert_eq!(input.prompt, "interval 60000");
    let t = env.task(&task.id).await.unwrap();
    // Completed at 12:01:02; next run 60 s after completion (drift, no catch-up).
    assert_eq!(t.next_run.as_deref(), Some("2026-01-03T12:02:02.000Z"));
    assert_eq!(t.last_run.as_deref(), Some("2026-01-03T12:01:02.000Z"));
    assert_eq!(
        t.last_result.as_deref(),
        Some("<internal>note</internal>done")
    );
    assert_eq!(t.status, TaskStatus::Active);
    let logs = env.logs(&task.id).await;
    assert_eq!(logs.len(), 1);
    assert_eq!(
        logs[0].run_at, "2026-01-03T12:01:02.000Z",
        "completion time"
    );
    assert_eq!(logs[0].duration_ms, 2000);
    assert_eq!(logs[0].status, RunLogStatus::Success);
    assert_eq!(
        env.out.sent_to("family@g.us"),
        vec!["Andy: done"],
        "§6.10 delivered, stripped"
    );
    sleep(Duration::from_secs(60)).await;
    assert_eq!(env.task_runs().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn contract_6_5_task_created_while_engine_sleeps_far_ahead_runs_on_time() {
    let env = Env::started(ScriptedLauncher::always(Behavior::reply("ok")));
    let start = tokio::time::Instant::now();
    let far = env.create("once", "2026-01-10T12:00:00Z").await;
    sleep(Duration::from_secs(60)).await;
    let passes = env.scheduler.stats().passes;
    // The engine now sleeps towards next week. A task due in an hour must wake it.
    let soon = env.create("once", "2026-01-03T13:01:00Z").await;
    sleep(Duration::from_secs(3601)).await;
    let runs = env.task_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].spec.input.prompt, "once 2026-01-03T13:01:00Z");
    assert_eq!(
        since_t0(runs[0].started_at, start),
        Duration::from_secs(3660)
    );
    assert!(
        env.scheduler.stats().passes <= passes + 3,
        "woken by the change, not by polling"
    );
    let t = env.task(&soon.id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Completed, "§6.12 once → completed");
    assert_eq!(t.next_run, None);
    assert_eq!(env.task(&far.id).await.unwrap().status, TaskStatus::Active);
}

#[tokio::test(start_paused = true)]
async fn contract_6_13_paused_and_cancelled_tasks_never_run() {
    let env = Env::started(ScriptedLauncher::always(Behavior::reply("ok")));
    let paused = env.create("interval", "60000").await;
    let cancelled = env.create("cron", "* * * * *").await;
    assert!(env.scheduler.pause_task(&paused.id).await.unwrap());
    assert!(env.scheduler.cancel_task(&cancelled.id).await.unwrap());
    sleep(Duration::from_secs(600)).await;
    assert!(env.task_runs().is_empty());
    assert!(env.task(&cancelled.id).await.is_none());
    // Resume: next_run is not recomputed, so the overdue task fires at once.
    assert!(env.scheduler.resume_task(&paused.id).await.unwrap());
    sleep(Duration::from_millis(100)).await;
    assert_eq!(env.task_runs().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn contract_12_9_task_paused_while_queued_does_not_run() {
    // Keep the group busy with a message run so the due task waits in the mailbox.
    let launcher = ScriptedLauncher::new(|spec, _| match spec.kind {
        RunKind::Message => Behavior::Steps(vec![Step::Sleep(Duration::from_secs(120))]),
        RunKind::Task => Behavior::reply("task"),
    });
    let env = Env::started(launcher);
    let m = crate::core::types::Message {
        id: "m1".into(),
        chat_jid: "family@g.us".into(),
        sender: "u".into(),
        sender_name: "U".into(),
        content: "@Andy busy".into(),
        timestamp: "2026-01-03T12:00:00.000Z".into(),
        is_from_me: false,
    };
    env.store
        .call(move |s| s.store_inbound(&m, true))
        .await
        .unwrap();
    env.queue.notify_messages("family@g.us");
    sleep(Duration::from_secs(1)).await;
    let task = env.create("interval", "10000").await;
    sleep(Duration::from_secs(15)).await;
    assert_eq!(
        env.scheduler.stats().dispatched,
        1,
        "queued behind the message run"
    );
    env.scheduler.pause_task(&task.id).await.unwrap();
    sleep(Duration::from_secs(200)).await;
    assert!(
        env.task_runs().is_empty(),
        "re-checked at start: paused, so skipped"
    );
    assert!(env.logs(&task.id).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn contract_12_9_long_task_is_not_run_twice() {
    let env = Env::started(ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_secs(150)),
        Step::Reply("slow".into()),
    ])));
    let start = tokio::time::Instant::now();
    let task = env.create("interval", "60000").await;
    // Other task changes wake the engine while the run is live; each pass sees the task still due.
    for _ in 0..5 {
        sleep(Duration::from_secs(50)).await;
        env.scheduler.tasks_changed();
    }
    let runs = env.task_runs();
    assert_eq!(
        runs.len(),
        1,
        "still due while running, but in flight: not queued again"
    );
    assert!(env.scheduler.stats().passes >= 5);
    // First run 60 s → 210 s; the next one 60 s after completion.
    sleep(Duration::from_secs(30)).await;
    let runs = env.task_runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        since_t0(runs[1].started_at, start),
        Duration::from_secs(270)
    );
    assert_eq!(env.logs(&task.id).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn contract_6_14_missed_runs_after_downtime_run_once() {
    let env = Env::new(ScriptedLauncher::always(Behavior::reply("ok")), Tz::UTC);
    // Hourly task last due three days ago: the host was down.
    let task = ScheduledTask {
        id: "task-old".into(),
        group_folder: "family".into(),
        chat_jid: "family@g.us".into(),
        prompt: "hourly".into(),
        schedule_type: ScheduleType::Cron,
        schedule_value: "0 * * * *".into(),
        next_run: Some("2025-12-31T12:00:00.000Z".into()),
        last_run: None,
        last_result: None,
        status: TaskStatus::Active,
        created_at: "2025-12-01T00:00:00.000Z".into(),
        context_mode: ContextMode::Isolated,
    };
    env.store.blocking(|s| s.create_task(&task)).unwrap();
    env.scheduler.start();
    sleep(Duration::from_secs(120)).await;
    assert_eq!(env.task_runs().len(), 1, "once, not once per missed hour");
    let t = env.task(&task.id).await.unwrap();
    assert_eq!(t.next_run.as_deref(), Some("2026-01-03T13:00:00.000Z"));
}

#[tokio::test(start_paused = true)]
async fn contract_12_10_task_for_unknown_group_is_paused_the_first_time() {
    let env = Env::started(ScriptedLauncher::always(Behavior::reply("ok")));
    // Folder unknown (the chat is registered under another folder)...
    let ghost = env
        .scheduler
        .create_task(NewTask {
            group_folder: "ghost".into(),
            chat_jid: "family@g.us".into(),
            prompt: "p".into(),
            schedule_type: "interval".into(),
            schedule_value: "60000".into(),
            context_mode: None,
        })
        .await
        .unwrap();
    // ...and chat unknown to the queue.
    let stray = env
        .scheduler
        .create_task(NewTask {
            group_folder: "family".into(),
            chat_jid: "nobody@g.us".into(),
            prompt: "p".into(),
            schedule_type: "interval".into(),
            schedule_value: "60000".into(),
            context_mode: None,
        })
        .await
        .unwrap();
    sleep(Duration::from_secs(3600)).await;
    assert!(env.task_runs().is_empty());
    for (task, folder) in [(&ghost, "ghost"), (&stray, "family")] {
        let t = env.task(&task.id).await.unwrap();
        assert_eq!(t.status, TaskStatus::Paused);
        let logs = env.logs(&task.id).await;
        assert_eq!(logs.len(), 1, "logged once, not every minute");
        assert_eq!(logs[0].status, RunLogStatus::Error);
        assert_eq!(
            logs[0].error.as_deref(),
            Some(format!("Group not found: {folder}").as_str())
        );
    }
}

#[tokio::test(start_paused = true)]
async fn contract_6_7_context_mode_selects_the_session() {
    let env = Env::started(ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Frame(OutputFrame {
            status: FrameStatus::Success,
            result: Some(serde_json::json!("ok")),
            new_session_id: Some("from-task".into()),
            error: None,
        }),
    ])));
    env.store
        .call(|s| s.set_session("family", "sess-family"))
        .await
        .unwrap();
    for mode in ["group", "isolated"] {
        env.scheduler
            .create_task(NewTask {
                group_folder: "family".into(),
                chat_jid: "family@g.us".into(),
                prompt: mode.into(),
                schedule_type: "once".into(),
                schedule_value: "2026-01-03T12:00:00Z".into(),
                context_mode: Some(mode.into()),
            })
            .await
            .unwrap();
    }
    sleep(Duration::from_secs(5)).await;
    let runs = env.task_runs();
    assert_eq!(runs.len(), 2);
    for r in runs {
        let expected = (r.spec.input.prompt == "group").then_some("sess-family");
        assert_eq!(r.spec.input.session_id.as_deref(), expected);
    }
    let stored = env.store.call(|s| s.get_session("family")).await.unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("sess-family"),
        "task session ids are never persisted"
    );
}

#[tokio::test(start_paused = true)]
async fn contract_6_11_errors_are_logged_and_summarized() {
    let env = Env::started(ScriptedLauncher::new(|_, i| match i {
        0 => Behavior::Steps(vec![Step::Frame(OutputFrame {
            status: FrameStatus::Error,
            result: None,
            new_session_id: None,
            error: None,
        })]),
        1 => Behavior::FailToStart("no runtime".into()),
        _ => Behavior::reply(&"x".repeat(300)),
    }));
    let task = env.create("interval", "1000").await;
    sleep(Duration::from_millis(1500)).await;
    let t = env.task(&task.id).await.unwrap();
    assert_eq!(t.last_result.as_deref(), Some("Error: Unknown error"));
    sleep(Duration::from_millis(1000)).await;
    let t = env.task(&task.id).await.unwrap();
    assert_eq!(
        t.last_result.as_deref(),
        Some("Error: cannot start run: no runtime")
    );
    sleep(Duration::from_millis(1000)).await;
    let t = env.task(&task.id).await.unwrap();
    assert_eq!(
        t.last_result.as_deref().map(|s| s.chars().count()),
        Some(200)
    );
    let logs = env.logs(&task.id).await;
    let statuses: Vec<_> = logs.iter().map(|l| l.status).collect();
    assert_eq!(
        statuses,
        vec![
            RunLogStatus::Error,
            RunLogStatus::Error,
            RunLogStatus::Success
        ]
    );
    assert_eq!(
        logs[2].result.as_deref().map(str::len),
        Some(300),
        "the log keeps the full result"
    );
}

#[tokio::test(start_paused = true)]
async fn contract_12_9_cancel_during_run_is_tolerated() {
    let env = Env::started(ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_secs(30)),
        Step::Reply("late".into()),
    ])));
    let task = env.create("once", "2026-01-03T12:00:00Z").await;
    sleep(Duration::from_secs(5)).await;
    assert_eq!(env.task_runs().len(), 1);
    env.scheduler.cancel_task(&task.id).await.unwrap();
    sleep(Duration::from_secs(60)).await;
    assert!(env.task(&task.id).await.is_none());
    assert!(env.logs(&task.id).await.is_empty());
    assert_eq!(env.task_runs().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn contract_12_24_create_task_refuses_bad_schedules() {
    let env = Env::started(ScriptedLauncher::always(Behavior::reply("ok")));
    for (kind, value) in [
        ("weekly", "x"),
        ("cron", "nope"),
        ("interval", "0"),
        ("once", "soon"),
    ] {
        let err = env
            .scheduler
            .create_task(NewTask {
                group_folder: "family".into(),
                chat_jid: "family@g.us".into(),
                prompt: "p".into(),
                schedule_type: kind.into(),
                schedule_value: value.into(),
                context_mode: None,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, SchedulerError::Schedule(_)),
            "{kind} {value}: {err}"
        );
    }
    assert!(env.store.call(|s| s.all_tasks()).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cron_task_in_a_dst_zone_runs_at_local_time() {
    let ny: Tz = "America/New_York".parse().unwrap();
    let env = Env::new(ScriptedLauncher::always(Behavior::reply("ok")), ny);
    env.scheduler.start();
    // T0 is 07:00 EST on Saturday 2026-01-03; 09:00 local is 14:00Z.
    let start = tokio::time::Instant::now();
    let task = env.create("cron", "0 9 * * *").await;
    assert_eq!(task.next_run.as_deref(), Some("2026-01-03T14:00:00.000Z"));
    sleep(Duration::from_secs(2 * 3600 + 60)).await;
    let runs = env.task_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        since_t0(runs[0].started_at, start),
        Duration::from_secs(2 * 3600)
    );
}

/// The idle host: groups registered, a task due tomorrow, nothing pending. Over a simulated hour the store
/// sees zero queries and neither the engine nor any actor wakes up.
#[tokio::test(start_paused = true)]
async fn idle_host_makes_zero_queries_and_zero_wakeups_for_an_hour() {
    let env = Env::started(ScriptedLauncher::always(Behavior::reply("ok")));
    env.create("cron", "0 9 * * *").await; // tomorrow 09:00Z
    env.queue.recover(); // startup recovery: every actor checks once
    sleep(Duration::from_secs(1)).await;
    let queries = env.store.query_count();
    let sched = env.scheduler.stats();
    let queue = env.queue.stats();
    assert!(queries > 0, "the hook counts");
    sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        env.store.query_count(),
        queries,
        "zero DB queries while idle"
    );
    assert_eq!(env.scheduler.stats(), sched, "zero engine wake-ups");
    assert_eq!(
        env.queue.stats().actor_wakeups,
        queue.actor_wakeups,
        "zero actor wake-ups"
    );
    assert!(env.launcher.records().is_empty());
}

#[tokio::test(start_paused = true)]
async fn max_sleep_recheck_costs_no_query() {
    let env = Env::new(ScriptedLauncher::always(Behavior::reply("ok")), Tz::UTC);
    let scheduler = Scheduler::new(
        SchedulerSettings {
            timezone: Tz::UTC,
            max_sleep: Duration::from_secs(600),
        },
        env.queue.clone(),
        Clock::anchored(Utc.with_ymd_and_hms(2026, 1, 3, 12, 0, 0).unwrap()),
    );
    scheduler.start();
    scheduler
        .create_task(NewTask {
            group_folder: "family".into(),
            chat_jid: "family@g.us".into(),
            prompt: "p".into(),
            schedule_type: "once".into(),
            schedule_value: "2026-01-04T12:00:00Z".into(),
            context_mode: None,
        })
        .await
        .unwrap();
    sleep(Duration::from_secs(1)).await;
    let queries = env.store.query_count();
    let wakeups = scheduler.stats().wakeups;
    sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        scheduler.stats().wakeups,
        wakeups + 6,
        "one re-check per max_sleep"
    );
    assert_eq!(
        env.store.query_count(),
        queries,
        "re-checks read the clock, not the DB"
    );
}
