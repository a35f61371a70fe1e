//! The fake Messages API server: plain HTTP/1.1 on a std listener, one thread per connection, one
//! scripted step per `POST /v1/messages`. Requests are checked like the real API checks them (roles
//! alternate, every `tool_use` is answered by a `tool_result` in the next message, and so on): a
//! malformed conversation gets a 400 and does not consume a step, so runner bugs show up as failures.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// A block of a scripted reply.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeBlock {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

/// A scripted model reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub content: Vec<FakeBlock>,
    pub stop_reason: String,
    /// Pause before each SSE event (a slow stream); ignored for JSON replies.
    pub event_delay: Duration,
}

/// What the server does for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Reply(Reply),
    /// An error status with an Anthropic-style body and an optional `retry-after` header value.
    Error {
        status: u16,
        kind: String,
        message: String,
        retry_after: Option<String>,
    },
    /// SSE only: `message_start`, then an `error` event (as the API does when overloaded mid-stream).
    StreamError {
        kind: String,
        message: String,
    },
    /// SSE only: the reply's first `events` events, then the connection closes.
    Truncated {
        reply: Reply,
        events: usize,
    },
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

impl Step {
    /// An `end_turn` reply with one text block.
    pub fn text(text: &str) -> Self {
        Self::Reply(Reply {
            content: vec![FakeBlock::Text(text.to_string())],
            stop_reason: "end_turn".into(),
            event_delay: Duration::ZERO,
        })
    }

    /// A `tool_use` reply calling one tool.
    pub fn tool(name: &str, input: Value) -> Self {
        Self::tools(None, &[(name, input)])
    }

    /// A `tool_use` reply with optional leading text and several calls.
    pub fn tools(text: Option<&str>, calls: &[(&str, Value)]) -> Self {
        let mut content: Vec<FakeBlock> = text
            .map(|t| FakeBlock::Text(t.into()))
            .into_iter()
            .collect();
        for (name, input) in calls {
            content.push(FakeBlock::ToolUse {
                id: format!("toolu_fake_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
                name: (*name).to_string(),
                input: input.clone(),
            });
        }
        Self::Reply(Reply {
            content,
            stop_reason: "tool_use".into(),
            event_delay: Duration::ZERO,
        })
    }

    /// An error reply.
    pub fn error(status: u16, kind: &str, message: &str) -> Self {
        Self::Error {
            status,
            kind: kind.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// Sets `retry-after` on an error step.
    pub fn retry_after(mut self, value: &str) -> Self {
        if let Self::Error { retry_after, .. } = &mut self {
            *retry_after = Some(value.into());
        }
        self
    }

    /// Makes a reply stream slowly.
    pub fn slow(mut self, delay: Duration) -> Self {
        if let Self::Reply(r) | Self::Truncated { reply: r, .. } = &mut self {
            r.event_delay = delay;
        }
        self
    }

    /// Sets the stop reason of a reply (e.g. `max_tokens`).
    pub fn stop_reason(mut self, reason: &str) -> Self {
        if let Self::Reply(r) = &mut self {
            r.stop_reason = reason.into();
        }
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// When the request line arrived.
    pub at: Instant,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The messages array of the body.
    pub fn messages(&self) -> &[Value] {
        self.body["messages"].as_array().map_or(&[], Vec::as_slice)
    }

    /// Text of the last user message's text blocks, joined by LF.
    pub fn last_user_text(&self) -> String {
        let Some(last) = self.messages().iter().rev().find(|m| m["role"] == "user") else {
            return String::new();
        };
        match &last["content"] {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }

    /// The tool_result blocks of the last message: `(tool_use_id, content, is_error)`.
    pub fn tool_results(&self) -> Vec<(String, String, bool)> {
        let Some(last) = self.messages().last() else {
            return Vec::new();
        };
        last["content"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_result")
                    .map(|b| {
                        (
                            b["tool_use_id"].as_str().unwrap_or_default().to_string(),
                            b["content"].as_str().unwrap_or_default().to_string(),
                            b["is_error"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Step>>,
    requests: Mutex<Vec<RecordedRequest>>,
    arrived: Condvar,
}

/// The running server; stops when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeApi {
    /// Starts on `127.0.0.1:<free port>`.
    pub fn start(script: Vec<Step>) -> std::io::Result<Self> {
        Self::bind(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            script,
        )
    }

    /// Starts on a given address (e.g. a veth address inside a test network namespace).
    pub fn bind(addr: SocketAddr, script: Vec<Step>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        state
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(script);
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = Arc::clone(&state);
                    std::thread::spawn(move || {
                        let _ = serve(conn, &state);
                    });
                }
            })
        };
        Ok(Self {
            addr,
            state,
            stop,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give the runner as `ANTHROPIC_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends steps to the script.
    pub fn push(&self, steps: impl IntoIterator<Item = Step>) {
        self.state
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(steps);
    }

    /// Steps not used yet.
    pub fn remaining(&self) -> usize {
        self.state
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Every request so far (including ones refused as malformed).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` requests arrived; false on timeout.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut requests = self
            .state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            requests = self
                .state
                .arrived
                .wait_timeout(requests, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept. From another network namespace (a listener bound inside a test
        // netns) the connect fails; then the thread is left to end with the process rather than
        // joined forever.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(t) = self.accept.take()
            && woke
        {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, state: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 || head.len() > MAX_HEADER_BYTES {
            return Ok(());
        }
    }
    let at = Instant::now();
    let mut header_buf = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut header_buf);
    if req
        .parse(&head)
        .map_err(std::io::Error::other)?
        .is_partial()
    {
        return Ok(());
    }
    let path = req.path.unwrap_or_default().to_string();
    let method = req.method.unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    if len > MAX_BODY_BYTES {
        return respond_error(
            &conn,
            413,
            "request_too_large",
            "request body too large",
            None,
        );
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = body["stream"].as_bool().unwrap_or(false);
    let problem = if method != "POST" || path != "/v1/messages" {
        Some((404, "not_found_error", format!("no route {method} {path}")))
    } else {
        validate_request(&body)
            .err()
            .map(|m| (400, "invalid_request_error", m))
    };
    {
        let mut requests = state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        requests.push(RecordedRequest {
            path,
            headers,
            body,
            at,
        });
        state.arrived.notify_all();
    }
    if let Some((status, kind, message)) = problem {
        return respond_error(&conn, status, kind, &message, None);
    }
    let step = state
        .script
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop_front();
    match step {
        None => respond_error(&conn, 500, "api_error", "fake API: script exhausted", None),
        Some(Step::Error {
            status,
            kind,
            message,
            retry_after,
        }) => respond_error(&conn, status, &kind, &message, retry_after.as_deref()),
        Some(Step::Reply(reply)) if stream => {
            respond_sse(&conn, &reply_events(&reply), reply.event_delay)
        }
        Some(Step::Reply(reply)) => respond_json(&conn, &reply),
        Some(Step::StreamError { kind, message }) => {
            let events = vec![
                ("message_start".to_string(), message_start()),
                (
                    "error".to_string(),
                    json!({"type": "error", "error": {"type": kind, "message": message}}),
                ),
            ];
            respond_sse(&conn, &events, Duration::ZERO)
        }
        Some(Step::Truncated { reply, events }) => {
            let all = reply_events(&reply);
            respond_sse(&conn, &all[..events.min(all.len())], reply.event_delay)
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

fn respond_error(
    mut conn: &TcpStream,
    status: u16,
    kind: &str,
    message: &str,
    retry_after: Option<&str>,
) -> std::io::Result<()> {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}}).to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        reason(status),
        body.len()
    );
    if let Some(v) = retry_after {
        head.push_str(&format!("retry-after: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

fn block_json(b: &FakeBlock) -> Value {
    match b {
        FakeBlock::Text(t) => json!({"type": "text", "text": t}),
        FakeBlock::ToolUse { id, name, input } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
    }
}

fn respond_json(mut conn: &TcpStream, reply: &Reply) -> std::io::Result<()> {
    let body = json!({
        "id": format!("msg_fake_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        "type": "message",
        "role": "assistant",
        "model": "fake",
        "content": reply.content.iter().map(block_json).collect::<Vec<_>>(),
        "stop_reason": reply.stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 10}
    })
    .to_string();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

fn message_start() -> Value {
    json!({"type": "message_start", "message": {
        "id": format!("msg_fake_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        "type": "message", "role": "assistant", "model": "fake", "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}})
}

/// The event sequence the real API sends for a reply: text in chunks, tool input JSON in two halves.
fn reply_events(reply: &Reply) -> Vec<(String, Value)> {
    let mut events = vec![("message_start".to_string(), message_start())];
    for (index, block) in reply.content.iter().enumerate() {
        match block {
            FakeBlock::Text(text) => {
                events.push((
                    "content_block_start".into(),
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                ));
                let chars: Vec<char> = text.chars().collect();
                for chunk in chars.chunks(16) {
                    let piece: String = chunk.iter().collect();
                    events.push((
                        "content_block_delta".into(),
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
                    ));
                }
            }
            FakeBlock::ToolUse { id, name, input } => {
                events.push((
                    "content_block_start".into(),
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                ));
                let text = input.to_string();
                let mut mid = text.len() / 2;
                while !text.is_char_boundary(mid) {
                    mid -= 1;
                }
                for part in [&text[..mid], &text[mid..]] {
                    events.push((
                        "content_block_delta".into(),
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": part}}),
                    ));
                }
            }
        }
        events.push((
            "content_block_stop".into(),
            json!({"type": "content_block_stop", "index": index}),
        ));
        if index == 0 {
            events.push(("ping".into(), json!({"type": "ping"})));
        }
    }
    events.push((
        "message_delta".into(),
        json!({"type": "message_delta", "delta": {"stop_reason": reply.stop_reason, "stop_sequence": null}, "usage": {"output_tokens": 10}}),
    ));
    events.push(("message_stop".into(), json!({"type": "message_stop"})));
    events
}

fn respond_sse(
    mut conn: &TcpStream,
    events: &[(String, Value)],
    delay: Duration,
) -> std::io::Result<()> {
    conn.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    )?;
    for (name, data) in events {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let chunk = format!("event: {name}\ndata: {data}\n\n");
        conn.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())?;
        conn.flush()?;
    }
    conn.write_all(b"0\r\n\r\n")?;
    conn.flush()
}

/// Checks a request body the way the Messages API does, as far as a runner can get it wrong.
pub fn validate_request(body: &Value) -> Result<(), String> {
    if body["model"].as_str().is_none_or(str::is_empty) {
        return Err("model: field required".into());
    }
    if body["max_tokens"].as_u64().is_none_or(|n| n == 0) {
        return Err("max_tokens: field required".into());
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Err("messages: at least one message is required".into());
    };
    if let Some(tools) = body["tools"].as_array() {
        let mut names = HashSet::new();
        for t in tools {
            let name = t["name"].as_str().unwrap_or_default();
            if name.is_empty() || !names.insert(name) || !t["input_schema"].is_object() {
                return Err(format!("tools: invalid or duplicate tool {name:?}"));
            }
        }
    }
    let mut expected_role = "user";
    let mut open_tool_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        if role != expected_role {
            return Err(format!(
                "messages.{i}: roles must alternate, starting with user"
            ));
        }
        let blocks = match &m["content"] {
            Value::String(s) if !s.is_empty() => Vec::new(),
            Value::Array(b) if !b.is_empty() => b.clone(),
            _ => return Err(format!("messages.{i}: content must be non-empty")),
        };
        let results: Vec<&str> = blocks
            .iter()
            .filter(|b| b["type"] == "tool_result")
            .filter_map(|b| b["tool_use_id"].as_str())
            .collect();
        if role == "user" {
            for id in &open_tool_uses {
                if !results.contains(&id.as_str()) {
                    return Err(format!(
                        "messages.{i}: tool_use ids were found without tool_result blocks immediately after: {id}"
                    ));
                }
            }
            for id in &results {
                if !open_tool_uses.iter().any(|o| o == id) {
                    return Err(format!(
                        "messages.{i}: unexpected tool_use_id in tool_result: {id}"
                    ));
                }
            }
            open_tool_uses.clear();
            expected_role = "assistant";
        } else {
            if !results.is_empty() {
                return Err(format!("messages.{i}: tool_result in an assistant message"));
            }
            open_tool_uses = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["id"].as_str().map(str::to_string))
                .collect();
            expected_role = "user";
        }
    }
    if expected_role == "user" && !open_tool_uses.is_empty() {
        return Err("the last assistant message has tool_use blocks without results".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_catches_broken_conversations() {
        let ok = json!({"model": "m", "max_tokens": 1, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}, {"type": "text", "text": "more"}]}
        ]});
        assert_eq!(validate_request(&ok), Ok(()));
        let unanswered = json!({"model": "m", "max_tokens": 1, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "bash", "input": {}}]},
            {"role": "user", "content": "next"}
        ]});
        assert!(
            validate_request(&unanswered)
                .unwrap_err()
                .contains("without tool_result")
        );
        let double_user = json!({"model": "m", "max_tokens": 1, "messages": [
            {"role": "user", "content": "a"}, {"role": "user", "content": "b"}
        ]});
        assert!(
            validate_request(&double_user)
                .unwrap_err()
                .contains("alternate")
        );
    }
}
