//! Shared test helpers: fixture loading and JSON views shaped like the original's return values.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nanoclaw::core::types::{Message, RegisteredGroup, ScheduledTask};
use serde_json::{Value, json};

/// Runs the `nanoclaw` binary with `args` and `env`, without the caller's `RUST_LOG` and
/// `NANOCLAW_*` variables (so a developer's environment cannot change the outcome).
pub fn nanoclaw(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanoclaw"));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("NANOCLAW_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run nanoclaw")
}

pub fn fixture_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ts-db")
        .join(rel)
}

/// A private copy of the original host's database (tests never touch the fixture itself).
pub fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("messages.db");
    std::fs::copy(fixture_path("messages.db"), &path).expect("copy fixture");
    (dir, path)
}

pub fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_path("golden.json")).expect("golden"))
        .expect("golden json")
}

pub fn msg(id: &str, chat: &str, content: &str, ts: &str) -> Message {
    Message {
        id: id.into(),
        chat_jid: chat.into(),
        sender: "15550000002@s.whatsapp.net".into(),
        sender_name: "Alice".into(),
        content: content.into(),
        timestamp: ts.into(),
        is_from_me: false,
    }
}

/// The original's NewMessage shape (no is_from_me).
pub fn msg_json(m: &Message) -> Value {
    json!({
        "id": m.id, "chat_jid": m.chat_jid, "sender": m.sender,
        "sender_name": m.sender_name, "content": m.content, "timestamp": m.timestamp,
    })
}

/// The original's ScheduledTask shape.
pub fn task_json(t: &ScheduledTask) -> Value {
    json!({
        "id": t.id, "group_folder": t.group_folder, "chat_jid": t.chat_jid, "prompt": t.prompt,
        "schedule_type": t.schedule_type.as_str(), "schedule_value": t.schedule_value,
        "next_run": t.next_run, "last_run": t.last_run, "last_result": t.last_result,
        "status": t.status.as_str(), "created_at": t.created_at, "context_mode": t.context_mode.as_str(),
    })
}

/// The original's RegisteredGroup shape (unset fields omitted).
pub fn group_json(g: &RegisteredGroup) -> Value {
    let mut v = json!({
        "name": g.name, "folder": g.folder, "trigger": g.trigger, "added_at": g.added_at,
    });
    if let Some(cfg) = &g.container_config {
        v["containerConfig"] = serde_json::to_value(cfg).expect("config json");
    }
    if let Some(r) = g.requires_trigger {
        v["requiresTrigger"] = json!(r);
    }
    v
}
