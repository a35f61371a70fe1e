//! The seams between the queue and the components it drives: the sandbox that starts runs, the channel
//! that carries replies, and the scheduler's task jobs.
//!
//! Futures are boxed so the traits stay object-safe: the host picks implementations at startup and the
//! queue holds them as `Arc<dyn …>`.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

use crate::core::types::RegisteredGroup;
use crate::core::wire::{ContainerInput, OutputFrame};

/// A boxed, `Send` future, as the seam traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which kind of work a run serves. Follow-up messages are piped only into message runs (contract §12.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Message,
    Task,
}

/// Everything a launcher needs to start one run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The JSON object written to the runner's stdin (contract §7.7).
    pub input: ContainerInput,
    /// The group the run belongs to: folder, per-group container config and timeout.
    pub group: RegisteredGroup,
    pub kind: RunKind,
}

/// How a run ended, once its output stream is closed (contract §3.11g, §6.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The process exited cleanly.
    Success,
    /// The run failed: non-zero exit, timeout, killed, unreadable output. The text is for logs and run logs.
    Error(String),
}

/// Why a launcher could not start a run or deliver input to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The run could not be started at all.
    #[error("cannot start run: {0}")]
    Start(String),
    /// Follow-up input could not be handed to the live run.
    #[error("cannot pipe input: {0}")]
    Input(String),
}

/// A live run as the launcher hands it to the queue.
///
/// `frames` delivers parsed output frames in order and ends when the runner's output ends; `outcome` resolves
/// after that with the final result. Both are channels so the actor can wait on them alongside its mailbox
/// and timers without losing anything when another branch wins.
pub struct RunHandle {
    pub frames: mpsc::Receiver<OutputFrame>,
    pub outcome: oneshot::Receiver<RunOutcome>,
    pub control: Box<dyn RunControl>,
}

/// Input-side control of a live run. In the product these are IPC file writes (contract §5.13, §5.14)
/// and a container kill.
pub trait RunControl: Send {
    /// Pipes a follow-up prompt (the formatted `<messages>` XML) into the run.
    fn send_input(&mut self, text: String) -> BoxFuture<'_, Result<(), RunError>>;
    /// Asks the runner to finish: no more input will come (the `_close` sentinel).
    fn close_input(&mut self) -> BoxFuture<'_, ()>;
    /// Stops the run now. Used when the shutdown grace period has run out.
    fn kill(&mut self) -> BoxFuture<'_, ()>;
}

/// Starts runs. The sandbox implements this; tests use [`crate::queue::testing::ScriptedLauncher`].
pub trait RunLauncher: Send + Sync + 'static {
    fn start(&self, spec: RunSpec) -> BoxFuture<'_, Result<RunHandle, RunError>>;
}

/// Why a reply could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot send to {chat_jid}: {reason}")]
pub struct OutboundError {
    pub chat_jid: String,
    pub reason: String,
}

/// The outbound side of a chat channel, as far as runs need it.
pub trait Outbound: Send + Sync + 'static {
    /// Sends final text (already stripped and prefixed) to a chat.
    fn send(&self, chat_jid: &str, text: String) -> BoxFuture<'_, Result<(), OutboundError>>;
    /// Switches the typing indicator. Failures are cosmetic and ignored.
    fn set_typing(&self, chat_jid: &str, on: bool) -> BoxFuture<'_, ()>;
    /// Whether replies get the `<assistant>: ` prefix (contract §4.9). WhatsApp wants it.
    fn wants_prefix(&self, _chat_jid: &str) -> bool {
        true
    }
}

/// A scheduled-task run waiting in a group's mailbox. The scheduler implements it (contract §6.6–6.12);
/// the queue only decides when it runs and drives the live run.
pub trait TaskJob: Send + Sync + 'static {
    /// The task id, used to skip a task that is already queued or running (contract §12.9).
    fn task_id(&self) -> &str;
    /// Called once the group's slot and a global permit are held. Re-checks that the task should still
    /// run and builds its input; `None` skips the run (the job logs why).
    fn prepare(&mut self) -> BoxFuture<'_, Option<RunSpec>>;
    /// Handles one output frame (delivery, last result, errors).
    fn on_frame<'a>(&'a mut self, frame: &'a OutputFrame) -> BoxFuture<'a, ()>;
    /// Records the run's end. `outcome` is `Error` for a run that could not start, too.
    fn finish(self: Box<Self>, outcome: RunOutcome) -> BoxFuture<'static, ()>;
}
