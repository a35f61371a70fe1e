//! The local channel: a Unix socket speaking JSON lines. The embedded default (no cloud account
//! needed) and the vehicle of the end-to-end tests; `nanoclaw chat` is its terminal client.
//!
//! Chats are `local:<name>`. Every connected client sees every reply and typing event and filters by
//! chat itself; a client that falls behind loses the lines it missed (it is told), never the host.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinSet;

use crate::channel::{Channel, ChannelError, Inbound};
use crate::core::time::now_iso;
use crate::core::types::Message;
use crate::core::wire::{LocalClientLine, LocalHistoryEntry, LocalServerLine};

/// Where the host listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/nanoclaw/local.sock";
/// Chat JIDs of this channel start with this.
pub const JID_PREFIX: &str = "local:";
/// The main group's chat, registered on first start.
pub const MAIN_CHAT: &str = "local:main";
/// Longest accepted line; longer lines are refused and skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Concurrent clients; more wait for a slot.
pub const MAX_CLIENTS: usize = 16;
/// Replies buffered per client before a slow client starts losing lines.
const CLIENT_BUFFER: usize = 256;
/// Most history entries one request returns.
pub const MAX_HISTORY: u32 = 200;

/// Answers history requests: `(chat, limit)` → recent entries, oldest first. Runs on a blocking thread.
pub type HistoryFn = Arc<dyn Fn(&str, usize) -> Vec<LocalHistoryEntry> + Send + Sync>;

/// Validates a chat JID: `local:` followed by 1–64 of `[a-z0-9-]`.
pub fn valid_chat(jid: &str) -> bool {
    jid.strip_prefix(JID_PREFIX).is_some_and(|name| {
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// The local channel. Create with [`LocalChannel::new`], then [`Channel::connect`].
pub struct LocalChannel {
    path: PathBuf,
    assistant_name: String,
    inbound: mpsc::Sender<Inbound>,
    outbound: broadcast::Sender<String>,
    history: Option<HistoryFn>,
    connected: AtomicBool,
    seq: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    /// The accept loop; joined on disconnect so no client task outlives the channel.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LocalChannel {
    pub fn new(
        path: impl Into<PathBuf>,
        assistant_name: impl Into<String>,
        inbound: mpsc::Sender<Inbound>,
        history: Option<HistoryFn>,
    ) -> Self {
        let (outbound, _) = broadcast::channel(CLIENT_BUFFER);
        let (stop, _) = watch::channel(false);
        Self {
            path: path.into(),
            assistant_name: assistant_name.into(),
            inbound,
            outbound,
            history,
            connected: AtomicBool::new(false),
            seq: Arc::new(AtomicU64::new(0)),
            stop,
            task: Mutex::new(None),
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    fn broadcast(&self, line: &LocalServerLine) -> Result<(), ChannelError> {
        let text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        self.outbound
            .send(text)
            .map(|_| ())
            .map_err(|_| ChannelError::NoRecipient(chat_of(line).to_string()))
    }
}

fn chat_of(line: &LocalServerLine) -> &str {
    match line {
        LocalServerLine::Reply { chat, .. }
        | LocalServerLine::Typing { chat, .. }
        | LocalServerLine::History { chat, .. } => chat,
        LocalServerLine::Error { .. } => "",
    }
}

/// Removes a stale socket left by a crashed host; refuses to delete anything that is not a socket.
fn prepare_socket_path(path: &Path) -> Result<(), ChannelError> {
    let listen_err = |source| ChannelError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(listen_err),
        Ok(_) => Err(listen_err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        ))),
        Err(_) => Ok(()),
    }
}

#[async_trait]
impl Channel for LocalChannel {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn connect(&self) -> Result<(), ChannelError> {
        if self.connected.load(Ordering::SeqCst) {
            return Ok(());
        }
        prepare_socket_path(&self.path)?;
        let listener = UnixListener::bind(&self.path).map_err(|source| ChannelError::Listen {
            path: self.path.clone(),
            source,
        })?;
        // Owner and group (the operators) may talk to the host; others may not.
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o660))?;
        let _ = self.stop.send(false);
        let ctx = ClientCtx {
            inbound: self.inbound.clone(),
            outbound: self.outbound.clone(),
            history: self.history.clone(),
            seq: self.seq.clone(),
        };
        let stop = self.stop.subscribe();
        let handle = tokio::spawn(accept_loop(listener, ctx, stop));
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        self.connected.store(true, Ordering::SeqCst);
        tracing::info!(socket = %self.path.display(), "local channel listening");
        Ok(())
    }

    async fn send_message(&self, jid: &str, text: &str) -> Result<(), ChannelError> {
        if !self.connected.load(Ordering::SeqCst) {
            return Err(ChannelError::NotConnected("local"));
        }
        self.broadcast(&LocalServerLine::Reply {
            chat: jid.to_string(),
            from: self.assistant_name.clone(),
            text: text.to_string(),
        })
    }

    async fn set_typing(&self, jid: &str, typing: bool) -> Result<(), ChannelError> {
        if !self.connected.load(Ordering::SeqCst) {
            return Err(ChannelError::NotConnected("local"));
        }
        // Nobody watching is not an error for a typing hint.
        let _ = self.broadcast(&LocalServerLine::Typing {
            chat: jid.to_string(),
            typing,
        });
        Ok(())
    }

    async fn sync_group_metadata(
        &self,
        _force: bool,
    ) -> Result<Vec<(String, String)>, ChannelError> {
        Ok(Vec::new())
    }

    fn owns_jid(&self, jid: &str) -> bool {
        jid.starts_with(JID_PREFIX)
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// The terminal client shows who is speaking; a `Andy: ` prefix in the text would be noise.
    fn wants_prefix(&self) -> bool {
        false
    }

    async fn disconnect(&self) -> Result<(), ChannelError> {
        self.connected.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let handle = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        let _ = std::fs::remove_file(&self.path);
        Ok(())
    }
}

#[derive(Clone)]
struct ClientCtx {
    inbound: mpsc::Sender<Inbound>,
    outbound: broadcast::Sender<String>,
    history: Option<HistoryFn>,
    seq: Arc<AtomicU64>,
}

async fn accept_loop(listener: UnixListener, ctx: ClientCtx, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = slots.clone().acquire_owned().await else { break };
                    let ctx = ctx.clone();
                    let stop = stop.clone();
                    clients.spawn(async move {
                        serve_client(stream, ctx, stop).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(cause = %e, "local channel accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    clients.shutdown().await;
}

/// Reads one line of at most `max` bytes (without the newline). `Ok(None)` at EOF;
/// `Err(InvalidData)` for an over-long line, which is consumed up to its newline.
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return if line.is_empty() && !too_long {
                Ok(None)
            } else if too_long {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "line too long",
                ))
            } else {
                Ok(Some(line))
            };
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.map_or(buf.len(), |i| i + 1);
        reader.consume(used);
        if found.is_some() {
            return if too_long {
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "line too long",
                ))
            } else {
                Ok(Some(line))
            };
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(w: &mut W, line: &str) -> std::io::Result<()> {
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\n").await
}

fn error_line(error: impl Into<String>) -> String {
    serde_json::to_string(&LocalServerLine::Error {
        error: error.into(),
    })
    .unwrap_or_else(|_| "{\"error\":\"internal\"}".to_string())
}

async fn serve_client(stream: UnixStream, ctx: ClientCtx, mut stop: watch::Receiver<bool>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut replies = ctx.outbound.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            line = read_line_bounded(&mut reader, MAX_LINE_BYTES) => {
                let answer = match line {
                    Ok(None) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        Some(error_line(format!("line longer than {MAX_LINE_BYTES} bytes; dropped")))
                    }
                    Err(_) => break,
                    Ok(Some(bytes)) => handle_line(&bytes, &ctx).await,
                };
                if let Some(answer) = answer
                    && write_line(&mut write, &answer).await.is_err()
                {
                    break;
                }
            }
            reply = replies.recv() => match reply {
                Ok(text) => {
                    if write_line(&mut write, &text).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    if write_line(&mut write, &error_line(format!("client too slow; {n} line(s) skipped"))).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

/// Handles one client line; returns the line to answer with, if any.
async fn handle_line(bytes: &[u8], ctx: &ClientCtx) -> Option<String> {
    let parsed: LocalClientLine = match serde_json::from_slice(bytes) {
        Ok(p) => p,
        Err(e) => return Some(error_line(format!("malformed line: {e}"))),
    };
    match parsed {
        LocalClientLine::History { chat, limit, .. } => {
            if !valid_chat(&chat) {
                return Some(error_line(format!(
                    "invalid chat {chat:?}: use local:<name> with [a-z0-9-]"
                )));
            }
            let Some(history) = ctx.history.clone() else {
                return Some(error_line("history is not available"));
            };
            let limit = limit.unwrap_or(20).min(MAX_HISTORY) as usize;
            let chat_for_call = chat.clone();
            let entries = tokio::task::spawn_blocking(move || history(&chat_for_call, limit))
                .await
                .unwrap_or_default();
            serde_json::to_string(&LocalServerLine::History {
                chat,
                history: entries,
            })
            .ok()
        }
        LocalClientLine::Message {
            chat,
            sender,
            sender_name,
            text,
        } => {
            if !valid_chat(&chat) {
                return Some(error_line(format!(
                    "invalid chat {chat:?}: use local:<name> with [a-z0-9-]"
                )));
            }
            let n = ctx.seq.fetch_add(1, Ordering::Relaxed);
            let sender = sender
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "local:user".to_string());
            let message = Message {
                id: format!("local-{}-{n}", chrono::Utc::now().timestamp_millis()),
                chat_jid: chat,
                sender_name: sender_name
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| crate::core::format::sender_display_name(None, &sender)),
                sender,
                content: text,
                timestamp: now_iso(),
                is_from_me: false,
            };
            // A full queue makes this client wait (back-pressure); it never drops an accepted line.
            if ctx
                .inbound
                .send(Inbound {
                    message,
                    chat_name: None,
                })
                .await
                .is_err()
            {
                return Some(error_line("host is shutting down"));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_validation() {
        assert!(valid_chat("local:main"));
        assert!(valid_chat("local:kitchen-2"));
        for bad in [
            "main",
            "local:",
            "local:../x",
            "local:Main",
            "local:a b",
            "whatsapp:x",
        ] {
            assert!(!valid_chat(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn bounded_reader_skips_long_lines_and_keeps_going() {
        let data = format!("short\n{}\nnext\npartial", "x".repeat(100));
        let mut r = BufReader::with_capacity(8, data.as_bytes());
        assert_eq!(
            read_line_bounded(&mut r, 10).await.unwrap().unwrap(),
            b"short"
        );
        assert_eq!(
            read_line_bounded(&mut r, 10).await.unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        assert_eq!(
            read_line_bounded(&mut r, 10).await.unwrap().unwrap(),
            b"next"
        );
        assert_eq!(
            read_line_bounded(&mut r, 10).await.unwrap().unwrap(),
            b"partial"
        );
        assert!(read_line_bounded(&mut r, 10).await.unwrap().is_none());
    }
}
