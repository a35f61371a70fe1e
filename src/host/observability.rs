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

/// A stderr writer that passes each formatted event through [`redact`] before it leaves the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

/// One event's bytes, redacted and written on drop: the fmt layer writes an event in pieces.
pub struct RedactingGuard(Vec<u8>);

impl Write for RedactingGuard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingGuard {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = io::stderr().lock().write_all(redact(&text).as_bytes());
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingGuard;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingGuard(Vec::with_capacity(256))
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
                .with_writer(RedactingStderr)
                .with_target(false),
        )
        .try_init();
    sink
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_choice() {
        assert_eq!(choose_sink(LogTarget::Auto, Some("8:123")), Sink::Journald);
        assert_eq!(choose_sink(LogTarget::Auto, None), Sink::Stderr);
        assert_eq!(choose_sink(LogTarget::Auto, Some("")), Sink::Stderr);
        assert_eq!(choose_sink(LogTarget::Stderr, Some("8:1")), Sink::Stderr);
        assert_eq!(choose_sink(LogTarget::Journald, None), Sink::Journald);
    }
}
