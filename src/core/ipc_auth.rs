//! The IPC authorization matrix (contract §8.11, fix §12.13) as one pure function.
//!
//! The source of a command is the directory it was found in, never a payload field (contract §8.2).
//! Main is trusted and may act for any group; every other group may act only on its own chat and its
//! own tasks. Everything not allowed below is denied.

use crate::core::types::MAIN_GROUP_FOLDER;

/// Who sent a command: the IPC directory's name, and whether that makes it main.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    pub folder: &'a str,
    pub is_main: bool,
}

impl<'a> Source<'a> {
    /// Identity from the directory name alone (contract §8.2).
    pub fn from_dir(folder: &'a str) -> Self {
        Self {
            folder,
            is_main: folder == MAIN_GROUP_FOLDER,
        }
    }
}

/// What a command asks for, reduced to what authorization needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    SendMessage { chat_jid: &'a str },
    ScheduleTask { target_jid: &'a str },
    PauseTask { task_id: &'a str },
    ResumeTask { task_id: &'a str },
    CancelTask { task_id: &'a str },
    RefreshGroups,
    RegisterGroup { jid: &'a str, folder: &'a str },
}

impl Operation<'_> {
    /// The wire `type` of the command this operation comes from.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SendMessage { .. } => "message",
            Self::ScheduleTask { .. } => "schedule_task",
            Self::PauseTask { .. } => "pause_task",
            Self::ResumeTask { .. } => "resume_task",
            Self::CancelTask { .. } => "cancel_task",
            Self::RefreshGroups => "refresh_groups",
            Self::RegisterGroup { .. } => "register_group",
        }
    }
}

/// What authorization may ask about targets. The host answers from the registered-groups snapshot of
/// the current pass and the task store.
pub trait TargetLookup {
    /// The folder of a registered chat, `None` if the JID is not registered.
    fn folder_of_jid(&self, jid: &str) -> Option<&str>;
    /// The owning folder of a task, `None` if there is no such task.
    fn folder_of_task(&self, task_id: &str) -> Option<&str>;
    /// The JID registered with a folder, `None` if the folder is free.
    fn jid_of_folder(&self, folder: &str) -> Option<&str>;
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow)
    }
}

/// Why a command was denied. Every denial has no side effect besides a warning and an audit event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// only the main group may do this (refresh_groups, register_group)
    #[error("only the main group may do this")]
    MainOnly,
    /// the target belongs to another group
    #[error("target belongs to group {target_folder:?}, not to the source")]
    ForeignTarget { target_folder: String },
    /// the target JID is not a registered group
    #[error("target JID is not registered")]
    UnregisteredTarget,
    /// no task has this id (a no-op with a warning, as the original)
    #[error("no such task")]
    UnknownTask,
    /// the folder `main` may only belong to the main chat (contract §12.13)
    #[error("folder \"main\" is reserved for the main chat")]
    ReservedFolder,
    /// another chat already uses the folder (contract §12.13: the original silently deleted it)
    #[error("folder is already used by chat {existing_jid}")]
    FolderTaken { existing_jid: String },
}

/// Decides one operation (contract §8.11).
pub fn authorize(source: Source<'_>, op: Operation<'_>, lookup: &impl TargetLookup) -> Decision {
    use Decision::{Allow, Deny};
    let owned_by_source = |target_folder: &str| -> Decision {
        if source.is_main || target_folder == source.folder {
            Allow
        } else {
            Deny(DenyReason::ForeignTarget {
                target_folder: target_folder.to_string(),
            })
        }
    };
    match op {
        Operation::SendMessage { chat_jid } => match lookup.folder_of_jid(chat_jid) {
            Some(folder) => owned_by_source(folder),
            // Main may send to any JID, registered or not.
            None if source.is_main => Allow,
            None => Deny(DenyReason::UnregisteredTarget),
        },
        Operation::ScheduleTask { target_jid } => match lookup.folder_of_jid(target_jid) {
            Some(folder) => owned_by_source(folder),
            // Even main: a task needs a registered group to run in.
            None => Deny(DenyReason::UnregisteredTarget),
        },
        Operation::PauseTask { task_id }
        | Operation::ResumeTask { task_id }
        | Operation::CancelTask { task_id } => match lookup.folder_of_task(task_id) {
            Some(folder) => owned_by_source(folder),
            None => Deny(DenyReason::UnknownTask),
        },
        Operation::RefreshGroups if source.is_main => Allow,
        Operation::RefreshGroups => Deny(DenyReason::MainOnly),
        Operation::RegisterGroup { .. } if !source.is_main => Deny(DenyReason::MainOnly),
        Operation::RegisterGroup { jid, folder } => {
            let current_folder = lookup.folder_of_jid(jid);
            if folder == MAIN_GROUP_FOLDER && current_folder != Some(MAIN_GROUP_FOLDER) {
                return Deny(DenyReason::ReservedFolder);
            }
            match lookup.jid_of_folder(folder) {
                Some(holder) if holder != jid => Deny(DenyReason::FolderTaken {
                    existing_jid: holder.to_string(),
                }),
                _ => Allow,
            }
        }
    }
}

/// Whether a task of `task_folder` appears in the source's `current_tasks.json` (contract §8.12).
pub fn task_visible(source: Source<'_>, task_folder: &str) -> bool {
    source.is_main || task_folder == source.folder
}

/// Whether the source's `available_groups.json` lists any groups (contract §8.12): main sees all,
/// everybody else an empty list.
pub fn groups_visible(source: Source<'_>) -> bool {
    source.is_main
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three registered groups (main, family, work), one task each, plus an unregistered JID.
    struct World;

    impl TargetLookup for World {
        fn folder_of_jid(&self, jid: &str) -> Option<&str> {
            match jid {
                "main@g.us" => Some("main"),
                "family@g.us" => Some("family"),
                "work@g.us" => Some("work"),
                _ => None,
            }
        }
        fn folder_of_task(&self, task_id: &str) -> Option<&str> {
            match task_id {
                "task-main" => Some("main"),
                "task-family" => Some("family"),
                "task-work" => Some("work"),
                _ => None,
            }
        }
        fn jid_of_folder(&self, folder: &str) -> Option<&str> {
            match folder {
                "main" => Some("main@g.us"),
                "family" => Some("family@g.us"),
                "work" => Some("work@g.us"),
                _ => None,
            }
        }
    }

    const MAIN: Source<'static> = Source {
        folder: "main",
        is_main: true,
    };
    const FAMILY: Source<'static> = Source {
        folder: "family",
        is_main: false,
    };

    fn allow() -> Decision {
        Decision::Allow
    }
    fn deny(r: DenyReason) -> Decision {
        Decision::Deny(r)
    }
    fn foreign(f: &str) -> Decision {
        deny(DenyReason::ForeignTarget {
            target_folder: f.into(),
        })
    }

    /// Contract §8.11, one row per line: (operation, source, expected). "Own" for main is main's own chat
    /// or task; "other" is family/work; for the non-main source (family) "own" is family and "other" work.
    #[test]
    fn authorization_matrix() {
        use Operation as Op;
        let rows: Vec<(&str, Op<'_>, Source<'_>, Decision)> = vec![
            // message send to chatJid
            (
                "send main→own",
                Op::SendMessage {
                    chat_jid: "main@g.us",
                },
                MAIN,
                allow(),
            ),
            (
                "send main→other",
                Op::SendMessage {
                    chat_jid: "work@g.us",
                },
                MAIN,
                allow(),
            ),
            (
                "send main→unregistered",
                Op::SendMessage {
                    chat_jid: "stranger@s.whatsapp.net",
                },
                MAIN,
                allow(),
            ),
            (
                "send non-main→own",
                Op::SendMessage {
                    chat_jid: "family@g.us",
                },
                FAMILY,
                allow(),
            ),
            (
                "send non-main→other",
                Op::SendMessage {
                    chat_jid: "work@g.us",
                },
                FAMILY,
                foreign("work"),
            ),
            (
                "send non-main→main",
                Op::SendMessage {
                    chat_jid: "main@g.us",
                },
                FAMILY,
                foreign("main"),
            ),
            (
                "send non-main→unregistered",
                Op::SendMessage {
                    chat_jid: "stranger@s.whatsapp.net",
                },
                FAMILY,
                deny(DenyReason::UnregisteredTarget),
            ),
            // schedule_task for targetJid
            (
                "schedule main→own",
                Op::ScheduleTask {
                    target_jid: "main@g.us",
                },
                MAIN,
                allow(),
            ),
            (
                "schedule main→other",
                Op::ScheduleTask {
                    target_jid: "work@g.us",
                },
                MAIN,
                allow(),
            ),
            (
                "schedule main→unregistered",
                Op::ScheduleTask {
                    target_jid: "unknown@g.us",
                },
                MAIN,
                deny(DenyReason::UnregisteredTarget),
            ),
            (
                "schedule non-main→own",
                Op::ScheduleTask {
                    target_jid: "family@g.us",
                },
                FAMILY,
                allow(),
            ),
            (
                "schedule non-main→other",
                Op::ScheduleTask {
                    target_jid: "work@g.us",
                },
                FAMILY,
                foreign("work"),
            ),
            (
                "schedule non-main→unregistered",
                Op::ScheduleTask {
                    target_jid: "unknown@g.us",
                },
                FAMILY,
                deny(DenyReason::UnregisteredTarget),
            ),
            // pause/resume/cancel on a task of a group
            (
                "pause main→own",
                Op::PauseTask {
                    task_id: "task-main",
                },
                MAIN,
                allow(),
            ),
            (
                "pause main→other",
                Op::PauseTask {
                    task_id: "task-work",
                },
                MAIN,
                allow(),
            ),
            (
                "pause non-main→own",
                Op::PauseTask {
                    task_id: "task-family",
                },
                FAMILY,
                allow(),
            ),
            (
                "pause non-main→other",
                Op::PauseTask {
                    task_id: "task-work",
                },
                FAMILY,
                foreign("work"),
            ),
            (
                "resume main→own",
                Op::ResumeTask {
                    task_id: "task-main",
                },
                MAIN,
                allow(),
            ),
            (
                "resume main→other",
                Op::ResumeTask {
                    task_id: "task-family",
                },
                MAIN,
                allow(),
            ),
            (
                "resume non-main→own",
                Op::ResumeTask {
                    task_id: "task-family",
                },
                FAMILY,
                allow(),
            ),
            (
                "resume non-main→other",
                Op::ResumeTask {
                    task_id: "task-main",
                },
                FAMILY,
                foreign("main"),
            ),
            (
                "cancel main→own",
                Op::CancelTask {
                    task_id: "task-main",
                },
                MAIN,
                allow(),
            ),
            (
                "cancel main→other",
                Op::CancelTask {
                    task_id: "task-family",
                },
                MAIN,
                allow(),
            ),
            (
                "cancel non-main→own",
                Op::CancelTask {
                    task_id: "task-family",
                },
                FAMILY,
                allow(),
            ),
            (
                "cancel non-main→other",
                Op::CancelTask {
                    task_id: "task-work",
                },
                FAMILY,
                foreign("work"),
            ),
            // unknown task id: a warned no-op for both
            (
                "pause unknown main",
                Op::PauseTask {
                    task_id: "task-gone",
                },
                MAIN,
                deny(DenyReason::UnknownTask),
            ),
            (
                "resume unknown main",
                Op::ResumeTask {
                    task_id: "task-gone",
                },
                MAIN,
                deny(DenyReason::UnknownTask),
            ),
            (
                "cancel unknown non-main",
                Op::CancelTask {
                    task_id: "task-gone",
                },
                FAMILY,
                deny(DenyReason::UnknownTask),
            ),
            // refresh_groups
            ("refresh main", Op::RefreshGroups, MAIN, allow()),
            (
                "refresh non-main",
                Op::RefreshGroups,
                FAMILY,
                deny(DenyReason::MainOnly),
            ),
            // register_group: main any JID, any (valid) folder; non-main never
            (
                "register main new",
                Op::RegisterGroup {
                    jid: "new@g.us",
                    folder: "new-group",
                },
                MAIN,
                allow(),
            ),
            (
                "register main re-register same folder",
                Op::RegisterGroup {
                    jid: "work@g.us",
                    folder: "work",
                },
                MAIN,
                allow(),
            ),
            (
                "register main move to free folder",
                Op::RegisterGroup {
                    jid: "work@g.us",
                    folder: "office",
                },
                MAIN,
                allow(),
            ),
            (
                "register non-main",
                Op::RegisterGroup {
                    jid: "new@g.us",
                    folder: "new-group",
                },
                FAMILY,
                deny(DenyReason::MainOnly),
            ),
            (
                "register non-main own",
                Op::RegisterGroup {
                    jid: "family@g.us",
                    folder: "family",
                },
                FAMILY,
                deny(DenyReason::MainOnly),
            ),
            // §12.13 fixes
            (
                "register second main",
                Op::RegisterGroup {
                    jid: "new@g.us",
                    folder: "main",
                },
                MAIN,
                deny(DenyReason::ReservedFolder),
            ),
            (
                "register main chat as main",
                Op::RegisterGroup {
                    jid: "main@g.us",
                    folder: "main",
                },
                MAIN,
                allow(),
            ),
            (
                "register taken folder",
                Op::RegisterGroup {
                    jid: "new@g.us",
                    folder: "family",
                },
                MAIN,
                deny(DenyReason::FolderTaken {
                    existing_jid: "family@g.us".into(),
                }),
            ),
        ];
        for (name, op, source, expected) in rows {
            assert_eq!(authorize(source, op, &World), expected, "row: {name}");
        }
    }

    #[test]
    fn snapshot_visibility_rows() {
        // "see all tasks in current_tasks.json": main yes, non-main own only.
        assert!(task_visible(MAIN, "main"));
        assert!(task_visible(MAIN, "work"));
        assert!(task_visible(FAMILY, "family"));
        assert!(!task_visible(FAMILY, "work"));
        assert!(!task_visible(FAMILY, "main"));
        // "see available_groups.json entries": main all, non-main empty.
        assert!(groups_visible(MAIN));
        assert!(!groups_visible(FAMILY));
    }

    #[test]
    fn identity_comes_from_the_directory() {
        assert_eq!(Source::from_dir("main"), MAIN);
        assert_eq!(Source::from_dir("family"), FAMILY);
        // A group cannot become main by name games.
        assert!(!Source::from_dir("Main").is_main);
        assert!(!Source::from_dir("main ").is_main);
        assert!(!Source::from_dir("../main").is_main);
    }

    // The original's ipc-auth cases (main folder "main", groups "other-group" and "third-group"),
    // restated for the pure function. Their store-level effects are covered in `ipc::handler` tests.
    struct Original;

    impl TargetLookup for Original {
        fn folder_of_jid(&self, jid: &str) -> Option<&str> {
            match jid {
                "main@g.us" => Some("main"),
                "other@g.us" => Some("other-group"),
                "third@g.us" => Some("third-group"),
                _ => None,
            }
        }
        fn folder_of_task(&self, task_id: &str) -> Option<&str> {
            match task_id {
                "task-main" | "task-foreign" => Some("main"),
                "task-other" | "task-paused" | "task-own" | "task-to-cancel" => Some("other-group"),
                _ => None,
            }
        }
        fn jid_of_folder(&self, folder: &str) -> Option<&str> {
            match folder {
                "main" => Some("main@g.us"),
                "other-group" => Some("other@g.us"),
                "third-group" => Some("third@g.us"),
                _ => None,
            }
        }
    }

    #[test]
    fn original_ipc_auth_cases() {
        use Operation as Op;
        let main = Source::from_dir("main");
        let other = Source::from_dir("other-group");
        let third = Source::from_dir("third-group");
        let ok = |s, op| authorize(s, op, &Original).is_allowed();
        // schedule_task
        assert!(
            ok(
                main,
                Op::ScheduleTask {
                    target_jid: "other@g.us"
                }
            ),
            "main can schedule for another group"
        );
        assert!(
            ok(
                other,
                Op::ScheduleTask {
                    target_jid: "other@g.us"
                }
            ),
            "non-main can schedule for itself"
        );
        assert!(
            !ok(
                other,
                Op::ScheduleTask {
                    target_jid: "main@g.us"
                }
            ),
            "non-main cannot schedule for another group"
        );
        assert!(
            !ok(
                main,
                Op::ScheduleTask {
                    target_jid: "unknown@g.us"
                }
            ),
            "unregistered target is rejected"
        );
        // pause_task
        assert!(
            ok(
                main,
                Op::PauseTask {
                    task_id: "task-other"
                }
            ),
            "main can pause any task"
        );
        assert!(
            ok(
                other,
                Op::PauseTask {
                    task_id: "task-other"
                }
            ),
            "non-main can pause its own task"
        );
        assert!(
            !ok(
                other,
                Op::PauseTask {
                    task_id: "task-main"
                }
            ),
            "non-main cannot pause another group's task"
        );
        // resume_task
        assert!(
            ok(
                main,
                Op::ResumeTask {
                    task_id: "task-paused"
                }
            ),
            "main can resume any task"
        );
        assert!(
            ok(
                other,
                Op::ResumeTask {
                    task_id: "task-paused"
                }
            ),
            "non-main can resume its own task"
        );
        assert!(
            !ok(
                third,
                Op::ResumeTask {
                    task_id: "task-paused"
                }
            ),
            "non-main cannot resume another group's task"
        );
        // cancel_task
        assert!(
            ok(
                main,
                Op::CancelTask {
                    task_id: "task-to-cancel"
                }
            ),
            "main can cancel any task"
        );
        assert!(
            ok(
                other,
                Op::CancelTask {
                    task_id: "task-own"
                }
            ),
            "non-main can cancel its own task"
        );
        assert!(
            !ok(
                other,
                Op::CancelTask {
                    task_id: "task-foreign"
                }
            ),
            "non-main cannot cancel another group's task"
        );
        // register_group / refresh_groups
        assert!(
            !ok(
                other,
                Op::RegisterGroup {
                    jid: "new@g.us",
                    folder: "new-group"
                }
            ),
            "non-main cannot register"
        );
        assert!(
            ok(
                main,
                Op::RegisterGroup {
                    jid: "new@g.us",
                    folder: "new-group"
                }
            ),
            "main can register a new group"
        );
        assert!(!ok(other, Op::RefreshGroups), "non-main cannot refresh");
        // message authorization: isMain || target registered to the source folder
        assert!(ok(
            main,
            Op::SendMessage {
                chat_jid: "other@g.us"
            }
        ));
        assert!(ok(
            main,
            Op::SendMessage {
                chat_jid: "third@g.us"
            }
        ));
        assert!(ok(
            other,
            Op::SendMessage {
                chat_jid: "other@g.us"
            }
        ));
        assert!(!ok(
            other,
            Op::SendMessage {
                chat_jid: "main@g.us"
            }
        ));
        assert!(!ok(
            other,
            Op::SendMessage {
                chat_jid: "third@g.us"
            }
        ));
        assert!(!ok(
            other,
            Op::SendMessage {
                chat_jid: "unknown@g.us"
            }
        ));
        assert!(ok(
            main,
            Op::SendMessage {
                chat_jid: "unknown@g.us"
            }
        ));
    }
}
