//! The NanoClaw tools (contract §10.11): requests to the host written as IPC files (contract §8), and
//! the task and group snapshots the host left in the IPC dir (contract §8.12).
//!
//! Files are serialized from the same `core::ipc` types the host parses, checked with the host's own
//! parser before they are published, and published atomically: pretty JSON to `<name>.tmp`, then a
//! rename to `<epochMillis>-<6 base-36 chars>.json` (contract §8.13). A request the host would refuse
//! as malformed is reported to the model instead of being written.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::ipc::{
    self, GroupsSnapshot, IpcKind, MessageFile, MessageKind, TaskFile, TaskRef, TaskSnapshotEntry,
    WireScheduleType,
};
use crate::core::schedule;
use crate::core::time::now_iso;
use crate::runner::session::write_atomic;

/// Who this run is: the identity the host will derive from the directory anyway (contract §8.2).
#[derive(Debug, Clone)]
pub struct Identity {
    pub chat_jid: String,
    pub group_folder: String,
    pub is_main: bool,
}

/// Snapshot files larger than this are not read.
const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024;

/// Publishes one request file under `<ipc>/<messages|tasks>/` and returns its name.
pub fn publish(ipc_dir: &Path, kind: IpcKind, bytes: &[u8]) -> Result<String, String> {
    // The host's parser is the judge of what it will accept.
    ipc::parse_command(kind, bytes)
        .map_err(|e| format!("the host would refuse this request: {e}"))?;
    let dir = ipc_dir.join(kind.dir_name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let millis = chrono::Utc::now().timestamp_millis();
    let suffix: String = (0..6)
        .map(|_| char::from_digit(fastrand::u32(..36), 36).unwrap_or('0'))
        .collect();
    let name = format!("{millis}-{suffix}.json");
    let path: PathBuf = dir.join(&name);
    write_atomic(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(name)
}

fn pretty<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec_pretty(value).map_err(|e| e.to_string())
}

#[derive(Deserialize)]
pub struct SendMessageParams {
    pub text: String,
    #[serde(default)]
    pub sender: Option<String>,
}

pub fn send_message(ipc_dir: &Path, id: &Identity, p: SendMessageParams) -> Result<String, String> {
    let file = MessageFile {
        kind: MessageKind::Message,
        chat_jid: id.chat_jid.clone(),
        text: p.text,
        sender: p.sender,
        group_folder: Some(id.group_folder.clone()),
        timestamp: Some(now_iso()),
    };
    publish(ipc_dir, IpcKind::Messages, &pretty(&file)?)?;
    Ok("Message sent.".into())
}

#[derive(Deserialize)]
pub struct ScheduleParams {
    pub prompt: String,
    pub schedule_type: String,
    pub schedule_value: String,
    #[serde(default)]
    pub context_mode: Option<String>,
    #[serde(default)]
    pub target_group_jid: Option<String>,
}

pub fn schedule_task(ipc_dir: &Path, id: &Identity, p: ScheduleParams) -> Result<String, String> {
    let schedule_type = match p.schedule_type.as_str() {
        "cron" => WireScheduleType::Cron,
        "interval" => WireScheduleType::Interval,
        "once" => WireScheduleType::Once,
        other => {
            return Err(format!(
                "schedule_type must be cron, interval or once, not {other:?}"
            ));
        }
    };
    // The host's own schedule parser, so what passes here is what the scheduler can run.
    schedule::parse_schedule(schedule_type.as_str(), &p.schedule_value)
        .map_err(|e| e.to_string())?;
    let context_mode = p.context_mode.unwrap_or_else(|| "group".into());
    if !matches!(context_mode.as_str(), "group" | "isolated") {
        return Err(format!(
            "context_mode must be group or isolated, not {context_mode:?}"
        ));
    }
    let target = match p.target_group_jid {
        Some(jid) if id.is_main && !jid.is_empty() => jid,
        _ => id.chat_jid.clone(),
    };
    let file = TaskFile::ScheduleTask {
        prompt: p.prompt,
        schedule_type,
        schedule_value: p.schedule_value.clone(),
        target_jid: target.clone(),
        context_mode: Some(context_mode),
        created_by: Some(id.group_folder.clone()),
        timestamp: Some(now_iso()),
    };
    let name = publish(ipc_dir, IpcKind::Tasks, &pretty(&file)?)?;
    Ok(format!(
        "Task scheduled ({name}): {} {} for {target}. The host validates it again and may still refuse it.",
        schedule_type.as_str(),
        p.schedule_value
    ))
}

#[derive(Deserialize)]
pub struct TaskIdParams {
    pub task_id: String,
}

/// pause_task, resume_task, cancel_task.
pub fn task_action(
    ipc_dir: &Path,
    id: &Identity,
    action: &str,
    p: TaskIdParams,
) -> Result<String, String> {
    let r = TaskRef {
        task_id: p.task_id.clone(),
        group_folder: Some(id.group_folder.clone()),
        is_main: Some(id.is_main),
        timestamp: Some(now_iso()),
    };
    let (file, verb) = match action {
        "pause_task" => (TaskFile::PauseTask(r), "pause"),
        "resume_task" => (TaskFile::ResumeTask(r), "resume"),
        "cancel_task" => (TaskFile::CancelTask(r), "cancellation"),
        other => return Err(format!("unknown task action {other}")),
    };
    publish(ipc_dir, IpcKind::Tasks, &pretty(&file)?)?;
    Ok(format!("Task {} {verb} requested.", p.task_id))
}

#[derive(Deserialize)]
pub struct RegisterParams {
    pub jid: String,
    pub name: String,
    pub folder: String,
    pub trigger: String,
    #[serde(default)]
    pub requires_trigger: Option<bool>,
}

pub fn register_group(ipc_dir: &Path, id: &Identity, p: RegisterParams) -> Result<String, String> {
    if !id.is_main {
        return Err("Only the main group can register new groups.".into());
    }
    let file = TaskFile::RegisterGroup {
        jid: p.jid.clone(),
        name: p.name,
        folder: p.folder.clone(),
        trigger: p.trigger,
        requires_trigger: p.requires_trigger,
        container_config: None,
        timestamp: Some(now_iso()),
    };
    publish(ipc_dir, IpcKind::Tasks, &pretty(&file)?)?;
    Ok(format!(
        "Group {} registration requested (folder {}).",
        p.jid, p.folder
    ))
}

pub fn refresh_groups(ipc_dir: &Path, id: &Identity) -> Result<String, String> {
    if !id.is_main {
        return Err("Only the main group can refresh the group list.".into());
    }
    publish(
        ipc_dir,
        IpcKind::Tasks,
        &pretty(&TaskFile::RefreshGroups {})?,
    )?;
    Ok(
        "Group metadata refresh requested; available_groups.json is rewritten when it is done."
            .into(),
    )
}

fn read_snapshot(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if m.len() > MAX_SNAPSHOT_BYTES => {
            return Err(format!("{} is too large", path.display()));
        }
        Ok(_) => {}
    }
    std::fs::read(path)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn list_tasks(ipc_dir: &Path, id: &Identity) -> Result<String, String> {
    let path = ipc_dir.join("current_tasks.json");
    let Some(bytes) = read_snapshot(&path)? else {
        return Ok("No scheduled tasks found.".into());
    };
    let tasks: Vec<TaskSnapshotEntry> =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines: Vec<String> = tasks
        .iter()
        .filter(|t| id.is_main || t.group_folder == id.group_folder)
        .map(|t| {
            let prompt: String = t.prompt.chars().take(50).collect();
            let ellipsis = if t.prompt.chars().count() > 50 {
                "..."
            } else {
                ""
            };
            format!(
                "- [{}] {prompt}{ellipsis} ({}: {}) - {}, next: {}",
                t.id,
                t.schedule_type,
                t.schedule_value,
                t.status,
                t.next_run.as_deref().unwrap_or("N/A")
            )
        })
        .collect();
    if lines.is_empty() {
        return Ok("No scheduled tasks found.".into());
    }
    Ok(format!("Scheduled tasks:\n{}", lines.join("\n")))
}

pub fn list_groups(ipc_dir: &Path, id: &Identity) -> Result<String, String> {
    if !id.is_main {
        return Err("Only the main group can see the list of chats.".into());
    }
    let path = ipc_dir.join("available_groups.json");
    let Some(bytes) = read_snapshot(&path)? else {
        return Ok("No group list yet; call refresh_groups.".into());
    };
    let snap: GroupsSnapshot =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if snap.groups.is_empty() {
        return Ok(format!(
            "No groups known (list written {}).",
            snap.last_sync
        ));
    }
    let lines: Vec<String> = snap
        .groups
        .iter()
        .map(|g| {
            format!(
                "- {} ({}){}, last activity {}",
                g.name,
                g.jid,
                if g.is_registered { " [registered]" } else { "" },
                g.last_activity
            )
        })
        .collect();
    Ok(format!(
        "Groups (list written {}):\n{}",
        snap.last_sync,
        lines.join("\n")
    ))
}
