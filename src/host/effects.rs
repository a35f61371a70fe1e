//! The host's [`IpcEffects`]: IPC commands take the same paths as every other source of work: the
//! store, the group actors, the scheduler's wake-up and the outbound router (contract §8).

use std::path::PathBuf;

use crate::core::audit::AuditEvent;
use crate::core::format::format_outbound;
use crate::core::ipc::AvailableGroup;
use crate::core::time::now_iso;
use crate::core::types::{RegisteredGroup, ScheduledTask, TaskStatus, TaskUpdate};
use crate::host::router::Router;
use crate::ipc::{EffectError, IpcEffects, available_groups};
use crate::net::audit::AuditSink;
use crate::queue::{Outbound, Queue};
use crate::scheduler::Scheduler;
use crate::store::StoreHandle;

/// Wiring of IPC effects into the running host.
pub struct HostEffects {
    pub store: StoreHandle,
    pub queue: Queue,
    pub scheduler: Scheduler,
    pub router: Router,
    pub assistant_name: String,
    pub groups_root: PathBuf,
    pub audit: AuditSink,
}

fn effect(e: impl std::fmt::Display) -> EffectError {
    EffectError(e.to_string())
}

impl IpcEffects for HostEffects {
    async fn registered_groups(&self) -> Result<Vec<RegisteredGroup>, EffectError> {
        self.store.call(|s| s.all_groups()).await.map_err(effect)
    }

    async fn task_folder(&self, task_id: &str) -> Result<Option<String>, EffectError> {
        let id = task_id.to_string();
        let task = self
            .store
            .call(move |s| s.get_task(&id))
            .await
            .map_err(effect)?;
        Ok(task.map(|t| t.group_folder))
    }

    async fn send_message(&self, chat_jid: &str, raw: &str) -> Result<(), EffectError> {
        let prefix = self.router.wants_prefix(chat_jid);
        if let Some(text) = format_outbound(raw, &self.assistant_name, prefix) {
            self.router.send(chat_jid, text).await.map_err(effect)?;
        }
        Ok(())
    }

    async fn create_task(&self, task: ScheduledTask) -> Result<(), EffectError> {
        self.store
            .call(move |s| s.create_task(&task))
            .await
            .map_err(effect)?;
        self.scheduler.tasks_changed();
        Ok(())
    }

    async fn set_task_status(
        &self,
        task_id: &str,
        status: TaskStatus,
    ) -> Result<bool, EffectError> {
        let id = task_id.to_string();
        let update = TaskUpdate {
            status: Some(status),
            ..TaskUpdate::default()
        };
        let changed = self
            .store
            .call(move |s| s.update_task(&id, &update))
            .await
            .map_err(effect)?;
        self.scheduler.tasks_changed();
        Ok(changed)
    }

    async fn cancel_task(&self, task_id: &str) -> Result<bool, EffectError> {
        let id = task_id.to_string();
        let existed = self
            .store
            .call(move |s| s.delete_task(&id))
            .await
            .map_err(effect)?;
        self.scheduler.tasks_changed();
        Ok(existed)
    }

    async fn register_group(&self, group: RegisteredGroup) -> Result<(), EffectError> {
        let row = group.clone();
        self.store
            .call(move |s| s.register_group(&row))
            .await
            .map_err(effect)?;
        let logs = self.groups_root.join(&group.folder).join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| EffectError(format!("create {}: {e}", logs.display())))?;
        // The group takes part at once: its actor exists before its first message arrives.
        self.queue.register_group(group);
        Ok(())
    }

    async fn refresh_groups(&self) -> Result<Vec<AvailableGroup>, EffectError> {
        let mut synced = Vec::new();
        for channel in self.router.channels() {
            match channel.sync_group_metadata(true).await {
                Ok(list) => synced.extend(list),
                Err(e) => tracing::warn!(channel = channel.name(), cause = %e, "group sync failed"),
            }
        }
        let now = now_iso();
        self.store
            .call(move |s| {
                for (jid, name) in &synced {
                    s.rename_chat(jid, name, &now)?;
                }
                s.set_group_sync(&now)?;
                Ok(available_groups(&s.all_chats()?, &s.all_groups()?))
            })
            .await
            .map_err(effect)
    }

    fn audit(&self, event: AuditEvent) {
        self.audit.emit(event);
    }

    async fn side_effect_applied(&self, source_folder: &str) {
        self.queue.note_ipc_output(source_folder).await;
    }
}
