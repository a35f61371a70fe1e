//! Scheduled tasks (contract §6): task lifecycle and an event-driven engine that sleeps until the earliest
//! `next_run` and is woken early when tasks change. Schedule values are parsed and next runs computed by
//! [`crate::core::schedule`], the same code that validates IPC `schedule_task` commands.
//!
//! There is no fixed-interval poll (the original checked every 60 s, contract §12.2). The engine's loop:
//! fetch due tasks, hand each to its group's queue actor as a [`TaskJob`](crate::queue::TaskJob), then
//! sleep until the earliest future `next_run` or until [`Scheduler::tasks_changed`] is called. A task that
//! is queued or running is "in flight": it is not handed over again (contract §12.9), and its run's end
//! wakes the engine, because only then is its next `next_run` known.

mod clock;
mod engine;
mod job;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono_tz::Tz;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::core::schedule::parse_schedule;
use crate::core::time::iso;
use crate::core::types::{ContextMode, ScheduleType, ScheduledTask, TaskStatus, TaskUpdate};
use crate::queue::Queue;
use crate::store::{StoreHandle, StoreHandleError};

pub use crate::core::schedule::{Schedule, ScheduleError};
pub use clock::Clock;

/// Longest single sleep. Sleeping is measured on the monotonic clock while `next_run` is wall-clock time;
/// re-checking at least this often bounds how late a task runs after the wall clock is stepped (NTP on a
/// board without RTC). A re-check that finds nothing due yet goes back to sleep without a query.
pub const DEFAULT_MAX_SLEEP: Duration = Duration::from_secs(6 * 60 * 60);

/// Characters of a run's result kept in `last_result` (contract §1.6).
pub const LAST_RESULT_CHARS: usize = 200;

/// Scheduler settings; the host maps its configuration onto these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// Zone for cron evaluation and for `once` values without an offset (contract §6.15).
    pub timezone: Tz,
    /// See [`DEFAULT_MAX_SLEEP`].
    pub max_sleep: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            timezone: system_timezone(),
            max_sleep: DEFAULT_MAX_SLEEP,
        }
    }
}

/// The process's zone: `TZ` if it names an IANA zone, else the system zone, else UTC (contract §1.2).
pub fn system_timezone() -> Tz {
    let from_env = std::env::var("TZ")
        .ok()
        .and_then(|v| v.trim_start_matches(':').parse::<Tz>().ok());
    from_env
        .or_else(|| {
            iana_time_zone::get_timezone()
                .ok()
                .and_then(|name| name.parse::<Tz>().ok())
        })
        .unwrap_or(Tz::UTC)
}

/// Errors of the scheduler's task operations.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The schedule was refused; no task was created.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The database call failed.
    #[error(transparent)]
    Store(#[from] StoreHandleError),
}

/// A task to create (from IPC `schedule_task` or the CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub group_folder: String,
    pub chat_jid: String,
    pub prompt: String,
    pub schedule_type: String,
    pub schedule_value: String,
    /// `group` or `isolated`; anything else or nothing means `isolated` (contract §6.4).
    pub context_mode: Option<String>,
}

/// Engine counters, for tests and `doctor`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Times the engine woke from its sleep (a due time, a notification, or a max-sleep re-check).
    pub wakeups: u64,
    /// Passes over the due tasks (each costs two or three queries).
    pub passes: u64,
    /// Task runs handed to the queue.
    pub dispatched: u64,
}

#[derive(Default)]
struct Counters {
    wakeups: AtomicU64,
    passes: AtomicU64,
    dispatched: AtomicU64,
}

struct Inner {
    settings: SchedulerSettings,
    store: StoreHandle,
    queue: Queue,
    clock: Clock,
    wake: Notify,
    /// Task ids handed to the queue whose run has not ended yet.
    in_flight: Mutex<HashSet<String>>,
    stop_tx: watch::Sender<bool>,
    counters: Counters,
}

impl Inner {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle to the scheduler. Cloning shares it.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// Creates the scheduler; tasks run on `queue` and use its store and outbound channel. Call
    /// [`Scheduler::start`] to run the engine.
    pub fn new(settings: SchedulerSettings, queue: Queue, clock: Clock) -> Self {
        let (stop_tx, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                settings,
                store: queue.store().clone(),
                queue,
                clock,
                wake: Notify::new(),
                in_flight: Mutex::new(HashSet::new()),
                stop_tx,
                counters: Counters::default(),
            }),
        }
    }

    /// Spawns the engine. Its first pass runs at once (contract §6.5: right after the channel connects), which
    /// also runs tasks missed during downtime, once each (§6.14).
    pub fn start(&self) -> JoinHandle<()> {
        tokio::spawn(engine::run(Arc::clone(&self.inner)))
    }

    /// Stops the engine after its current pass. Runs already queued are the queue's business.
    pub fn stop(&self) {
        self.inner.stop_tx.send_replace(true);
    }

    /// Wakes the engine to re-read the due times: call after any change to tasks made outside this handle.
    pub fn tasks_changed(&self) {
        self.inner.wake.notify_one();
    }

    /// The settings in force.
    pub fn settings(&self) -> &SchedulerSettings {
        &self.inner.settings
    }

    /// Engine counters.
    pub fn stats(&self) -> SchedulerStats {
        let c = &self.inner.counters;
        SchedulerStats {
            wakeups: c.wakeups.load(Ordering::Relaxed),
            passes: c.passes.load(Ordering::Relaxed),
            dispatched: c.dispatched.load(Ordering::Relaxed),
        }
    }

    /// Validates and stores a new task (contract §6.2–6.4), then wakes the engine. An invalid value or an
    /// unknown schedule type creates nothing (§12.24).
    pub async fn create_task(&self, req: NewTask) -> Result<ScheduledTask, SchedulerError> {
        let tz = self.inner.settings.timezone;
        let now = self.inner.clock.now();
        let next_run =
            parse_schedule(&req.schedule_type, &req.schedule_value)?.first_run(now, tz)?;
        let task = ScheduledTask {
            id: new_task_id(now.timestamp_millis()),
            group_folder: req.group_folder,
            chat_jid: req.chat_jid,
            prompt: req.prompt,
            schedule_type: ScheduleType::parse(&req.schedule_type),
            schedule_value: req.schedule_value,
            next_run: Some(iso(next_run)),
            last_run: None,
            last_result: None,
            status: TaskStatus::Active,
            created_at: iso(now),
            context_mode: ContextMode::parse(req.context_mode.as_deref().unwrap_or("isolated")),
        };
        let row = task.clone();
        self.inner.store.call(move |s| s.create_task(&row)).await?;
        tracing::info!(task = %task.id, next_run = ?task.next_run, "task created");
        self.tasks_changed();
        Ok(task)
    }

    async fn set_status(&self, id: &str, status: TaskStatus) -> Result<bool, SchedulerError> {
        let id = id.to_string();
        let changed = self
            .inner
            .store
            .call(move |s| {
                s.update_task(
                    &id,
                    &TaskUpdate {
                        status: Some(status),
                        ..TaskUpdate::default()
                    },
                )
            })
            .await?;
        self.tasks_changed();
        Ok(changed)
    }

    /// `active → paused` (contract §6.13). Returns whether the task exists.
    pub async fn pause_task(&self, id: &str) -> Result<bool, SchedulerError> {
        self.set_status(id, TaskStatus::Paused).await
    }

    /// `paused → active`; `next_run` is not recomputed, so an overdue task fires at once (contract §6.13).
    pub async fn resume_task(&self, id: &str) -> Result<bool, SchedulerError> {
        self.set_status(id, TaskStatus::Active).await
    }

    /// Deletes a task and its run logs (contract §6.13). A run in progress finishes; its log is dropped.
    pub async fn cancel_task(&self, id: &str) -> Result<bool, SchedulerError> {
        let id = id.to_string();
        let existed = self.inner.store.call(move |s| s.delete_task(&id)).await?;
        self.tasks_changed();
        Ok(existed)
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("settings", &self.inner.settings)
            .field("stats", &self.stats())
            .finish()
    }
}

/// `task-<epochMillis>-<6 random base-36 chars>` (contract §6.3).
pub fn new_task_id(epoch_ms: i64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let suffix: String = (0..6)
        .map(|_| char::from(DIGITS[fastrand::usize(..DIGITS.len())]))
        .collect();
    format!("task-{epoch_ms}-{suffix}")
}
