//! `nanoclaw-runner` alone (no container): the real binary against the fake Messages API, in a temp
//! workspace. Scripted conversations exercise every tool, sessions, follow-ups, `_close`, the
//! transcript bound and the API error paths; every IPC file it writes is checked with the host's
//! parser and authorization matrix.

#[path = "support/runner.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Harness, input, path_str};
use nanoclaw::core::ipc::{IpcCommand, IpcKind, parse_command};
use nanoclaw::core::ipc_auth::{Operation, Source, TargetLookup, authorize};
use nanoclaw::core::wire::FrameStatus;
use nanoclaw::runner::testing::{FakeBlock, Reply, Step};
use serde_json::{Value, json};

const JID: &str = "120363001@g.us";

#[test]
fn a_turn_emits_a_result_then_a_session_frame_and_exits_0_on_close() {
    let h = Harness::new(vec![Step::text("hello there")]);
    let mut run = h.spawn(&input("<messages>hi</messages>", "family", JID, false));
    let result = run.expect_result("hello there");
    let session = run.expect_session_frame();
    assert_eq!(result.new_session_id, session.new_session_id);
    h.close();
    let done = run.finish();
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(done.rest.is_empty());
    let reqs = h.api.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.header("x-api-key"), Some("run-token-for-test"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.body["stream"], true);
    assert_eq!(r.last_user_text(), "<messages>hi</messages>");
    assert!(
        r.body["system"]
            .as_str()
            .unwrap()
            .contains("group folder: family")
    );
    // Diagnostics carry the original's prefix.
    assert!(
        done.stderr
            .lines()
            .all(|l| l.starts_with("[agent-runner] ")),
        "{}",
        done.stderr
    );
    // Non-main runs get no admin tools.
    let tools: Vec<&str> = r.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for t in [
        "bash",
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "grep",
        "send_message",
        "schedule_task",
        "list_tasks",
        "pause_task",
        "resume_task",
        "cancel_task",
    ] {
        assert!(tools.contains(&t), "missing {t}");
    }
    assert!(!tools.contains(&"register_group"));
}

#[test]
fn every_core_tool_runs_and_its_result_goes_back_to_the_model() {
    let mut h = Harness::new(vec![]);
    h.set("NANOCLAW_SHELL", "/bin/sh");
    let g = path_str(&h.group());
    std::fs::write(h.group().join("notes.md"), "alpha\nbeta\ngamma\n").unwrap();
    std::fs::create_dir_all(h.group().join("sub/deep")).unwrap();
    std::fs::write(h.group().join("sub/deep/x.md"), "needle here\n").unwrap();
    h.api.push([
        Step::tool("bash", json!({"command": "echo out; echo err >&2; pwd"})),
        Step::tool(
            "write_file",
            json!({"path": "new/file.txt", "content": "one two two\n"}),
        ),
        Step::tool(
            "edit_file",
            json!({"path": "new/file.txt", "old_string": "one", "new_string": "ONE"}),
        ),
        Step::tool(
            "edit_file",
            json!({"path": "new/file.txt", "old_string": "two", "new_string": "2"}),
        ),
        Step::tool(
            "read_file",
            json!({"path": format!("{g}/notes.md"), "offset": 2, "limit": 1}),
        ),
        Step::tool("list_files", json!({"pattern": "**/*.md"})),
        Step::tool(
            "grep",
            json!({"pattern": "NEEDLE", "case_insensitive": true}),
        ),
        Step::tool("bash", json!({"command": "exit 3"})),
        Step::text("all done"),
    ]);
    let mut run = h.spawn(&input("use the tools", "family", JID, false));
    run.expect_result("all done");
    run.expect_session_frame();
    h.close();
    assert_eq!(run.finish().status.code(), Some(0));
    let reqs = h.api.requests();
    assert_eq!(reqs.len(), 9);
    let result = |i: usize| {
        reqs[i]
            .tool_results()
            .into_iter()
            .next()
            .expect("tool result")
    };
    let (_, bash, err) = result(1);
    assert!(!err);
    assert_eq!(bash, format!("out\n{g}\n[stderr]\nerr\n"));
    let (_, write, err) = result(2);
    assert!(!err && write.contains("Wrote 12 bytes"), "{write}");
    let (_, edit, err) = result(3);
    assert!(!err && edit.contains("Replaced 1"), "{edit}");
    let (_, ambiguous, err) = result(4);
    assert!(err && ambiguous.contains("occurs 2 times"), "{ambiguous}");
    assert_eq!(
        std::fs::read_to_string(h.group().join("new/file.txt")).unwrap(),
        "ONE two two\n"
    );
    assert_eq!(result(5), (result(5).0, "beta\n".to_string(), false));
    let (_, list, _) = result(6);
    assert_eq!(list, format!("{g}/notes.md\n{g}/sub/deep/x.md"));
    let (_, grep, _) = result(7);
    assert_eq!(grep, format!("{g}/sub/deep/x.md:1:needle here"));
    let (_, exit3, err) = result(8);
    assert!(err && exit3.contains("[exit code 3]"), "{exit3}");
    // Each tool_result answers the tool_use of the previous response.
    for req in &reqs[1..9] {
        let prev_assistant = &req.messages()[req.messages().len() - 2];
        let use_id = prev_assistant["content"][0]["id"].as_str().unwrap();
        assert_eq!(req.tool_results()[0].0, use_id);
    }
}

#[test]
fn file_tools_stay_inside_the_roots_even_through_symlinks() {
    let h = Harness::new(vec![]);
    std::os::unix::fs::symlink("/etc", h.group().join("etc-link")).unwrap();
    h.api.push([
        Step::tool("read_file", json!({"path": "/etc/passwd"})),
        Step::tool("read_file", json!({"path": "etc-link/passwd"})),
        Step::tool(
            "write_file",
            json!({"path": "../../outside.txt", "content": "x"}),
        ),
        Step::tool("list_files", json!({"pattern": "/etc/*"})),
        Step::tool("grep", json!({"pattern": "root", "path": "etc-link"})),
        Step::tool(
            "write_file",
            json!({"path": format!("{}/ok.txt", path_str(&h.scratch())), "content": "fine"}),
        ),
        Step::text("ok"),
    ]);
    let mut run = h.spawn(&input("try to escape", "family", JID, false));
    run.expect_result("ok");
    run.expect_session_frame();
    h.close();
    run.finish();
    let reqs = h.api.requests();
    for (i, req) in reqs.iter().enumerate().take(6).skip(1) {
        let (_, text, err) = req.tool_results().remove(0);
        assert!(err, "call {i} should be refused: {text}");
        assert!(text.contains("outside the allowed directories"), "{text}");
    }
    assert!(!h.tmp.path().join("outside.txt").exists());
    let (_, text, err) = reqs[6].tool_results().remove(0);
    assert!(!err, "{text}");
    assert_eq!(
        std::fs::read_to_string(h.scratch().join("ok.txt")).unwrap(),
        "fine"
    );
}

#[test]
fn bash_is_killed_at_its_timeout_and_its_output_is_capped() {
    let h = Harness::new(vec![
        Step::tool(
            "bash",
            json!({"command": "sleep 30 & sleep 30", "timeout": 1}),
        ),
        Step::tool(
            "bash",
            json!({"command": "head -c 200000 /dev/zero | tr '\\0' a"}),
        ),
        Step::tool("bash", json!({"command": "env"})),
        Step::text("done"),
    ]);
    let start = Instant::now();
    let mut run = h.spawn(&input("shell", "family", JID, false));
    run.expect_result("done");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "timeout not enforced: {:?}",
        start.elapsed()
    );
    run.expect_session_frame();
    h.close();
    run.finish();
    let reqs = h.api.requests();
    let (_, slow, err) = reqs[1].tool_results().remove(0);
    assert!(err && slow.contains("timed out after 1 s"), "{slow}");
    let (_, big, _) = reqs[2].tool_results().remove(0);
    assert!(big.len() < 33 * 1024, "{}", big.len());
    assert!(
        big.contains("more bytes cut") || big.contains("[output cut"),
        "{}",
        &big[big.len() - 100..]
    );
    // The gateway token is not handed to the agent's shell.
    let (_, env, _) = reqs[3].tool_results().remove(0);
    assert!(!env.contains("run-token-for-test"), "{env}");
    assert!(env.contains("NANOCLAW_WORKSPACE="));
}

/// Registered groups and tasks, as the host's authorization sees them.
struct Lookup;
impl TargetLookup for Lookup {
    fn folder_of_jid(&self, jid: &str) -> Option<&str> {
        match jid {
            JID => Some("family"),
            "120363999@g.us" => Some("work"),
            "main@s.whatsapp.net" => Some("main"),
            _ => None,
        }
    }
    fn folder_of_task(&self, task_id: &str) -> Option<&str> {
        (task_id == "task-1").then_some("family")
    }
    fn jid_of_folder(&self, folder: &str) -> Option<&str> {
        match folder {
            "family" => Some(JID),
            "work" => Some("120363999@g.us"),
            "main" => Some("main@s.whatsapp.net"),
            _ => None,
        }
    }
}

fn operation(cmd: &IpcCommand) -> Operation<'_> {
    match cmd {
        IpcCommand::SendMessage { chat_jid, .. } => Operation::SendMessage { chat_jid },
        IpcCommand::ScheduleTask { target_jid, .. } => Operation::ScheduleTask { target_jid },
        IpcCommand::PauseTask { task_id } => Operation::PauseTask { task_id },
        IpcCommand::ResumeTask { task_id } => Operation::ResumeTask { task_id },
        IpcCommand::CancelTask { task_id } => Operation::CancelTask { task_id },
        IpcCommand::RefreshGroups => Operation::RefreshGroups,
        IpcCommand::RegisterGroup { jid, folder, .. } => Operation::RegisterGroup { jid, folder },
    }
}

/// Reads every file in messages/ and tasks/, checks naming and atomic publish, parses it with the
/// host's parser and authorizes it for `source`. Returns (command type, allowed).
fn host_view(h: &Harness, source: &str) -> Vec<(String, bool, Value)> {
    let name_re = regex::Regex::new(r"^\d{13}-[0-9a-z]{6}\.json$").unwrap();
    let mut out = Vec::new();
    for (sub, kind) in [("messages", IpcKind::Messages), ("tasks", IpcKind::Tasks)] {
        for path in h.ipc_files(sub) {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            assert!(
                name_re.is_match(&name),
                "file name {name} (temp files must be gone)"
            );
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(
                text.contains("\n  \""),
                "pretty JSON with 2-space indent: {text}"
            );
            let cmd = parse_command(kind, &bytes)
                .unwrap_or_else(|e| panic!("host refuses {name}: {e}\n{text}"));
            let allowed =
                authorize(Source::from_dir(source), operation(&cmd), &Lookup).is_allowed();
            out.push((
                cmd.name().to_string(),
                allowed,
                serde_json::from_str(&text).unwrap(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn ipc_tools_of_a_non_main_group_write_files_the_host_accepts() {
    let h = Harness::new(vec![
        Step::tools(
            Some("working"),
            &[
                (
                    "send_message",
                    json!({"text": "progress", "sender": "Andy"}),
                ),
                (
                    "schedule_task",
                    json!({"prompt": "water the plants", "schedule_type": "cron", "schedule_value": "0 9 * * 1-5"}),
                ),
                (
                    "schedule_task",
                    json!({"prompt": "x", "schedule_type": "cron", "schedule_value": "not cron"}),
                ),
                (
                    "schedule_task",
                    json!({"prompt": "sneaky", "schedule_type": "interval", "schedule_value": "60000", "target_group_jid": "120363999@g.us"}),
                ),
                ("pause_task", json!({"task_id": "task-1"})),
                ("resume_task", json!({"task_id": "task-1"})),
                ("cancel_task", json!({"task_id": "task-1"})),
                (
                    "register_group",
                    json!({"jid": "1@g.us", "name": "n", "folder": "f", "trigger": "@Andy"}),
                ),
            ],
        ),
        Step::text("done"),
    ]);
    let mut run = h.spawn(&input("ipc", "family", JID, false));
    run.expect_result("done");
    run.expect_session_frame();
    h.close();
    run.finish();
    let results = h.api.requests()[1].tool_results();
    assert_eq!(results.len(), 8);
    assert_eq!(results[0].1, "Message sent.");
    assert!(
        results[1].1.starts_with("Task scheduled ("),
        "{}",
        results[1].1
    );
    assert!(
        results[2].2 && results[2].1.contains("invalid cron"),
        "{:?}",
        results[2]
    );
    assert!(results[4].1.contains("pause requested"));
    assert!(
        results[7].2 && results[7].1.contains("Only the main group"),
        "{:?}",
        results[7]
    );
    let view = host_view(&h, "family");
    let kinds: Vec<&str> = view.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "cancel_task",
            "message",
            "pause_task",
            "resume_task",
            "schedule_task",
            "schedule_task"
        ]
    );
    // Everything is authorized for the group's own chat and task: a non-main group's target_group_jid
    // is ignored, so the "sneaky" task targets its own chat.
    assert!(view.iter().all(|v| v.1), "{view:?}");
    let message = &view[1].2;
    assert_eq!(message["chatJid"], JID);
    assert_eq!(message["text"], "progress");
    assert_eq!(message["groupFolder"], "family");
    for (_, _, body) in view.iter().filter(|v| v.0 == "schedule_task") {
        assert_eq!(body["targetJid"], JID);
        assert_eq!(body["context_mode"], "group");
        assert_eq!(body["createdBy"], "family");
    }
}

#[test]
fn ipc_tools_of_main_can_act_for_other_groups() {
    let h = Harness::new(vec![
        Step::tools(
            None,
            &[
                (
                    "register_group",
                    json!({"jid": "120363555@g.us", "name": "Book club", "folder": "book-club", "trigger": "@Andy"}),
                ),
                ("refresh_groups", json!({})),
                (
                    "schedule_task",
                    json!({"prompt": "remind", "schedule_type": "once", "schedule_value": "2030-01-01T09:00:00", "target_group_jid": "120363999@g.us", "context_mode": "isolated"}),
                ),
                ("send_message", json!({"text": "hi"})),
                ("list_groups", json!({})),
            ],
        ),
        Step::text("ok"),
    ]);
    std::fs::write(
        h.ipc().join("available_groups.json"),
        serde_json::to_string_pretty(&json!({"groups": [{"jid": "120363999@g.us", "name": "Work", "lastActivity": "2026-01-01T00:00:00.000Z", "isRegistered": true}], "lastSync": "2026-01-02T00:00:00.000Z"})).unwrap(),
    )
    .unwrap();
    let mut run = h.spawn(&input("admin", "main", "main@s.whatsapp.net", true));
    run.expect_result("ok");
    run.expect_session_frame();
    h.close();
    run.finish();
    let req = &h.api.requests()[0];
    assert!(
        req.body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "register_group")
    );
    let results = h.api.requests()[1].tool_results();
    assert!(results.iter().all(|r| !r.2), "{results:?}");
    assert!(
        results[4].1.contains("Work (120363999@g.us) [registered]"),
        "{}",
        results[4].1
    );
    let view = host_view(&h, "main");
    let kinds: Vec<&str> = view.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "message",
            "refresh_groups",
            "register_group",
            "schedule_task"
        ]
    );
    assert!(view.iter().all(|v| v.1), "{view:?}");
    let task = &view[3].2;
    assert_eq!(task["targetJid"], "120363999@g.us");
    assert_eq!(task["context_mode"], "isolated");
    // The same files from a non-main directory are denied by the host: identity is the directory.
    for (kind, _, body) in &view {
        let bytes = serde_json::to_vec(body).unwrap();
        let ipc_kind = if kind == "message" {
            IpcKind::Messages
        } else {
            IpcKind::Tasks
        };
        let cmd = parse_command(ipc_kind, &bytes).unwrap();
        if kind != "message" || body["chatJid"] != JID {
            assert!(
                !authorize(Source::from_dir("family"), operation(&cmd), &Lookup).is_allowed(),
                "{kind}"
            );
        }
    }
}

#[test]
fn list_tasks_reads_the_snapshot_and_filters_to_the_group() {
    let h = Harness::new(vec![Step::tool("list_tasks", json!({})), Step::text("ok")]);
    std::fs::write(
        h.ipc().join("current_tasks.json"),
        serde_json::to_string_pretty(&json!([
            {"id": "task-1", "groupFolder": "family", "prompt": "a very long prompt that goes on and on and on past fifty characters", "schedule_type": "cron", "schedule_value": "0 9 * * *", "status": "active", "next_run": "2030-01-01T09:00:00.000Z"},
            {"id": "task-2", "groupFolder": "work", "prompt": "other group", "schedule_type": "once", "schedule_value": "2030-01-01T00:00:00", "status": "paused", "next_run": null}
        ]))
        .unwrap(),
    )
    .unwrap();
    let mut run = h.spawn(&input("tasks?", "family", JID, false));
    run.expect_result("ok");
    run.expect_session_frame();
    h.close();
    run.finish();
    let (_, text, err) = h.api.requests()[1].tool_results().remove(0);
    assert!(!err);
    assert_eq!(
        text,
        "Scheduled tasks:\n- [task-1] a very long prompt that goes on and on and on past... (cron: 0 9 * * *) - active, next: 2030-01-01T09:00:00.000Z"
    );
}

#[test]
fn a_session_is_resumed_by_id_in_a_later_run() {
    let h = Harness::new(vec![
        Step::text("first answer"),
        Step::text("second answer"),
    ]);
    let mut run = h.spawn(&input("first question", "family", JID, false));
    let f = run.expect_result("first answer");
    let id = f.new_session_id.clone().unwrap();
    run.expect_session_frame();
    h.close();
    assert_eq!(run.finish().status.code(), Some(0));
    assert!(
        h.session_dir()
            .join("nanoclaw-runner")
            .join(format!("{id}.json"))
            .exists()
    );

    let mut second = input("second question", "family", JID, false);
    second["sessionId"] = json!(id);
    let mut run = h.spawn(&second);
    let f = run.expect_result("second answer");
    assert_eq!(f.new_session_id.as_deref(), Some(id.as_str()));
    run.expect_session_frame();
    h.close();
    run.finish();
    let msgs = h.api.requests()[1].messages().to_vec();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["content"][0]["text"], "first question");
    assert_eq!(msgs[1]["content"][0]["text"], "first answer");
    assert_eq!(msgs[2]["content"][0]["text"], "second question");
}

#[test]
fn an_unknown_session_id_starts_empty_under_that_id_and_a_bad_one_gets_a_new_id() {
    let h = Harness::new(vec![Step::text("a"), Step::text("b")]);
    let mut i = input("q", "family", JID, false);
    i["sessionId"] = json!("sdk-session-from-the-original");
    let mut run = h.spawn(&i);
    assert_eq!(
        run.expect_result("a").new_session_id.as_deref(),
        Some("sdk-session-from-the-original")
    );
    run.expect_session_frame();
    h.close();
    run.finish();
    i["sessionId"] = json!("../../etc/passwd");
    let mut run = h.spawn(&i);
    let id = run.expect_result("b").new_session_id.unwrap();
    assert_ne!(id, "../../etc/passwd");
    assert_eq!(id.len(), 36);
    run.expect_session_frame();
    h.close();
    run.finish();
    assert_eq!(h.api.requests()[1].messages().len(), 1);
}

#[test]
fn follow_ups_while_idle_become_the_next_prompt_in_order() {
    let h = Harness::new(vec![
        Step::text("one"),
        Step::text("two"),
        Step::text("three"),
    ]);
    let mut run = h.spawn(&input("start", "family", JID, false));
    run.expect_result("one");
    let s1 = run.expect_session_frame();
    h.send_follow_up("follow A");
    h.send_follow_up("follow B");
    let r2 = run.expect_result("two");
    assert_eq!(r2.new_session_id, s1.new_session_id);
    // The two files may be drained together, or B may arrive while A's query runs and join it as the
    // next turn of the same query; either way in order, each once, then one session frame.
    let mut results = vec!["two".to_string()];
    loop {
        let f = run.next_frame();
        match f.result {
            None => break,
            Some(Value::String(t)) => results.push(t),
            Some(other) => panic!("{other:?}"),
        }
    }
    h.close();
    let done = run.finish();
    assert_eq!(done.status.code(), Some(0));
    let prompts: Vec<String> = h.api.requests()[1..]
        .iter()
        .map(|r| r.last_user_text())
        .collect();
    match prompts.len() {
        1 => assert_eq!(
            (prompts, results),
            (
                vec!["follow A\nfollow B".to_string()],
                vec!["two".to_string()]
            )
        ),
        _ => assert_eq!(
            (prompts, results),
            (
                vec!["follow A".to_string(), "follow B".to_string()],
                vec!["two".to_string(), "three".to_string()]
            )
        ),
    }
    assert!(std::fs::read_dir(h.input_dir()).unwrap().next().is_none());
}

#[test]
fn a_follow_up_during_a_tool_chain_joins_after_the_tool_results() {
    let h = Harness::new(vec![
        Step::tool("bash", json!({"command": "echo x"})).slow(Duration::from_millis(150)),
        Step::text("answered both"),
    ]);
    let mut run = h.spawn(&input("start", "family", JID, false));
    assert!(h.api.wait_for_requests(1, harness::WAIT));
    h.send_follow_up("also this");
    run.expect_result("answered both");
    run.expect_session_frame();
    h.close();
    run.finish();
    let reqs = h.api.requests();
    assert_eq!(reqs.len(), 2);
    let last = reqs[1].messages().last().unwrap().clone();
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(
        last["content"][1],
        json!({"type": "text", "text": "also this"})
    );
}

#[test]
fn close_during_a_query_ends_the_run_without_a_session_frame() {
    let h = Harness::new(vec![
        Step::text("last words").slow(Duration::from_millis(100)),
    ]);
    let mut run = h.spawn(&input("start", "family", JID, false));
    assert!(h.api.wait_for_requests(1, harness::WAIT));
    h.close();
    run.expect_result("last words");
    let done = run.finish();
    assert_eq!(done.status.code(), Some(0), "{}", done.stderr);
    assert!(
        done.rest.is_empty(),
        "no session frame after close during query: {:?}",
        done.rest
    );
    assert!(!h.input_dir().join("_close").exists());
}

#[test]
fn queued_input_is_appended_to_the_first_prompt_and_a_stale_close_is_ignored() {
    let h = Harness::new(vec![Step::text("ok")]);
    h.close();
    std::fs::write(
        h.input_dir().join("1700000000001-aaaa.json"),
        r#"{"type":"message","text":"queued 1"}"#,
    )
    .unwrap();
    std::fs::write(
        h.input_dir().join("1700000000002-bbbb.json"),
        r#"{"type":"message","text":"queued 2"}"#,
    )
    .unwrap();
    let mut i = input("task prompt", "family", JID, false);
    i["isScheduledTask"] = json!(true);
    let mut run = h.spawn(&i);
    run.expect_result("ok");
    run.expect_session_frame();
    h.close();
    run.finish();
    let text = h.api.requests()[0].last_user_text();
    assert!(text.starts_with("[SCHEDULED TASK"), "{text}");
    assert!(
        text.ends_with("\n\ntask prompt\nqueued 1\nqueued 2"),
        "{text}"
    );
}

#[test]
fn the_transcript_is_bounded_and_dropped_turns_are_archived() {
    let mut h = Harness::new(vec![Step::text("r1"), Step::text("r2"), Step::text("r3")]);
    h.set("NANOCLAW_MAX_TRANSCRIPT_MESSAGES", "4");
    let mut run = h.spawn(&input("turn one", "family", JID, false));
    run.expect_result("r1");
    run.expect_session_frame();
    h.send_follow_up("turn two");
    run.expect_result("r2");
    run.expect_session_frame();
    h.send_follow_up("turn three");
    run.expect_result("r3");
    let id = run.expect_session_frame().new_session_id.unwrap();
    h.close();
    run.finish();
    let reqs = h.api.requests();
    let texts = |i: usize| -> Vec<String> {
        reqs[i]
            .messages()
            .iter()
            .map(|m| m["content"][0]["text"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(texts(1), vec!["turn one", "r1", "turn two"]);
    assert_eq!(texts(2), vec!["turn two", "r2", "turn three"]);
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let archive = std::fs::read_to_string(
        h.group()
            .join("conversations")
            .join(format!("{date}-{id}.md")),
    )
    .unwrap();
    assert_eq!(archive, "**User**: turn one\n\n**Andy**: r1\n\n");
}

#[test]
fn the_turn_limit_stops_a_tool_loop_with_a_null_result() {
    let mut h = Harness::new(vec![]);
    h.set("NANOCLAW_MAX_TURNS", "3");
    for _ in 0..3 {
        h.api.push([Step::tool("bash", json!({"command": "true"}))]);
    }
    let mut run = h.spawn(&input("loop", "family", JID, false));
    let f = run.next_frame();
    assert_eq!((f.status, f.result), (FrameStatus::Success, None));
    run.expect_session_frame();
    h.close();
    assert_eq!(run.finish().status.code(), Some(0));
    assert_eq!(h.api.requests().len(), 3);
}

#[test]
fn max_tokens_returns_the_partial_text_and_drops_the_cut_tool_call() {
    let h = Harness::new(vec![
        Step::Reply(Reply {
            content: vec![
                FakeBlock::Text("partial".into()),
                FakeBlock::ToolUse {
                    id: "toolu_cut".into(),
                    name: "bash".into(),
                    input: json!({"command": "ls"}),
                },
            ],
            stop_reason: "max_tokens".into(),
            event_delay: Duration::ZERO,
        }),
        Step::text("next"),
    ]);
    let mut run = h.spawn(&input("q", "family", JID, false));
    run.expect_result("partial");
    run.expect_session_frame();
    h.send_follow_up("go on");
    run.expect_result("next");
    run.expect_session_frame();
    h.close();
    run.finish();
    // The fake API refuses unanswered tool_use blocks, so request 2 being answered proves it was dropped.
    assert_eq!(h.api.requests().len(), 2);
}

#[test]
fn rate_limits_are_retried_after_the_servers_retry_after() {
    let h = Harness::new(vec![
        Step::error(429, "rate_limit_error", "slow down").retry_after("1"),
        Step::text("ok"),
    ]);
    let mut run = h.spawn(&input("q", "family", JID, false));
    run.expect_result("ok");
    run.expect_session_frame();
    h.close();
    run.finish();
    let reqs = h.api.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retry-after not honoured: {gap:?}"
    );
}

#[test]
fn overload_and_broken_streams_are_retried() {
    let h = Harness::new(vec![
        Step::error(529, "overloaded_error", "Overloaded"),
        Step::StreamError {
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
        },
        Step::Truncated {
            reply: match Step::text("never whole") {
                Step::Reply(r) => r,
                _ => unreachable!(),
            },
            events: 3,
        },
        Step::text("finally"),
    ]);
    let mut run = h.spawn(&input("q", "family", JID, false));
    run.expect_result("finally");
    run.expect_session_frame();
    h.close();
    let done = run.finish();
    assert_eq!(h.api.requests().len(), 4);
    assert!(done.stderr.contains("retrying"), "{}", done.stderr);
}

#[test]
fn persistent_server_errors_end_in_one_error_frame_and_exit_1() {
    let mut h = Harness::new(vec![
        Step::error(503, "api_error", "down"),
        Step::error(503, "api_error", "down"),
        Step::error(503, "api_error", "still down"),
        Step::text("too late"),
    ]);
    h.set("NANOCLAW_MAX_RETRIES", "2");
    let run = h.spawn(&input("q", "family", JID, false));
    let done = run.finish();
    assert_eq!(done.status.code(), Some(1));
    assert_eq!(done.rest.len(), 1, "{:?}", done.rest);
    let f = &done.rest[0];
    assert_eq!(f.status, FrameStatus::Error);
    assert_eq!(f.result, None);
    assert!(f.new_session_id.is_some());
    assert_eq!(
        f.error.as_deref(),
        Some(
            "model API failed after 3 attempts: model API returned HTTP 503 (api_error): still down"
        )
    );
    assert_eq!(h.api.requests().len(), 3);
}

#[test]
fn client_errors_are_not_retried() {
    let h = Harness::new(vec![
        Step::error(401, "authentication_error", "invalid x-api-key"),
        Step::text("no"),
    ]);
    let done = h.spawn(&input("q", "family", JID, false)).finish();
    assert_eq!(done.status.code(), Some(1));
    assert_eq!(
        done.rest[0].error.as_deref(),
        Some("model API returned HTTP 401 (authentication_error): invalid x-api-key")
    );
    assert_eq!(h.api.requests().len(), 1);
}

#[test]
fn an_unreachable_gateway_is_a_clear_error() {
    let mut h = Harness::new(vec![]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    h.set("ANTHROPIC_BASE_URL", &format!("http://127.0.0.1:{port}"));
    h.set("NANOCLAW_MAX_RETRIES", "1");
    let done = h.spawn(&input("q", "family", JID, false)).finish();
    assert_eq!(done.status.code(), Some(1));
    let err = done.rest[0].error.clone().unwrap();
    assert!(
        err.starts_with("model API failed after 2 attempts: model API unreachable:"),
        "{err}"
    );
}

#[test]
fn slow_streams_and_non_streaming_mode_both_work() {
    let h = Harness::new(vec![
        Step::text("a slow but steady answer of some length").slow(Duration::from_millis(40)),
    ]);
    let mut run = h.spawn(&input("q", "family", JID, false));
    run.expect_result("a slow but steady answer of some length");
    run.expect_session_frame();
    h.close();
    run.finish();

    let mut h = Harness::new(vec![
        Step::tool("bash", json!({"command": "echo hi"})),
        Step::text("json mode"),
    ]);
    h.set("NANOCLAW_STREAM", "0");
    let mut run = h.spawn(&input("q", "family", JID, false));
    run.expect_result("json mode");
    run.expect_session_frame();
    h.close();
    run.finish();
    let reqs = h.api.requests();
    assert_eq!(reqs[0].body.get("stream"), None);
    assert_eq!(reqs[1].tool_results()[0].1, "hi\n");
}

#[test]
fn bad_input_and_missing_settings_give_an_error_frame_and_exit_1() {
    let h = Harness::new(vec![]);
    let done = h.spawn_raw(b"not json").finish();
    assert_eq!(done.status.code(), Some(1));
    assert!(
        done.rest[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("Failed to parse input: "),
        "{:?}",
        done.rest
    );
    assert_eq!(done.rest[0].status, FrameStatus::Error);

    let mut h = Harness::new(vec![]);
    h.set("ANTHROPIC_BASE_URL", "");
    let done = h.spawn(&input("q", "family", JID, false)).finish();
    assert_eq!(done.status.code(), Some(1));
    assert!(
        done.rest[0]
            .error
            .as_deref()
            .unwrap()
            .contains("ANTHROPIC_BASE_URL is not set")
    );
    assert!(h.api.requests().is_empty());
}

#[test]
fn model_and_limits_come_from_the_input() {
    let h = Harness::new(vec![Step::text("ok")]);
    let mut i = input("q", "family", JID, false);
    i["model"] = json!("claude-test-model");
    i["maxTokens"] = json!(1234);
    i["assistantName"] = json!("Bob");
    let mut run = h.spawn(&i);
    run.expect_result("ok");
    run.expect_session_frame();
    h.close();
    run.finish();
    let body: &Value = &h.api.requests()[0].body;
    assert_eq!(body["model"], "claude-test-model");
    assert_eq!(body["max_tokens"], 1234);
    assert!(body["system"].as_str().unwrap().starts_with("You are Bob"));
}

#[test]
fn the_runner_benchmark_measures_real_runs() {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_nanoclaw-runner"));
    let report = nanoclaw::runner::bench::bench_runner(path, 2).unwrap();
    assert_eq!(report.first_request.len(), 2);
    assert!(
        report
            .first_request
            .iter()
            .all(|d| *d > Duration::ZERO && *d < harness::WAIT)
    );
    // A Rust process's own peak RSS: more than nothing, far less than the original's ~400 MiB tree.
    assert!(
        report
            .peak_rss_kib
            .iter()
            .all(|&k| k > 100 && k < 200 * 1024),
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("start -> first API request: median"),
        "{text}"
    );
    let missing =
        nanoclaw::runner::bench::bench_runner(std::path::Path::new("/nonexistent/runner"), 1);
    assert!(missing.unwrap_err().to_string().contains("not found"));
}

#[test]
fn send_message_works_for_local_channel_chats() {
    let h = Harness::new(vec![
        Step::tool("send_message", json!({"text": "hello kitchen"})),
        Step::text("ok"),
    ]);
    let mut run = h.spawn(&input("q", "kitchen", "local:kitchen", false));
    run.expect_result("ok");
    run.expect_session_frame();
    h.close();
    run.finish();
    let (_, text, err) = h.api.requests()[1].tool_results().remove(0);
    assert!(!err, "{text}");
    let files = h.ipc_files("messages");
    assert_eq!(files.len(), 1);
    let cmd = parse_command(IpcKind::Messages, &std::fs::read(&files[0]).unwrap()).unwrap();
    assert!(matches!(cmd, IpcCommand::SendMessage { chat_jid, .. } if chat_jid == "local:kitchen"));
}
