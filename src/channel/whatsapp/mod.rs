//! The WhatsApp channel (contract §11) on the `whatsapp-rust` crate, behind the `whatsapp` feature.
//!
//! - [`jid`]: which chats the channel owns, LID and device-suffix rules.
//! - [`inbound`]: library message + envelope → host [`Message`](crate::core::types::Message).
//! - [`adapter`]: the logic between library events and the host (LID translation, outgoing FIFO,
//!   typing, group subjects, link state), generic over [`ops::WaOps`] so it is tested without WhatsApp.
//! - [`session`]: builds library sessions and restarts them with backoff.
//! - [`auth`]: the credential store's place and permissions; [`pair`] and [`qr`]: interactive linking.
//!
//! The host never pairs by itself (contract §11.2): an unpaired store makes [`Channel::connect`] fail
//! with [`WhatsAppError::NotPaired`], and a logout moves [`LinkState`] to `LoggedOut`; the host exits
//! on either ([`LinkState::exit_code`]). `nanoclaw whatsapp pair` links the account.

pub mod adapter;
pub mod auth;
pub mod inbound;
pub mod jid;
pub mod ops;
pub mod pair;
pub mod qr;
pub mod session;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::channel::{Channel, ChannelError, Inbound};
use adapter::{Adapter, GROUP_SYNC_MAX_AGE};
use auth::WaPaths;
use ops::ClientOps;

/// Group subjects the channel learned by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSubjects {
    /// `(group jid, subject)`, non-empty subjects only.
    pub groups: Vec<(String, String)>,
    /// A full sync (each connection open, the daily timer): the host renames the chats rows and
    /// sets `__group_sync__` (contract §11.8). `false` for one subject-change notification, which
    /// renames its chat only.
    pub full_sync: bool,
}

/// Receives [`GroupSubjects`]. Called on a runtime thread: hand the work off, don't block.
pub type GroupSink = Arc<dyn Fn(GroupSubjects) + Send + Sync>;

/// How long [`Channel::connect`] waits for the first open by default before returning while the
/// channel keeps trying in the background.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the link to WhatsApp stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Session starting, not yet connected.
    Starting,
    Connected,
    /// Between connections; the library or the supervisor is reconnecting.
    Disconnected,
    /// The store holds no credentials, or the server asked for a QR code. Terminal.
    NeedsPairing,
    /// The phone unlinked this device (or the account was locked). Terminal.
    LoggedOut,
    /// [`Channel::disconnect`] was called. Terminal.
    Stopped,
}

impl LinkState {
    /// States the channel does not leave by itself.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::NeedsPairing | Self::LoggedOut | Self::Stopped)
    }

    /// The process exit code the original host used for this state (contract §11.2–11.3): 0 after a
    /// logout, 1 when pairing is needed; `None` for states the host keeps running in.
    pub fn exit_code(self) -> Option<u8> {
        match self {
            Self::LoggedOut => Some(0),
            Self::NeedsPairing => Some(1),
            _ => None,
        }
    }
}

/// Errors of the WhatsApp channel.
#[derive(Debug, thiserror::Error)]
pub enum WhatsAppError {
    /// No credentials: link the account with `nanoclaw whatsapp pair`.
    #[error("whatsapp is not paired; run `nanoclaw whatsapp pair`")]
    NotPaired,
    /// The phone unlinked this device; pair again with `nanoclaw whatsapp pair --reset`.
    #[error("whatsapp logged out; run `nanoclaw whatsapp pair --reset`")]
    LoggedOut,
    /// The operation needs a live connection.
    #[error("whatsapp is not connected")]
    NotConnected,
    /// Not a chat this channel can send to.
    #[error("not a whatsapp chat jid: {0:?}")]
    InvalidJid(String),
    /// Too many replies are waiting for a connection.
    #[error("whatsapp outbox full ({0} replies waiting)")]
    OutboxFull(usize),
    /// A pair-code phone number that is not 7–15 digits with country code.
    #[error("invalid phone number {0:?}: digits with country code, e.g. 15551234567")]
    InvalidPhone(String),
    /// Pairing ended without a link; the text is the status-file reason.
    #[error("pairing failed: {0}")]
    PairFailed(String),
    /// The credential store could not be opened.
    #[error("whatsapp auth store: {0}")]
    Store(String),
    /// The library reported an error.
    #[error("whatsapp: {0}")]
    Library(String),
    /// The QR code could not be encoded or written.
    #[error("qr code: {0}")]
    Qr(String),
    /// A file under the WhatsApp state directory.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<WhatsAppError> for ChannelError {
    fn from(e: WhatsAppError) -> Self {
        ChannelError::Backend(Box::new(e))
    }
}

/// What the channel needs besides the inbound queue.
#[derive(Clone)]
pub struct WhatsAppOptions {
    /// The host's data dir; the channel keeps its state in `<data_dir>/whatsapp/`.
    pub data_dir: PathBuf,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// When group subjects were last synced (the `__group_sync__` row), for the 24 h cache.
    pub last_group_sync: Option<DateTime<Utc>>,
    /// Where channel-initiated group syncs deliver; `None` disables them.
    pub group_sink: Option<GroupSink>,
}

impl WhatsAppOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            last_group_sync: None,
            group_sink: None,
        }
    }
}

/// The WhatsApp channel. Create with [`WhatsAppChannel::new`], then [`Channel::connect`].
pub struct WhatsAppChannel {
    paths: WaPaths,
    connect_timeout: Duration,
    adapter: Arc<Adapter<ClientOps>>,
    stop: watch::Sender<bool>,
    /// The supervisor and the daily sync timer; joined on disconnect so none outlives the channel.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl WhatsAppChannel {
    pub fn new(options: WhatsAppOptions, inbound: mpsc::Sender<Inbound>) -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            paths: WaPaths::new(&options.data_dir),
            connect_timeout: options.connect_timeout,
            adapter: Arc::new(Adapter::new(
                inbound,
                options.group_sink,
                options.last_group_sync,
            )),
            stop,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Follows the link state; the host exits when it turns terminal ([`LinkState::exit_code`]).
    pub fn link_state(&self) -> watch::Receiver<LinkState> {
        self.adapter.subscribe()
    }

    /// The credential database.
    pub fn auth_db(&self) -> &Path {
        &self.paths.auth_db
    }

    async fn stop_tasks(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for WhatsAppChannel {
    /// A channel dropped without `disconnect` still stops its tasks (the supervisor shuts the
    /// session down gracefully as it exits).
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Wakes daily; the 24 h cache decides whether a fetch happens (contract §11.8).
async fn group_timer(adapter: Arc<Adapter<ClientOps>>, mut stop: watch::Receiver<bool>) {
    let period = GROUP_SYNC_MAX_AGE
        .to_std()
        .unwrap_or(Duration::from_secs(86_400));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = ticks.tick() => adapter.sync_to_sink().await,
            _ = stop.changed() => break,
        }
    }
}

#[async_trait]
impl Channel for WhatsAppChannel {
    fn name(&self) -> &'static str {
        "whatsapp"
    }

    /// Starts the session and waits for the first open (contract §3.13 step 5), up to the connect
    /// timeout; after that it returns `Ok` and keeps connecting in the background. Fails at once
    /// when the account is not paired or logged out.
    async fn connect(&self) -> Result<(), ChannelError> {
        if !self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return Ok(());
        }
        auth::prepare(&self.paths)?;
        self.adapter.restart_state();
        let _ = self.stop.send(false);
        let mut state = self.adapter.subscribe();
        let supervisor = tokio::spawn(session::supervise(
            self.adapter.clone(),
            self.paths.auth_db.clone(),
            self.stop.subscribe(),
        ));
        let timer = tokio::spawn(group_timer(self.adapter.clone(), self.stop.subscribe()));
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([supervisor, timer]);

        let first_open = async {
            loop {
                match *state.borrow_and_update() {
                    LinkState::Connected => return Ok(()),
                    LinkState::NeedsPairing => return Err(WhatsAppError::NotPaired),
                    LinkState::LoggedOut => return Err(WhatsAppError::LoggedOut),
                    LinkState::Stopped => return Err(WhatsAppError::NotConnected),
                    LinkState::Starting | LinkState::Disconnected => {}
                }
                if state.changed().await.is_err() {
                    return Err(WhatsAppError::NotConnected);
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, first_open).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.stop_tasks().await;
                Err(e.into())
            }
            Err(_) => {
                tracing::warn!(
                    timeout_s = self.connect_timeout.as_secs(),
                    "whatsapp not connected yet; continuing to connect in the background"
                );
                Ok(())
            }
        }
    }

    async fn send_message(&self, jid: &str, text: &str) -> Result<(), ChannelError> {
        Ok(self.adapter.send_text(jid, text).await?)
    }

    async fn set_typing(&self, jid: &str, typing: bool) -> Result<(), ChannelError> {
        Ok(self.adapter.set_typing(jid, typing).await?)
    }

    /// Empty when skipped by the 24 h cache (unless `force`).
    async fn sync_group_metadata(
        &self,
        force: bool,
    ) -> Result<Vec<(String, String)>, ChannelError> {
        Ok(self.adapter.sync_groups(force).await?.unwrap_or_default())
    }

    fn owns_jid(&self, jid: &str) -> bool {
        jid::owns_jid(jid)
    }

    fn is_connected(&self) -> bool {
        self.adapter.is_connected()
    }

    /// Stops the session gracefully (the library flushes its state) and the timers.
    async fn disconnect(&self) -> Result<(), ChannelError> {
        self.stop_tasks().await;
        self.adapter.detach();
        self.adapter.set_state(LinkState::Stopped);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
