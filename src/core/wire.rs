//! Serialized shapes that cross a process or version boundary. Defined once here and used by every
//! reader and writer; changing one is a compatibility decision.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `registered_groups.container_config` JSON (contract §1.7). Unknown keys are kept so a value written by
/// another release survives a round trip through ours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_mounts: Option<Vec<AdditionalMount>>,
    /// Per-group hard timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<serde_json::Number>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One requested extra mount; validated against the allowlist before use (contract §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalMount {
    pub host_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `data/registered_groups.json` entry written by pre-SQLite releases (contract §2.4).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyGroup {
    pub name: String,
    pub folder: String,
    pub trigger: String,
    #[serde(rename = "added_at")]
    pub added_at: String,
    #[serde(default)]
    pub container_config: Option<ContainerConfig>,
    #[serde(default)]
    pub requires_trigger: Option<bool>,
}

/// `data/router_state.json` written by pre-SQLite releases (contract §2.4).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LegacyRouterState {
    #[serde(default)]
    pub last_timestamp: Option<String>,
    /// Kept as a JSON object so its key order survives re-encoding.
    #[serde(default)]
    pub last_agent_timestamp: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The one JSON object written to a run's stdin, then stdin is closed (contract §7.7).
/// Absent optional keys are omitted, never `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInput {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub group_folder: String,
    pub chat_jid: String,
    pub is_main: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_scheduled_task: bool,
}

/// Agent settings nanoclaw's host may add to the run input. The original's runner ignores unknown
/// keys, so the input stays readable by it. Absent keys mean the runner's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Model responses per query before the turn is given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// The assistant's name (contract §1.2 ASSISTANT_NAME), for the system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_name: Option<String>,
}

/// What nanoclaw's runner reads on stdin: the contract §7.7 object plus [`AgentOptions`], flat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInput {
    #[serde(flatten)]
    pub input: ContainerInput,
    #[serde(flatten)]
    pub options: AgentOptions,
}

/// `status` of an output frame (contract §7.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameStatus {
    Success,
    Error,
}

/// One output frame's JSON payload (contract §7.8). `result: null` is a session-update frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputFrame {
    pub status: FrameStatus,
    /// A string normally; any other JSON value is serialized to text by the consumer (contract §4.7).
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Frame sentinels on the runner's stdout (contract §7.8).
pub const OUTPUT_START_MARKER: &str = "---NANOCLAW_OUTPUT_START---";
pub const OUTPUT_END_MARKER: &str = "---NANOCLAW_OUTPUT_END---";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_input_omits_absent_keys() {
        let input = ContainerInput {
            prompt: "p".into(),
            session_id: None,
            group_folder: "main".into(),
            chat_jid: "j".into(),
            is_main: true,
            is_scheduled_task: false,
        };
        assert_eq!(
            serde_json::to_string(&input).unwrap(),
            r#"{"prompt":"p","groupFolder":"main","chatJid":"j","isMain":true}"#
        );
    }

    #[test]
    fn runner_input_is_the_container_input_plus_options() {
        let text = r#"{"prompt":"p","sessionId":"s","groupFolder":"g","chatJid":"j@g.us","isMain":false,"isScheduledTask":true,"model":"m","maxTurns":3}"#;
        let parsed: RunnerInput = serde_json::from_str(text).unwrap();
        assert!(parsed.input.is_scheduled_task);
        assert_eq!(parsed.options.model.as_deref(), Some("m"));
        assert_eq!(parsed.options.max_turns, Some(3));
        assert_eq!(
            serde_json::to_value(&parsed).unwrap(),
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        // The plain contract object is a valid runner input.
        let plain: RunnerInput =
            serde_json::from_str(r#"{"prompt":"p","groupFolder":"g","chatJid":"j","isMain":true}"#)
                .unwrap();
        assert_eq!(plain.options, AgentOptions::default());
    }

    #[test]
    fn container_config_round_trips_unknown_keys() {
        let text = r#"{"additionalMounts":[{"hostPath":"~/x","readonly":true,"future":1}],"timeout":600000,"other":"kept"}"#;
        let cfg: ContainerConfig = serde_json::from_str(text).unwrap();
        let back: serde_json::Value = serde_json::to_value(&cfg).unwrap();
        let orig: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, orig);
    }
}

/// A line a local-channel client sends (JSON lines over the Unix socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum LocalClientLine {
    /// `{"op":"history","chat":"local:main","limit":20}`: recent messages of a chat.
    History {
        op: LocalOp,
        chat: String,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// `{"chat":"local:<name>","sender":"…","sender_name":"…","text":"…"}`: a message.
    Message {
        chat: String,
        #[serde(default)]
        sender: Option<String>,
        #[serde(default)]
        sender_name: Option<String>,
        text: String,
    },
}

/// Operations other than sending a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalOp {
    History,
}

/// A line the host sends to local-channel clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LocalServerLine {
    /// A reply: `{"chat":"…","from":"Andy","text":"…"}`.
    Reply {
        chat: String,
        from: String,
        text: String,
    },
    /// Typing state: `{"chat":"…","typing":true}`.
    Typing { chat: String, typing: bool },
    /// Recent messages, oldest first.
    History {
        chat: String,
        history: Vec<LocalHistoryEntry>,
    },
    /// The client's line was refused; nothing else happened.
    Error { error: String },
}

/// One entry of a history answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalHistoryEntry {
    pub sender_name: String,
    pub text: String,
    pub time: String,
}

/// What a running host reports on its control socket (`<run_dir>/control.sock`, one JSON line per
/// connection) for `nanoclaw status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub version: String,
    pub pid: u32,
    /// When the host started serving (UTC ISO).
    pub started_at: String,
    pub uptime_secs: u64,
    /// Whether a model credential is loaded; without one every run is refused.
    pub credential: bool,
    pub max_concurrent_runs: usize,
    /// Runs holding a global slot right now.
    pub active_runs: usize,
    /// Runs started since the host started.
    pub runs_started: u64,
    pub retries_scheduled: u64,
    pub groups: Vec<GroupStatus>,
}

/// One group actor as [`HostStatus`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub jid: String,
    pub folder: String,
    pub name: String,
    /// `"message"` or `"task"` while a run is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The task id of a live task run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_task: Option<String>,
    /// New messages were noted and not yet looked at.
    pub pending_messages: bool,
    /// Task runs waiting in the group's mailbox.
    pub queued_tasks: usize,
    /// Entries in the group's mailbox (wake-ups and task runs).
    pub mailbox_depth: usize,
}
