//! Snapshots the host writes for the runner (contract §8.12) with the original's visibility rules
//! (contract §8.11), published atomically (temp + rename, fix §12.25) so a runner never reads a torn file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::core::ipc::{AvailableGroup, GroupsSnapshot, TaskSnapshotEntry};
use crate::core::ipc_auth::{Source, groups_visible, task_visible};
use crate::core::types::{Chat, GROUP_SYNC_JID, RegisteredGroup, ScheduledTask};
use crate::ipc::IpcError;
use crate::ipc::layout::{GROUPS_SNAPSHOT, IpcLayout, TASKS_SNAPSHOT};

/// How many temp names to try when one is taken (a runner can create files in its own directory).
const TEMP_ATTEMPTS: usize = 8;

/// Writes `bytes` to `path` atomically: a fresh temp file in the same directory (never following a
/// symlink), then a rename over the target. Readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IpcError> {
    let dir = path
        .parent()
        .ok_or_else(|| IpcError::io("write", path, std::io::ErrorKind::InvalidInput.into()))?;
    let name = path
        .file_name()
        .ok_or_else(|| IpcError::io("write", path, std::io::ErrorKind::InvalidInput.into()))?;
    let mut last_err = None;
    for _ in 0..TEMP_ATTEMPTS {
        let mut temp_name = name.to_os_string();
        temp_name.push(format!(".{}.tmp", random_suffix(8)));
        let temp: PathBuf = dir.join(temp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(IpcError::io("create", &temp, e)),
        };
        let written = file.write_all(bytes).and_then(|()| file.flush());
        drop(file);
        if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(IpcError::io("write", path, e));
        }
        return Ok(());
    }
    Err(IpcError::io(
        "create temp for",
        path,
        last_err.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()),
    ))
}

/// Lowercase base-36 random characters (file-name suffixes, task ids).
pub(crate) fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

/// Writes `<folder>/current_tasks.json`: every task for main, only its own for any other group, newest
/// first. Written before every run.
pub fn write_tasks_snapshot(
    layout: &IpcLayout,
    folder: &str,
    tasks: &[ScheduledTask],
) -> Result<(), IpcError> {
    let source = Source::from_dir(folder);
    let mut visible: Vec<&ScheduledTask> = tasks
        .iter()
        .filter(|t| task_visible(source, &t.group_folder))
        .collect();
    // Stable: equal created_at keep the caller's order.
    visible.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    let entries: Vec<TaskSnapshotEntry> = visible
        .into_iter()
        .map(|t| TaskSnapshotEntry {
            id: t.id.clone(),
            group_folder: t.group_folder.clone(),
            prompt: t.prompt.clone(),
            schedule_type: t.schedule_type.as_str().to_string(),
            schedule_value: t.schedule_value.clone(),
            status: t.status.as_str().to_string(),
            next_run: t.next_run.clone(),
        })
        .collect();
    let bytes = serde_json::to_vec_pretty(&entries).map_err(|source| IpcError::Serialize {
        what: TASKS_SNAPSHOT,
        source,
    })?;
    write_atomic(&layout.group_dir(folder).join(TASKS_SNAPSHOT), &bytes)
}

/// The full group list for main's `available_groups.json`: every `@g.us` chat except the sync marker,
/// newest activity first; the name falls back to the JID until a sync supplies a subject.
pub fn available_groups(chats: &[Chat], registered: &[RegisteredGroup]) -> Vec<AvailableGroup> {
    let mut groups: Vec<&Chat> = chats
        .iter()
        .filter(|c| c.jid.ends_with("@g.us") && c.jid != GROUP_SYNC_JID)
        .collect();
    groups.sort_by(|a, b| b.last_message_time.cmp(&a.last_message_time));
    groups
        .into_iter()
        .map(|c| AvailableGroup {
            jid: c.jid.clone(),
            name: c.name.clone().unwrap_or_else(|| c.jid.clone()),
            last_activity: c.last_message_time.clone().unwrap_or_default(),
            is_registered: registered.iter().any(|g| g.jid == c.jid),
        })
        .collect()
}

/// Writes `<folder>/available_groups.json`: the list for main, an empty list for everybody else.
/// `now` is the `lastSync` value: the time of writing (contract §8.12).
pub fn write_groups_snapshot(
    layout: &IpcLayout,
    folder: &str,
    groups: &[AvailableGroup],
    now: &str,
) -> Result<(), IpcError> {
    let snapshot = GroupsSnapshot {
        groups: if groups_visible(Source::from_dir(folder)) {
            groups.to_vec()
        } else {
            Vec::new()
        },
        last_sync: now.to_string(),
    };
    let bytes = serde_json::to_vec_pretty(&snapshot).map_err(|source| IpcError::Serialize {
        what: GROUPS_SNAPSHOT,
        source,
    })?;
    write_atomic(&layout.group_dir(folder).join(GROUPS_SNAPSHOT), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{ContextMode, ScheduleType, TaskStatus};

    fn task(id: &str, folder: &str, created: &str) -> ScheduledTask {
        ScheduledTask {
            id: id.into(),
            group_folder: folder.into(),
            chat_jid: format!("{folder}@g.us"),
            prompt: format!("prompt {id}"),
            schedule_type: ScheduleType::Cron,
            schedule_value: "0 9 * * *".into(),
            next_run: Some("2026-02-11T09:00:00.000Z".into()),
            last_run: None,
            last_result: None,
            status: TaskStatus::Active,
            created_at: created.into(),
            context_mode: ContextMode::Group,
        }
    }

    #[test]
    fn tasks_snapshot_visibility_and_format() {
        let dir = tempfile::tempdir().unwrap();
        let layout = IpcLayout::new(dir.path());
        layout.ensure_group("main").unwrap();
        layout.ensure_group("family").unwrap();
        let tasks = vec![
            task("t-old", "family", "2026-01-01T00:00:00.000Z"),
            task("t-main", "main", "2026-01-03T00:00:00.000Z"),
            task("t-new", "family", "2026-01-02T00:00:00.000Z"),
            task("t-work", "work", "2026-01-04T00:00:00.000Z"),
        ];
        write_tasks_snapshot(&layout, "main", &tasks).unwrap();
        write_tasks_snapshot(&layout, "family", &tasks).unwrap();
        let read = |folder: &str| -> Vec<TaskSnapshotEntry> {
            serde_json::from_slice(
                &std::fs::read(layout.group_dir(folder).join(TASKS_SNAPSHOT)).unwrap(),
            )
            .unwrap()
        };
        let ids = |v: Vec<TaskSnapshotEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(read("main")), ["t-work", "t-main", "t-new", "t-old"]);
        assert_eq!(ids(read("family")), ["t-new", "t-old"]);
        let text =
            std::fs::read_to_string(layout.group_dir("family").join(TASKS_SNAPSHOT)).unwrap();
        assert!(
            text.starts_with("[\n  {\n    \"id\": \"t-new\",\n    \"groupFolder\": \"family\","),
            "{text}"
        );
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(layout.group_dir("family"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().contains(".tmp")),
            "{names:?}"
        );
    }

    #[test]
    fn groups_snapshot_main_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = IpcLayout::new(dir.path());
        layout.ensure_group("main").unwrap();
        layout.ensure_group("family").unwrap();
        let chats = vec![
            Chat {
                jid: "old@g.us".into(),
                name: Some("Old".into()),
                last_message_time: Some("2026-01-01T00:00:00.000Z".into()),
            },
            Chat {
                jid: "new@g.us".into(),
                name: None,
                last_message_time: Some("2026-01-02T00:00:00.000Z".into()),
            },
            Chat {
                jid: "1555@s.whatsapp.net".into(),
                name: Some("Dm".into()),
                last_message_time: Some("2026-01-03T00:00:00.000Z".into()),
            },
            Chat {
                jid: GROUP_SYNC_JID.into(),
                name: None,
                last_message_time: Some("2026-01-04T00:00:00.000Z".into()),
            },
        ];
        let registered = vec![RegisteredGroup {
            jid: "old@g.us".into(),
            name: "Old".into(),
            folder: "old".into(),
            trigger: "@Andy".into(),
            added_at: "2026-01-01T00:00:00.000Z".into(),
            container_config: None,
            requires_trigger: None,
        }];
        let list = available_groups(&chats, &registered);
        assert_eq!(
            list,
            vec![
                AvailableGroup {
                    jid: "new@g.us".into(),
                    name: "new@g.us".into(),
                    last_activity: "2026-01-02T00:00:00.000Z".into(),
                    is_registered: false
                },
                AvailableGroup {
                    jid: "old@g.us".into(),
                    name: "Old".into(),
                    last_activity: "2026-01-01T00:00:00.000Z".into(),
                    is_registered: true
                },
            ]
        );
        let now = "2026-02-10T09:00:00.000Z";
        write_groups_snapshot(&layout, "main", &list, now).unwrap();
        write_groups_snapshot(&layout, "family", &list, now).unwrap();
        let read = |folder: &str| -> GroupsSnapshot {
            serde_json::from_slice(
                &std::fs::read(layout.group_dir(folder).join(GROUPS_SNAPSHOT)).unwrap(),
            )
            .unwrap()
        };
        assert_eq!(read("main").groups.len(), 2);
        assert_eq!(read("main").last_sync, now);
        assert!(read("family").groups.is_empty());
        let text =
            std::fs::read_to_string(layout.group_dir("family").join(GROUPS_SNAPSHOT)).unwrap();
        assert_eq!(
            text,
            "{\n  \"groups\": [],\n  \"lastSync\": \"2026-02-10T09:00:00.000Z\"\n}"
        );
    }

    #[test]
    fn atomic_write_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "keep").unwrap();
        let target = dir.path().join("current_tasks.json");
        std::os::unix::fs::symlink(&outside, &target).unwrap();
        write_atomic(&target, b"[]").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "[]");
        assert!(
            !std::fs::symlink_metadata(&target)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
