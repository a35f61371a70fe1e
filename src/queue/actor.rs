//! The per-group actor: one tokio task that runs its group's work strictly one at a time.
//!
//! Loop: wait for mail (or a due retry) → pick work, tasks before messages (contract §5.8) → take a
//! global permit → drive the run → settle → release the permit. Releasing between runs lets the FIFO
//! semaphore serve waiting groups before a busy group runs again (the optional fairness fix of §12.23).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::{Instant, sleep_until};

use crate::core::cursor::{Settlement, cursor_after, settle_message_run};
use crate::core::format::{format_messages, format_outbound, result_text};
use crate::core::trigger::is_triggered;
use crate::core::types::{Message, RegisteredGroup};
use crate::core::wire::{ContainerInput, FrameStatus, OutputFrame};
use crate::queue::retry::Backoff;
use crate::queue::run::{RunControl, RunHandle, RunKind, RunOutcome, RunSpec, TaskJob};
use crate::queue::{
    ACTIVE_MESSAGE, ACTIVE_NONE, ACTIVE_TASK, Ctx, GroupShared, Mail, OUTCOME_TIMEOUT,
};

enum Work {
    Task(Box<dyn TaskJob>),
    Messages,
}

/// What a message run tracks for its settlement (contract §3.11 g–h).
struct MessageRun {
    group: RegisteredGroup,
    previous_cursor: String,
    output_sent: bool,
    errored: bool,
}

enum Driven<'a> {
    Message(&'a mut MessageRun),
    Task(&'a mut dyn TaskJob),
}

pub(super) struct Actor {
    ctx: Arc<Ctx>,
    shared: Arc<GroupShared>,
    rx: mpsc::Receiver<Mail>,
    mailbox_closed: bool,
    shutdown: watch::Receiver<bool>,
    /// A task received while a run was live. While it is held the mailbox is not read, so the actor
    /// keeps at most capacity + 1 task runs.
    deferred: Option<Box<dyn TaskJob>>,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

/// Completes when shutdown starts (or the queue is gone).
async fn shutdown_started(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|down| *down).await;
}

impl Actor {
    pub(super) fn new(ctx: Arc<Ctx>, shared: Arc<GroupShared>, rx: mpsc::Receiver<Mail>) -> Self {
        let shutdown = ctx.shutdown.clone();
        let backoff = ctx.settings.retry.backoff();
        Self {
            ctx,
            shared,
            rx,
            mailbox_closed: false,
            shutdown,
            deferred: None,
            backoff,
            retry_at: None,
        }
    }

    fn jid(&self) -> &str {
        &self.shared.jid
    }

    pub(super) async fn run(mut self) {
        loop {
            if self.ctx.shutting_down() {
                break;
            }
            if self.retry_at.is_some_and(|at| at <= Instant::now()) {
                self.retry_at = None;
                self.shared.pending_messages.store(true, Ordering::Release);
            }
            let Some(work) = self.next_work() else {
                if self.mailbox_closed {
                    break;
                }
                self.wait_idle().await;
                continue;
            };
            let work = match work {
                Work::Messages => match self.has_runnable_messages().await {
                    Some(true) => Work::Messages,
                    Some(false) => continue,
                    None => {
                        self.schedule_retry();
                        continue;
                    }
                },
                task => task,
            };
            let gate = Arc::clone(&self.ctx.gate);
            let permit = tokio::select! {
                biased;
                _ = shutdown_started(&mut self.shutdown) => {
                    drop(work);
                    break;
                }
                permit = gate.acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            // A task that arrived while we waited for the permit still goes first (contract §5.9).
            let work = match work {
                Work::Messages => match self.take_task_from_mailbox() {
                    Some(job) => {
                        self.shared.pending_messages.store(true, Ordering::Release);
                        Work::Task(job)
                    }
                    None => Work::Messages,
                },
                task => task,
            };
            self.run_with_permit(work, permit).await;
        }
        tracing::debug!(jid = %self.jid(), "group actor stopped");
    }

    /// Blocks until mail, a due retry or shutdown.
    async fn wait_idle(&mut self) {
        let retry_at = self.retry_at;
        tokio::select! {
            biased;
            _ = shutdown_started(&mut self.shutdown) => {}
            mail = self.rx.recv() => match mail {
                Some(mail) => self.absorb(mail),
                None => self.mailbox_closed = true,
            },
            _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
        }
        self.ctx
            .counters
            .actor_wakeups
            .fetch_add(1, Ordering::Relaxed);
    }

    fn absorb(&mut self, mail: Mail) {
        match mail {
            // The flag already says it; the doorbell only woke us.
            Mail::Wake => {}
            Mail::Task(job) => {
                if let Some(earlier) = self.deferred.replace(job) {
                    // Cannot happen: the mailbox is not read while a task is deferred. Keep both anyway.
                    self.deferred = Some(earlier);
                }
            }
        }
    }

    /// Tasks first, then messages (contract §5.8).
    fn next_work(&mut self) -> Option<Work> {
        if let Some(job) = self.deferred.take() {
            return Some(Work::Task(job));
        }
        if let Some(job) = self.take_task_from_mailbox() {
            return Some(Work::Task(job));
        }
        if self.shared.pending_messages.swap(false, Ordering::AcqRel) {
            return Some(Work::Messages);
        }
        None
    }

    fn take_task_from_mailbox(&mut self) -> Option<Box<dyn TaskJob>> {
        loop {
            match self.rx.try_recv() {
                Ok(Mail::Wake) => continue,
                Ok(Mail::Task(job)) => return Some(job),
                Err(mpsc::error::TryRecvError::Empty) => return None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.mailbox_closed = true;
                    return None;
                }
            }
        }
    }

    /// Checks, without holding a permit, whether a message run would do anything. `None` on a store error.
    async fn has_runnable_messages(&self) -> Option<bool> {
        let group = self.shared.group();
        match self.load_pending().await {
            Ok((_, pending)) => Some(is_triggered(
                &group,
                &self.ctx.settings.assistant_name,
                &pending,
            )),
            Err(e) => {
                tracing::error!(jid = %self.jid(), cause = %e, "cannot load pending messages");
                None
            }
        }
    }

    async fn load_pending(&self) -> Result<(String, Vec<Message>), crate::store::StoreHandleError> {
        let jid = self.shared.jid.clone();
        let name = self.ctx.settings.assistant_name.clone();
        let cursors = self.ctx.cursors.clone();
        self.ctx
            .store
            .call(move |s| cursors.pending_messages(s, &jid, &name))
            .await
    }

    async fn run_with_permit(&mut self, work: Work, permit: OwnedSemaphorePermit) {
        let counters = &self.ctx.counters;
        let active = counters.active_runs.fetch_add(1, Ordering::AcqRel) + 1;
        counters
            .peak_active_runs
            .fetch_max(active, Ordering::AcqRel);
        match work {
            Work::Task(job) => self.run_task(job).await,
            Work::Messages => self.run_messages().await,
        }
        self.ctx.counters.active_runs.fetch_sub(1, Ordering::AcqRel);
        drop(permit);
    }

    // ---- task runs ---------------------------------------------------------------------------------

    async fn run_task(&mut self, mut job: Box<dyn TaskJob>) {
        let id = job.task_id().to_string();
        {
            let mut ids = self.shared.tasks();
            ids.queued.remove(&id);
            ids.running = Some(id.clone());
        }
        if let Some(spec) = job.prepare().await {
            self.ctx
                .counters
                .runs_started
                .fetch_add(1, Ordering::Relaxed);
            self.shared.active.store(ACTIVE_TASK, Ordering::Release);
            match self.ctx.launcher.start(spec).await {
                Err(e) => {
                    tracing::error!(jid = %self.jid(), task = %id, cause = %e, "task run did not start");
                    job.finish(RunOutcome::Error(e.to_string())).await;
                }
                Ok(handle) => {
                    let outcome = self.drive(handle, Driven::Task(&mut *job)).await;
                    job.finish(outcome).await;
                }
            }
        }
        self.shared.active.store(ACTIVE_NONE, Ordering::Release);
        self.shared.tasks().running = None;
    }

    // ---- message runs (contract §3.11) -------------------------------------------------------------

    async fn run_messages(&mut self) {
        let group = self.shared.group();
        let name = self.ctx.settings.assistant_name.clone();
        // (b) pending set
        let (previous, pending) = match self.load_pending().await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(jid = %self.jid(), cause = %e, "cannot load pending messages");
                self.schedule_retry();
                return;
            }
        };
        // (b)–(c): nothing to do, or no trigger anywhere in the pending set
        if !is_triggered(&group, &name, &pending) {
            self.backoff = self.ctx.settings.retry.backoff();
            return;
        }
        // (d)–(e)
        let prompt = format_messages(&pending);
        let advanced = cursor_after(&pending, &previous);
        let (jid, folder, ts) = (
            self.shared.jid.clone(),
            group.folder.clone(),
            advanced.clone(),
        );
        let cursors = self.ctx.cursors.clone();
        let session = self
            .ctx
            .store
            .call(move |s| {
                // §12.7 fix: in memory only until the run answers (see AgentCursorCache).
                cursors.advance(s, &jid, &ts)?;
                s.get_session(&folder)
            })
            .await;
        let session_id = match session {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(jid = %self.jid(), cause = %e, "cannot advance cursor");
                self.schedule_retry();
                return;
            }
        };
        tracing::info!(jid = %self.jid(), messages = pending.len(), "starting message run");
        // (f)
        let outbound = Arc::clone(&self.ctx.outbound);
        outbound.set_typing(&self.shared.jid, true).await;
        let spec = RunSpec {
            input: ContainerInput {
                prompt,
                session_id,
                group_folder: group.folder.clone(),
                chat_jid: self.shared.jid.clone(),
                is_main: group.is_main(),
                is_scheduled_task: false,
            },
            group: group.clone(),
            kind: RunKind::Message,
        };
        let mut run = MessageRun {
            group,
            previous_cursor: previous,
            output_sent: false,
            errored: false,
        };
        self.ctx
            .counters
            .runs_started
            .fetch_add(1, Ordering::Relaxed);
        self.shared.ipc_output.store(false, Ordering::Release);
        self.shared.active.store(ACTIVE_MESSAGE, Ordering::Release);
        let outcome = match self.ctx.launcher.start(spec).await {
            Ok(handle) => self.drive(handle, Driven::Message(&mut run)).await,
            Err(e) => RunOutcome::Error(e.to_string()),
        };
        self.shared.active.store(ACTIVE_NONE, Ordering::Release);
        // §12.15 fix: a message or task the run sent over IPC is output too; a retry would repeat it.
        if self.shared.ipc_output.swap(false, Ordering::AcqRel) {
            run.output_sent = true;
        }
        outbound.set_typing(&self.shared.jid, false).await;
        // (g)–(h)
        let failed = run.errored || matches!(outcome, RunOutcome::Error(_));
        if let RunOutcome::Error(reason) = &outcome {
            tracing::warn!(jid = %self.jid(), cause = %reason, output_sent = run.output_sent, "message run failed");
        }
        match settle_message_run(&run.previous_cursor, failed, run.output_sent) {
            Settlement::Success => {
                self.backoff = self.ctx.settings.retry.backoff();
                self.commit_cursor().await;
            }
            Settlement::RollbackAndRetry { restore_to } => {
                let jid = self.shared.jid.clone();
                let cursors = self.ctx.cursors.clone();
                let restored = self
                    .ctx
                    .store
                    .call(move |s| cursors.set(s, &jid, &restore_to))
                    .await;
                if let Err(e) = restored {
                    tracing::error!(jid = %self.jid(), cause = %e, "cannot roll back cursor");
                }
                self.schedule_retry();
            }
        }
    }

    async fn commit_cursor(&self) {
        self.ctx.commit_cursor(&self.shared.jid).await;
    }

    /// Schedules a message check after the next backoff delay, or gives up (contract §5.10). The
    /// messages stay pending in the database either way.
    fn schedule_retry(&mut self) {
        if self.ctx.shutting_down() {
            return;
        }
        match self.backoff.next_delay() {
            Some(delay) => {
                self.ctx
                    .counters
                    .retries_scheduled
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(jid = %self.jid(), delay_ms = delay.as_millis() as u64, "retrying message run");
                self.retry_at = Some(Instant::now() + delay);
            }
            None => {
                tracing::error!(
                    jid = %self.jid(),
                    max_retries = self.ctx.settings.retry.max_retries,
                    "message run failed too often; leaving messages pending until the next message or restart"
                );
                self.backoff = self.ctx.settings.retry.backoff();
                self.retry_at = None;
            }
        }
    }

    /// Handles one frame of a message run (contract §4.7).
    async fn message_frame(&self, run: &mut MessageRun, frame: &OutputFrame) {
        if let Some(result) = &frame.result {
            let text = result_text(result);
            if let Some(out) = format_outbound(
                &text,
                &self.ctx.settings.assistant_name,
                self.ctx.outbound.wants_prefix(&self.shared.jid),
            ) {
                match self.ctx.outbound.send(&self.shared.jid, out).await {
                    Ok(()) => {
                        run.output_sent = true;
                        self.commit_cursor().await;
                    }
                    Err(e) => tracing::warn!(jid = %self.jid(), cause = %e, "reply not sent"),
                }
            }
        }
        if frame.status == FrameStatus::Error {
            run.errored = true;
        }
        if let Some(session) = frame.new_session_id.clone() {
            let folder = run.group.folder.clone();
            if let Err(e) = self
                .ctx
                .store
                .call(move |s| s.set_session(&folder, &session))
                .await
            {
                tracing::warn!(jid = %self.jid(), cause = %e, "cannot store session id");
            }
        }
    }

    /// Pipes the pending messages into the live message run (contract §3.10e, §5.12, §5.13). Returns
    /// whether input was sent. Untriggered messages in gated groups stay pending as context.
    async fn pipe_pending(&self, run: &MessageRun, control: &mut Box<dyn RunControl>) -> bool {
        if !self.shared.pending_messages.swap(false, Ordering::AcqRel) {
            return false;
        }
        let pending = match self.load_pending().await {
            Ok((_, pending)) => pending,
            Err(e) => {
                tracing::error!(jid = %self.jid(), cause = %e, "cannot load messages to pipe");
                self.shared.pending_messages.store(true, Ordering::Release);
                return false;
            }
        };
        if !is_triggered(&run.group, &self.ctx.settings.assistant_name, &pending) {
            return false;
        }
        let Some(last) = pending.last().map(|m| m.timestamp.clone()) else {
            return false;
        };
        match control.send_input(format_messages(&pending)).await {
            Ok(()) => {
                let jid = self.shared.jid.clone();
                let cursors = self.ctx.cursors.clone();
                if let Err(e) = self
                    .ctx
                    .store
                    .call(move |s| cursors.advance(s, &jid, &last))
                    .await
                {
                    tracing::error!(jid = %self.jid(), cause = %e, "cannot advance cursor after piping");
                }
                tracing::debug!(jid = %self.jid(), messages = pending.len(), "piped follow-up");
                true
            }
            Err(e) => {
                // No live input after all: a new run picks the messages up after this one.
                tracing::warn!(jid = %self.jid(), cause = %e, "cannot pipe follow-up");
                self.shared.pending_messages.store(true, Ordering::Release);
                false
            }
        }
    }

    // ---- the live run ------------------------------------------------------------------------------

    /// Drives a live run to its end: frames, idle close (contract §5.15, §12.6), follow-up piping (message
    /// runs only, §12.12), preemption of an idle run by a queued task, and shutdown close/kill (§12.17).
    async fn drive(&mut self, handle: RunHandle, mut driven: Driven<'_>) -> RunOutcome {
        let RunHandle {
            mut frames,
            mut outcome,
            mut control,
        } = handle;
        let idle_timeout = self.ctx.settings.idle_timeout;
        let grace = self.ctx.settings.shutdown_grace;
        // §12.6 fix: the idle clock starts at spawn and restarts at every frame of any kind.
        let mut idle_at = Instant::now() + idle_timeout;
        let mut waiting_for_input = false;
        let mut close_when_idle = false;
        let mut input_closed = false;
        let mut frames_done = false;
        let mut outcome_deadline: Option<Instant> = None;
        let mut kill_at: Option<Instant> = None;
        let mut killed = false;
        loop {
            let mailbox_open = self.deferred.is_none() && !self.mailbox_closed;
            tokio::select! {
                biased;
                _ = shutdown_started(&mut self.shutdown), if kill_at.is_none() => {
                    if !input_closed {
                        control.close_input().await;
                        input_closed = true;
                    }
                    kill_at = Some(Instant::now() + grace);
                }
                _ = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() && !killed => {
                    tracing::warn!(jid = %self.jid(), "run did not finish within the shutdown grace; killing it");
                    control.kill().await;
                    killed = true;
                }
                frame = frames.recv(), if !frames_done => match frame {
                    None => {
                        frames_done = true;
                        outcome_deadline = Some(Instant::now() + OUTCOME_TIMEOUT);
                    }
                    Some(frame) => {
                        idle_at = Instant::now() + idle_timeout;
                        let has_result = frame.result.is_some();
                        match &mut driven {
                            Driven::Message(run) => self.message_frame(run, &frame).await,
                            Driven::Task(job) => job.on_frame(&frame).await,
                        }
                        if has_result {
                            waiting_for_input = true;
                            if close_when_idle && !input_closed {
                                control.close_input().await;
                                input_closed = true;
                            }
                        }
                    }
                },
                result = &mut outcome, if frames_done => {
                    return result.unwrap_or_else(|_| RunOutcome::Error("run ended without an outcome".into()));
                }
                _ = sleep_until(outcome_deadline.unwrap_or_else(Instant::now)), if outcome_deadline.is_some() => {
                    return RunOutcome::Error("run output ended but no outcome was reported".into());
                }
                _ = sleep_until(idle_at), if !input_closed && !frames_done => {
                    tracing::debug!(jid = %self.jid(), "idle timeout; closing input");
                    control.close_input().await;
                    input_closed = true;
                }
                mail = self.rx.recv(), if mailbox_open => match mail {
                    None => self.mailbox_closed = true,
                    Some(Mail::Task(job)) => {
                        self.deferred = Some(job);
                        // §12.6 fix: an idle run makes way for the task at once; a busy one when it next goes idle.
                        if waiting_for_input && !input_closed {
                            control.close_input().await;
                            input_closed = true;
                        } else {
                            close_when_idle = true;
                        }
                    }
                    Some(Mail::Wake) => {
                        if let Driven::Message(run) = &mut driven
                            && !input_closed
                            && !close_when_idle
                            && self.pipe_pending(run, &mut control).await
                        {
                            waiting_for_input = false;
                            idle_at = Instant::now() + idle_timeout;
                        }
                    }
                },
            }
        }
    }
}
