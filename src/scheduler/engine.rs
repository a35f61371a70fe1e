//! The due-task engine: sleep until the earliest `next_run`, wake early on change, hand due tasks to the
//! queue. An idle engine performs no queries and no wake-ups.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use crate::core::time::{iso, parse_iso};
use crate::core::types::ScheduledTask;
use crate::queue::TaskEnqueue;
use crate::scheduler::Inner;
use crate::scheduler::job::{TaskRunJob, pause_orphan};

/// Sorts after every stored timestamp: "all active tasks with a next_run".
const END_OF_TIME: &str = "9999-12-31T23:59:59.999Z";

pub(super) async fn run(inner: Arc<Inner>) {
    let mut stop = inner.stop_tx.subscribe();
    loop {
        if *stop.borrow() {
            break;
        }
        let target = match pass(&inner).await {
            Ok(target) => target,
            Err(e) => {
                // Nothing to sleep towards; a later change or the max-sleep re-check retries.
                tracing::error!(cause = %e, "scheduler pass failed");
                Some(inner.clock.now() + chrono::TimeDelta::seconds(60))
            }
        };
        // Sleep until the target, re-checking the wall clock at most every max_sleep without a query.
        loop {
            let sleep_for = target.map(|t| {
                (t - inner.clock.now())
                    .to_std()
                    .unwrap_or_default()
                    .min(inner.settings.max_sleep)
            });
            let timed_out = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                _ = inner.wake.notified() => false,
                _ = tokio::time::sleep(sleep_for.unwrap_or_default()), if sleep_for.is_some() => true,
            };
            inner.counters.wakeups.fetch_add(1, Ordering::Relaxed);
            if !timed_out || target.is_some_and(|t| inner.clock.now() >= t) {
                break;
            }
        }
    }
}

/// One pass: dispatch due tasks that are not in flight; return the earliest future `next_run`.
async fn pass(inner: &Arc<Inner>) -> Result<Option<DateTime<Utc>>, crate::store::StoreHandleError> {
    inner.counters.passes.fetch_add(1, Ordering::Relaxed);
    let now = inner.clock.now();
    let now_iso = iso(now);
    let (due, next) = inner
        .store
        .call(move |s| {
            let due = s.due_tasks(&now_iso)?;
            let mut next = s.next_due_time()?;
            if next.as_deref().is_some_and(|n| n <= now_iso.as_str()) {
                // The minimum is due now (dispatched below) or in flight (its end wakes us): look past it.
                next = s
                    .due_tasks(END_OF_TIME)?
                    .into_iter()
                    .filter_map(|t| t.next_run)
                    .find(|n| n.as_str() > now_iso.as_str());
            }
            Ok((due, next))
        })
        .await?;
    for task in due {
        dispatch(inner, task).await;
    }
    Ok(next.as_deref().and_then(parse_iso))
}

async fn dispatch(inner: &Arc<Inner>, task: ScheduledTask) {
    if !inner.in_flight().insert(task.id.clone()) {
        return;
    }
    let jid = task.chat_jid.clone();
    let snapshot = task.clone();
    let job = Box::new(TaskRunJob::new(task, Arc::clone(inner)));
    match inner.queue.enqueue_task(&jid, job).await {
        TaskEnqueue::Queued => {
            inner.counters.dispatched.fetch_add(1, Ordering::Relaxed);
        }
        TaskEnqueue::UnknownGroup => {
            // No actor for the task's chat: the same outcome as an unknown folder (§12.10).
            let run_at = iso(inner.clock.now());
            let task_id = snapshot.id.clone();
            if let Err(e) = inner
                .store
                .call(move |s| pause_orphan(s, &snapshot, &run_at))
                .await
            {
                tracing::error!(task = %task_id, cause = %e, "cannot pause orphaned task");
            }
            tracing::warn!(chat = %jid, "task for an unknown group paused");
        }
        TaskEnqueue::AlreadyQueued | TaskEnqueue::AlreadyRunning | TaskEnqueue::ShuttingDown => {}
    }
}
