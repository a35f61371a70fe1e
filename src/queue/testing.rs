//! In-process implementations of the queue's seams, for unit tests and the queue benchmark.
//!
//! These are a test seam, not the product path: the sandbox provides the real [`RunLauncher`] and a channel
//! the real [`Outbound`]. [`ScriptedLauncher`] plays a per-run script (stream frames, wait for input or
//! `_close`, hang, fail) and records every call so tests can assert on what the queue did.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::core::wire::{FrameStatus, OutputFrame};
use crate::queue::run::{
    BoxFuture, Outbound, OutboundError, RunControl, RunError, RunHandle, RunLauncher, RunOutcome,
    RunSpec,
};

/// One step of a scripted run.
#[derive(Debug, Clone)]
pub enum Step {
    /// Emit this frame.
    Frame(OutputFrame),
    /// Emit a success frame with this result text.
    Reply(String),
    /// Wait this long (cut short by a kill).
    Sleep(Duration),
    /// Wait until the input is closed (or the run is killed).
    WaitClose,
    /// Ignore `_close`; wait until killed.
    Hang,
    /// Behave like an interactive agent: after `think`, reply `reply` to the prompt; then, for every piped
    /// input, think and reply again; end when the input is closed.
    Converse { think: Duration, reply: String },
    /// End the script with this outcome.
    Exit(RunOutcome),
}

/// What a run does.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// `start` fails with this reason.
    FailToStart(String),
    /// The run plays these steps, then exits successfully unless a step said otherwise.
    Steps(Vec<Step>),
}

impl Behavior {
    /// Replies once and exits successfully.
    pub fn reply(text: &str) -> Self {
        Self::Steps(vec![Step::Reply(text.to_string())])
    }

    /// Exits with an error without any output.
    pub fn fail(reason: &str) -> Self {
        Self::Steps(vec![Step::Exit(RunOutcome::Error(reason.to_string()))])
    }
}

/// A success frame carrying `text`.
pub fn reply_frame(text: &str) -> OutputFrame {
    OutputFrame {
        status: FrameStatus::Success,
        result: Some(serde_json::Value::String(text.to_string())),
        new_session_id: None,
        error: None,
    }
}

/// What happened to one run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// 0-based start order across all runs.
    pub index: usize,
    pub spec: RunSpec,
    /// Follow-up texts piped in, in order.
    pub inputs: Vec<String>,
    pub closed: bool,
    pub killed: bool,
    pub started_at: Instant,
    pub ended_at: Option<Instant>,
}

type Script = dyn Fn(&RunSpec, usize) -> Behavior + Send + Sync;

#[derive(Default)]
struct RunInbox {
    inputs: VecDeque<String>,
    closed: bool,
    killed: bool,
}

struct LiveState {
    inbox: Mutex<RunInbox>,
    changed: Notify,
}

impl LiveState {
    fn inbox(&self) -> std::sync::MutexGuard<'_, RunInbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Shared {
    script: Box<Script>,
    records: Mutex<Vec<RunRecord>>,
    live: AtomicUsize,
    peak_live: AtomicUsize,
    /// `<message …>` lines handed to runs so far (prompts and piped inputs).
    message_lines: AtomicUsize,
}

fn count_message_lines(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("<message ")).count()
}

impl Shared {
    fn records(&self) -> std::sync::MutexGuard<'_, Vec<RunRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A [`RunLauncher`] that plays scripts and records calls. Cloning shares the records.
#[derive(Clone)]
pub struct ScriptedLauncher {
    shared: Arc<Shared>,
}

impl ScriptedLauncher {
    /// `script(spec, index)` decides each run's behaviour; `index` counts runs from 0.
    pub fn new(script: impl Fn(&RunSpec, usize) -> Behavior + Send + Sync + 'static) -> Self {
        Self {
            shared: Arc::new(Shared {
                script: Box::new(script),
                records: Mutex::new(Vec::new()),
                live: AtomicUsize::new(0),
                peak_live: AtomicUsize::new(0),
                message_lines: AtomicUsize::new(0),
            }),
        }
    }

    /// Every run replies `text` once.
    pub fn always(behavior: Behavior) -> Self {
        Self::new(move |_, _| behavior.clone())
    }

    /// Snapshot of all runs so far, in start order.
    pub fn records(&self) -> Vec<RunRecord> {
        self.shared.records().clone()
    }

    /// Runs started so far (including ones that failed to start).
    pub fn started(&self) -> usize {
        self.shared.records().len()
    }

    /// Runs live right now.
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// `<message>` lines handed to runs so far, in prompts and piped inputs (a cheap progress count).
    pub fn message_lines(&self) -> usize {
        self.shared.message_lines.load(Ordering::Acquire)
    }

    /// Most runs ever live at once.
    pub fn peak_live(&self) -> usize {
        self.shared.peak_live.load(Ordering::Acquire)
    }
}

impl RunLauncher for ScriptedLauncher {
    fn start(&self, spec: RunSpec) -> BoxFuture<'_, Result<RunHandle, RunError>> {
        Box::pin(async move {
            self.shared
                .message_lines
                .fetch_add(count_message_lines(&spec.input.prompt), Ordering::AcqRel);
            let index = {
                let mut records = self.shared.records();
                let index = records.len();
                records.push(RunRecord {
                    index,
                    spec: spec.clone(),
                    inputs: Vec::new(),
                    closed: false,
                    killed: false,
                    started_at: Instant::now(),
                    ended_at: Some(Instant::now()),
                });
                index
            };
            let steps = match (self.shared.script)(&spec, index) {
                Behavior::FailToStart(reason) => return Err(RunError::Start(reason)),
                Behavior::Steps(steps) => steps,
            };
            if let Some(r) = self.shared.records().get_mut(index) {
                r.ended_at = None;
            }
            let live = self.shared.live.fetch_add(1, Ordering::AcqRel) + 1;
            self.shared.peak_live.fetch_max(live, Ordering::AcqRel);
            let state = Arc::new(LiveState {
                inbox: Mutex::new(RunInbox::default()),
                changed: Notify::new(),
            });
            let (frames_tx, frames) = mpsc::channel(16);
            let (outcome_tx, outcome) = oneshot::channel();
            let shared = Arc::clone(&self.shared);
            let play_state = Arc::clone(&state);
            tokio::spawn(async move {
                let result = play(steps, &frames_tx, &play_state).await;
                drop(frames_tx);
                shared.live.fetch_sub(1, Ordering::AcqRel);
                if let Some(r) = shared.records().get_mut(index) {
                    r.ended_at = Some(Instant::now());
                }
                let _ = outcome_tx.send(result);
            });
            Ok(RunHandle {
                frames,
                outcome,
                control: Box::new(ScriptedControl {
                    shared: Arc::clone(&self.shared),
                    state,
                    index,
                }),
            })
        })
    }
}

enum Waited {
    Input,
    Closed,
    Killed,
}

/// Waits for a kill, or an input when `take_input`, or the close when `honor_close`.
async fn wait_inbox(state: &LiveState, take_input: bool, honor_close: bool) -> Waited {
    loop {
        let notified = state.changed.notified();
        {
            let mut inbox = state.inbox();
            if inbox.killed {
                return Waited::Killed;
            }
            if take_input && let Some(text) = inbox.inputs.pop_front() {
                drop(text);
                return Waited::Input;
            }
            if honor_close && inbox.closed {
                return Waited::Closed;
            }
        }
        notified.await;
    }
}

/// Sleeps, cut short by a kill. Returns false when killed.
async fn sleep_unless_killed(state: &LiveState, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = wait_inbox(state, false, false) => false,
    }
}

async fn play(
    steps: Vec<Step>,
    frames: &mpsc::Sender<OutputFrame>,
    state: &LiveState,
) -> RunOutcome {
    let killed = || RunOutcome::Error("killed".to_string());
    for step in steps {
        match step {
            Step::Frame(frame) => {
                if frames.send(frame).await.is_err() {
                    return killed();
                }
            }
            Step::Reply(text) => {
                if frames.send(reply_frame(&text)).await.is_err() {
                    return killed();
                }
            }
            Step::Sleep(d) => {
                if !sleep_unless_killed(state, d).await {
                    return killed();
                }
            }
            Step::WaitClose => {
                if let Waited::Killed = wait_inbox(state, false, true).await {
                    return killed();
                }
            }
            Step::Hang => {
                wait_inbox(state, false, false).await;
                return killed();
            }
            Step::Converse { think, reply } => loop {
                if !sleep_unless_killed(state, think).await {
                    return killed();
                }
                if frames.send(reply_frame(&reply)).await.is_err() {
                    return killed();
                }
                match wait_inbox(state, true, true).await {
                    Waited::Input => continue,
                    Waited::Closed => break,
                    Waited::Killed => return killed(),
                }
            },
            Step::Exit(outcome) => return outcome,
        }
    }
    RunOutcome::Success
}

struct ScriptedControl {
    shared: Arc<Shared>,
    state: Arc<LiveState>,
    index: usize,
}

impl ScriptedControl {
    fn update(&self, f: impl FnOnce(&mut RunInbox, &mut RunRecord)) {
        let mut records = self.shared.records();
        if let Some(record) = records.get_mut(self.index) {
            f(&mut self.state.inbox(), record);
        }
        drop(records);
        self.state.changed.notify_one();
    }
}

impl RunControl for ScriptedControl {
    fn send_input(&mut self, text: String) -> BoxFuture<'_, Result<(), RunError>> {
        Box::pin(async move {
            let ended = self
                .shared
                .records()
                .get(self.index)
                .is_none_or(|r| r.ended_at.is_some() || r.closed);
            if ended {
                return Err(RunError::Input("run is not accepting input".into()));
            }
            self.shared
                .message_lines
                .fetch_add(count_message_lines(&text), Ordering::AcqRel);
            self.update(|inbox, record| {
                record.inputs.push(text.clone());
                inbox.inputs.push_back(text);
            });
            Ok(())
        })
    }

    fn close_input(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.update(|inbox, record| {
                inbox.closed = true;
                record.closed = true;
            });
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.update(|inbox, record| {
                inbox.killed = true;
                record.killed = true;
            });
        })
    }
}

/// An [`Outbound`] that records sends and typing changes; it can be told to fail sends.
#[derive(Clone, Default)]
pub struct RecordingOutbound {
    inner: Arc<Mutex<OutboundLog>>,
}

/// Everything sent through a [`RecordingOutbound`].
#[derive(Debug, Clone, Default)]
pub struct OutboundLog {
    /// `(chat_jid, text)` in send order.
    pub sent: Vec<(String, String)>,
    /// `(chat_jid, on)` in order.
    pub typing: Vec<(String, bool)>,
    /// When set, sends fail with this reason.
    pub fail_sends: Option<String>,
}

impl RecordingOutbound {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn log(&self) -> OutboundLog {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Texts sent to `jid`, in order.
    pub fn sent_to(&self, jid: &str) -> Vec<String> {
        self.log()
            .sent
            .into_iter()
            .filter(|(j, _)| j == jid)
            .map(|(_, t)| t)
            .collect()
    }

    pub fn set_fail_sends(&self, reason: Option<&str>) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fail_sends = reason.map(str::to_string);
    }
}

impl Outbound for RecordingOutbound {
    fn send(&self, chat_jid: &str, text: String) -> BoxFuture<'_, Result<(), OutboundError>> {
        let chat_jid = chat_jid.to_string();
        Box::pin(async move {
            let mut log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(reason) = &log.fail_sends {
                return Err(OutboundError {
                    chat_jid,
                    reason: reason.clone(),
                });
            }
            log.sent.push((chat_jid, text));
            Ok(())
        })
    }

    fn set_typing(&self, chat_jid: &str, on: bool) -> BoxFuture<'_, ()> {
        let chat_jid = chat_jid.to_string();
        Box::pin(async move {
            self.inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .typing
                .push((chat_jid, on));
        })
    }
}
