//! Output frames on stdout (contract §7.8): a START line, one line of compact JSON, an END line.
//! Each frame is flushed at once so the host sees results as they happen.

use std::io::Write;

use crate::core::wire::{FrameStatus, OUTPUT_END_MARKER, OUTPUT_START_MARKER, OutputFrame};

/// Writes frames to the runner's stdout.
pub struct FrameWriter<W: Write> {
    out: W,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Writes and flushes one frame.
    pub fn emit(&mut self, frame: &OutputFrame) -> std::io::Result<()> {
        let json = serde_json::to_string(frame).map_err(std::io::Error::other)?;
        // One write per frame: a reader never sees half a frame between two flushes of ours.
        let text = format!("{OUTPUT_START_MARKER}\n{json}\n{OUTPUT_END_MARKER}\n");
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }

    /// An agent result (`result` may be `None` for "no text"), or a session update when `None`.
    pub fn success(&mut self, result: Option<String>, session_id: &str) -> std::io::Result<()> {
        self.emit(&OutputFrame {
            status: FrameStatus::Success,
            result: result.map(serde_json::Value::String),
            new_session_id: Some(session_id.to_string()),
            error: None,
        })
    }

    /// The error frame the runner emits before exiting 1 (contract §10.9).
    pub fn error(&mut self, error: &str, session_id: Option<&str>) -> std::io::Result<()> {
        self.emit(&OutputFrame {
            status: FrameStatus::Error,
            result: None,
            new_session_id: session_id.map(str::to_string),
            error: Some(error.to_string()),
        })
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Parses every frame in a captured stdout (for tests and the benchmark). Text between frames is
/// ignored, as the host ignores it.
pub fn parse_frames(stdout: &str) -> Vec<OutputFrame> {
    let mut frames = Vec::new();
    let mut rest = stdout;
    while let Some(start) = rest.find(OUTPUT_START_MARKER) {
        let after = &rest[start + OUTPUT_START_MARKER.len()..];
        let Some(end) = after.find(OUTPUT_END_MARKER) else {
            break;
        };
        if let Ok(frame) = serde_json::from_str(after[..end].trim()) {
            frames.push(frame);
        }
        rest = &after[end + OUTPUT_END_MARKER.len()..];
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_original_shape() {
        let mut w = FrameWriter::new(Vec::new());
        w.success(Some("hi".into()), "s1").unwrap();
        w.success(None, "s1").unwrap();
        w.error("boom", None).unwrap();
        let text = String::from_utf8(w.into_inner()).unwrap();
        assert_eq!(
            text,
            "---NANOCLAW_OUTPUT_START---\n{\"status\":\"success\",\"result\":\"hi\",\"newSessionId\":\"s1\"}\n---NANOCLAW_OUTPUT_END---\n\
             ---NANOCLAW_OUTPUT_START---\n{\"status\":\"success\",\"result\":null,\"newSessionId\":\"s1\"}\n---NANOCLAW_OUTPUT_END---\n\
             ---NANOCLAW_OUTPUT_START---\n{\"status\":\"error\",\"result\":null,\"error\":\"boom\"}\n---NANOCLAW_OUTPUT_END---\n"
        );
        assert_eq!(parse_frames(&text).len(), 3);
    }
}
