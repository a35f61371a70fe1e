//! The system prompt: NanoClaw's instructions for its tools and workspace, then the group's memory
//! (`/workspace/group/CLAUDE.md`), then, for non-main groups only, the global memory
//! (`/workspace/global/CLAUDE.md`), as contract §10.7 loads them. Memory files are capped.

use std::io::Read;
use std::path::Path;

use crate::core::wire::ContainerInput;
use crate::runner::config::RunnerConfig;

/// Bytes of one memory file included.
pub const MAX_MEMORY_BYTES: u64 = 64 * 1024;

/// Put before a scheduled task's prompt (contract §10.3; our wording).
pub const SCHEDULED_TASK_BANNER: &str = "[SCHEDULED TASK - The scheduler started this run automatically; the message below was not sent by the user or the group.]";

/// The first prompt of a run: the banner for scheduled tasks, the input prompt, then any follow-ups
/// already queued (contract §10.3).
pub fn initial_prompt(input: &ContainerInput, queued: &[String]) -> String {
    let mut prompt = if input.is_scheduled_task {
        format!("{SCHEDULED_TASK_BANNER}\n\n{}", input.prompt)
    } else {
        input.prompt.clone()
    };
    if !queued.is_empty() {
        prompt.push('\n');
        prompt.push_str(&queued.join("\n"));
    }
    prompt
}

fn read_memory(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_MEMORY_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (!text.trim().is_empty()).then_some(text)
}

/// Builds the system prompt for one run.
pub fn system_prompt(cfg: &RunnerConfig, input: &ContainerInput, assistant_name: &str) -> String {
    let group = cfg.group_dir.display();
    let mut s = format!(
        "You are {assistant_name}, a personal assistant that lives in a chat. Each run you get the new \
chat messages (as XML with sender and time) and answer them.\n\n\
# How your answer is delivered\n\
- Your final text is sent to the chat as your reply. Keep it short and chat-friendly.\n\
- Anything inside <internal>...</internal> is removed before sending; use it for notes to yourself. \
If the whole answer is internal, nothing is sent.\n\
- send_message sends a message right away (progress updates, several messages) while you keep working.\n\n\
# Workspace\n\
- {group} is this group's folder and your working directory; files you keep there persist between runs.\n\
- {group}/CLAUDE.md is this group's memory: read it, and update it when you learn something worth \
remembering (preferences, facts, ongoing work).\n\
- {group}/conversations/ holds older parts of the conversation that no longer fit in your context.\n\
- File tools work under {roots}; bash runs busybox sh in {group}.\n\n\
# Scheduling\n\
- schedule_task runs a prompt later (cron, interval or once); list_tasks, pause_task, resume_task \
and cancel_task manage tasks. Times are the host's local time.\n\n\
# This run\n\
- chat: {jid}\n- group folder: {folder}\n- main group: {main}\n- time (UTC): {now}\n",
        roots = cfg
            .tool_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        jid = input.chat_jid,
        folder = input.group_folder,
        main = if input.is_main { "yes" } else { "no" },
        now = chrono::Utc::now().format("%Y-%m-%d %H:%M"),
    );
    if input.is_main {
        s.push_str(
            "\nThis is the main (admin) chat: you may register other chats (register_group), refresh and \
list the known chats (refresh_groups, list_groups), and schedule tasks for any registered chat \
(target_group_jid).\n",
        );
    }
    if let Some(memory) = read_memory(&cfg.group_dir.join("CLAUDE.md")) {
        s.push_str(&format!(
            "\n# Group memory ({group}/CLAUDE.md)\n\n{memory}\n"
        ));
    }
    if !input.is_main
        && let Some(memory) = read_memory(&cfg.global_dir.join("CLAUDE.md"))
    {
        s.push_str(&format!(
            "\n# Global memory ({}/CLAUDE.md, read-only)\n\n{memory}\n",
            cfg.global_dir.display()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::config::{ApiSettings, DEFAULT_MODEL};
    use std::time::Duration;

    fn cfg(root: &Path) -> RunnerConfig {
        let api = ApiSettings {
            base_url: "http://x".into(),
            token: None,
            model: DEFAULT_MODEL.into(),
            max_tokens: 1,
            stream: false,
            max_retries: 0,
            retry_base: Duration::ZERO,
            read_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        };
        RunnerConfig::with_workspace(root, &root.join("session"), api)
    }

    fn input(main: bool, scheduled: bool) -> ContainerInput {
        ContainerInput {
            prompt: "do it".into(),
            session_id: None,
            group_folder: if main { "main".into() } else { "family".into() },
            chat_jid: "1@g.us".into(),
            is_main: main,
            is_scheduled_task: scheduled,
        }
    }

    #[test]
    fn memory_files_follow_the_main_rule() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path());
        std::fs::create_dir_all(&c.group_dir).unwrap();
        std::fs::create_dir_all(&c.global_dir).unwrap();
        std::fs::write(c.group_dir.join("CLAUDE.md"), "GROUP-MEMORY").unwrap();
        std::fs::write(c.global_dir.join("CLAUDE.md"), "GLOBAL-MEMORY").unwrap();
        let non_main = system_prompt(&c, &input(false, false), "Andy");
        assert!(non_main.contains("GROUP-MEMORY") && non_main.contains("GLOBAL-MEMORY"));
        assert!(non_main.starts_with("You are Andy"));
        let main = system_prompt(&c, &input(true, false), "Andy");
        assert!(main.contains("GROUP-MEMORY"));
        assert!(!main.contains("GLOBAL-MEMORY"));
        assert!(main.contains("register_group"));
    }

    #[test]
    fn scheduled_tasks_get_the_banner_and_queued_follow_ups() {
        let p = initial_prompt(&input(false, true), &["a".into(), "b".into()]);
        assert_eq!(p, format!("{SCHEDULED_TASK_BANNER}\n\ndo it\na\nb"));
        assert_eq!(initial_prompt(&input(false, false), &[]), "do it");
    }
}
