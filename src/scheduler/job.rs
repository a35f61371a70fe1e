//! One scheduled-task run as the queue drives it (contract §6.6–6.12, fixes §12.9, §12.10).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::core::format::{format_outbound, result_text};
use crate::core::schedule::parse_schedule;
use crate::core::time::iso;
use crate::core::types::{
    ContextMode, RegisteredGroup, RunLogStatus, ScheduledTask, TaskRunLog, TaskStatus, TaskUpdate,
};
use crate::core::wire::{ContainerInput, FrameStatus, OutputFrame};
use crate::queue::{BoxFuture, RunKind, RunOutcome, RunSpec, TaskJob};
use crate::scheduler::{Inner, LAST_RESULT_CHARS};
use crate::store::{Store, StoreError};

pub(super) struct TaskRunJob {
    task: ScheduledTask,
    inner: Arc<Inner>,
    started: Option<DateTime<Utc>>,
    last_result: Option<String>,
    error: Option<String>,
}

impl TaskRunJob {
    pub(super) fn new(task: ScheduledTask, inner: Arc<Inner>) -> Self {
        Self {
            task,
            inner,
            started: None,
            last_result: None,
            error: None,
        }
    }
}

/// Records `Group not found` once and pauses the task, where the original re-logged it every minute
/// forever (contract §6.6, fixed per §12.10).
pub(super) fn pause_orphan(
    store: &Store,
    task: &ScheduledTask,
    run_at: &str,
) -> Result<(), StoreError> {
    store.log_task_run(&TaskRunLog {
        task_id: task.id.clone(),
        run_at: run_at.to_string(),
        duration_ms: 0,
        status: RunLogStatus::Error,
        result: None,
        error: Some(format!("Group not found: {}", task.group_folder)),
    })?;
    store.update_task(
        &task.id,
        &TaskUpdate {
            status: Some(TaskStatus::Paused),
            ..TaskUpdate::default()
        },
    )?;
    Ok(())
}

enum Prepared {
    Gone,
    Orphan,
    Run(Box<(ScheduledTask, RegisteredGroup, Option<String>)>),
}

impl TaskJob for TaskRunJob {
    fn task_id(&self) -> &str {
        &self.task.id
    }

    fn prepare(&mut self) -> BoxFuture<'_, Option<RunSpec>> {
        Box::pin(async move {
            let started = self.inner.clock.now();
            self.started = Some(started);
            let id = self.task.id.clone();
            let run_at = iso(started);
            let prepared = self
                .inner
                .store
                .call(move |s| {
                    // §12.9: re-check when the queued work starts; a paused or cancelled task does not run.
                    let Some(task) = s.get_task(&id)? else {
                        return Ok(Prepared::Gone);
                    };
                    if task.status != TaskStatus::Active {
                        return Ok(Prepared::Gone);
                    }
                    let group = s
                        .all_groups()?
                        .into_iter()
                        .find(|g| g.folder == task.group_folder);
                    let Some(group) = group else {
                        pause_orphan(s, &task, &run_at)?;
                        return Ok(Prepared::Orphan);
                    };
                    // §6.7: group mode resumes the folder's session; isolated starts fresh.
                    let session = match task.context_mode {
                        ContextMode::Group => s.get_session(&group.folder)?,
                        ContextMode::Isolated => None,
                    };
                    Ok(Prepared::Run(Box::new((task, group, session))))
                })
                .await;
            match prepared {
                Ok(Prepared::Run(run)) => {
                    let (task, group, session_id) = *run;
                    self.task = task;
                    tracing::info!(task = %self.task.id, folder = %group.folder, "running scheduled task");
                    Some(RunSpec {
                        input: ContainerInput {
                            prompt: self.task.prompt.clone(),
                            session_id,
                            group_folder: self.task.group_folder.clone(),
                            chat_jid: self.task.chat_jid.clone(),
                            is_main: group.is_main(),
                            is_scheduled_task: true,
                        },
                        group,
                        kind: RunKind::Task,
                    })
                }
                Ok(Prepared::Gone) => {
                    tracing::info!(task = %self.task.id, "task no longer active; skipping");
                    None
                }
                Ok(Prepared::Orphan) => {
                    tracing::warn!(task = %self.task.id, folder = %self.task.group_folder, "group not found; task paused");
                    None
                }
                Err(e) => {
                    tracing::error!(task = %self.task.id, cause = %e, "cannot prepare task run");
                    None
                }
            }
        })
    }

    /// §6.10: remember the last result, deliver it (stripped, prefixed), note errors. Session ids from task
    /// runs are never stored (§6.7).
    fn on_frame<'a>(&'a mut self, frame: &'a OutputFrame) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(result) = &frame.result {
                let text = result_text(result);
                let outbound = self.inner.queue.outbound();
                let name = &self.inner.queue.settings().assistant_name;
                if let Some(out) =
                    format_outbound(&text, name, outbound.wants_prefix(&self.task.chat_jid))
                    && let Err(e) = outbound.send(&self.task.chat_jid, out).await
                {
                    tracing::warn!(task = %self.task.id, cause = %e, "task output not sent");
                }
                self.last_result = Some(text);
            }
            if frame.status == FrameStatus::Error {
                self.error = Some(
                    frame
                        .error
                        .clone()
                        .unwrap_or_else(|| "Unknown error".to_string()),
                );
            }
        })
    }

    /// §6.11–6.12: one run log stamped with the completion time, the next run from the completion time, and
    /// the `last_result` summary. A task cancelled meanwhile is tolerated (§12.9).
    fn finish(mut self: Box<Self>, outcome: RunOutcome) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let RunOutcome::Error(reason) = outcome {
                self.error = Some(reason);
            }
            let tz = self.inner.settings.timezone;
            let now = self.inner.clock.now();
            let started = self.started.unwrap_or(now);
            let duration_ms = (now - started).num_milliseconds().max(0);
            let next_run = match parse_schedule(
                self.task.schedule_type.as_str(),
                &self.task.schedule_value,
            ) {
                Ok(schedule) => schedule.after_run(now, tz).map(iso),
                Err(e) => {
                    tracing::error!(task = %self.task.id, cause = %e, "stored schedule is invalid; completing the task");
                    None
                }
            };
            let summary = match (&self.error, &self.last_result) {
                (Some(e), _) => format!("Error: {e}"),
                (None, Some(r)) => r.chars().take(LAST_RESULT_CHARS).collect(),
                (None, None) => "Completed".to_string(),
            };
            let log = TaskRunLog {
                task_id: self.task.id.clone(),
                run_at: iso(now),
                duration_ms,
                status: if self.error.is_some() {
                    RunLogStatus::Error
                } else {
                    RunLogStatus::Success
                },
                result: self.last_result.clone(),
                error: self.error.clone(),
            };
            let id = self.task.id.clone();
            let next = next_run.clone();
            let written = self
                .inner
                .store
                .call(move |s| s.finish_task_run(&id, next.as_deref(), &summary, &log))
                .await;
            match written {
                Ok(true) => {
                    tracing::info!(task = %self.task.id, duration_ms, next_run = ?next_run, "task run finished")
                }
                Ok(false) => {
                    tracing::info!(task = %self.task.id, "task was cancelled during its run; nothing recorded")
                }
                Err(e) => {
                    tracing::error!(task = %self.task.id, cause = %e, "cannot record task run")
                }
            }
        })
    }
}

impl Drop for TaskRunJob {
    /// Whether it ran, was skipped or was dropped at shutdown, the task is no longer in flight, and its
    /// `next_run` may have changed: wake the engine.
    fn drop(&mut self) {
        self.inner.in_flight().remove(&self.task.id);
        self.inner.wake.notify_one();
    }
}
