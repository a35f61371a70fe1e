//! Telemetry setup: `tracing` to journald under systemd, else to stderr through the redaction helper.
//! Only the binary calls [`init`]; library code only emits events.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::core::redact::redact;
use crate::host::config::LogTarget;

/// Where logs ended up, for the first log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stderr,
    Journald,
}

/// Decides the sink: journald when asked, or in `auto` mode when systemd connected our stderr to the
/// journal (`JOURNAL_STREAM` is set).
pub fn choose_sink(target: LogTarget, journal_stream: Option<&str>) -> Sink {
    match target {
        LogTarget::Journald => Sink::Journald,
        LogTarget::Stderr => Sink::Stderr,
        LogTarget::Auto if journal_stream.is_some_and(|s| !s.is_empty()) => Sink::Journald,
        LogTarget::Auto => Sink::Stderr,
    }
}

/// Wraps a writer factory so each formatted event passes through [`redact`] before it is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Redacting<M>(pub M);

/// One event's bytes, redacted and written on drop: the fmt layer writes an event in pieces.
pub struct RedactingGuard<W: Write> {
    buf: Vec<u8>,
    inner: W,
}

impl<W: Write> Write for RedactingGuard<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingGuard<W> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let _ = self.inner.write_all(redact(&text).as_bytes());
        let _ = self.inner.flush();
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingGuard<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingGuard {
            buf: Vec::with_capacity(256),
            inner: self.0.make_writer(),
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level. Falls back to
/// stderr (and says so) when journald was wanted but its socket is missing.
pub fn init(level: &str, target: LogTarget) -> Sink {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    let mut sink = choose_sink(target, journal_stream.as_deref());
    if sink == Sink::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(layer)
                    .try_init();
                return sink;
            }
            Err(e) => {
                eprintln!("nanoclaw: journald unavailable ({e}); logging to stderr");
                sink = Sink::Stderr;
            }
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(Redacting(io::stderr))
                // Colour only for a person at a terminal; a log file or pipe gets plain text.
                .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
                .with_target(false),
        )
        .try_init();
    sink
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_are_redacted() {
        let buf = Buffer::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Redacting(move || sink.clone()))
            .finish();
        let secret = crate::core::redact::Secret::new("registered-secret-value-123".to_string());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                upstream = "x-api-key: sk-ant-api03-abcdefghijklmnop",
                "forwarding"
            );
            tracing::warn!("leaked {}", secret.expose());
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            out.contains("forwarding") && out.contains("leaked"),
            "{out}"
        );
        assert!(!out.contains("sk-ant-api03"), "{out}");
        assert!(!out.contains("registered-secret-value-123"), "{out}");
        assert_eq!(out.matches("[REDACTED]").count(), 2, "{out}");
    }

    #[test]
    fn sink_choice() {
        assert_eq!(choose_sink(LogTarget::Auto, Some("8:123")), Sink::Journald);
        assert_eq!(choose_sink(LogTarget::Auto, None), Sink::Stderr);
        assert_eq!(choose_sink(LogTarget::Auto, Some("")), Sink::Stderr);
        assert_eq!(choose_sink(LogTarget::Stderr, Some("8:1")), Sink::Stderr);
        assert_eq!(choose_sink(LogTarget::Journald, None), Sink::Journald);
    }
}
