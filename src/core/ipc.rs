//! IPC wire shapes (contract §8, §10.11) and their strict validation. Defined once here and used by the
//! host's watcher and by the runner's tools.
//!
//! The files keep the original's formats, so the original's runner can still talk to us. Parsing is
//! strict: unknown fields are refused, except the ones the original's tools write and the host ignores
//! (`createdBy`, `timestamp`, `groupFolder`, `isMain`, `sender`); those are accepted with their original
//! types and never read. Identity never comes from a payload: it is the directory a file was found in
//! (contract §8.2).

use serde::{Deserialize, Serialize};

use crate::core::ipc_auth::Operation;
use crate::core::schedule::{self, Schedule, ScheduleError};
use crate::core::types::{ContextMode, FolderError, validate_folder};
use crate::core::wire::ContainerConfig;

/// Largest command file the host reads; anything bigger is quarantined unread.
pub const MAX_IPC_FILE_BYTES: usize = 128 * 1024;
/// Message text and task prompt. WhatsApp caps a message at 65,536 characters.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Chat JIDs.
pub const MAX_JID_BYTES: usize = 256;
/// Task ids (ours are 25 bytes: `task-<ms>-<6>`).
pub const MAX_TASK_ID_BYTES: usize = 128;
/// Group display names.
pub const MAX_NAME_BYTES: usize = 256;
/// Trigger words such as `@Andy`.
pub const MAX_TRIGGER_BYTES: usize = 128;
/// Fields the host ignores (`timestamp`, `createdBy`, `groupFolder`, `sender`, `context_mode`).
pub const MAX_META_BYTES: usize = 256;

/// `<folder>/messages/*.json` (contract §8.4), written by the `send_message` tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageFile {
    #[serde(rename = "type")]
    pub kind: MessageKind,
    #[serde(rename = "chatJid")]
    pub chat_jid: String,
    pub text: String,
    /// Ignored by the host (contract §8.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Ignored: identity is the directory (contract §8.2).
    #[serde(
        default,
        rename = "groupFolder",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_folder: Option<String>,
    /// Ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// The only `type` a message file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    #[serde(rename = "message")]
    Message,
}

/// `schedule_type` on the wire (contract §6.1). Unknown values are refused (contract §12.24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireScheduleType {
    Cron,
    Interval,
    Once,
}

impl WireScheduleType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cron => "cron",
            Self::Interval => "interval",
            Self::Once => "once",
        }
    }
}

/// `<folder>/tasks/*.json` (contract §8.6), tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum TaskFile {
    #[serde(rename = "schedule_task")]
    ScheduleTask {
        prompt: String,
        schedule_type: WireScheduleType,
        schedule_value: String,
        #[serde(rename = "targetJid")]
        target_jid: String,
        /// `group` or `isolated`; anything else (or nothing) means isolated (contract §6.4).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_mode: Option<String>,
        /// Ignored (contract §8.6).
        #[serde(default, rename = "createdBy", skip_serializing_if = "Option::is_none")]
        created_by: Option<String>,
        /// Ignored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
    },
    #[serde(rename = "pause_task")]
    PauseTask(TaskRef),
    #[serde(rename = "resume_task")]
    ResumeTask(TaskRef),
    #[serde(rename = "cancel_task")]
    CancelTask(TaskRef),
    #[serde(rename = "refresh_groups")]
    RefreshGroups {},
    #[serde(rename = "register_group")]
    RegisterGroup {
        jid: String,
        name: String,
        folder: String,
        trigger: String,
        /// Settable over IPC, unlike the original (contract §12.13).
        #[serde(
            default,
            rename = "requiresTrigger",
            skip_serializing_if = "Option::is_none"
        )]
        requires_trigger: Option<bool>,
        /// Passed through unchanged; additional mounts still go through the mount policy (contract §8.10, §9).
        #[serde(
            default,
            rename = "containerConfig",
            skip_serializing_if = "Option::is_none"
        )]
        container_config: Option<ContainerConfig>,
        /// Ignored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
    },
}

/// The body of pause/resume/cancel (contract §10.11: `{type, taskId, groupFolder, isMain, timestamp}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    #[serde(rename = "taskId")]
    pub task_id: String,
    /// Ignored: identity is the directory (contract §8.2).
    #[serde(
        default,
        rename = "groupFolder",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_folder: Option<String>,
    /// Ignored: privileges follow from the directory (contract §8.2).
    #[serde(default, rename = "isMain", skip_serializing_if = "Option::is_none")]
    pub is_main: Option<bool>,
    /// Ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// `<folder>/input/*.json`, a piped follow-up for a live run (contract §5.13, §10.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    #[serde(rename = "type")]
    pub kind: MessageKind,
    pub text: String,
}

/// One entry of `current_tasks.json` (contract §8.12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSnapshotEntry {
    pub id: String,
    #[serde(rename = "groupFolder")]
    pub group_folder: String,
    pub prompt: String,
    pub schedule_type: String,
    pub schedule_value: String,
    pub status: String,
    pub next_run: Option<String>,
}

/// `available_groups.json` (contract §8.12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsSnapshot {
    pub groups: Vec<AvailableGroup>,
    #[serde(rename = "lastSync")]
    pub last_sync: String,
}

/// One chat in `available_groups.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailableGroup {
    pub jid: String,
    pub name: String,
    #[serde(rename = "lastActivity")]
    pub last_activity: String,
    #[serde(rename = "isRegistered")]
    pub is_registered: bool,
}

/// Which kind of file a command came from: the directory decides how it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpcKind {
    Messages,
    Tasks,
}

impl IpcKind {
    /// The subdirectory name under the group's IPC namespace.
    pub const fn dir_name(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Tasks => "tasks",
        }
    }
}

/// A command after parsing and validation. Strings are within their caps and free of NUL; JIDs and
/// folders have valid shapes; schedules parse.
#[derive(Debug, Clone)]
pub enum IpcCommand {
    SendMessage {
        chat_jid: String,
        text: String,
    },
    ScheduleTask {
        prompt: String,
        schedule_type: WireScheduleType,
        schedule_value: String,
        schedule: Schedule,
        target_jid: String,
        context_mode: ContextMode,
    },
    PauseTask {
        task_id: String,
    },
    ResumeTask {
        task_id: String,
    },
    CancelTask {
        task_id: String,
    },
    RefreshGroups,
    RegisterGroup {
        jid: String,
        name: String,
        folder: String,
        trigger: String,
        requires_trigger: Option<bool>,
        container_config: Option<ContainerConfig>,
    },
}

impl IpcCommand {
    /// The command's wire `type`, for logs and audit events.
    pub fn name(&self) -> &'static str {
        self.operation().name()
    }

    /// What authorization needs to know about this command (`core::ipc_auth`).
    pub fn operation(&self) -> Operation<'_> {
        match self {
            Self::SendMessage { chat_jid, .. } => Operation::SendMessage { chat_jid },
            Self::ScheduleTask { target_jid, .. } => Operation::ScheduleTask { target_jid },
            Self::PauseTask { task_id } => Operation::PauseTask { task_id },
            Self::ResumeTask { task_id } => Operation::ResumeTask { task_id },
            Self::CancelTask { task_id } => Operation::CancelTask { task_id },
            Self::RefreshGroups => Operation::RefreshGroups,
            Self::RegisterGroup { jid, folder, .. } => Operation::RegisterGroup { jid, folder },
        }
    }
}

/// Why a command file was refused before authorization.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpcRejection {
    /// the file is larger than [`MAX_IPC_FILE_BYTES`]
    #[error("file is larger than {MAX_IPC_FILE_BYTES} bytes")]
    TooLarge,
    /// the file is not valid UTF-8 JSON of a known command shape (unknown type, missing field, wrong type,
    /// unknown field)
    #[error("malformed command: {0}")]
    Malformed(String),
    /// a required field is empty
    #[error("field {0} is empty")]
    EmptyField(&'static str),
    /// a field is longer than its cap
    #[error("field {field} is longer than {max} bytes")]
    FieldTooLong { field: &'static str, max: usize },
    /// a field contains a NUL or another control character where none may appear
    #[error("field {0} contains a control character")]
    ControlCharacter(&'static str),
    /// a JID does not look like `user@server`
    #[error("field {field} is not a valid chat JID: {value:?}")]
    BadJid { field: &'static str, value: String },
    /// the folder name is refused (path traversal, absolute path, bad characters, length)
    #[error("invalid folder: {0}")]
    BadFolder(FolderError),
    /// the schedule does not parse
    #[error("invalid schedule: {0}")]
    BadSchedule(ScheduleError),
    /// the file is not a regular file (symlink, FIFO, device, directory)
    #[error("not a regular file")]
    NotRegularFile,
    /// the file could not be read
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// the folder name is reserved for the host's own IPC directories
    #[error("folder name {0:?} is reserved")]
    ReservedFolder(String),
    /// the host was stopped while applying the file; it is not retried (at most once)
    #[error("interrupted while being processed")]
    Interrupted,
    /// the host could not apply the command (store or channel failure)
    #[error("effect failed: {0}")]
    EffectFailed(String),
}

/// Folder names that would collide with the host's own directories under the IPC root.
pub const RESERVED_FOLDERS: &[&str] = &["errors"];

/// Parses and validates one file from `<folder>/<kind>/`.
pub fn parse_command(kind: IpcKind, bytes: &[u8]) -> Result<IpcCommand, IpcRejection> {
    if bytes.len() > MAX_IPC_FILE_BYTES {
        return Err(IpcRejection::TooLarge);
    }
    match kind {
        IpcKind::Messages => parse_message(bytes),
        IpcKind::Tasks => parse_task(bytes),
    }
}

fn malformed(e: serde_json::Error) -> IpcRejection {
    // serde_json quotes offending values in some messages; keep the reason short.
    let mut text = e.to_string();
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    IpcRejection::Malformed(text)
}

/// Parses a `messages/` file.
pub fn parse_message(bytes: &[u8]) -> Result<IpcCommand, IpcRejection> {
    if bytes.len() > MAX_IPC_FILE_BYTES {
        return Err(IpcRejection::TooLarge);
    }
    let file: MessageFile = serde_json::from_slice(bytes).map_err(malformed)?;
    jid("chatJid", &file.chat_jid)?;
    text("text", &file.text, MAX_TEXT_BYTES)?;
    meta("sender", file.sender.as_deref())?;
    meta("groupFolder", file.group_folder.as_deref())?;
    meta("timestamp", file.timestamp.as_deref())?;
    Ok(IpcCommand::SendMessage {
        chat_jid: file.chat_jid,
        text: file.text,
    })
}

/// Parses a `tasks/` file.
pub fn parse_task(bytes: &[u8]) -> Result<IpcCommand, IpcRejection> {
    if bytes.len() > MAX_IPC_FILE_BYTES {
        return Err(IpcRejection::TooLarge);
    }
    let file: TaskFile = serde_json::from_slice(bytes).map_err(malformed)?;
    validate_task_file(file)
}

/// Validates an already-deserialized task file.
pub fn validate_task_file(file: TaskFile) -> Result<IpcCommand, IpcRejection> {
    Ok(match file {
        TaskFile::ScheduleTask {
            prompt,
            schedule_type,
            schedule_value,
            target_jid,
            context_mode,
            created_by,
            timestamp,
        } => {
            text("prompt", &prompt, MAX_TEXT_BYTES)?;
            jid("targetJid", &target_jid)?;
            meta("context_mode", context_mode.as_deref())?;
            meta("createdBy", created_by.as_deref())?;
            meta("timestamp", timestamp.as_deref())?;
            short(
                "schedule_value",
                &schedule_value,
                schedule::MAX_SCHEDULE_VALUE_BYTES,
            )?;
            let schedule = schedule::parse_schedule(schedule_type.as_str(), &schedule_value)
                .map_err(IpcRejection::BadSchedule)?;
            IpcCommand::ScheduleTask {
                prompt,
                schedule_type,
                schedule_value,
                schedule,
                target_jid,
                context_mode: ContextMode::parse(context_mode.as_deref().unwrap_or("")),
            }
        }
        TaskFile::PauseTask(r) => IpcCommand::PauseTask {
            task_id: task_ref(r)?,
        },
        TaskFile::ResumeTask(r) => IpcCommand::ResumeTask {
            task_id: task_ref(r)?,
        },
        TaskFile::CancelTask(r) => IpcCommand::CancelTask {
            task_id: task_ref(r)?,
        },
        TaskFile::RefreshGroups {} => IpcCommand::RefreshGroups,
        TaskFile::RegisterGroup {
            jid: group_jid,
            name,
            folder,
            trigger,
            requires_trigger,
            container_config,
            timestamp,
        } => {
            jid("jid", &group_jid)?;
            short("name", &name, MAX_NAME_BYTES)?;
            short("trigger", &trigger, MAX_TRIGGER_BYTES)?;
            meta("timestamp", timestamp.as_deref())?;
            // `main` passes here; whether this chat may take it is an authorization question (§12.13).
            validate_folder(&folder, true).map_err(IpcRejection::BadFolder)?;
            if RESERVED_FOLDERS.contains(&folder.as_str()) {
                return Err(IpcRejection::ReservedFolder(folder));
            }
            IpcCommand::RegisterGroup {
                jid: group_jid,
                name,
                folder,
                trigger,
                requires_trigger,
                container_config,
            }
        }
    })
}

fn task_ref(r: TaskRef) -> Result<String, IpcRejection> {
    short("taskId", &r.task_id, MAX_TASK_ID_BYTES)?;
    meta("groupFolder", r.group_folder.as_deref())?;
    meta("timestamp", r.timestamp.as_deref())?;
    Ok(r.task_id)
}

/// Free text (message text, prompt): non-empty after trimming, capped, no NUL.
fn text(field: &'static str, value: &str, max: usize) -> Result<(), IpcRejection> {
    if value.trim().is_empty() {
        return Err(IpcRejection::EmptyField(field));
    }
    if value.len() > max {
        return Err(IpcRejection::FieldTooLong { field, max });
    }
    if value.contains('\0') {
        return Err(IpcRejection::ControlCharacter(field));
    }
    Ok(())
}

/// Short single-line values (names, ids, triggers): non-empty, capped, no control characters.
fn short(field: &'static str, value: &str, max: usize) -> Result<(), IpcRejection> {
    if value.trim().is_empty() {
        return Err(IpcRejection::EmptyField(field));
    }
    if value.len() > max {
        return Err(IpcRejection::FieldTooLong { field, max });
    }
    if value.chars().any(char::is_control) {
        return Err(IpcRejection::ControlCharacter(field));
    }
    Ok(())
}

/// Ignored fields are still bounded so a file cannot smuggle anything odd into a log line.
fn meta(field: &'static str, value: Option<&str>) -> Result<(), IpcRejection> {
    match value {
        None => Ok(()),
        Some(v) if v.len() > MAX_META_BYTES => Err(IpcRejection::FieldTooLong {
            field,
            max: MAX_META_BYTES,
        }),
        Some(v) if v.chars().any(char::is_control) => Err(IpcRejection::ControlCharacter(field)),
        Some(_) => Ok(()),
    }
}

fn jid(field: &'static str, value: &str) -> Result<(), IpcRejection> {
    if value.is_empty() {
        return Err(IpcRejection::EmptyField(field));
    }
    if value.len() > MAX_JID_BYTES {
        return Err(IpcRejection::FieldTooLong {
            field,
            max: MAX_JID_BYTES,
        });
    }
    if is_valid_jid(value) {
        Ok(())
    } else {
        let mut shown: String = value.chars().take(64).collect();
        shown.retain(|c| !c.is_control());
        Err(IpcRejection::BadJid {
            field,
            value: shown,
        })
    }
}

/// A chat JID in one of two shapes:
/// - WhatsApp `user@server`: user of `[A-Za-z0-9._:+=-]` (users, groups `123-456`, device suffixes
///   `:12`), server a lowercase DNS-like name (`s.whatsapp.net`, `g.us`, `lid`);
/// - channel-prefixed `<channel>:<id>` (the local channel's `local:<name>`): channel `[a-z]{1,16}`,
///   id `[A-Za-z0-9._-]`, no `@`.
pub fn is_valid_jid(value: &str) -> bool {
    if value.is_empty() || value.len() > MAX_JID_BYTES {
        return false;
    }
    if let Some((user, server)) = value.split_once('@') {
        let user_ok = !user.is_empty()
            && user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:+=-".contains(&b));
        let server_ok = !server.is_empty()
            && !server.starts_with('.')
            && !server.ends_with('.')
            && !server.contains("..")
            && server
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        return user_ok && server_ok;
    }
    let Some((channel, id)) = value.split_once(':') else {
        return false;
    };
    (1..=16).contains(&channel.len())
        && channel.bytes().all(|b| b.is_ascii_lowercase())
        && !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A source directory name is a group's identity (contract §8.2); only valid folder names count.
pub fn is_valid_source_dir(name: &str) -> bool {
    validate_folder(name, true).is_ok() && !RESERVED_FOLDERS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(json: &str) -> Result<IpcCommand, IpcRejection> {
        parse_command(IpcKind::Tasks, json.as_bytes())
    }

    fn message(json: &str) -> Result<IpcCommand, IpcRejection> {
        parse_command(IpcKind::Messages, json.as_bytes())
    }

    fn malformed_reason(r: Result<IpcCommand, IpcRejection>) -> String {
        match r {
            Err(IpcRejection::Malformed(reason)) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn accepts_what_the_original_tools_write() {
        // send_message, with and without sender.
        let m = message(
            r#"{"type":"message","chatJid":"1203@g.us","text":"hi","sender":"Researcher","groupFolder":"family","timestamp":"2026-02-10T09:00:00.000Z"}"#,
        )
        .unwrap();
        assert!(
            matches!(m, IpcCommand::SendMessage { ref chat_jid, ref text } if chat_jid == "1203@g.us" && text == "hi")
        );
        message(r#"{"type":"message","chatJid":"1555@s.whatsapp.net","text":"x","groupFolder":"main","timestamp":"t"}"#).unwrap();

        let s = task(
            r#"{"type":"schedule_task","prompt":"p","schedule_type":"cron","schedule_value":"0 9 * * *","context_mode":"group","targetJid":"1203@g.us","createdBy":"family","timestamp":"2026-02-10T09:00:00.000Z"}"#,
        )
        .unwrap();
        assert!(matches!(
            s,
            IpcCommand::ScheduleTask {
                context_mode: ContextMode::Group,
                ..
            }
        ));
        for kind in ["pause_task", "resume_task", "cancel_task"] {
            let c = task(&format!(
                r#"{{"type":"{kind}","taskId":"task-1-abcdef","groupFolder":"family","isMain":false,"timestamp":"t"}}"#
            ))
            .unwrap();
            assert_eq!(c.name(), kind);
        }
        assert!(matches!(
            task(r#"{"type":"refresh_groups"}"#).unwrap(),
            IpcCommand::RefreshGroups
        ));
        let r = task(
            r#"{"type":"register_group","jid":"1203@g.us","name":"Family","folder":"family","trigger":"@Andy","timestamp":"t"}"#,
        )
        .unwrap();
        assert!(
            matches!(r, IpcCommand::RegisterGroup { ref folder, requires_trigger: None, .. } if folder == "family")
        );
    }

    #[test]
    fn context_mode_defaults_to_isolated() {
        for extra in [
            "",
            r#","context_mode":"isolated""#,
            r#","context_mode":"bogus""#,
        ] {
            let c = task(&format!(
                r#"{{"type":"schedule_task","prompt":"p","schedule_type":"interval","schedule_value":"60000","targetJid":"a@g.us"{extra}}}"#
            ))
            .unwrap();
            assert!(
                matches!(
                    c,
                    IpcCommand::ScheduleTask {
                        context_mode: ContextMode::Isolated,
                        ..
                    }
                ),
                "{extra}"
            );
        }
    }

    #[test]
    fn rejects_unknown_types() {
        assert!(
            malformed_reason(task(r#"{"type":"delete_everything"}"#)).contains("unknown variant")
        );
        assert!(
            malformed_reason(message(r#"{"type":"image","chatJid":"a@g.us","text":"x"}"#))
                .contains("unknown variant")
        );
        // A task command in messages/ is not a message.
        assert!(message(r#"{"type":"refresh_groups"}"#).is_err());
        assert!(malformed_reason(task(r#"{"taskId":"x"}"#)).contains("missing field `type`"));
        // Unknown schedule_type is refused, not stored as a dead task (contract §12.24).
        assert!(malformed_reason(task(
            r#"{"type":"schedule_task","prompt":"p","schedule_type":"weekly","schedule_value":"1","targetJid":"a@g.us"}"#
        ))
        .contains("unknown variant"));
    }

    #[test]
    fn rejects_missing_fields() {
        assert!(
            malformed_reason(message(r#"{"type":"message","text":"x"}"#))
                .contains("missing field `chatJid`")
        );
        assert!(
            malformed_reason(message(r#"{"type":"message","chatJid":"a@g.us"}"#))
                .contains("missing field `text`")
        );
        assert!(
            malformed_reason(task(r#"{"type":"pause_task"}"#)).contains("missing field `taskId`")
        );
        // The original's "missing folder and trigger" case.
        assert!(
            malformed_reason(task(
                r#"{"type":"register_group","jid":"partial@g.us","name":"Partial"}"#
            ))
            .contains("missing field")
        );
        assert!(malformed_reason(task(
            r#"{"type":"schedule_task","prompt":"p","schedule_type":"once","schedule_value":"2026-01-01"}"#
        ))
        .contains("missing field `targetJid`"));
    }

    #[test]
    fn rejects_empty_required_fields() {
        assert_eq!(
            message(r#"{"type":"message","chatJid":"a@g.us","text":"  "}"#).unwrap_err(),
            IpcRejection::EmptyField("text")
        );
        assert_eq!(
            message(r#"{"type":"message","chatJid":"","text":"x"}"#).unwrap_err(),
            IpcRejection::EmptyField("chatJid")
        );
        assert_eq!(
            task(r#"{"type":"cancel_task","taskId":""}"#).unwrap_err(),
            IpcRejection::EmptyField("taskId")
        );
    }

    #[test]
    fn rejects_wrong_types() {
        assert!(
            malformed_reason(message(r#"{"type":"message","chatJid":"a@g.us","text":5}"#))
                .contains("invalid type")
        );
        assert!(
            malformed_reason(task(r#"{"type":"pause_task","taskId":["x"]}"#))
                .contains("invalid type")
        );
        assert!(
            malformed_reason(task(r#"{"type":"pause_task","taskId":"x","isMain":"yes"}"#))
                .contains("invalid type")
        );
        assert!(malformed_reason(task(r#"{"type":"register_group","jid":"a@g.us","name":"n","folder":"f","trigger":"t","requiresTrigger":1}"#)).contains("invalid type"));
        let reason = malformed_reason(message(r#"["message"]"#));
        assert!(
            reason.contains("invalid type") || reason.contains("expected"),
            "{reason}"
        );
        assert!(matches!(
            message("not json"),
            Err(IpcRejection::Malformed(_))
        ));
        assert!(matches!(
            message("\u{feff}{}"),
            Err(IpcRejection::Malformed(_))
        ));
        assert!(matches!(
            parse_command(
                IpcKind::Messages,
                b"{\"type\":\"message\",\"chatJid\":\"a@g.us\",\"text\":\"\xff\"}"
            ),
            Err(IpcRejection::Malformed(_))
        ));
    }

    #[test]
    fn rejects_unknown_fields_but_not_the_ignored_ones() {
        assert!(
            malformed_reason(message(
                r#"{"type":"message","chatJid":"a@g.us","text":"x","isMain":true}"#
            ))
            .contains("unknown field `isMain`")
        );
        assert!(
            malformed_reason(task(r#"{"type":"refresh_groups","force":true}"#))
                .contains("unknown field")
        );
        assert!(
            malformed_reason(task(
                r#"{"type":"pause_task","taskId":"x","status":"active"}"#
            ))
            .contains("unknown field")
        );
        assert!(malformed_reason(task(
            r#"{"type":"register_group","jid":"a@g.us","name":"n","folder":"f","trigger":"t","isMain":true}"#
        ))
        .contains("unknown field"));
    }

    #[test]
    fn rejects_oversize() {
        let big = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(
            message(&format!(
                r#"{{"type":"message","chatJid":"a@g.us","text":"{big}"}}"#
            ))
            .unwrap_err(),
            IpcRejection::FieldTooLong {
                field: "text",
                max: MAX_TEXT_BYTES
            }
        );
        let huge = "x".repeat(MAX_IPC_FILE_BYTES);
        assert_eq!(
            message(&format!(
                r#"{{"type":"message","chatJid":"a@g.us","text":"{huge}"}}"#
            ))
            .unwrap_err(),
            IpcRejection::TooLarge
        );
        let long_id = "t".repeat(MAX_TASK_ID_BYTES + 1);
        assert!(matches!(
            task(&format!(r#"{{"type":"pause_task","taskId":"{long_id}"}}"#)),
            Err(IpcRejection::FieldTooLong {
                field: "taskId",
                ..
            })
        ));
        let long_meta = "m".repeat(MAX_META_BYTES + 1);
        assert!(matches!(
            task(&format!(
                r#"{{"type":"pause_task","taskId":"x","timestamp":"{long_meta}"}}"#
            )),
            Err(IpcRejection::FieldTooLong {
                field: "timestamp",
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_schedules() {
        let sched = |t: &str, v: &str| {
            task(&format!(
                r#"{{"type":"schedule_task","prompt":"p","schedule_type":"{t}","schedule_value":"{v}","targetJid":"a@g.us"}}"#
            ))
        };
        for (t, v) in [
            ("cron", "not a cron"),
            ("cron", "99 * * * *"),
            ("interval", "abc"),
            ("interval", "0"),
            ("interval", "-1000"),
            ("once", "not-a-date"),
        ] {
            assert!(
                matches!(sched(t, v), Err(IpcRejection::BadSchedule(_))),
                "{t} {v:?}"
            );
        }
        assert_eq!(
            sched("once", "").unwrap_err(),
            IpcRejection::EmptyField("schedule_value")
        );
        assert!(sched("cron", "*/5 * * * *").is_ok());
        assert!(sched("once", "2026-06-01T00:00:00").is_ok());
    }

    #[test]
    fn rejects_invalid_jids() {
        for bad in [
            "nobody",
            "@g.us",
            "user@",
            "a b@g.us",
            "a@G.US",
            "a@g..us",
            "a@/etc",
            "../x@g.us",
            "a@g.us\n",
            "a\0@g.us",
            "a@b@g.us",
        ] {
            let r = message(
                &serde_json::json!({"type":"message","chatJid":bad,"text":"x"}).to_string(),
            );
            assert!(
                matches!(r, Err(IpcRejection::BadJid { .. })),
                "{bad:?}: {r:?}"
            );
        }
        for good in [
            "1203630@g.us",
            "120363-1700000@g.us",
            "1555:12@s.whatsapp.net",
            "abc@lid",
            "status@broadcast",
            "local:kitchen",
            "tg:-100123",
        ] {
            assert!(is_valid_jid(good), "{good}");
        }
        for bad in [
            "local:",
            ":x",
            "LOCAL:x",
            "local:a/b",
            "local:a b",
            "local:..",
            "verylongchannelname:x",
        ] {
            assert!(!is_valid_jid(bad), "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_folders() {
        let reg = |folder: &str| {
            task(&serde_json::json!({"type":"register_group","jid":"a@g.us","name":"n","folder":folder,"trigger":"@Andy"}).to_string())
        };
        // The original's "../../outside" case, plus absolute paths, NUL and case.
        for bad in [
            "../main",
            "../../outside",
            "/etc",
            "/",
            "a/b",
            "a\0b",
            "Family",
            "",
            ".",
            "..",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(reg(bad), Err(IpcRejection::BadFolder(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            reg("errors").unwrap_err(),
            IpcRejection::ReservedFolder("errors".into())
        );
        assert!(reg("new-group").is_ok());
        assert!(reg("main").is_ok(), "main is decided by authorization");
    }

    #[test]
    fn rejects_control_characters() {
        assert_eq!(
            message(
                &serde_json::json!({"type":"message","chatJid":"a@g.us","text":"a\u{0}b"})
                    .to_string()
            )
            .unwrap_err(),
            IpcRejection::ControlCharacter("text")
        );
        assert_eq!(
            task(&serde_json::json!({"type":"pause_task","taskId":"x\ny"}).to_string())
                .unwrap_err(),
            IpcRejection::ControlCharacter("taskId")
        );
        // Newlines in free text are fine.
        assert!(
            message(
                &serde_json::json!({"type":"message","chatJid":"a@g.us","text":"a\nb"}).to_string()
            )
            .is_ok()
        );
    }

    #[test]
    fn source_dirs() {
        assert!(is_valid_source_dir("main"));
        assert!(is_valid_source_dir("family-chat"));
        for bad in [
            "errors",
            "errors-x/..",
            ".processing",
            "..",
            "Main",
            "a b",
            "",
        ] {
            assert!(!is_valid_source_dir(bad), "{bad:?}");
        }
    }

    #[test]
    fn wire_round_trip() {
        let file = TaskFile::PauseTask(TaskRef {
            task_id: "task-1".into(),
            group_folder: Some("family".into()),
            is_main: Some(false),
            timestamp: None,
        });
        let text = serde_json::to_string(&file).unwrap();
        assert_eq!(
            text,
            r#"{"type":"pause_task","taskId":"task-1","groupFolder":"family","isMain":false}"#
        );
        assert_eq!(serde_json::from_str::<TaskFile>(&text).unwrap(), file);
        let input = InputFile {
            kind: MessageKind::Message,
            text: "hi".into(),
        };
        assert_eq!(
            serde_json::to_string(&input).unwrap(),
            r#"{"type":"message","text":"hi"}"#
        );
    }
}
