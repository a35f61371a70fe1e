//! Session transcripts, kept in the group's session dir so a later run resumes them.
//!
//! One file per session: `<session_dir>/nanoclaw-runner/<session id>.json`, rewritten atomically
//! (temp file + rename) after every model response, so a run killed mid-turn resumes from the last
//! complete step.
//!
//! **Bound.** Before every request the transcript is cut to at most `max_messages` messages and
//! `max_bytes` of JSON by dropping whole turns from the front. A turn starts at a user message that
//! carries text (not only tool results), so what is left always starts with a user text message and
//! never splits a `tool_use` from its `tool_result`. The newest turn is always kept, whatever its size.
//! Dropped turns are appended as Markdown (user and assistant text only) to
//! `<group>/conversations/<date>-<session id>.md`, so the agent can still grep what it forgot. The
//! original compacted the session with a model-written summary instead (contract §10.12); dropping
//! costs no tokens and no extra request, and the group's `CLAUDE.md` remains the durable memory.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runner::api::{ContentBlock, Message, Role};

/// Subdirectory of the session dir that holds our transcripts.
pub const TRANSCRIPT_DIR: &str = "nanoclaw-runner";
/// What an elided tool output is replaced with.
const ELIDED: &str = "[tool output elided to keep the transcript bounded]";
/// Text of one archived message is cut here (contract §10.12 uses the same figure).
const ARCHIVE_TEXT_MAX: usize = 2000;

/// Errors reading or writing a transcript.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// the file cannot be read or written
    #[error("session file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// the file is not a transcript
    #[error("session file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The persisted form.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    version: u32,
    session_id: String,
    #[serde(default)]
    dropped_turns: u64,
    messages: Vec<Message>,
}

/// A live session: its id, its messages, and where it is saved.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub messages: Vec<Message>,
    /// Turns dropped by the bound over the session's life.
    pub dropped_turns: u64,
    path: PathBuf,
}

/// Whether a session id is safe to use as a file name.
pub fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !id.starts_with('-')
}

/// A new random session id in UUID v4 form.
pub fn new_session_id() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

impl Session {
    /// Opens the session `requested` if it names a saved transcript; otherwise starts an empty one.
    /// A requested id that is not a safe file name is replaced by a new id (and logged). A valid id
    /// without a file (a session of the original's runner, or a deleted one) starts empty under that id.
    pub fn open(session_dir: &Path, requested: Option<&str>) -> Result<Self, SessionError> {
        let id = match requested {
            Some(id) if valid_session_id(id) => id.to_string(),
            Some(id) => {
                tracing::warn!(requested = %id.escape_debug(), "unusable session id; starting a new session");
                new_session_id()
            }
            None => new_session_id(),
        };
        let path = session_dir.join(TRANSCRIPT_DIR).join(format!("{id}.json"));
        let mut session = Self {
            id,
            messages: Vec::new(),
            dropped_turns: 0,
            path,
        };
        if requested.is_some() {
            match std::fs::read(&session.path) {
                Ok(bytes) => {
                    let stored: Stored =
                        serde_json::from_slice(&bytes).map_err(|e| SessionError::Corrupt {
                            path: session.path.clone(),
                            reason: e.to_string(),
                        })?;
                    session.messages = stored.messages;
                    session.dropped_turns = stored.dropped_turns;
                    repair(&mut session.messages);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::info!(session = %session.id, "no saved transcript; starting empty");
                }
                Err(source) => {
                    return Err(SessionError::Io {
                        path: session.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(session)
    }

    /// Where the transcript is saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the transcript atomically.
    pub fn save(&self) -> Result<(), SessionError> {
        let io = |source| SessionError::Io {
            path: self.path.clone(),
            source,
        };
        let stored = Stored {
            version: 1,
            session_id: self.id.clone(),
            dropped_turns: self.dropped_turns,
            messages: self.messages.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| io(std::io::Error::other(e)))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        write_atomic(&self.path, &bytes).map_err(io)
    }

    /// Applies the bound; returns the dropped messages (oldest first) for archiving.
    pub fn bound(&mut self, max_messages: usize, max_bytes: usize) -> Vec<Message> {
        let starts = turn_starts(&self.messages);
        let mut cut = 0;
        let mut bytes: usize = self.messages.iter().map(message_bytes).sum();
        let mut count = self.messages.len();
        // Candidate cut points: every turn start except the newest.
        let mut i = 1;
        while (count > max_messages || bytes > max_bytes) && i < starts.len() {
            let next = starts[i];
            for m in &self.messages[cut..next] {
                bytes = bytes.saturating_sub(message_bytes(m));
            }
            count -= next - cut;
            cut = next;
            self.dropped_turns += 1;
            i += 1;
        }
        let dropped: Vec<Message> = self.messages.drain(..cut).collect();
        // Still too big: the newest turn is a long tool chain. Elide its oldest tool outputs (the last
        // two messages stay whole), keeping every tool_use/tool_result pair intact.
        let keep_from = self.messages.len().saturating_sub(2);
        for m in self.messages.iter_mut().take(keep_from) {
            if bytes <= max_bytes {
                break;
            }
            for b in &mut m.content {
                if let ContentBlock::ToolResult { content, .. } = b
                    && content.len() > ELIDED.len()
                    && bytes > max_bytes
                {
                    bytes = bytes.saturating_sub(content.len() - ELIDED.len());
                    *content = ELIDED.to_string();
                }
            }
        }
        dropped
    }
}

/// Indexes of messages that start a turn.
fn turn_starts(messages: &[Message]) -> Vec<usize> {
    messages
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m.role == Role::User
                && m.content
                    .iter()
                    .any(|b| matches!(b, ContentBlock::Text { .. }))
                && !m
                    .content
                    .iter()
                    .any(|b| matches!(b, ContentBlock::ToolResult { .. }))
        })
        .map(|(i, _)| i)
        .collect()
}

fn message_bytes(m: &Message) -> usize {
    serde_json::to_vec(m).map_or(0, |v| v.len())
}

/// Makes a loaded transcript valid to send again: it must start with a turn, and a trailing
/// assistant `tool_use` without results (a run killed mid-tool) gets results saying so.
fn repair(messages: &mut Vec<Message>) {
    if let Some(&first) = turn_starts(messages).first() {
        messages.drain(..first);
    } else {
        messages.clear();
    }
    let Some(last) = messages.last() else {
        return;
    };
    if last.role == Role::Assistant {
        let results: Vec<ContentBlock> = last
            .content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::ToolUse { id, .. } => Some(ContentBlock::ToolResult {
                    tool_use_id: id.clone(),
                    content: "The run ended before this tool call finished.".into(),
                    is_error: true,
                }),
                _ => None,
            })
            .collect();
        if !results.is_empty() {
            messages.push(Message {
                role: Role::User,
                content: results,
            });
        }
    }
}

/// Appends dropped messages to the group's conversation archive (best effort).
pub fn archive(group_dir: &Path, session_id: &str, assistant: &str, dropped: &[Message]) {
    if dropped.is_empty() {
        return;
    }
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let dir = group_dir.join("conversations");
    let path = dir.join(format!("{date}-{session_id}.md"));
    let mut text = String::new();
    for m in dropped {
        let Some(body) = m.text() else { continue };
        let who = match m.role {
            Role::User => "User",
            Role::Assistant => assistant,
        };
        let body = if body.len() > ARCHIVE_TEXT_MAX {
            let mut end = ARCHIVE_TEXT_MAX;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &body[..end])
        } else {
            body
        };
        text.push_str(&format!("**{who}**: {body}\n\n"));
    }
    let result = std::fs::create_dir_all(&dir).and_then(|_| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(text.as_bytes())
    });
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "could not archive dropped turns");
    }
}

/// Writes `bytes` to `<path>.tmp` and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(t: &str) -> Message {
        Message::user_text(t)
    }
    fn assistant(t: &str) -> Message {
        Message {
            role: Role::Assistant,
            content: vec![ContentBlock::Text { text: t.into() }],
        }
    }
    fn tool_call(id: &str) -> Message {
        Message {
            role: Role::Assistant,
            content: vec![ContentBlock::ToolUse {
                id: id.into(),
                name: "bash".into(),
                input: json!({"command": "true"}),
            }],
        }
    }
    fn tool_result(id: &str) -> Message {
        Message {
            role: Role::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: id.into(),
                content: "ok".into(),
                is_error: false,
            }],
        }
    }

    #[test]
    fn new_ids_are_valid_and_distinct() {
        let a = new_session_id();
        assert!(valid_session_id(&a), "{a}");
        assert_eq!(a.len(), 36);
        assert_ne!(a, new_session_id());
        assert!(!valid_session_id("../etc/passwd"));
        assert!(!valid_session_id(""));
    }

    #[test]
    fn save_and_resume_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Session::open(tmp.path(), None).unwrap();
        s.messages = vec![user("hi"), assistant("hello")];
        s.save().unwrap();
        let again = Session::open(tmp.path(), Some(&s.id)).unwrap();
        assert_eq!(again.messages, s.messages);
        assert_eq!(again.id, s.id);
    }

    #[test]
    fn traversal_ids_get_a_fresh_session() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Session::open(tmp.path(), Some("../../x")).unwrap();
        assert_ne!(s.id, "../../x");
        assert!(s.path().starts_with(tmp.path().join(TRANSCRIPT_DIR)));
    }

    #[test]
    fn bound_drops_whole_turns_and_keeps_tool_pairs() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Session::open(tmp.path(), None).unwrap();
        s.messages = vec![
            user("one"),
            tool_call("t1"),
            tool_result("t1"),
            assistant("done one"),
            user("two"),
            assistant("done two"),
            user("three"),
            tool_call("t3"),
            tool_result("t3"),
        ];
        let dropped = s.bound(5, usize::MAX);
        assert_eq!(dropped.len(), 4, "one turn is enough to get to 5 messages");
        assert_eq!(s.messages[0], user("two"));
        let dropped = s.bound(4, usize::MAX);
        assert_eq!(dropped.len(), 2);
        assert_eq!(s.messages[0], user("three"));
        assert_eq!(s.messages.len(), 3);
        assert_eq!(s.dropped_turns, 2);
        // The newest turn stays even when it alone is over the bound.
        let dropped = s.bound(1, 1);
        assert!(dropped.is_empty());
        assert_eq!(s.messages.len(), 3);
    }

    #[test]
    fn bound_elides_old_tool_output_inside_one_long_turn() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Session::open(tmp.path(), None).unwrap();
        let big = |id: &str| Message {
            role: Role::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: id.into(),
                content: "y".repeat(5000),
                is_error: false,
            }],
        };
        s.messages = vec![
            user("go"),
            tool_call("a"),
            big("a"),
            tool_call("b"),
            big("b"),
            tool_call("c"),
            big("c"),
        ];
        s.bound(100, 8000);
        let sizes: Vec<usize> = s
            .messages
            .iter()
            .filter_map(|m| match &m.content[0] {
                ContentBlock::ToolResult { content, .. } => Some(content.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![ELIDED.len(), ELIDED.len(), 5000]);
        assert_eq!(s.messages.len(), 7);
    }

    #[test]
    fn bound_by_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Session::open(tmp.path(), None).unwrap();
        let big = "x".repeat(1000);
        s.messages = vec![
            user(&big),
            assistant(&big),
            user(&big),
            assistant(&big),
            user("q"),
        ];
        s.bound(100, 2500);
        assert_eq!(s.messages.len(), 3);
        assert_eq!(s.messages[2], user("q"));
    }

    #[test]
    fn repair_answers_a_dangling_tool_call() {
        let mut m = vec![tool_result("t0"), user("a"), tool_call("t1")];
        repair(&mut m);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], user("a"));
        assert!(
            matches!(&m[2].content[0], ContentBlock::ToolResult { tool_use_id, is_error: true, .. } if tool_use_id == "t1")
        );
    }

    #[test]
    fn archive_writes_markdown() {
        let tmp = tempfile::tempdir().unwrap();
        archive(
            tmp.path(),
            "sid",
            "Andy",
            &[user("hello"), tool_call("t"), assistant("hi there")],
        );
        let text = std::fs::read_to_string(
            tmp.path()
                .join("conversations")
                .join(format!("{}-sid.md", chrono::Utc::now().format("%Y-%m-%d"))),
        )
        .unwrap();
        assert_eq!(text, "**User**: hello\n\n**Andy**: hi there\n\n");
    }
}
