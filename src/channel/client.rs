//! `nanoclaw chat`: a terminal client for the local channel. Prints recent history, sends each input
//! line as a message, shows replies and the typing indicator.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::channel::ChannelError;
use crate::channel::local::{MAX_LINE_BYTES, read_line_bounded};
use crate::core::wire::{LocalClientLine, LocalOp, LocalServerLine};

/// Options of one chat session.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    pub chat: String,
    pub sender_name: String,
    pub history: u32,
    /// After input ends, keep waiting this long for replies (for scripted use); zero quits at once.
    pub wait_after_eof: Duration,
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, line: &LocalClientLine) -> std::io::Result<()> {
    let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes()).await
}

/// Runs a chat session over the socket at `path` until input ends (plus `wait_after_eof`).
pub async fn run<I, O>(
    path: &Path,
    opts: &ChatOptions,
    input: I,
    mut out: O,
) -> Result<(), ChannelError>
where
    I: AsyncBufRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ChannelError::Listen {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                source.kind(),
                format!("{source} (is `nanoclaw run` running with the local channel?)"),
            ),
        })?;
    let (read, mut write) = stream.into_split();
    let mut server = BufReader::new(read);
    let mut input = input;
    if opts.history > 0 {
        send(
            &mut write,
            &LocalClientLine::History {
                op: LocalOp::History,
                chat: opts.chat.clone(),
                limit: Some(opts.history),
            },
        )
        .await?;
    }
    let mut input_open = true;
    let deadline = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            line = read_line_bounded(&mut input, MAX_LINE_BYTES), if input_open => match line {
                Ok(Some(bytes)) => {
                    let text = String::from_utf8_lossy(&bytes).trim_end_matches('\r').to_string();
                    if text.trim().is_empty() {
                        continue;
                    }
                    send(&mut write, &LocalClientLine::Message {
                        chat: opts.chat.clone(),
                        sender: None,
                        sender_name: Some(opts.sender_name.clone()),
                        text,
                    }).await?;
                }
                Ok(None) | Err(_) => {
                    input_open = false;
                    if opts.wait_after_eof.is_zero() {
                        break;
                    }
                    deadline.as_mut().reset(tokio::time::Instant::now() + opts.wait_after_eof);
                }
            },
            _ = &mut deadline, if !input_open => break,
            line = read_line_bounded(&mut server, MAX_LINE_BYTES) => {
                let Ok(Some(bytes)) = line else { break };
                let Ok(parsed) = serde_json::from_slice::<LocalServerLine>(&bytes) else { continue };
                let text = match parsed {
                    LocalServerLine::Reply { chat, from, text } if chat == opts.chat => {
                        if !input_open {
                            // Scripted use: one reply after input ended is what we waited for.
                            deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(200));
                        }
                        format!("{from}: {text}\n")
                    }
                    LocalServerLine::Typing { chat, typing: true } if chat == opts.chat => "(typing...)\n".to_string(),
                    LocalServerLine::History { chat, history } if chat == opts.chat => history
                        .iter()
                        .map(|h| format!("[{}] {}: {}\n", h.time, h.sender_name, h.text))
                        .collect(),
                    LocalServerLine::Error { error } => format!("error: {error}\n"),
                    _ => continue,
                };
                out.write_all(text.as_bytes()).await?;
                out.flush().await?;
            }
        }
    }
    Ok(())
}
