//! The tools the runner offers the model: core tools (shell and files) and the NanoClaw IPC tools.

pub mod bash;
pub mod fs;
pub mod ipc;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::runner::api::ToolDef;
use crate::runner::config::RunnerConfig;
pub use ipc::Identity;

/// The result of one tool call, as given back to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

/// Tool definitions plus what the tools need to run.
pub struct Toolbox {
    defs: Vec<ToolDef>,
    confinement: fs::Confinement,
    cfg: RunnerConfig,
    identity: Identity,
}

fn def(name: &'static str, description: &'static str, input_schema: Value) -> ToolDef {
    ToolDef {
        name,
        description,
        input_schema,
    }
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

/// The tools every run gets.
fn core_defs() -> Vec<ToolDef> {
    vec![
        def(
            "bash",
            "Run a shell command (busybox sh) in /workspace/group. Output is capped; the command is killed after its timeout.",
            schema(
                json!({"command": string("The command line."), "timeout": {"type": "integer", "description": "Seconds before the command is killed (default 120, at most 600)."}}),
                &["command"],
            ),
        ),
        def(
            "read_file",
            "Read a UTF-8 text file under /workspace or /tmp. Relative paths are relative to /workspace/group.",
            schema(
                json!({"path": string("File path."), "offset": {"type": "integer", "description": "First line to return (1-based)."}, "limit": {"type": "integer", "description": "Number of lines to return."}}),
                &["path"],
            ),
        ),
        def(
            "write_file",
            "Create or overwrite a file under /workspace or /tmp (parent directories are created).",
            schema(
                json!({"path": string("File path."), "content": string("The whole new content.")}),
                &["path", "content"],
            ),
        ),
        def(
            "edit_file",
            "Replace an exact string in a file. old_string must occur exactly once unless replace_all is true.",
            schema(
                json!({"path": string("File path."), "old_string": string("Exact text to replace."), "new_string": string("Replacement text."), "replace_all": {"type": "boolean", "description": "Replace every occurrence."}}),
                &["path", "old_string", "new_string"],
            ),
        ),
        def(
            "list_files",
            "List files matching a glob (`*` stays within a directory, `**` crosses directories), e.g. `**/*.md`.",
            schema(
                json!({"pattern": string("Glob pattern, relative to path or absolute."), "path": string("Directory to search (default /workspace/group).")}),
                &["pattern"],
            ),
        ),
        def(
            "grep",
            "Search file contents with a regular expression; prints path:line:text for each match.",
            schema(
                json!({"pattern": string("Regular expression (Rust regex syntax)."), "path": string("File or directory (default /workspace/group)."), "glob": string("Only files matching this glob, e.g. `*.md`."), "case_insensitive": {"type": "boolean"}, "max_results": {"type": "integer"}}),
                &["pattern"],
            ),
        ),
    ]
}

/// The NanoClaw tools; `register_group`, `refresh_groups` and `list_groups` only for main.
fn nanoclaw_defs(is_main: bool) -> Vec<ToolDef> {
    let task_id = schema(
        json!({"task_id": string("The task id from list_tasks.")}),
        &["task_id"],
    );
    let mut defs = vec![
        def(
            "send_message",
            "Send a message to this chat right away, while you keep working (progress updates, several messages). Your final answer is sent anyway; do not repeat it here.",
            schema(
                json!({"text": string("Message text."), "sender": string("Optional sender name.")}),
                &["text"],
            ),
        ),
        def(
            "schedule_task",
            "Schedule a task: the prompt runs as an agent later. cron (e.g. `0 9 * * 1-5`, local time), interval (milliseconds, e.g. `3600000`) or once (local time like `2026-02-01T15:30:00`). context_mode group keeps this chat's conversation, isolated starts fresh. The task's final output is sent to the chat; wrap it in <internal></internal> to send nothing.",
            schema(
                json!({
                    "prompt": string("What the task should do, self-contained."),
                    "schedule_type": {"type": "string", "enum": ["cron", "interval", "once"]},
                    "schedule_value": string("Cron expression, milliseconds, or local date-time."),
                    "context_mode": {"type": "string", "enum": ["group", "isolated"], "description": "Default group."},
                    "target_group_jid": string("Main group only: the chat JID the task belongs to.")
                }),
                &["prompt", "schedule_type", "schedule_value"],
            ),
        ),
        def(
            "list_tasks",
            "List scheduled tasks (as of the start of this run).",
            schema(json!({}), &[]),
        ),
        def("pause_task", "Pause a scheduled task.", task_id.clone()),
        def("resume_task", "Resume a paused task.", task_id.clone()),
        def(
            "cancel_task",
            "Cancel and delete a scheduled task.",
            task_id,
        ),
    ];
    if is_main {
        defs.push(def(
            "register_group",
            "Register a chat so the assistant answers there. folder: lowercase letters, digits and dashes.",
            schema(
                json!({"jid": string("Chat JID, e.g. 120363...@g.us."), "name": string("Display name."), "folder": string("Group folder name."), "trigger": string("Trigger word, e.g. @Andy."), "requires_trigger": {"type": "boolean", "description": "Default true."}}),
                &["jid", "name", "folder", "trigger"],
            ),
        ));
        defs.push(def(
            "refresh_groups",
            "Ask the host to refresh the list of chats (see list_groups).",
            schema(json!({}), &[]),
        ));
        defs.push(def(
            "list_groups",
            "List the chats the host knows, with their JIDs and whether they are registered.",
            schema(json!({}), &[]),
        ));
    }
    defs
}

fn params<T: DeserializeOwned>(input: &Value) -> Result<T, String> {
    T::deserialize(input).map_err(|e| format!("invalid tool input: {e}"))
}

/// Cuts `text` to `cap` bytes on a character boundary, saying how much was cut.
pub fn cap_output(mut text: String, cap: usize) -> String {
    if text.len() <= cap {
        return text;
    }
    let total = text.len();
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("\n[output cut: {} of {total} bytes shown]", end));
    text
}

impl Toolbox {
    pub fn new(cfg: &RunnerConfig, identity: Identity) -> Self {
        let mut defs = core_defs();
        defs.extend(nanoclaw_defs(identity.is_main));
        Self {
            defs,
            confinement: fs::Confinement::new(&cfg.tool_roots, &cfg.group_dir),
            cfg: cfg.clone(),
            identity,
        }
    }

    /// The definitions sent with every request.
    pub fn defs(&self) -> &[ToolDef] {
        &self.defs
    }

    /// Runs one tool call. Never panics on model input; every failure is an error result.
    pub fn call(&self, name: &str, input: &Value) -> ToolOutput {
        let c = &self.confinement;
        let ipc_dir = &self.cfg.ipc_dir;
        let id = &self.identity;
        let result = match name {
            "bash" => params(input).and_then(|p| {
                bash::run(
                    &self.cfg.shell,
                    &self.cfg.group_dir,
                    p,
                    self.cfg.limits.bash_timeout,
                    self.cfg.limits.max_tool_output,
                )
            }),
            "read_file" => params(input).and_then(|p| fs::read_file(c, p)),
            "write_file" => params(input).and_then(|p| fs::write_file(c, p)),
            "edit_file" => params(input).and_then(|p| fs::edit_file(c, p)),
            "list_files" => params(input).and_then(|p| fs::list_files(c, p)),
            "grep" => params(input).and_then(|p| fs::grep(c, p)),
            "send_message" => params(input).and_then(|p| ipc::send_message(ipc_dir, id, p)),
            "schedule_task" => params(input).and_then(|p| ipc::schedule_task(ipc_dir, id, p)),
            "list_tasks" => ipc::list_tasks(ipc_dir, id),
            "pause_task" | "resume_task" | "cancel_task" => {
                params(input).and_then(|p| ipc::task_action(ipc_dir, id, name, p))
            }
            "register_group" => params(input).and_then(|p| ipc::register_group(ipc_dir, id, p)),
            "refresh_groups" => ipc::refresh_groups(ipc_dir, id),
            "list_groups" => ipc::list_groups(ipc_dir, id),
            other => Err(format!("unknown tool {other:?}")),
        };
        let cap = self.cfg.limits.max_tool_output;
        match result {
            Ok(content) => ToolOutput {
                content: cap_output(content, cap),
                is_error: false,
            },
            Err(content) => ToolOutput {
                content: cap_output(content, cap),
                is_error: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_only_tools_are_offered_to_main_only() {
        let names = |main| {
            nanoclaw_defs(main)
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
        };
        assert!(names(true).contains(&"register_group"));
        assert!(!names(false).contains(&"register_group"));
        assert!(!names(false).contains(&"refresh_groups"));
    }

    #[test]
    fn cap_output_cuts_on_char_boundary() {
        let s = cap_output("ééééé".into(), 3);
        assert!(s.starts_with('é'));
        assert!(s.contains("[output cut: 2 of 10 bytes shown]"));
    }
}
