//! Domain types shared by every layer. Plain data: no I/O, no serde (wire shapes live in `wire`).

use std::fmt;

use crate::core::wire::ContainerConfig;

/// The folder name of the one privileged group (contract §4.1).
pub const MAIN_GROUP_FOLDER: &str = "main";

/// The chats row the WhatsApp group sync uses as its "last synced" marker (contract §2.5).
pub const GROUP_SYNC_JID: &str = "__group_sync__";

/// A chat message as stored in `messages` (contract §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub chat_jid: String,
    pub sender: String,
    pub sender_name: String,
    pub content: String,
    /// Store-format ISO timestamp (contract §2.7).
    pub timestamp: String,
    pub is_from_me: bool,
}

/// A `chats` row: discovery metadata only, never content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub jid: String,
    pub name: Option<String>,
    pub last_message_time: Option<String>,
}

/// A `registered_groups` row. Only registered chats ever reach an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredGroup {
    pub jid: String,
    pub name: String,
    pub folder: String,
    /// The stored `trigger_pattern`, e.g. `@Andy`. Unlike the original, we match against it (contract §12.1).
    pub trigger: String,
    pub added_at: String,
    pub container_config: Option<ContainerConfig>,
    /// `None` = unset (NULL), which means "trigger required" for non-main groups (contract §4.3).
    pub requires_trigger: Option<bool>,
}

impl RegisteredGroup {
    /// Main privileges follow from the folder name alone (contract §4.1).
    pub fn is_main(&self) -> bool {
        self.folder == MAIN_GROUP_FOLDER
    }
}

/// `scheduled_tasks.schedule_type`. Unknown stored values are kept verbatim so old rows still load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleType {
    Cron,
    Interval,
    Once,
    Unknown(String),
}

impl ScheduleType {
    pub fn parse(text: &str) -> Self {
        match text {
            "cron" => Self::Cron,
            "interval" => Self::Interval,
            "once" => Self::Once,
            other => Self::Unknown(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Cron => "cron",
            Self::Interval => "interval",
            Self::Once => "once",
            Self::Unknown(s) => s,
        }
    }
}

/// `scheduled_tasks.status` (contract §6.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    Active,
    Paused,
    Completed,
    Unknown(String),
}

impl TaskStatus {
    pub fn parse(text: &str) -> Self {
        match text {
            "active" => Self::Active,
            "paused" => Self::Paused,
            "completed" => Self::Completed,
            other => Self::Unknown(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Unknown(s) => s,
        }
    }
}

/// Whether a task run resumes the group's session or starts fresh (contract §6.4, §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextMode {
    Group,
    Isolated,
}

impl ContextMode {
    /// Anything but `group` is `isolated`, as the original host treats it (contract §6.4).
    pub fn parse(text: &str) -> Self {
        if text == "group" {
            Self::Group
        } else {
            Self::Isolated
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Isolated => "isolated",
        }
    }
}

/// A `scheduled_tasks` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledTask {
    pub id: String,
    pub group_folder: String,
    pub chat_jid: String,
    pub prompt: String,
    pub schedule_type: ScheduleType,
    /// Exactly as the user supplied it (contract §2.7).
    pub schedule_value: String,
    pub next_run: Option<String>,
    pub last_run: Option<String>,
    pub last_result: Option<String>,
    pub status: TaskStatus,
    pub created_at: String,
    pub context_mode: ContextMode,
}

/// A partial task update: only `Some` fields change (contract §2.5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskUpdate {
    pub prompt: Option<String>,
    pub schedule_type: Option<ScheduleType>,
    pub schedule_value: Option<String>,
    /// `Some(None)` clears next_run.
    pub next_run: Option<Option<String>>,
    pub status: Option<TaskStatus>,
}

impl TaskUpdate {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Outcome recorded in `task_run_logs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLogStatus {
    Success,
    Error,
}

impl RunLogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
        }
    }
}

/// A `task_run_logs` row (id assigned by SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRunLog {
    pub task_id: String,
    pub run_at: String,
    pub duration_ms: i64,
    pub status: RunLogStatus,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// Why a folder name was refused (contract §12.13 fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FolderError {
    /// folder name is empty
    #[error("folder name is empty")]
    Empty,
    /// folder name is longer than 64 characters
    #[error("folder name {0:?} is longer than 64 characters")]
    TooLong(String),
    /// folder name has characters outside [a-z0-9-]
    #[error("folder name {0:?} may contain only lowercase letters, digits and '-'")]
    BadCharacters(String),
    /// `main` is reserved for the main chat
    #[error("folder name \"main\" is reserved for the main chat")]
    ReservedMain,
}

/// Validates a group folder for registration: lowercase `[a-z0-9-]`, 1–64 characters, and `main` only for
/// the main chat. This closes the original's path traversal through `../x` (contract §12.13).
pub fn validate_folder(folder: &str, registering_main: bool) -> Result<(), FolderError> {
    if folder.is_empty() {
        return Err(FolderError::Empty);
    }
    if folder.chars().count() > 64 {
        return Err(FolderError::TooLong(folder.to_string()));
    }
    if !folder
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(FolderError::BadCharacters(folder.to_string()));
    }
    if folder == MAIN_GROUP_FOLDER && !registering_main {
        return Err(FolderError::ReservedMain);
    }
    Ok(())
}

/// Group chats are the only chats listed as available groups; DMs and LIDs are stored but never listed
/// (contract §3.15, §8.12).
pub fn is_group_jid(jid: &str) -> bool {
    jid.ends_with("@g.us")
}

impl fmt::Display for ScheduleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_validation() {
        assert_eq!(validate_folder("family", false), Ok(()));
        assert_eq!(validate_folder("main", true), Ok(()));
        assert_eq!(
            validate_folder("main", false),
            Err(FolderError::ReservedMain)
        );
        assert!(matches!(
            validate_folder("../main", false),
            Err(FolderError::BadCharacters(_))
        ));
        assert!(matches!(
            validate_folder("/etc", false),
            Err(FolderError::BadCharacters(_))
        ));
        assert!(matches!(
            validate_folder("a\0b", false),
            Err(FolderError::BadCharacters(_))
        ));
        assert!(matches!(
            validate_folder(&"a".repeat(65), false),
            Err(FolderError::TooLong(_))
        ));
        assert_eq!(validate_folder("", false), Err(FolderError::Empty));
    }
}
