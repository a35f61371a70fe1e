//! A bounded reader of `text/event-stream` (the WHATWG server-sent events format) over a blocking
//! byte stream. The Messages API streams one JSON document per event; this yields `(event, data)`
//! pairs. Small enough to keep here rather than pull an async SSE stack into a blocking binary.

use std::io::BufRead;

/// Longest line we accept; a Messages API event is a few hundred bytes, a big tool input a few KB.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Longest event (all `data:` lines together).
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `message` when absent, as the format says.
    pub event: String,
    pub data: String,
}

/// Why the stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// reading the body failed (timeout, reset)
    #[error("reading the event stream: {0}")]
    Io(#[from] std::io::Error),
    /// a line or an event is larger than the bounds above
    #[error("event stream line or event larger than {0} bytes")]
    TooLarge(usize),
    /// the stream is not UTF-8
    #[error("event stream is not UTF-8")]
    NotUtf8,
}

/// Pulls events off a buffered reader.
pub struct SseReader<R> {
    inner: R,
    line: Vec<u8>,
}

impl<R: BufRead> SseReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            line: Vec::new(),
        }
    }

    /// The next event, or `None` at the end of the stream. A final event without its blank line is
    /// dropped, as the format requires.
    pub fn next_event(&mut self) -> Result<Option<Event>, SseError> {
        let mut event = String::new();
        let mut data = String::new();
        let mut has_data = false;
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            let line = std::str::from_utf8(&self.line).map_err(|_| SseError::NotUtf8)?;
            let line = line.strip_suffix('\n').unwrap_or(line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                if has_data {
                    let event = if event.is_empty() {
                        "message".to_string()
                    } else {
                        event
                    };
                    return Ok(Some(Event { event, data }));
                }
                event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => event = value.to_string(),
                "data" => {
                    if has_data {
                        data.push('\n');
                    }
                    data.push_str(value);
                    has_data = true;
                    if data.len() > MAX_EVENT_BYTES {
                        return Err(SseError::TooLarge(MAX_EVENT_BYTES));
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads one line into `self.line` (with its terminator); false at EOF with nothing read.
    fn read_line(&mut self) -> Result<bool, SseError> {
        self.line.clear();
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(!self.line.is_empty());
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if self.line.len() + take > MAX_LINE_BYTES {
                return Err(SseError::TooLarge(MAX_LINE_BYTES));
            }
            self.line.extend_from_slice(&buf[..take]);
            self.inner.consume(take);
            if done {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<Event> {
        let mut r = SseReader::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(e) = r.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn parses_named_events_and_joins_data_lines() {
        let events = all(
            ": comment\nevent: ping\ndata: {}\n\nevent: message_start\r\ndata:{\"a\":1}\r\ndata: x\r\n\r\ndata: plain\n\n",
        );
        assert_eq!(
            events,
            vec![
                Event {
                    event: "ping".into(),
                    data: "{}".into()
                },
                Event {
                    event: "message_start".into(),
                    data: "{\"a\":1}\nx".into()
                },
                Event {
                    event: "message".into(),
                    data: "plain".into()
                },
            ]
        );
    }

    #[test]
    fn unterminated_last_event_is_dropped() {
        assert!(all("event: x\ndata: 1").is_empty());
    }

    #[test]
    fn oversized_line_is_an_error_not_an_allocation() {
        let big = format!("data: {}\n\n", "a".repeat(MAX_LINE_BYTES + 10));
        let mut r = SseReader::new(big.as_bytes());
        assert!(matches!(r.next_event(), Err(SseError::TooLarge(_))));
    }
}
