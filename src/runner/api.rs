//! The Anthropic Messages API, as far as the runner uses it: `POST /v1/messages` with tools, either
//! as one JSON response or as an SSE stream, through the host's gateway over plain HTTP/1.1.
//!
//! A response is used only once it is complete (`message_stop` seen, or the whole JSON body read), so a
//! retry never repeats a side effect: tools run after the response, never during it.

use std::io::{BufReader, Read};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runner::config::{ApiSettings, MAX_RETRY_DELAY};
use crate::runner::sse::{SseError, SseReader};

/// API version header value the runner speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Largest non-streaming response body we read.
pub const MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;
/// Largest error body kept for the error message.
const MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

impl Message {
    /// A user message with one text block.
    pub fn user_text(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: vec![ContentBlock::Text { text: text.into() }],
        }
    }

    /// The text blocks joined, or `None` when there is no non-empty text.
    pub fn text(&self) -> Option<String> {
        let text: String = self
            .content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        (!text.is_empty()).then_some(text)
    }
}

/// A content block. Block types the runner does not use (thinking, server tools) are read as
/// [`ContentBlock::Other`] and dropped before the message is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    #[serde(other)]
    Other,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolDef {
    pub name: &'static str,
    pub description: &'static str,
    pub input_schema: Value,
}

/// The request body.
#[derive(Debug, Serialize)]
pub struct MessagesRequest<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    pub system: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [ToolDef],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// A complete model response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: String,
    /// Content with [`ContentBlock::Other`] removed.
    pub content: Vec<ContentBlock>,
    /// `end_turn`, `tool_use`, `max_tokens`, `stop_sequence`, `refusal`, …
    pub stop_reason: Option<String>,
}

/// Why a model request failed for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// the API answered with an error status
    #[error("model API returned HTTP {status} ({kind}): {message}")]
    Status {
        status: u16,
        kind: String,
        message: String,
    },
    /// the gateway could not be reached or the connection broke
    #[error("model API unreachable: {0}")]
    Transport(String),
    /// the stream reported an error event
    #[error("model API stream error ({kind}): {message}")]
    Stream { kind: String, message: String },
    /// the stream ended before `message_stop`
    #[error("model API stream ended early: {0}")]
    Truncated(String),
    /// the response did not have the Messages API shape
    #[error("model API response not understood: {0}")]
    Protocol(String),
    /// every attempt failed with a retryable error
    #[error("model API failed after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: Box<ApiError> },
}

impl ApiError {
    fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 409 | 429 | 500..=599),
            Self::Transport(_) | Self::Truncated(_) => true,
            Self::Stream { kind, .. } => {
                matches!(
                    kind.as_str(),
                    "overloaded_error" | "api_error" | "rate_limit_error"
                )
            }
            Self::Protocol(_) | Self::GaveUp { .. } => false,
        }
    }
}

/// A failed attempt, with the server's wish for when to try again.
struct Attempt {
    error: ApiError,
    retry_after: Option<Duration>,
}

impl From<ApiError> for Attempt {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// A blocking Messages API client.
pub struct ApiClient {
    agent: ureq::Agent,
    url: String,
    settings: ApiSettings,
}

impl ApiClient {
    pub fn new(settings: &ApiSettings) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The gateway is reached directly; an HTTP_PROXY meant for tools must not divert it.
            .proxy(None)
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_recv_response(Some(settings.read_timeout))
            // Per read, not per body: a long stream is fine as long as events keep coming.
            .timeout_per_read(Some(settings.read_timeout))
            .user_agent(concat!("nanoclaw-runner/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent: config.into(),
            url: format!("{}/v1/messages", settings.base_url),
            settings: settings.clone(),
        }
    }

    /// Sends one request, retrying 429/5xx/transport failures with backoff (honouring
    /// `retry-after`), at most `max_retries` times.
    pub fn create(
        &self,
        system: &str,
        messages: &[Message],
        tools: &[ToolDef],
        on_retry: &mut dyn FnMut(&ApiError, Duration),
    ) -> Result<Response, ApiError> {
        let request = MessagesRequest {
            model: &self.settings.model,
            max_tokens: self.settings.max_tokens,
            system,
            messages,
            tools,
            stream: self.settings.stream,
        };
        let body = serde_json::to_vec(&request).map_err(|e| ApiError::Protocol(e.to_string()))?;
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(MAX_RETRY_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.settings.max_retries as usize)
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failed = match self.attempt(&body) {
                Ok(response) => return Ok(response),
                Err(failed) => failed,
            };
            if !failed.error.retryable() {
                return Err(failed.error);
            }
            let Some(delay) = backoff.next() else {
                return Err(if attempts == 1 {
                    failed.error
                } else {
                    ApiError::GaveUp {
                        attempts,
                        last: Box::new(failed.error),
                    }
                });
            };
            let delay = failed.retry_after.map_or(delay, |d| d.min(MAX_RETRY_DELAY));
            on_retry(&failed.error, delay);
            std::thread::sleep(delay);
        }
    }

    fn attempt(&self, body: &[u8]) -> Result<Response, Attempt> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json")
            .header("anthropic-version", ANTHROPIC_VERSION);
        if let Some(token) = &self.settings.token {
            request = request.header("x-api-key", token);
        }
        if self.settings.stream {
            request = request.header("accept", "text/event-stream");
        }
        let mut response = request
            .send(body)
            .map_err(|e| Attempt::from(ApiError::Transport(e.to_string())))?;
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after = retry_after(response.headers());
            let text = response
                .body_mut()
                .with_config()
                .limit(MAX_ERROR_BODY_BYTES)
                .read_to_string()
                .unwrap_or_default();
            let (kind, message) = error_body(&text);
            return Err(Attempt {
                error: ApiError::Status {
                    status,
                    kind,
                    message,
                },
                retry_after,
            });
        }
        let is_sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let reader = response.into_body().into_reader();
        if is_sse {
            read_stream(reader).map_err(Attempt::from)
        } else {
            let mut bytes = Vec::new();
            reader
                .take(MAX_RESPONSE_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Attempt::from(ApiError::Transport(e.to_string())))?;
            if bytes.len() as u64 > MAX_RESPONSE_BYTES {
                return Err(ApiError::Protocol("response larger than 8 MiB".into()).into());
            }
            parse_response(&bytes).map_err(Attempt::from)
        }
    }
}

/// `retry-after-ms` (milliseconds) or `retry-after` (seconds); HTTP dates are ignored.
fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return (ms.is_finite() && ms >= 0.0)
            .then(|| Duration::from_secs_f64(ms.min(3.6e6) / 1000.0));
    }
    let secs = get("retry-after")?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// `{"type":"error","error":{"type":…,"message":…}}`, or the raw text when it is not that.
fn error_body(text: &str) -> (String, String) {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Outer>(text) {
        Ok(o) => (o.error.kind, o.error.message),
        Err(_) => ("unknown".into(), clip(text.trim(), 300)),
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Parses a non-streaming response body.
pub fn parse_response(bytes: &[u8]) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        id: String,
        content: Vec<ContentBlock>,
        #[serde(default)]
        stop_reason: Option<String>,
    }
    let body: Body =
        serde_json::from_slice(bytes).map_err(|e| ApiError::Protocol(e.to_string()))?;
    Ok(Response {
        id: body.id,
        content: body
            .content
            .into_iter()
            .filter(|b| !matches!(b, ContentBlock::Other))
            .collect(),
        stop_reason: body.stop_reason,
    })
}

/// A block while its deltas arrive.
enum Partial {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
    Other,
}

/// Assembles a response from Messages API stream events.
pub fn read_stream(reader: impl Read) -> Result<Response, ApiError> {
    let mut sse = SseReader::new(BufReader::new(reader));
    let mut id = String::new();
    let mut blocks: Vec<Partial> = Vec::new();
    let mut stop_reason = None;
    let protocol = |what: &str, e: serde_json::Error| ApiError::Protocol(format!("{what}: {e}"));
    loop {
        let event = match sse.next_event() {
            Ok(Some(e)) => e,
            Ok(None) => return Err(ApiError::Truncated("no message_stop event".into())),
            Err(SseError::Io(e)) => return Err(ApiError::Transport(e.to_string())),
            Err(e) => return Err(ApiError::Protocol(e.to_string())),
        };
        let data: Value = match event.event.as_str() {
            "ping" => continue,
            _ => serde_json::from_str(&event.data).map_err(|e| protocol(&event.event, e))?,
        };
        match event.event.as_str() {
            "message_start" => {
                id = data["message"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            "content_block_start" => {
                let index = index_of(&data)?;
                let block: ContentBlock = serde_json::from_value(data["content_block"].clone())
                    .map_err(|e| protocol("content_block_start", e))?;
                let partial = match block {
                    ContentBlock::Text { text } => Partial::Text(text),
                    ContentBlock::ToolUse { id, name, .. } => Partial::ToolUse {
                        id,
                        name,
                        json: String::new(),
                    },
                    _ => Partial::Other,
                };
                if index != blocks.len() {
                    return Err(ApiError::Protocol(format!(
                        "content block {index} started out of order"
                    )));
                }
                blocks.push(partial);
            }
            "content_block_delta" => {
                let index = index_of(&data)?;
                let block = blocks.get_mut(index).ok_or_else(|| {
                    ApiError::Protocol(format!("delta for unknown block {index}"))
                })?;
                let delta = &data["delta"];
                match (block, delta["type"].as_str()) {
                    (Partial::Text(text), Some("text_delta")) => {
                        text.push_str(delta["text"].as_str().unwrap_or_default());
                    }
                    (Partial::ToolUse { json, .. }, Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    stop_reason = Some(reason.to_string());
                }
            }
            "message_stop" => break,
            "error" => {
                return Err(ApiError::Stream {
                    kind: data["error"]["type"]
                        .as_str()
                        .unwrap_or("unknown")
                        .to_string(),
                    message: data["error"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                });
            }
            // content_block_stop carries nothing we need; unknown events are skipped, as the API asks.
            _ => {}
        }
    }
    let mut content = Vec::with_capacity(blocks.len());
    for block in blocks {
        match block {
            Partial::Text(text) => content.push(ContentBlock::Text { text }),
            Partial::ToolUse { id, name, json } => {
                let input = if json.trim().is_empty() {
                    Value::Object(Default::default())
                } else {
                    match serde_json::from_str(&json) {
                        Ok(v) => v,
                        // A tool input cut off by max_tokens: keep the call so the loop can answer it.
                        Err(_) if stop_reason.as_deref() == Some("max_tokens") => {
                            Value::Object(Default::default())
                        }
                        Err(e) => return Err(protocol("tool input", e)),
                    }
                };
                content.push(ContentBlock::ToolUse { id, name, input });
            }
            Partial::Other => {}
        }
    }
    Ok(Response {
        id,
        content,
        stop_reason,
    })
}

fn index_of(data: &Value) -> Result<usize, ApiError> {
    data["index"]
        .as_u64()
        .and_then(|i| usize::try_from(i).ok())
        .filter(|&i| i < 4096)
        .ok_or_else(|| ApiError::Protocol("event without a valid index".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_assembles_text_and_tool_use() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"content\":[]}}\n\n",
            "event: content_block_start\ndata: {\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
            "event: content_block_delta\ndata: {\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
            "event: content_block_stop\ndata: {\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"index\":1,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
            "event: content_block_start\ndata: {\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tu_1\",\"name\":\"bash\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"command\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"ls\\\"}\"}}\n\n",
            "event: message_delta\ndata: {\"delta\":{\"stop_reason\":\"tool_use\"}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let r = read_stream(stream.as_bytes()).unwrap();
        assert_eq!(r.id, "msg_1");
        assert_eq!(r.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            r.content,
            vec![
                ContentBlock::Text {
                    text: "Hello".into()
                },
                ContentBlock::ToolUse {
                    id: "tu_1".into(),
                    name: "bash".into(),
                    input: serde_json::json!({"command": "ls"})
                }
            ]
        );
    }

    #[test]
    fn stream_without_message_stop_is_truncated_and_retryable() {
        let stream = "event: message_start\ndata: {\"message\":{\"id\":\"m\"}}\n\n";
        let e = read_stream(stream.as_bytes()).unwrap_err();
        assert!(matches!(e, ApiError::Truncated(_)));
        assert!(e.retryable());
    }

    #[test]
    fn stream_error_event_is_reported_with_its_type() {
        let stream = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let e = read_stream(stream.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "model API stream error (overloaded_error): Overloaded"
        );
        assert!(e.retryable());
    }

    #[test]
    fn non_streaming_body_drops_unknown_blocks() {
        let body = br#"{"id":"m","type":"message","role":"assistant","content":[{"type":"thinking","thinking":"x","signature":"s"},{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{}}"#;
        let r = parse_response(body).unwrap();
        assert_eq!(r.content, vec![ContentBlock::Text { text: "hi".into() }]);
        assert_eq!(r.stop_reason.as_deref(), Some("end_turn"));
    }

    #[test]
    fn error_bodies_and_retry_classes() {
        assert_eq!(
            error_body(
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
            ),
            ("rate_limit_error".into(), "slow down".into())
        );
        assert_eq!(error_body("<html>bad gateway</html>").0, "unknown");
        let status = |s| ApiError::Status {
            status: s,
            kind: String::new(),
            message: String::new(),
        };
        assert!(status(429).retryable());
        assert!(status(529).retryable());
        assert!(status(503).retryable());
        assert!(!status(400).retryable());
        assert!(!status(401).retryable());
    }

    #[test]
    fn retry_after_headers() {
        let mut h = ureq::http::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = ureq::http::HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
