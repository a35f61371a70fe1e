//! Applying one validated command: authorization (contract §8.11) and then the effect (§8.4–8.10).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::core::audit::{AuditEvent, AuditKind};
use crate::core::ipc::{IpcCommand, IpcRejection};
use crate::core::ipc_auth::{DenyReason, Source, TargetLookup, authorize};
use crate::core::time::iso;
use crate::core::types::{RegisteredGroup, ScheduleType, ScheduledTask, TaskStatus};
use crate::ipc::effects::{EffectError, IpcEffects};
use crate::ipc::layout::IpcLayout;
use crate::ipc::snapshot::{random_suffix, write_groups_snapshot};

/// What the handler needs besides the command.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// The zone cron and naive `once` values are read in (contract §1.2, §6.15).
    pub timezone: Tz,
}

/// The result of one command. Files of every outcome except an effect error are removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Denied(DenyReason),
    /// Valid on its own but not applicable (e.g. a cron with no future occurrence).
    Rejected(IpcRejection),
}

/// Answers authorization lookups from the pass's registered-groups snapshot and one fetched task.
struct PassLookup<'a> {
    groups: &'a [RegisteredGroup],
    task: Option<(&'a str, &'a str)>,
}

impl TargetLookup for PassLookup<'_> {
    fn folder_of_jid(&self, jid: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|g| g.jid == jid)
            .map(|g| g.folder.as_str())
    }
    fn folder_of_task(&self, task_id: &str) -> Option<&str> {
        self.task
            .filter(|(id, _)| *id == task_id)
            .map(|(_, folder)| folder)
    }
    fn jid_of_folder(&self, folder: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|g| g.folder == folder)
            .map(|g| g.jid.as_str())
    }
}

/// `task-<epochMillis>-<6 random base-36 chars>` (contract §6.3).
pub fn new_task_id(now: DateTime<Utc>) -> String {
    format!("task-{}-{}", now.timestamp_millis(), random_suffix(6))
}

/// Authorizes and applies one command from `source_folder` (the directory it was found in). Denials are
/// audited here. `groups` is the registered-groups snapshot of the current pass; a successful
/// `register_group` appends to it so later files of the same pass see the new group.
#[allow(clippy::too_many_arguments)]
pub async fn apply_command<E: IpcEffects>(
    source_folder: &str,
    file: &str,
    command: IpcCommand,
    groups: &mut Vec<RegisteredGroup>,
    effects: &E,
    layout: &IpcLayout,
    config: &HandlerConfig,
    now: DateTime<Utc>,
) -> Result<Outcome, EffectError> {
    let source = Source::from_dir(source_folder);
    let task_owner = match &command {
        IpcCommand::PauseTask { task_id }
        | IpcCommand::ResumeTask { task_id }
        | IpcCommand::CancelTask { task_id } => effects
            .task_folder(task_id)
            .await?
            .map(|folder| (task_id.clone(), folder)),
        _ => None,
    };
    let op = command.operation();
    let decision = authorize(
        source,
        op,
        &PassLookup {
            groups,
            task: task_owner.as_ref().map(|(id, f)| (id.as_str(), f.as_str())),
        },
    );
    if let crate::core::ipc_auth::Decision::Deny(reason) = decision {
        effects.audit(AuditEvent::new(
            source_folder,
            AuditKind::IpcDenied {
                file: file.to_string(),
                command: op.name(),
                reason: reason.clone(),
            },
        ));
        return Ok(Outcome::Denied(reason));
    }

    match command {
        IpcCommand::SendMessage { chat_jid, text } => {
            effects.send_message(&chat_jid, &text).await?;
            effects.side_effect_applied(source_folder).await;
        }
        IpcCommand::ScheduleTask {
            prompt,
            schedule_type,
            schedule_value,
            schedule,
            target_jid,
            context_mode,
        } => {
            let next_run = match schedule.first_run(now, config.timezone) {
                Ok(t) => t,
                Err(e) => return Ok(Outcome::Rejected(IpcRejection::BadSchedule(e))),
            };
            // Authorization guarantees the target is registered.
            let Some(target_folder) = groups
                .iter()
                .find(|g| g.jid == target_jid)
                .map(|g| g.folder.clone())
            else {
                return Ok(Outcome::Denied(DenyReason::UnregisteredTarget));
            };
            let task = ScheduledTask {
                id: new_task_id(now),
                group_folder: target_folder,
                chat_jid: target_jid,
                prompt,
                schedule_type: ScheduleType::parse(schedule_type.as_str()),
                schedule_value,
                next_run: Some(iso(next_run)),
                last_run: None,
                last_result: None,
                status: TaskStatus::Active,
                created_at: iso(now),
                context_mode,
            };
            effects.create_task(task).await?;
            effects.side_effect_applied(source_folder).await;
        }
        IpcCommand::PauseTask { task_id } => {
            effects
                .set_task_status(&task_id, TaskStatus::Paused)
                .await?;
        }
        IpcCommand::ResumeTask { task_id } => {
            effects
                .set_task_status(&task_id, TaskStatus::Active)
                .await?;
        }
        IpcCommand::CancelTask { task_id } => {
            effects.cancel_task(&task_id).await?;
        }
        IpcCommand::RefreshGroups => {
            let list = effects.refresh_groups().await?;
            write_groups_snapshot(layout, source_folder, &list, &iso(now))
                .map_err(|e| EffectError(e.to_string()))?;
        }
        IpcCommand::RegisterGroup {
            jid,
            name,
            folder,
            trigger,
            requires_trigger,
            container_config,
        } => {
            let group = RegisteredGroup {
                jid,
                name,
                folder,
                trigger,
                added_at: iso(now),
                container_config,
                requires_trigger,
            };
            effects.register_group(group.clone()).await?;
            groups.retain(|g| g.jid != group.jid);
            groups.push(group);
        }
    }
    Ok(Outcome::Applied)
}
