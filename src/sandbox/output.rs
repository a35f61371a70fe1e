//! Run output handling: the incremental frame parser (contract §7.8) and bounded capture (§7.12).
//!
//! Both work on bytes, not text, so a multibyte character split across reads survives (§12.20), and
//! both are bounded: the parser never holds more than `max_frame_bytes` of an unfinished frame, and
//! a capture never holds more than its cap.

use crate::core::wire::{OUTPUT_END_MARKER, OUTPUT_START_MARKER, OutputFrame};

/// Default cap on one frame's payload; a longer frame is dropped with a warning.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Default cap on the stdout/stderr kept for the run log (the original's CONTAINER_MAX_OUTPUT_SIZE).
pub const DEFAULT_OUTPUT_CAP_BYTES: usize = 10 * 1024 * 1024;

/// What the parser found in the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedFrame {
    /// A frame whose payload parsed.
    Frame(OutputFrame),
    /// A frame that was skipped: bad JSON or longer than the cap. The text says why.
    Malformed(String),
}

/// Incremental parser for `START\n{json}\nEND` frames. Text outside frames is ignored (it is kept
/// only by the capture, for logging).
#[derive(Debug)]
pub struct FrameParser {
    buf: Vec<u8>,
    max_frame_bytes: usize,
}

impl FrameParser {
    /// A parser that drops frames whose payload exceeds `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_frame_bytes,
        }
    }

    /// Bytes held for an unfinished frame or a partial marker (bounded).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds one chunk; returns the frames completed by it, in stream order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<ParsedFrame> {
        let start = OUTPUT_START_MARKER.as_bytes();
        let end = OUTPUT_END_MARKER.as_bytes();
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            let Some(s) = find(&self.buf, start) else {
                // Keep only what could be the beginning of a START marker.
                let keep = (start.len() - 1).min(self.buf.len());
                self.buf.drain(..self.buf.len() - keep);
                break;
            };
            self.buf.drain(..s);
            match find(&self.buf[start.len()..], end) {
                Some(e) => {
                    let payload = &self.buf[start.len()..start.len() + e];
                    out.push(parse_payload(payload, self.max_frame_bytes));
                    self.buf.drain(..start.len() + e + end.len());
                }
                None => {
                    // Unfinished: wait, unless it is already too long to ever be accepted.
                    if self.buf.len() > start.len() + self.max_frame_bytes + end.len() {
                        out.push(ParsedFrame::Malformed(format!(
                            "frame longer than {} bytes dropped",
                            self.max_frame_bytes
                        )));
                        self.buf.drain(..start.len());
                        continue;
                    }
                    break;
                }
            }
        }
        out
    }
}

fn parse_payload(payload: &[u8], max: usize) -> ParsedFrame {
    if payload.len() > max {
        return ParsedFrame::Malformed(format!("frame longer than {max} bytes dropped"));
    }
    let trimmed = payload.trim_ascii();
    match serde_json::from_slice::<OutputFrame>(trimmed) {
        Ok(frame) => ParsedFrame::Frame(frame),
        Err(err) => ParsedFrame::Malformed(format!("frame payload is not valid JSON: {err}")),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Keeps the first `cap` bytes of a stream and counts the rest.
#[derive(Debug, Clone)]
pub struct BoundedCapture {
    buf: Vec<u8>,
    cap: usize,
    dropped: u64,
}

/// A finished capture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// The kept bytes (at most the cap).
    pub bytes: Vec<u8>,
    /// How many bytes were dropped after the cap.
    pub dropped: u64,
}

impl CapturedOutput {
    /// Whether anything was dropped.
    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }

    /// The kept text (lossy UTF-8), followed by a truncation marker if bytes were dropped.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.truncated() {
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&truncation_marker(self.dropped));
        }
        text
    }

    /// The last `n` characters of the text, without the marker (for error messages, contract §7.14).
    pub fn tail_chars(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let count = text.chars().count();
        text.chars().skip(count.saturating_sub(n)).collect()
    }
}

/// The line appended to truncated output.
pub fn truncation_marker(dropped: u64) -> String {
    format!("[nanoclaw: output truncated, {dropped} bytes dropped]\n")
}

impl BoundedCapture {
    /// A capture that keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            dropped: 0,
        }
    }

    /// Appends a chunk; returns `true` the first time something is dropped (so it is logged once).
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        let room = self.cap.saturating_sub(self.buf.len());
        let take = room.min(chunk.len());
        self.buf.extend_from_slice(&chunk[..take]);
        let was_truncated = self.dropped > 0;
        self.dropped += (chunk.len() - take) as u64;
        !was_truncated && self.dropped > 0
    }

    /// The captured output.
    pub fn finish(self) -> CapturedOutput {
        CapturedOutput {
            bytes: self.buf,
            dropped: self.dropped,
        }
    }
}

/// Splits a byte stream into lines for logging, cutting any line at `max_line` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    /// A splitter that never holds more than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_line: max_line.max(1),
        }
    }

    /// Feeds a chunk; returns the complete lines (without the newline, lossy UTF-8).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                lines.push(String::from_utf8_lossy(&self.partial).into_owned());
                self.partial.clear();
            } else {
                self.partial.push(b);
                if self.partial.len() >= self.max_line {
                    lines.push(String::from_utf8_lossy(&self.partial).into_owned());
                    self.partial.clear();
                }
            }
        }
        lines
    }

    /// The unterminated last line, if any.
    pub fn finish(self) -> Option<String> {
        (!self.partial.is_empty()).then(|| String::from_utf8_lossy(&self.partial).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::FrameStatus;

    fn frame_text(json: &str) -> String {
        format!("{OUTPUT_START_MARKER}\n{json}\n{OUTPUT_END_MARKER}\n")
    }

    fn results(frames: &[ParsedFrame]) -> Vec<Option<String>> {
        frames
            .iter()
            .map(|f| match f {
                ParsedFrame::Frame(f) => f
                    .result
                    .as_ref()
                    .map(|v| v.as_str().unwrap_or("?").to_string()),
                ParsedFrame::Malformed(_) => Some("MALFORMED".into()),
            })
            .collect()
    }

    #[test]
    fn frames_in_one_chunk_and_noise_between() {
        let mut p = FrameParser::new(DEFAULT_MAX_FRAME_BYTES);
        let text = format!(
            "noise\n{}more noise{}",
            frame_text(r#"{"status":"success","result":"a"}"#),
            frame_text(r#"{"status":"success","result":null,"newSessionId":"s1"}"#)
        );
        let got = p.push(text.as_bytes());
        assert_eq!(results(&got), vec![Some("a".into()), None]);
        match &got[1] {
            ParsedFrame::Frame(f) => {
                assert_eq!(f.new_session_id.as_deref(), Some("s1"));
                assert_eq!(f.status, FrameStatus::Success);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.buffered(),
            1,
            "only the trailing newline could start nothing; kept bounded"
        );
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        // A multibyte character and markers split at every byte boundary.
        let text = format!(
            "x{}y{}",
            frame_text(r#"{"status":"success","result":"héllo ✓"}"#),
            frame_text(r#"{"status":"error","result":null,"error":"boom"}"#)
        );
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let mut p = FrameParser::new(DEFAULT_MAX_FRAME_BYTES);
            let mut got = p.push(&bytes[..split]);
            got.extend(p.push(&bytes[split..]));
            assert_eq!(
                results(&got),
                vec![Some("héllo ✓".into()), None],
                "split {split}"
            );
        }
        // One byte at a time.
        let mut p = FrameParser::new(DEFAULT_MAX_FRAME_BYTES);
        let got: Vec<_> = bytes.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn bad_json_is_skipped_and_parsing_continues() {
        let mut p = FrameParser::new(DEFAULT_MAX_FRAME_BYTES);
        let text = format!(
            "{}{}",
            frame_text("{not json"),
            frame_text(r#"{"status":"success","result":"ok"}"#)
        );
        assert_eq!(
            results(&p.push(text.as_bytes())),
            vec![Some("MALFORMED".into()), Some("ok".into())]
        );
    }

    #[test]
    fn unfinished_frame_waits_then_oversized_frame_is_dropped() {
        let mut p = FrameParser::new(64);
        assert!(p.push(OUTPUT_START_MARKER.as_bytes()).is_empty());
        assert!(p.push(b"{\"status\":").is_empty(), "waits for END");
        let got = p.push(&[b'x'; 100]);
        assert_eq!(results(&got), vec![Some("MALFORMED".into())]);
        assert!(p.buffered() <= OUTPUT_START_MARKER.len() + 64 + OUTPUT_END_MARKER.len());
        // A later good frame still parses.
        let got = p.push(frame_text(r#"{"status":"success","result":"after"}"#).as_bytes());
        assert_eq!(results(&got), vec![Some("after".into())]);
    }

    #[test]
    fn noise_without_markers_is_not_accumulated() {
        let mut p = FrameParser::new(DEFAULT_MAX_FRAME_BYTES);
        for _ in 0..1000 {
            assert!(p.push(&[b'z'; 4096]).is_empty());
        }
        assert!(p.buffered() < OUTPUT_START_MARKER.len());
    }

    #[test]
    fn capture_keeps_the_cap_and_marks_truncation_once() {
        let mut c = BoundedCapture::new(10);
        assert!(!c.push(b"12345"));
        assert!(c.push(b"6789abcdef"), "first drop reported");
        assert!(!c.push(b"more"), "reported once");
        let out = c.finish();
        assert_eq!(out.bytes, b"123456789a");
        assert_eq!(out.dropped, 9);
        assert_eq!(
            out.text(),
            "123456789a\n[nanoclaw: output truncated, 9 bytes dropped]\n"
        );
        assert_eq!(out.tail_chars(3), "89a");
    }

    #[test]
    fn capture_under_the_cap_has_no_marker() {
        let mut c = BoundedCapture::new(10);
        c.push(b"ok\n");
        let out = c.finish();
        assert!(!out.truncated());
        assert_eq!(out.text(), "ok\n");
    }

    #[test]
    fn line_splitter_bounds_lines() {
        let mut s = LineSplitter::new(4);
        assert_eq!(s.push(b"ab\ncdefg"), vec!["ab", "cdef"]);
        assert_eq!(s.push(b"h\n"), vec!["gh"]);
        assert_eq!(s.push(b"tail").len(), 1);
        assert_eq!(s.finish(), None);
    }
}
