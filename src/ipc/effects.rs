//! What an applied IPC command does to the rest of the host. The host implements [`IpcEffects`] with its
//! store, queue, scheduler wake-up and channel, so an IPC command takes the same path as any other
//! source of work (e.g. a task created over IPC wakes the scheduler; nothing polls).
//! [`StoreEffects`] is the implementation over a real [`Store`] with recorders for the edges that need a
//! live host (channel sends, scheduler wake-ups, group syncs).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::audit::AuditEvent;
use crate::core::format::format_outbound;
use crate::core::ipc::AvailableGroup;
use crate::core::time::now_iso;
use crate::core::types::{RegisteredGroup, ScheduledTask, TaskStatus, TaskUpdate};
use crate::ipc::snapshot::available_groups;
use crate::store::Store;

/// A failed effect. The watcher quarantines the command file with this reason (contract §8.4, §8.5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EffectError(pub String);

impl From<crate::store::StoreError> for EffectError {
    fn from(e: crate::store::StoreError) -> Self {
        Self(e.to_string())
    }
}

/// The host's side of IPC. Every method is called only after authorization allowed the command.
pub trait IpcEffects: Send + Sync + 'static {
    /// The registered groups; read once per watcher pass (contract §8.3).
    fn registered_groups(
        &self,
    ) -> impl Future<Output = Result<Vec<RegisteredGroup>, EffectError>> + Send;

    /// The folder owning a task, `None` if there is no such task.
    fn task_folder(
        &self,
        task_id: &str,
    ) -> impl Future<Output = Result<Option<String>, EffectError>> + Send;

    /// Sends `raw` to a chat through the same outbound path as run results: `<internal>` stripped,
    /// trimmed, prefixed as the channel wants, nothing sent when empty (contract §4.9, fix §12.14).
    fn send_message(
        &self,
        chat_jid: &str,
        raw: &str,
    ) -> impl Future<Output = Result<(), EffectError>> + Send;

    /// Stores a new task and wakes the scheduler so it fires without any poll.
    fn create_task(
        &self,
        task: ScheduledTask,
    ) -> impl Future<Output = Result<(), EffectError>> + Send;

    /// Pause (`Paused`) or resume (`Active`); nothing else changes (contract §8.8, §6.13). Returns whether
    /// the task existed. Wakes the scheduler.
    fn set_task_status(
        &self,
        task_id: &str,
        status: TaskStatus,
    ) -> impl Future<Output = Result<bool, EffectError>> + Send;

    /// Deletes a task and its run logs. Returns whether it existed.
    fn cancel_task(&self, task_id: &str) -> impl Future<Output = Result<bool, EffectError>> + Send;

    /// Registers a group: store row, in-memory map, `groups/<folder>/logs/` (contract §8.10).
    fn register_group(
        &self,
        group: RegisteredGroup,
    ) -> impl Future<Output = Result<(), EffectError>> + Send;

    /// Forces a group-metadata sync (ignoring its cache) and returns the full group list for main's
    /// `available_groups.json` (contract §8.9).
    fn refresh_groups(
        &self,
    ) -> impl Future<Output = Result<Vec<AvailableGroup>, EffectError>> + Send;

    /// Records a security-relevant event (denial, rejection, limit).
    fn audit(&self, event: AuditEvent);

    /// Called after a command from `source_folder` took an effect a retry would repeat (a message sent,
    /// a task created). The host counts it as output of that group's live run, so a failed run is not
    /// retried and its messages are not answered twice (contract §12.15).
    fn side_effect_applied(&self, _source_folder: &str) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Most sends and audit events [`StoreEffects`] keeps in memory.
pub const MAX_RECORDED: usize = 100_000;

/// A message the recorder saw, after outbound formatting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub chat_jid: String,
    pub text: String,
}

/// [`IpcEffects`] over a real [`Store`] (audit events go to its `audit_events` table, as the host's
/// do), recording what would leave the host: channel sends, scheduler wake-ups, group syncs, and the
/// audit events again in memory for assertions. Used by tests and by tooling that runs the watcher without a
/// channel.
pub struct StoreEffects {
    /// rusqlite's connection is not `Sync`; every call is short and never held across an await.
    store: Mutex<Store>,
    assistant_name: String,
    groups_root: Option<PathBuf>,
    sent: Mutex<Vec<SentMessage>>,
    audits: Mutex<Vec<AuditEvent>>,
    wakeups: AtomicU64,
    syncs: AtomicU64,
}

impl StoreEffects {
    /// `groups_root`, when given, is where `register_group` creates `<folder>/logs/`.
    pub fn new(store: Store, assistant_name: &str, groups_root: Option<PathBuf>) -> Self {
        Self {
            store: Mutex::new(store),
            assistant_name: assistant_name.to_string(),
            groups_root,
            sent: Mutex::new(Vec::new()),
            audits: Mutex::new(Vec::new()),
            wakeups: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    /// Runs `f` with the store (for test setup and assertions).
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut guard = self.store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn sent(&self) -> Vec<SentMessage> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn sent_count(&self) -> usize {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn audits(&self) -> Vec<AuditEvent> {
        self.audits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Scheduler wake-ups requested so far.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// Forced group syncs requested so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn store<T>(
        &self,
        f: impl FnOnce(&mut Store) -> crate::store::Result<T>,
    ) -> Result<T, EffectError> {
        Ok(self.with_store(f)?)
    }
}

impl IpcEffects for StoreEffects {
    async fn registered_groups(&self) -> Result<Vec<RegisteredGroup>, EffectError> {
        self.store(|s| s.all_groups())
    }

    async fn task_folder(&self, task_id: &str) -> Result<Option<String>, EffectError> {
        Ok(self.store(|s| s.get_task(task_id))?.map(|t| t.group_folder))
    }

    async fn send_message(&self, chat_jid: &str, raw: &str) -> Result<(), EffectError> {
        if let Some(text) = format_outbound(raw, &self.assistant_name, true) {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            if sent.len() < MAX_RECORDED {
                sent.push(SentMessage {
                    chat_jid: chat_jid.to_string(),
                    text,
                });
            }
        }
        Ok(())
    }

    async fn create_task(&self, task: ScheduledTask) -> Result<(), EffectError> {
        self.store(|s| s.create_task(&task))?;
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn set_task_status(
        &self,
        task_id: &str,
        status: TaskStatus,
    ) -> Result<bool, EffectError> {
        let update = TaskUpdate {
            status: Some(status),
            ..TaskUpdate::default()
        };
        let changed = self.store(|s| s.update_task(task_id, &update))?;
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        Ok(changed)
    }

    async fn cancel_task(&self, task_id: &str) -> Result<bool, EffectError> {
        let existed = self.store(|s| s.delete_task(task_id))?;
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        Ok(existed)
    }

    async fn register_group(&self, group: RegisteredGroup) -> Result<(), EffectError> {
        self.store(|s| s.register_group(&group))?;
        if let Some(root) = &self.groups_root {
            let logs = root.join(&group.folder).join("logs");
            std::fs::create_dir_all(&logs)
                .map_err(|e| EffectError(format!("create {}: {e}", logs.display())))?;
        }
        Ok(())
    }

    async fn refresh_groups(&self) -> Result<Vec<AvailableGroup>, EffectError> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let now = now_iso();
        self.store(|s| {
            s.set_group_sync(&now)?;
            Ok(available_groups(&s.all_chats()?, &s.all_groups()?))
        })
    }

    fn audit(&self, event: AuditEvent) {
        event.log();
        let row = event.record(&now_iso());
        if let Err(e) = self.with_store(|s| s.insert_audit(&row)) {
            tracing::warn!(cause = %e, "cannot store audit event");
        }
        let mut audits = self.audits.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded like everything else; the log line above still records every event.
        if audits.len() < MAX_RECORDED {
            audits.push(event);
        }
    }
}
