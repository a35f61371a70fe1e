//! Queue behaviour under a paused tokio clock: the original's group-queue cases rewritten, the contract
//! rules of §3 and §5, and the §12 fixes. No test sleeps in real time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::core::time::iso_from_epoch_ms;
use crate::core::types::{Message, RegisteredGroup};
use crate::core::wire::{ContainerInput, FrameStatus, OutputFrame};
use crate::queue::cursors::agent_cursor;
use crate::queue::testing::{Behavior, RecordingOutbound, ScriptedLauncher, Step, reply_frame};
use crate::queue::{
    BoxFuture, Queue, QueueSettings, RetryPolicy, RunKind, RunOutcome, RunSpec, TaskEnqueue,
    TaskJob,
};
use crate::store::{Store, StoreHandle};

pub(crate) const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

pub(crate) fn group(jid: &str, folder: &str, requires_trigger: bool) -> RegisteredGroup {
    RegisteredGroup {
        jid: jid.to_string(),
        name: folder.to_string(),
        folder: folder.to_string(),
        trigger: "@Andy".to_string(),
        added_at: "2026-01-01T00:00:00.000Z".to_string(),
        container_config: None,
        requires_trigger: Some(requires_trigger),
    }
}

struct Harness {
    queue: Queue,
    launcher: ScriptedLauncher,
    out: RecordingOutbound,
    store: StoreHandle,
    seq: AtomicUsize,
}

impl Harness {
    fn new(settings: QueueSettings, launcher: ScriptedLauncher) -> Self {
        let store = StoreHandle::new(Store::open_in_memory().unwrap());
        let out = RecordingOutbound::new();
        let queue = Queue::new(
            settings,
            store.clone(),
            Arc::new(launcher.clone()),
            Arc::new(out.clone()),
        );
        Self {
            queue,
            launcher,
            out,
            store,
            seq: AtomicUsize::new(0),
        }
    }

    fn with_limit(limit: usize, launcher: ScriptedLauncher) -> Self {
        Self::new(
            QueueSettings {
                max_concurrent_runs: limit,
                retry: RetryPolicy {
                    seed: Some(7),
                    ..RetryPolicy::default()
                },
                ..QueueSettings::default()
            },
            launcher,
        )
    }

    fn register(&self, g: RegisteredGroup) {
        self.store.blocking(|s| s.register_group(&g)).unwrap();
        self.queue.register_group(g);
    }

    /// Stores a message with a fresh, increasing timestamp and notifies the queue, as intake does.
    async fn message(&self, jid: &str, content: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::SeqCst) as i64;
        let ts = iso_from_epoch_ms(BASE_MS + n * 1000).unwrap();
        let m = Message {
            id: format!("m{n}"),
            chat_jid: jid.to_string(),
            sender: "user@s.whatsapp.net".to_string(),
            sender_name: "User".to_string(),
            content: content.to_string(),
            timestamp: ts.clone(),
            is_from_me: false,
        };
        self.store
            .call(move |s| s.store_inbound(&m, true))
            .await
            .unwrap();
        self.queue.notify_messages(jid);
        ts
    }

    async fn cursor(&self, jid: &str) -> String {
        let jid = jid.to_string();
        self.store
            .call(move |s| agent_cursor(s, &jid))
            .await
            .unwrap()
    }
}

/// Message contents in a `<messages>` prompt, in order.
pub(crate) fn contents(prompt: &str) -> Vec<String> {
    prompt
        .lines()
        .filter_map(|l| {
            let start = l.find("\">")? + 2;
            let end = l.rfind("</message>")?;
            Some(l[start..end].to_string())
        })
        .collect()
}

async fn settle() {
    sleep(Duration::from_millis(10)).await;
}

/// A task job for queue tests: records frames and outcome, runs with the given group.
struct TestJob {
    id: String,
    group: RegisteredGroup,
    log: Arc<Mutex<Vec<String>>>,
    skip: bool,
}

impl TestJob {
    fn boxed(id: &str, group: &RegisteredGroup, log: &Arc<Mutex<Vec<String>>>) -> Box<dyn TaskJob> {
        Box::new(Self {
            id: id.to_string(),
            group: group.clone(),
            log: Arc::clone(log),
            skip: false,
        })
    }
}

impl TaskJob for TestJob {
    fn task_id(&self) -> &str {
        &self.id
    }
    fn prepare(&mut self) -> BoxFuture<'_, Option<RunSpec>> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push(format!("prepare {}", self.id));
            (!self.skip).then(|| RunSpec {
                input: ContainerInput {
                    prompt: format!("task {}", self.id),
                    session_id: None,
                    group_folder: self.group.folder.clone(),
                    chat_jid: self.group.jid.clone(),
                    is_main: self.group.is_main(),
                    is_scheduled_task: true,
                },
                group: self.group.clone(),
                kind: RunKind::Task,
            })
        })
    }
    fn on_frame<'a>(&'a mut self, frame: &'a OutputFrame) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push(format!("frame {} {:?}", self.id, frame.result));
        })
    }
    fn finish(self: Box<Self>, outcome: RunOutcome) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push(format!("finish {} {outcome:?}", self.id));
        })
    }
}

fn kinds(h: &Harness) -> Vec<RunKind> {
    h.launcher.records().iter().map(|r| r.spec.kind).collect()
}

// ---- the original's group-queue cases, rewritten -----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn only_one_run_per_group_at_a_time() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_millis(100)),
        Step::Reply("ok".into()),
    ]));
    let h = Harness::with_limit(5, launcher);
    let g = group("g1@g.us", "g1", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    h.message("g1@g.us", "one").await;
    settle().await;
    // A task for the same group while its message run is live must wait for the slot.
    assert_eq!(
        h.queue
            .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
            .await,
        TaskEnqueue::Queued
    );
    sleep(Duration::from_millis(500)).await;
    let records = h.launcher.records();
    assert_eq!(records.len(), 2);
    assert_eq!(h.launcher.peak_live(), 1);
    assert!(records[1].started_at >= records[0].ended_at.unwrap());
}

#[tokio::test(start_paused = true)]
async fn respects_global_concurrency_limit() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_secs(1)),
        Step::Reply("ok".into()),
    ]));
    let h = Harness::with_limit(2, launcher);
    for i in 1..=3 {
        h.register(group(&format!("g{i}@g.us"), &format!("g{i}"), false));
    }
    for i in 1..=3 {
        h.message(&format!("g{i}@g.us"), "hi").await;
    }
    settle().await;
    assert_eq!(h.launcher.started(), 2);
    assert_eq!(h.launcher.live(), 2);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.launcher.started(),
        3,
        "third group starts when a slot frees"
    );
    assert_eq!(h.launcher.peak_live(), 2);
    assert_eq!(h.queue.stats().peak_active_runs, 2);
}

#[tokio::test(start_paused = true)]
async fn drains_tasks_before_messages_for_same_group() {
    let launcher = ScriptedLauncher::new(|_, i| {
        if i == 0 {
            Behavior::Steps(vec![
                Step::Sleep(Duration::from_secs(1)),
                Step::Reply("first".into()),
            ])
        } else {
            Behavior::reply("later")
        }
    });
    let h = Harness::with_limit(2, launcher);
    let g = group("g1@g.us", "g1", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    h.message("g1@g.us", "first").await;
    settle().await;
    // While the first run is busy: a task, then more messages.
    h.queue
        .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
        .await;
    h.message("g1@g.us", "second").await;
    sleep(Duration::from_secs(2)).await;
    assert_eq!(
        kinds(&h),
        vec![RunKind::Message, RunKind::Task, RunKind::Message]
    );
    let records = h.launcher.records();
    assert_eq!(contents(&records[2].spec.input.prompt), vec!["second"]);
    assert!(
        records[0].inputs.is_empty(),
        "not piped: a task was waiting for the slot"
    );
}

#[tokio::test(start_paused = true)]
async fn contract_5_10_retry_backoff_jitter_bounds_max_retries_and_rollback() {
    let h = Harness::with_limit(2, ScriptedLauncher::always(Behavior::fail("boom")));
    h.register(group("g1@g.us", "g1", false));
    let t0 = Instant::now();
    h.message("g1@g.us", "hello").await;
    settle().await;
    assert_eq!(h.launcher.started(), 1);
    assert_eq!(
        h.cursor("g1@g.us").await,
        "",
        "cursor rolled back after the failure"
    );
    // Walk through the retries: each one inside its jitter window.
    sleep(Duration::from_secs(400)).await;
    let records = h.launcher.records();
    assert_eq!(records.len(), 6, "1 attempt + 5 retries, then it stops");
    let policy = h.queue.settings().retry;
    for n in 1..=5u32 {
        let gap = records[n as usize].started_at - records[n as usize - 1].ended_at.unwrap();
        let (low, high) = policy.delay_bounds(n);
        assert!(
            gap >= low && gap < high,
            "retry {n}: {gap:?} not in [{low:?}, {high:?})"
        );
    }
    assert!(records[5].started_at - t0 >= Duration::from_secs(155));
    assert_eq!(h.cursor("g1@g.us").await, "", "messages stay pending");
    // Gave up: nothing more without a new message...
    sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.launcher.started(), 6);
    // ...and a new message starts a fresh streak with both messages.
    h.message("g1@g.us", "again").await;
    settle().await;
    let records = h.launcher.records();
    assert_eq!(records.len(), 7);
    assert_eq!(
        contents(&records[6].spec.input.prompt),
        vec!["hello", "again"]
    );
}

#[tokio::test(start_paused = true)]
async fn contract_3_11h_failure_after_output_does_not_roll_back_or_retry() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Reply("partial answer".into()),
        Step::Exit(RunOutcome::Error("crashed".into())),
    ]));
    let h = Harness::with_limit(2, launcher);
    h.register(group("g1@g.us", "g1", false));
    let ts = h.message("g1@g.us", "hello").await;
    sleep(Duration::from_secs(600)).await;
    assert_eq!(
        h.launcher.started(),
        1,
        "no retry: the user already has a reply"
    );
    assert_eq!(h.cursor("g1@g.us").await, ts, "cursor stays advanced");
    assert_eq!(h.out.sent_to("g1@g.us"), vec!["Andy: partial answer"]);
    assert_eq!(h.queue.stats().retries_scheduled, 0);
}

#[tokio::test(start_paused = true)]
async fn contract_12_15_ipc_side_effect_counts_as_output() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_secs(1)),
        Step::Exit(RunOutcome::Error("crashed".into())),
    ]));
    let h = Harness::with_limit(2, launcher);
    h.register(group("g1@g.us", "g1", false));
    let ts = h.message("g1@g.us", "hello").await;
    settle().await;
    assert_eq!(h.launcher.started(), 1);
    // The watcher applied a send_message from the run's folder while it was live.
    h.queue.note_ipc_output("g1").await;
    assert_eq!(
        h.cursor("g1@g.us").await,
        ts,
        "durable at once, as after a reply"
    );
    sleep(Duration::from_secs(600)).await;
    assert_eq!(h.launcher.started(), 1, "no retry repeats the IPC send");
    assert_eq!(h.cursor("g1@g.us").await, ts, "no rollback");
    assert_eq!(h.queue.stats().retries_scheduled, 0);
}

#[tokio::test(start_paused = true)]
async fn contract_12_15_ipc_output_outside_a_message_run_does_not_count() {
    let launcher = ScriptedLauncher::new(|_, i| {
        if i == 0 {
            Behavior::Steps(vec![Step::Exit(RunOutcome::Error("crashed".into()))])
        } else {
            Behavior::reply("fine")
        }
    });
    let h = Harness::with_limit(2, launcher);
    h.register(group("g1@g.us", "g1", false));
    // Late or stray: no run of g1 is live, so nothing is marked.
    h.queue.note_ipc_output("g1").await;
    let ts = h.message("g1@g.us", "hello").await;
    settle().await;
    assert_eq!(h.cursor("g1@g.us").await, "", "rolled back");
    sleep(Duration::from_secs(11)).await;
    assert_eq!(h.launcher.started(), 2, "retried");
    assert_eq!(h.cursor("g1@g.us").await, ts);
}

#[tokio::test(start_paused = true)]
async fn contract_3_11g_error_frame_without_output_rolls_back() {
    let launcher = ScriptedLauncher::new(|_, i| {
        if i == 0 {
            Behavior::Steps(vec![Step::Frame(OutputFrame {
                status: FrameStatus::Error,
                result: None,
                new_session_id: None,
                error: Some("model error".into()),
            })])
        } else {
            Behavior::reply("fine")
        }
    });
    let h = Harness::with_limit(2, launcher);
    h.register(group("g1@g.us", "g1", false));
    let ts = h.message("g1@g.us", "hello").await;
    settle().await;
    assert_eq!(h.cursor("g1@g.us").await, "");
    sleep(Duration::from_secs(11)).await;
    assert_eq!(h.launcher.started(), 2);
    assert_eq!(h.cursor("g1@g.us").await, ts);
    assert_eq!(h.out.sent_to("g1@g.us"), vec!["Andy: fine"]);
}

#[tokio::test(start_paused = true)]
async fn prevents_new_enqueues_after_shutdown() {
    let h = Harness::with_limit(2, ScriptedLauncher::always(Behavior::reply("x")));
    let g = group("g1@g.us", "g1", false);
    h.register(g.clone());
    h.queue.shutdown().await;
    assert!(!h.queue.notify_messages("g1@g.us"));
    let log = Arc::new(Mutex::new(Vec::new()));
    assert_eq!(
        h.queue
            .enqueue_task("g1@g.us", TestJob::boxed("t", &g, &log))
            .await,
        TaskEnqueue::ShuttingDown
    );
    h.message("g1@g.us", "late").await;
    sleep(Duration::from_secs(100)).await;
    assert_eq!(h.launcher.started(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_queue_stops_its_actors() {
    let h = Harness::with_limit(2, ScriptedLauncher::always(Behavior::reply("x")));
    h.register(group("g1@g.us", "g1", false));
    settle().await;
    let Harness {
        queue, launcher, ..
    } = h;
    drop(queue);
    // A spinning actor would keep the paused runtime busy and this sleep would never end.
    sleep(Duration::from_secs(10)).await;
    assert_eq!(launcher.started(), 0);
}

#[tokio::test(start_paused = true)]
async fn drains_waiting_groups_when_slots_free_up() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![Step::WaitClose]));
    let h = Harness::new(
        QueueSettings {
            max_concurrent_runs: 2,
            idle_timeout: Duration::from_secs(60),
            ..QueueSettings::default()
        },
        launcher,
    );
    for i in 1..=3 {
        h.register(group(&format!("g{i}@g.us"), &format!("g{i}"), false));
    }
    h.message("g1@g.us", "a").await;
    h.message("g2@g.us", "b").await;
    settle().await;
    h.message("g3@g.us", "c").await;
    settle().await;
    let folders = |h: &Harness| -> Vec<String> {
        h.launcher
            .records()
            .iter()
            .map(|r| r.spec.group.folder.clone())
            .collect()
    };
    // Groups woken together may start in either order (their store calls finish on pool threads).
    let mut first_two = folders(&h);
    first_two.sort();
    assert_eq!(first_two, vec!["g1", "g2"]);
    // Idle timeout closes the first two; the waiting group gets a slot.
    sleep(Duration::from_secs(61)).await;
    let all = folders(&h);
    assert_eq!(all.len(), 3);
    assert_eq!(all[2], "g3");
}

#[tokio::test(start_paused = true)]
async fn does_not_preempt_busy_run_but_preempts_when_it_goes_idle() {
    let launcher = ScriptedLauncher::new(|spec, _| match spec.kind {
        RunKind::Message => Behavior::Steps(vec![Step::Converse {
            think: Duration::from_secs(5),
            reply: "answer".into(),
        }]),
        RunKind::Task => Behavior::reply("task done"),
    });
    let h = Harness::with_limit(2, launcher);
    let g = group("g1@g.us", "g1", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    h.message("g1@g.us", "hi").await;
    sleep(Duration::from_secs(1)).await;
    h.queue
        .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
        .await;
    settle().await;
    assert!(
        !h.launcher.records()[0].closed,
        "agent is working: no _close"
    );
    // The reply makes the run idle; the pending task closes it at once rather than after the idle timeout.
    sleep(Duration::from_secs(5)).await;
    let records = h.launcher.records();
    assert!(records[0].closed);
    assert_eq!(kinds(&h), vec![RunKind::Message, RunKind::Task]);
    assert!(records[1].started_at - records[0].started_at < Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn preempts_idle_run_when_task_is_enqueued() {
    let launcher = ScriptedLauncher::new(|spec, _| match spec.kind {
        RunKind::Message => Behavior::Steps(vec![Step::Converse {
            think: Duration::from_millis(10),
            reply: "answer".into(),
        }]),
        RunKind::Task => Behavior::reply("task done"),
    });
    let h = Harness::with_limit(2, launcher);
    let g = group("g1@g.us", "g1", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    h.message("g1@g.us", "hi").await;
    sleep(Duration::from_secs(1)).await;
    assert!(!h.launcher.records()[0].closed);
    h.queue
        .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
        .await;
    settle().await;
    assert!(
        h.launcher.records()[0].closed,
        "idle run closed for the task"
    );
    settle().await;
    assert_eq!(kinds(&h), vec![RunKind::Message, RunKind::Task]);
}

#[tokio::test(start_paused = true)]
async fn piped_follow_up_makes_run_busy_so_task_does_not_preempt() {
    let launcher = ScriptedLauncher::new(|spec, _| match spec.kind {
        RunKind::Message => Behavior::Steps(vec![Step::Converse {
            think: Duration::from_secs(5),
            reply: "answer".into(),
        }]),
        RunKind::Task => Behavior::reply("task done"),
    });
    let h = Harness::with_limit(2, launcher);
    let g = group("g1@g.us", "g1", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    h.message("g1@g.us", "hi").await;
    sleep(Duration::from_secs(6)).await; // replied: idle
    h.message("g1@g.us", "follow-up").await; // piped: busy again
    settle().await;
    h.queue
        .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
        .await;
    settle().await;
    let records = h.launcher.records();
    assert_eq!(records[0].inputs.len(), 1);
    assert!(!records[0].closed, "agent is working on the follow-up");
    sleep(Duration::from_secs(5)).await;
    assert!(
        h.launcher.records()[0].closed,
        "closed after the follow-up's reply"
    );
}

#[tokio::test(start_paused = true)]
async fn contract_12_12_follow_ups_are_not_piped_into_task_runs() {
    let launcher = ScriptedLauncher::new(|spec, _| match spec.kind {
        RunKind::Task => Behavior::Steps(vec![Step::Reply("task".into()), Step::WaitClose]),
        RunKind::Message => Behavior::reply("msg"),
    });
    let h = Harness::with_limit(2, launcher);
    let g = group("g1@g.us", "g1", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    h.queue
        .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
        .await;
    settle().await;
    h.message("g1@g.us", "user says hi").await;
    settle().await;
    assert!(
        h.launcher.records()[0].inputs.is_empty(),
        "task run got no user input"
    );
    // After the task's idle close, the message gets its own run.
    sleep(h.queue.settings().idle_timeout + Duration::from_secs(1)).await;
    let records = h.launcher.records();
    assert_eq!(kinds(&h), vec![RunKind::Task, RunKind::Message]);
    assert_eq!(
        contents(&records[1].spec.input.prompt),
        vec!["user says hi"]
    );
}

#[tokio::test(start_paused = true)]
async fn contract_12_9_skips_a_task_that_is_running_or_queued() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_secs(10)),
        Step::Reply("done".into()),
    ]));
    let h = Harness::with_limit(2, launcher);
    let g = group("g1@g.us", "g1", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    assert_eq!(
        h.queue
            .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
            .await,
        TaskEnqueue::Queued
    );
    settle().await;
    assert_eq!(
        h.queue
            .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
            .await,
        TaskEnqueue::AlreadyRunning
    );
    assert_eq!(
        h.queue
            .enqueue_task("g1@g.us", TestJob::boxed("t2", &g, &log))
            .await,
        TaskEnqueue::Queued
    );
    assert_eq!(
        h.queue
            .enqueue_task("g1@g.us", TestJob::boxed("t2", &g, &log))
            .await,
        TaskEnqueue::AlreadyQueued
    );
    sleep(Duration::from_secs(30)).await;
    assert_eq!(h.launcher.started(), 2);
    // Once finished, the same id may be queued again.
    assert_eq!(
        h.queue
            .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
            .await,
        TaskEnqueue::Queued
    );
}

// ---- contract §3 and §5 rules --------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn contract_3_11c_untriggered_messages_wait_as_context() {
    let h = Harness::with_limit(2, ScriptedLauncher::always(Behavior::reply("hi")));
    h.register(group("g1@g.us", "family", true));
    h.message("g1@g.us", "just chatting").await;
    h.message("g1@g.us", "more chatter").await;
    sleep(Duration::from_secs(60)).await;
    assert_eq!(h.launcher.started(), 0, "no trigger, no run");
    assert_eq!(h.cursor("g1@g.us").await, "");
    let ts = h.message("g1@g.us", "@Andy what do you think?").await;
    settle().await;
    let records = h.launcher.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        contents(&records[0].spec.input.prompt),
        vec!["just chatting", "more chatter", "@Andy what do you think?"]
    );
    assert_eq!(h.cursor("g1@g.us").await, ts);
    assert_eq!(h.out.sent_to("g1@g.us"), vec!["Andy: hi"]);
    let typing = h.out.log().typing;
    assert_eq!(
        typing,
        vec![("g1@g.us".into(), true), ("g1@g.us".into(), false)]
    );
}

#[tokio::test(start_paused = true)]
async fn contract_3_10e_follow_up_is_piped_and_advances_cursor() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![Step::Converse {
        think: Duration::from_millis(100),
        reply: "ok".into(),
    }]));
    let h = Harness::with_limit(2, launcher);
    h.register(group("g1@g.us", "family", true));
    h.message("g1@g.us", "@Andy hello").await;
    sleep(Duration::from_secs(1)).await;
    // §5.12: an untriggered follow-up in a gated group is not piped...
    h.message("g1@g.us", "side remark").await;
    settle().await;
    assert!(h.launcher.records()[0].inputs.is_empty());
    // ...but it rides along with the next triggered one.
    let ts = h.message("g1@g.us", "@Andy and another thing").await;
    settle().await;
    let records = h.launcher.records();
    assert_eq!(records.len(), 1, "no second run");
    assert_eq!(records[0].inputs.len(), 1);
    assert_eq!(
        contents(&records[0].inputs[0]),
        vec!["side remark", "@Andy and another thing"]
    );
    // §12.7: the advance reaches the database once the agent has answered the follow-up.
    assert_ne!(h.cursor("g1@g.us").await, ts);
    sleep(Duration::from_millis(200)).await;
    assert_eq!(h.cursor("g1@g.us").await, ts);
}

/// Runs `steps` for one message in a runtime that is then dropped mid-run, as if the host died.
fn crash_mid_run(store: &StoreHandle, steps: Vec<Step>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let h = Harness {
            queue: Queue::new(
                QueueSettings::default(),
                store.clone(),
                Arc::new(ScriptedLauncher::always(Behavior::Steps(steps.clone()))),
                Arc::new(RecordingOutbound::new()),
            ),
            launcher: ScriptedLauncher::always(Behavior::Steps(Vec::new())),
            out: RecordingOutbound::new(),
            store: store.clone(),
            seq: AtomicUsize::new(0),
        };
        h.register(group("g1@g.us", "g1", false));
        h.message("g1@g.us", "are you there?").await;
        sleep(Duration::from_secs(1)).await;
    });
    drop(rt);
}

fn restart_and_recover(store: &StoreHandle) -> Vec<crate::queue::testing::RunRecord> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let launcher = ScriptedLauncher::always(Behavior::reply("here"));
        let queue = Queue::new(
            QueueSettings::default(),
            store.clone(),
            Arc::new(launcher.clone()),
            Arc::new(RecordingOutbound::new()),
        );
        queue.register_group(group("g1@g.us", "g1", false));
        queue.recover();
        sleep(Duration::from_secs(1)).await;
        launcher.records()
    })
}

#[test]
fn contract_12_7_batch_in_flight_at_a_crash_is_recovered() {
    let store = StoreHandle::new(Store::open_in_memory().unwrap());
    crash_mid_run(&store, vec![Step::Hang]);
    assert_eq!(
        store.blocking(|s| agent_cursor(s, "g1@g.us")).unwrap(),
        "",
        "the advance was never written"
    );
    let runs = restart_and_recover(&store);
    assert_eq!(runs.len(), 1);
    assert_eq!(contents(&runs[0].spec.input.prompt), vec!["are you there?"]);
}

#[test]
fn contract_12_7_answered_batch_is_not_repeated_after_a_crash() {
    let store = StoreHandle::new(Store::open_in_memory().unwrap());
    crash_mid_run(&store, vec![Step::Reply("yes".into()), Step::Hang]);
    assert_ne!(store.blocking(|s| agent_cursor(s, "g1@g.us")).unwrap(), "");
    assert!(restart_and_recover(&store).is_empty(), "no duplicate reply");
}

#[tokio::test(start_paused = true)]
async fn contract_5_15_idle_timeout_closes_input() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![Step::Converse {
        think: Duration::from_secs(2),
        reply: "ok".into(),
    }]));
    let settings = QueueSettings {
        idle_timeout: Duration::from_secs(120),
        ..QueueSettings::default()
    };
    let h = Harness::new(settings, launcher);
    h.register(group("g1@g.us", "main", false));
    h.message("g1@g.us", "hi").await;
    sleep(Duration::from_secs(100)).await;
    assert!(!h.launcher.records()[0].closed);
    sleep(Duration::from_secs(30)).await;
    let r = &h.launcher.records()[0];
    assert!(r.closed);
    // Reply at 2 s, close 120 s after that frame.
    let lived = r.ended_at.unwrap() - r.started_at;
    assert!(
        lived >= Duration::from_secs(122) && lived < Duration::from_secs(123),
        "{lived:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn contract_12_6_run_without_output_is_closed_after_idle_timeout_from_spawn() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![Step::WaitClose]));
    let settings = QueueSettings {
        idle_timeout: Duration::from_secs(120),
        ..QueueSettings::default()
    };
    let h = Harness::new(settings, launcher);
    h.register(group("g1@g.us", "main", false));
    h.message("g1@g.us", "hi").await;
    sleep(Duration::from_secs(121)).await;
    assert!(
        h.launcher.records()[0].closed,
        "the original never closed a silent run"
    );
}

#[tokio::test(start_paused = true)]
async fn contract_7_10_session_ids_from_message_runs_are_stored() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![Step::Frame(OutputFrame {
        status: FrameStatus::Success,
        result: None,
        new_session_id: Some("sess-1".into()),
        error: None,
    })]));
    let h = Harness::with_limit(2, launcher);
    h.register(group("g1@g.us", "g1", false));
    h.message("g1@g.us", "hi").await;
    settle().await;
    let session = h.store.call(|s| s.get_session("g1")).await.unwrap();
    assert_eq!(session.as_deref(), Some("sess-1"));
    assert!(
        h.out.sent_to("g1@g.us").is_empty(),
        "a session frame sends nothing"
    );
    h.message("g1@g.us", "again").await;
    settle().await;
    assert_eq!(
        h.launcher.records()[1].spec.input.session_id.as_deref(),
        Some("sess-1")
    );
}

#[tokio::test(start_paused = true)]
async fn contract_4_7_internal_blocks_are_stripped_and_empty_replies_not_sent() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Reply("<internal>thinking</internal>".into()),
        Step::Reply("  <internal>x</internal> visible ".into()),
        Step::Frame(reply_frame("")),
    ]));
    let h = Harness::with_limit(2, launcher);
    h.register(group("g1@g.us", "g1", false));
    h.message("g1@g.us", "hi").await;
    settle().await;
    assert_eq!(h.out.sent_to("g1@g.us"), vec!["Andy: visible"]);
}

#[tokio::test(start_paused = true)]
async fn contract_12_17_shutdown_closes_waits_then_kills_and_rolls_back() {
    let launcher = ScriptedLauncher::new(|spec, _| {
        if spec.group.folder == "hang" {
            Behavior::Steps(vec![Step::Hang])
        } else {
            Behavior::Steps(vec![Step::Reply("bye".into()), Step::WaitClose])
        }
    });
    let h = Harness::with_limit(5, launcher);
    h.register(group("a@g.us", "hang", false));
    h.register(group("b@g.us", "polite", false));
    h.message("a@g.us", "one").await;
    let ts_b = h.message("b@g.us", "two").await;
    settle().await;
    let t0 = Instant::now();
    h.queue.shutdown().await;
    let waited = Instant::now() - t0;
    let records = h.launcher.records();
    let hang = records
        .iter()
        .find(|r| r.spec.group.folder == "hang")
        .unwrap();
    let polite = records
        .iter()
        .find(|r| r.spec.group.folder == "polite")
        .unwrap();
    assert!(
        hang.closed && hang.killed,
        "closed first, killed after the grace"
    );
    assert!(polite.closed && !polite.killed);
    assert!(polite.ended_at.unwrap() - t0 < Duration::from_millis(100));
    assert!(waited >= h.queue.settings().shutdown_grace, "{waited:?}");
    assert!(waited < h.queue.settings().shutdown_grace + Duration::from_secs(1));
    assert_eq!(
        h.cursor("a@g.us").await,
        "",
        "no output: rolled back for the next start"
    );
    assert_eq!(h.cursor("b@g.us").await, ts_b, "answered: kept");
    assert_eq!(
        h.queue.stats().retries_scheduled,
        0,
        "no retries during shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn contract_3_12_recovery_runs_groups_with_pending_messages() {
    let h = Harness::with_limit(2, ScriptedLauncher::always(Behavior::reply("ok")));
    let g1 = group("g1@g.us", "g1", false);
    let g2 = group("g2@g.us", "g2", true);
    let g3 = group("g3@g.us", "g3", false);
    // Messages stored while the host was down: no notification.
    for g in [&g1, &g2, &g3] {
        h.store.blocking(|s| s.register_group(g)).unwrap();
    }
    for (jid, content) in [("g1@g.us", "pending"), ("g2@g.us", "no trigger here")] {
        let m = Message {
            id: format!("id-{jid}"),
            chat_jid: jid.into(),
            sender: "u".into(),
            sender_name: "U".into(),
            content: content.into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            is_from_me: false,
        };
        h.store.blocking(|s| s.store_inbound(&m, true)).unwrap();
    }
    for g in [g1, g2, g3] {
        h.queue.register_group(g);
    }
    h.queue.recover();
    settle().await;
    let folders: Vec<String> = h
        .launcher
        .records()
        .iter()
        .map(|r| r.spec.group.folder.clone())
        .collect();
    assert_eq!(folders, vec!["g1"], "only g1 has runnable pending work");
}

#[tokio::test(start_paused = true)]
async fn wake_ups_coalesce_in_the_mailbox() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_secs(1)),
        Step::Reply("ok".into()),
    ]));
    let h = Harness::with_limit(1, launcher);
    h.register(group("busy@g.us", "busy", false));
    h.register(group("g1@g.us", "g1", false));
    h.message("busy@g.us", "hold the only slot").await;
    settle().await;
    for i in 0..100 {
        h.message("g1@g.us", &format!("m{i}")).await;
    }
    sleep(Duration::from_secs(5)).await;
    assert_eq!(h.queue.stats().peak_mailbox_depth, 1);
    let records = h.launcher.records();
    assert_eq!(records.len(), 2, "one run for all 100 messages");
    assert_eq!(contents(&records[1].spec.input.prompt).len(), 100);
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_delays_tasks_but_loses_none() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_secs(1)),
        Step::Reply("ok".into()),
    ]));
    let h = Harness::new(
        QueueSettings {
            mailbox_capacity: 2,
            ..QueueSettings::default()
        },
        launcher,
    );
    let g = group("g1@g.us", "g1", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    let queue = h.queue.clone();
    let producer = {
        let g = g.clone();
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..10 {
                results.push(
                    queue
                        .enqueue_task("g1@g.us", TestJob::boxed(&format!("t{i}"), &g, &log))
                        .await,
                );
            }
            results
        })
    };
    let results = producer.await.unwrap();
    assert!(results.iter().all(|r| *r == TaskEnqueue::Queued));
    sleep(Duration::from_secs(20)).await;
    let prompts: Vec<String> = h
        .launcher
        .records()
        .iter()
        .map(|r| r.spec.input.prompt.clone())
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("task t{i}")).collect();
    assert_eq!(prompts, expected, "all ten, in order");
    assert!(h.queue.stats().peak_mailbox_depth <= 2);
}

#[tokio::test(start_paused = true)]
async fn fairness_waiting_groups_go_before_a_busy_group_runs_again() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Sleep(Duration::from_secs(1)),
        Step::Reply("ok".into()),
    ]));
    let h = Harness::with_limit(1, launcher);
    let g = group("busy@g.us", "busy", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    h.register(group("other@g.us", "other", false));
    h.queue
        .enqueue_task("busy@g.us", TestJob::boxed("t1", &g, &log))
        .await;
    h.queue
        .enqueue_task("busy@g.us", TestJob::boxed("t2", &g, &log))
        .await;
    settle().await;
    h.message("other@g.us", "waiting").await;
    sleep(Duration::from_secs(5)).await;
    let folders: Vec<String> = h
        .launcher
        .records()
        .iter()
        .map(|r| r.spec.group.folder.clone())
        .collect();
    assert_eq!(folders, vec!["busy", "other", "busy"], "§12.23 fix");
}

#[tokio::test(start_paused = true)]
async fn launcher_start_failure_is_retried_like_a_failed_run() {
    let launcher = ScriptedLauncher::new(|_, i| {
        if i == 0 {
            Behavior::FailToStart("no runtime".into())
        } else {
            Behavior::reply("ok")
        }
    });
    let h = Harness::with_limit(1, launcher);
    h.register(group("g1@g.us", "g1", false));
    let ts = h.message("g1@g.us", "hi").await;
    sleep(Duration::from_secs(11)).await;
    assert_eq!(h.launcher.started(), 2);
    assert_eq!(h.cursor("g1@g.us").await, ts);
}

#[tokio::test(start_paused = true)]
async fn task_job_sees_frames_and_outcome_in_order() {
    let launcher = ScriptedLauncher::always(Behavior::Steps(vec![
        Step::Reply("a".into()),
        Step::Exit(RunOutcome::Error("bad".into())),
    ]));
    let h = Harness::with_limit(1, launcher);
    let g = group("g1@g.us", "g1", false);
    let log = Arc::new(Mutex::new(Vec::new()));
    h.register(g.clone());
    h.queue
        .enqueue_task("g1@g.us", TestJob::boxed("t1", &g, &log))
        .await;
    settle().await;
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "prepare t1".to_string(),
            "frame t1 Some(String(\"a\"))".to_string(),
            "finish t1 Error(\"bad\")".to_string(),
        ]
    );
    assert_eq!(
        h.queue.stats().retries_scheduled,
        0,
        "task runs are never retried by the queue"
    );
}

// ---- property: random interleavings ------------------------------------------------------------------

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Message { group: usize, after_ms: u64 },
        Task { group: usize, after_ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..4usize, 0..3000u64).prop_map(|(group, after_ms)| Op::Message { group, after_ms }),
            1 => (0..4usize, 0..3000u64).prop_map(|(group, after_ms)| Op::Task { group, after_ms }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn interleavings_keep_fifo_exactly_once_and_the_limit(
            ops in proptest::collection::vec(op(), 1..40),
            limit in 1..4usize,
            durations in proptest::collection::vec(0..2000u64, 8),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(check(ops, limit, durations));
        }
    }

    async fn check(ops: Vec<Op>, limit: usize, durations: Vec<u64>) {
        let launcher = ScriptedLauncher::new(move |_, i| {
            let ms = durations[i % durations.len()];
            if i % 3 == 0 {
                // Interactive: stays open for follow-ups until idle-closed or preempted.
                Behavior::Steps(vec![Step::Converse {
                    think: Duration::from_millis(ms),
                    reply: "ok".into(),
                }])
            } else {
                Behavior::Steps(vec![
                    Step::Sleep(Duration::from_millis(ms)),
                    Step::Reply("ok".into()),
                ])
            }
        });
        let h = Harness::new(
            QueueSettings {
                max_concurrent_runs: limit,
                idle_timeout: Duration::from_secs(5),
                ..QueueSettings::default()
            },
            launcher,
        );
        let groups: Vec<RegisteredGroup> = (0..4)
            .map(|i| group(&format!("g{i}@g.us"), &format!("g{i}"), false))
            .collect();
        for g in &groups {
            h.register(g.clone());
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut sent: Vec<Vec<String>> = vec![Vec::new(); 4];
        let mut tasks = 0;
        for (n, op) in ops.iter().enumerate() {
            match op {
                Op::Message { group, after_ms } => {
                    sleep(Duration::from_millis(*after_ms)).await;
                    let content = format!("g{group}-{n}");
                    h.message(&groups[*group].jid, &content).await;
                    sent[*group].push(content);
                }
                Op::Task { group, after_ms } => {
                    sleep(Duration::from_millis(*after_ms)).await;
                    let r = h
                        .queue
                        .enqueue_task(
                            &groups[*group].jid,
                            TestJob::boxed(&format!("t{n}"), &groups[*group], &log),
                        )
                        .await;
                    assert_eq!(r, TaskEnqueue::Queued);
                    tasks += 1;
                }
            }
        }
        sleep(Duration::from_secs(600)).await;
        let records = h.launcher.records();
        // Never more than the limit at once.
        assert!(
            h.launcher.peak_live() <= limit,
            "peak {} > limit {limit}",
            h.launcher.peak_live()
        );
        assert_eq!(h.launcher.live(), 0);
        // Per group: runs never overlap, and the messages handed to agents (prompts and piped
        // inputs, in time order) are exactly the sent ones, in order, once each.
        for (gi, g) in groups.iter().enumerate() {
            let mine: Vec<_> = records
                .iter()
                .filter(|r| r.spec.group.jid == g.jid)
                .collect();
            for pair in mine.windows(2) {
                assert!(
                    pair[1].started_at >= pair[0].ended_at.unwrap(),
                    "overlap in {}",
                    g.jid
                );
            }
            let mut seen = Vec::new();
            for r in mine.iter().filter(|r| r.spec.kind == RunKind::Message) {
                seen.extend(contents(&r.spec.input.prompt));
                for input in &r.inputs {
                    seen.extend(contents(input));
                }
            }
            assert_eq!(seen, sent[gi], "group {gi}");
        }
        let task_runs = records
            .iter()
            .filter(|r| r.spec.kind == RunKind::Task)
            .count();
        assert_eq!(task_runs, tasks, "every task ran exactly once");
    }
}
