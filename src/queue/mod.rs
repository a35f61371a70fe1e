//! Per-group queue (contract §5): one actor per registered group, a global gate on concurrent runs,
//! retries with backoff, follow-up piping into live runs, idle close, and graceful shutdown.
//!
//! Messages live in the database. The mailbox therefore carries only *wake-ups* ("this group may have
//! pending messages"), which coalesce into one flag, and *task runs*; never message bodies. A full mailbox
//! can delay work but never lose it: the flag survives a dropped doorbell, and task senders wait.
//!
//! See `docs/queue.md` for the actor model and the retry numbers.

mod actor;
pub mod bench;
pub mod cursors;
mod retry;
mod run;
pub mod testing;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::core::types::RegisteredGroup;
use crate::store::StoreHandle;

pub use retry::{Backoff, DEFAULT_BASE_RETRY, DEFAULT_MAX_RETRIES, RETRY_DELAY_CAP, RetryPolicy};
pub use run::{
    BoxFuture, Outbound, OutboundError, RunControl, RunError, RunHandle, RunKind, RunLauncher,
    RunOutcome, RunSpec, TaskJob,
};

/// Default mailbox capacity per group. Wake-ups coalesce to at most one, so this bounds queued task runs.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 64;
/// Default global limit on concurrent runs (contract §1.2).
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 5;
/// Default idle timeout. The original's 30 min held a slot for half an hour after every reply
/// (contract §12.6); two minutes keeps follow-ups cheap without starving other groups.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// Default shutdown grace: how long live runs may finish after `_close` before they are killed
/// (contract §1.6, §12.17).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long the queue waits for a run's final outcome after its output ended (launcher bug guard).
pub const OUTCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time on top of the grace period for killed runs to report before shutdown stops waiting.
pub const KILL_MARGIN: Duration = Duration::from_secs(5);

/// Queue settings; the host maps its configuration onto these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Bounded mailbox size per group (task runs + at most one wake-up).
    pub mailbox_capacity: usize,
    /// Global limit on concurrent runs, message and task runs together (contract §5.3). At least 1.
    pub max_concurrent_runs: usize,
    /// A live run whose agent has been quiet this long gets its input closed (contract §5.15, §12.6).
    pub idle_timeout: Duration,
    /// Backoff for failed message runs (contract §5.10).
    pub retry: RetryPolicy,
    /// How long live runs may finish after shutdown starts before they are killed.
    pub shutdown_grace: Duration,
    /// The assistant's name: trigger fallback, reply prefix, bot-echo filter.
    pub assistant_name: String,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            max_concurrent_runs: DEFAULT_MAX_CONCURRENT_RUNS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            retry: RetryPolicy::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            assistant_name: "Andy".to_string(),
        }
    }
}

/// What happened to a task handed to [`Queue::enqueue_task`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnqueue {
    /// In the group's mailbox; it will run.
    Queued,
    /// The same task id is already waiting in this group's mailbox (contract §5.5).
    AlreadyQueued,
    /// The same task id is running right now; the original ran it a second time (contract §12.9).
    AlreadyRunning,
    /// No actor exists for this chat JID.
    UnknownGroup,
    /// Shutdown has started; nothing new is accepted.
    ShuttingDown,
}

/// Counters for tests, `doctor` and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Group actors alive.
    pub groups: usize,
    /// Runs started (message and task).
    pub runs_started: u64,
    /// Runs holding a global permit right now.
    pub active_runs: usize,
    /// Highest `active_runs` seen.
    pub peak_active_runs: usize,
    /// Deepest any group mailbox has been, measured at each send.
    pub peak_mailbox_depth: usize,
    /// Times an idle actor woke up (mail, retry timer or shutdown).
    pub actor_wakeups: u64,
    /// Message-run retries scheduled.
    pub retries_scheduled: u64,
}

#[derive(Default)]
struct Counters {
    runs_started: AtomicU64,
    active_runs: AtomicUsize,
    peak_active_runs: AtomicUsize,
    peak_mailbox_depth: AtomicUsize,
    actor_wakeups: AtomicU64,
    retries_scheduled: AtomicU64,
}

/// One mailbox entry. Never a message body.
enum Mail {
    /// Doorbell: the group's pending-messages flag was set.
    Wake,
    /// A scheduled-task run.
    Task(Box<dyn TaskJob>),
}

/// Task ids that are waiting in a mailbox or running, for the §12.9 dedupe.
#[derive(Default)]
struct TaskIds {
    queued: HashSet<String>,
    running: Option<String>,
}

/// State shared between a group's handle and its actor.
struct GroupShared {
    jid: String,
    group: Mutex<RegisteredGroup>,
    /// The coalesced wake-up: set by intake, cleared by the actor when it reads the pending set.
    pending_messages: AtomicBool,
    tasks: Mutex<TaskIds>,
    /// The live run: [`ACTIVE_NONE`], [`ACTIVE_MESSAGE`] or [`ACTIVE_TASK`].
    active: AtomicU8,
    /// The live message run caused a side effect over IPC (contract §12.15).
    ipc_output: AtomicBool,
}

const ACTIVE_NONE: u8 = 0;
const ACTIVE_MESSAGE: u8 = 1;
const ACTIVE_TASK: u8 = 2;

impl GroupShared {
    fn group(&self) -> RegisteredGroup {
        self.group
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, TaskIds> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct GroupEntry {
    tx: mpsc::Sender<Mail>,
    shared: Arc<GroupShared>,
}

/// What every actor shares.
struct Ctx {
    settings: QueueSettings,
    store: StoreHandle,
    launcher: Arc<dyn RunLauncher>,
    outbound: Arc<dyn Outbound>,
    gate: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    counters: Counters,
    cursors: cursors::AgentCursorCache,
}

impl Ctx {
    /// True once shutdown started, or once every [`Queue`] handle is gone (the sender is dropped).
    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }

    /// Makes the chat's live cursor durable: the user has seen an answer to everything up to it.
    async fn commit_cursor(&self, jid: &str) {
        let cursors = self.cursors.clone();
        let owned = jid.to_string();
        if let Err(e) = self.store.call(move |s| cursors.commit(s, &owned)).await {
            tracing::error!(%jid, cause = %e, "cannot persist cursor");
        }
    }
}

/// The queue: a cloneable handle to the group actors.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Ctx>,
    groups: Mutex<HashMap<String, GroupEntry>>,
    actors: Mutex<Vec<JoinHandle<()>>>,
    shutdown_tx: watch::Sender<bool>,
}

impl Queue {
    /// Creates an empty queue. Actors are spawned by [`Queue::register_group`], so it must be called
    /// inside a tokio runtime.
    pub fn new(
        settings: QueueSettings,
        store: StoreHandle,
        launcher: Arc<dyn RunLauncher>,
        outbound: Arc<dyn Outbound>,
    ) -> Self {
        let mut settings = settings;
        settings.max_concurrent_runs = settings.max_concurrent_runs.max(1);
        settings.mailbox_capacity = settings.mailbox_capacity.max(1);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            gate: Arc::new(Semaphore::new(settings.max_concurrent_runs)),
            settings,
            store,
            launcher,
            outbound,
            shutdown,
            counters: Counters::default(),
            cursors: cursors::AgentCursorCache::default(),
        });
        Self {
            inner: Arc::new(Inner {
                ctx,
                groups: Mutex::new(HashMap::new()),
                actors: Mutex::new(Vec::new()),
                shutdown_tx,
            }),
        }
    }

    /// The settings in force (after clamping).
    pub fn settings(&self) -> &QueueSettings {
        &self.inner.ctx.settings
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<String, GroupEntry>> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the actor for a group, or updates the group's registration if it has one. Called for
    /// every group at startup and on each registration.
    pub fn register_group(&self, group: RegisteredGroup) {
        if self.inner.ctx.shutting_down() {
            return;
        }
        let mut groups = self.groups();
        if let Some(entry) = groups.get(&group.jid).filter(|e| !e.tx.is_closed()) {
            *entry
                .shared
                .group
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = group;
            return;
        }
        let (tx, rx) = mpsc::channel(self.inner.ctx.settings.mailbox_capacity);
        let shared = Arc::new(GroupShared {
            jid: group.jid.clone(),
            group: Mutex::new(group),
            pending_messages: AtomicBool::new(false),
            tasks: Mutex::new(TaskIds::default()),
            active: AtomicU8::new(ACTIVE_NONE),
            ipc_output: AtomicBool::new(false),
        });
        let actor = actor::Actor::new(Arc::clone(&self.inner.ctx), Arc::clone(&shared), rx);
        let handle = tokio::spawn(actor.run());
        groups.insert(shared.jid.clone(), GroupEntry { tx, shared });
        let mut actors = self
            .inner
            .actors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        actors.retain(|h| !h.is_finished());
        actors.push(handle);
    }

    /// Stops a group's actor after its current run; queued task runs are dropped (the scheduler
    /// rediscovers due tasks).
    pub fn remove_group(&self, jid: &str) -> bool {
        self.groups().remove(jid).is_some()
    }

    /// Whether an actor exists for `jid`.
    pub fn has_group(&self, jid: &str) -> bool {
        self.groups().contains_key(jid)
    }

    /// Tells a group that new messages were stored (contract §3.10e, §5.4): the actor pipes them into a
    /// live message run or starts a run when triggered. Coalesces: any number of calls before the actor
    /// looks cost one wake-up. Returns false when the group is unknown or shutdown has started.
    pub fn notify_messages(&self, jid: &str) -> bool {
        if self.inner.ctx.shutting_down() {
            return false;
        }
        let groups = self.groups();
        let Some(entry) = groups.get(jid) else {
            return false;
        };
        if !entry.shared.pending_messages.swap(true, Ordering::AcqRel) {
            match entry.tx.try_send(Mail::Wake) {
                Ok(()) => self.record_depth(&entry.tx),
                // The flag is set and the mailbox is non-empty, so the actor will look at the flag after the
                // mail ahead of it: delayed, not lost.
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    /// Startup recovery (contract §3.12): wakes every group so that each one with pending messages gets a
    /// message check. The actor re-applies the trigger gate.
    pub fn recover(&self) {
        let jids: Vec<String> = self.groups().keys().cloned().collect();
        for jid in jids {
            self.notify_messages(&jid);
        }
    }

    /// Queues a scheduled-task run for a group, keyed by the task's chat JID (contract §5.5, §6.5). A task
    /// id that is queued or running is skipped (contract §12.9). When the mailbox is full this waits for
    /// room: a delay, never a loss.
    pub async fn enqueue_task(&self, jid: &str, job: Box<dyn TaskJob>) -> TaskEnqueue {
        if self.inner.ctx.shutting_down() {
            return TaskEnqueue::ShuttingDown;
        }
        let Some((tx, shared)) = self
            .groups()
            .get(jid)
            .map(|e| (e.tx.clone(), Arc::clone(&e.shared)))
        else {
            return TaskEnqueue::UnknownGroup;
        };
        let id = job.task_id().to_string();
        {
            let mut ids = shared.tasks();
            if ids.running.as_deref() == Some(id.as_str()) {
                return TaskEnqueue::AlreadyRunning;
            }
            if !ids.queued.insert(id.clone()) {
                return TaskEnqueue::AlreadyQueued;
            }
        }
        match tx.send(Mail::Task(job)).await {
            Ok(()) => {
                self.record_depth(&tx);
                TaskEnqueue::Queued
            }
            Err(_) => {
                shared.tasks().queued.remove(&id);
                TaskEnqueue::UnknownGroup
            }
        }
    }

    /// A live message run of the group in `folder` sent a message or created a task over IPC. That
    /// counts as output sent (contract §12.15): the run is not retried if it then fails, and its cursor
    /// becomes durable now, as after a reply, so a restart does not repeat it either.
    pub async fn note_ipc_output(&self, folder: &str) {
        let shared = self
            .groups()
            .values()
            .find(|e| e.shared.group().folder == folder)
            .map(|e| Arc::clone(&e.shared));
        let Some(shared) = shared else {
            return;
        };
        if shared.active.load(Ordering::Acquire) != ACTIVE_MESSAGE {
            return;
        }
        shared.ipc_output.store(true, Ordering::Release);
        self.inner.ctx.commit_cursor(&shared.jid).await;
    }

    fn record_depth(&self, tx: &mpsc::Sender<Mail>) {
        let depth = tx.max_capacity().saturating_sub(tx.capacity());
        self.inner
            .ctx
            .counters
            .peak_mailbox_depth
            .fetch_max(depth, Ordering::Relaxed);
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.ctx.shutting_down()
    }

    /// Graceful shutdown (contract §5.16, fixed per §12.17): no new runs, retries or enqueues; live runs
    /// get their input closed and `shutdown_grace` to finish, then they are killed. Cursors of runs that
    /// ended without output are rolled back, so the messages are picked up again at the next start.
    /// Returns when every actor has stopped (or the grace plus [`KILL_MARGIN`] has passed).
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown_tx.send(true);
        let handles: Vec<JoinHandle<()>> = std::mem::take(
            &mut *self
                .inner
                .actors
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let deadline =
            tokio::time::Instant::now() + self.inner.ctx.settings.shutdown_grace + KILL_MARGIN;
        for handle in handles {
            if tokio::time::timeout_at(deadline, handle).await.is_err() {
                tracing::warn!("queue shutdown: an actor did not stop within the grace period");
            }
        }
        self.groups().clear();
    }

    /// Current counters.
    pub fn stats(&self) -> QueueStats {
        let c = &self.inner.ctx.counters;
        QueueStats {
            groups: self.groups().len(),
            runs_started: c.runs_started.load(Ordering::Relaxed),
            active_runs: c.active_runs.load(Ordering::Relaxed),
            peak_active_runs: c.peak_active_runs.load(Ordering::Relaxed),
            peak_mailbox_depth: c.peak_mailbox_depth.load(Ordering::Relaxed),
            actor_wakeups: c.actor_wakeups.load(Ordering::Relaxed),
            retries_scheduled: c.retries_scheduled.load(Ordering::Relaxed),
        }
    }

    /// Each group actor's state right now, ordered by JID (for `nanoclaw status`).
    pub fn group_statuses(&self) -> Vec<crate::core::wire::GroupStatus> {
        let mut list: Vec<_> = self
            .groups()
            .values()
            .map(|e| {
                let group = e.shared.group();
                let tasks = e.shared.tasks();
                crate::core::wire::GroupStatus {
                    jid: e.shared.jid.clone(),
                    folder: group.folder,
                    name: group.name,
                    run: match e.shared.active.load(Ordering::Acquire) {
                        ACTIVE_MESSAGE => Some("message".to_string()),
                        ACTIVE_TASK => Some("task".to_string()),
                        _ => None,
                    },
                    running_task: tasks.running.clone(),
                    pending_messages: e.shared.pending_messages.load(Ordering::Acquire),
                    queued_tasks: tasks.queued.len(),
                    mailbox_depth: e.tx.max_capacity().saturating_sub(e.tx.capacity()),
                }
            })
            .collect();
        list.sort_by(|a, b| a.jid.cmp(&b.jid));
        list
    }

    /// The store handle the queue uses (the scheduler shares it).
    pub fn store(&self) -> &StoreHandle {
        &self.inner.ctx.store
    }

    /// The agent-cursor cache. Anything else that moves a chat's agent cursor while the queue runs must use
    /// it, inside a store call, so the cache and the database stay in step.
    pub fn agent_cursors(&self) -> cursors::AgentCursorCache {
        self.inner.ctx.cursors.clone()
    }

    /// The outbound channel the queue uses (the scheduler's task jobs share it).
    pub fn outbound(&self) -> Arc<dyn Outbound> {
        Arc::clone(&self.inner.ctx.outbound)
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("settings", &self.inner.ctx.settings)
            .field("stats", &self.stats())
            .finish()
    }
}
