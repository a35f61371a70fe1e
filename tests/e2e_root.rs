//! End to end, as root: a message on the local socket → the host (a subprocess) → a real container from
//! the runner image, in its own network namespace behind the egress gateway → the fake model API on
//! loopback → the reply back on the socket; DB rows as contract §2–3 say.
//!
//! Needs root, `nft`, and the runner image at `target/runner-x86_64.squashfs` (`scripts/test.sh`
//! builds it with `runner-rootfs/build.sh`). Without them each test prints why it skips. Setup is
//! shared through `tests/support/e2e.rs`; hosts run one at a time (they share the nft table).

#[path = "support/e2e.rs"]
mod e2e;

use std::time::{Duration, Instant};

use e2e::{Client, FAKE_KEY, Host, HostOpts};
use nanoclaw::core::wire::HostStatus;
use nanoclaw::net::netns::netns_with_prefix;
use nanoclaw::runner::testing::{FakeApi, Step};
use serde_json::json;

#[test]
fn message_round_trip_through_a_real_container() {
    let Some(_serial) = e2e::begin() else {
        return;
    };
    let api = FakeApi::start(vec![Step::text("Hello from the fake model")]).unwrap();
    let mut host = Host::start("rt", &api.url(), "10.231.0.0/24");
    let mut c = Client::connect(&host.socket());
    c.say("local:main", "hi there");
    let reply = c.reply("local:main", &host);
    assert_eq!(reply, "Hello from the fake model");

    // The upstream saw the real key; the run only ever had its token.
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1, "one model request");
    assert_eq!(reqs[0].header("x-api-key"), Some(FAKE_KEY));
    assert!(reqs[0].last_user_text().contains("hi there"));

    // DB rows (contract §2–3): the message is stored, the agent cursor advanced past it.
    // The reply is sent before the cursor commit lands, so give the commit a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let db = host.db();
        let msgs = db.messages_since("local:main", "", "Andy").unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].content, "hi there");
        let cursor = db
            .load_cursors()
            .unwrap()
            .agent
            .get("local:main")
            .to_string();
        if cursor == msgs[0].timestamp {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent cursor stayed at {cursor:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    assert!(host.stop().success(), "log:\n{}", host.log());
    let left = host.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        !host.log().contains(FAKE_KEY),
        "the real key appeared in the host log"
    );
}

#[test]
fn untriggered_group_waits_then_gets_context() {
    let Some(_serial) = e2e::begin() else {
        return;
    };
    let api = FakeApi::start(vec![Step::text("Noted both.")]).unwrap();
    let mut host = Host::start("tg", &api.url(), "10.232.0.0/24");
    host.cli_ok(&["groups", "register", "local:kitchen", "--folder", "kitchen"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut c = Client::connect(&host.socket());
    c.say("local:kitchen", "we are out of milk");
    std::thread::sleep(Duration::from_secs(2));
    assert!(api.requests().is_empty(), "no run without the trigger");
    c.say("local:kitchen", "@Andy add it to the list");
    assert_eq!(c.reply("local:kitchen", &host), "Noted both.");
    let prompt = api.requests()[0].last_user_text();
    assert!(
        prompt.contains("we are out of milk") && prompt.contains("@Andy add it to the list"),
        "{prompt}"
    );
    assert!(host.stop().success());
}

/// The agent cursor of `chat` in the database, once it equals `want` (the commit follows the reply).
fn wait_cursor(host: &Host, chat: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cursor = host
            .db()
            .load_cursors()
            .unwrap()
            .agent
            .get(chat)
            .to_string();
        if cursor == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "agent cursor of {chat} stayed at {cursor:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Issue 9: a follow-up sent while a run is live is piped into that run (contract §5.12–5.13: the host
/// writes it into the run's IPC input dir, the runner takes it after its current turn) and answered
/// by the same container.
#[test]
fn follow_up_during_a_live_run_is_piped_into_it() {
    let Some(_serial) = e2e::begin() else {
        return;
    };
    let api = FakeApi::start(vec![
        // Slow, so the follow-up arrives while the first turn is still streaming.
        Step::text("First answer").slow(Duration::from_millis(300)),
        Step::text("Second answer"),
    ])
    .unwrap();
    let mut host = Host::start("fu", &api.url(), "10.233.0.0/24");
    let mut c = Client::connect(&host.socket());
    c.say("local:main", "first question");
    assert!(
        api.wait_for_requests(1, Duration::from_secs(30)),
        "{}",
        host.diag()
    );
    // `nanoclaw status` sees the live run through the control socket (issue 9 item 3).
    let out = host.cli_ok(&["status", "--json"]);
    let status: HostStatus = serde_json::from_str(&out).unwrap();
    assert_eq!(status.pid, host.pid() as u32);
    assert!(status.credential);
    assert_eq!(status.active_runs, 1);
    assert_eq!(status.runs_started, 1);
    assert_eq!(status.groups.len(), 1);
    assert_eq!(status.groups[0].jid, "local:main");
    assert_eq!(status.groups[0].run.as_deref(), Some("message"));
    let text = host.cli_ok(&["status"]);
    assert!(text.contains("model credential: configured"), "{text}");
    assert!(text.contains("runs: 1 active of"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("local:main") && l.contains(" message ")),
        "{text}"
    );

    c.say("local:main", "follow-up question");
    assert_eq!(c.reply("local:main", &host), "First answer");
    assert_eq!(c.reply("local:main", &host), "Second answer");

    let reqs = api.requests();
    assert_eq!(reqs.len(), 2, "two model requests");
    let second = reqs[1].last_user_text();
    assert!(second.contains("follow-up question"), "{second}");
    assert!(!second.contains("first question"), "{second}");
    // The same conversation: first prompt, first answer, follow-up.
    assert_eq!(reqs[1].messages().len(), 3);

    // The follow-up's cursor is committed once it is answered.
    let msgs = host.db().messages_since("local:main", "", "Andy").unwrap();
    assert_eq!(msgs.len(), 2);
    wait_cursor(&host, "local:main", &msgs[1].timestamp);

    assert!(host.stop().success(), "log:\n{}", host.diag());
    // One container served both messages.
    let log = host.diag();
    assert_eq!(count(&log, "starting message run"), 1, "{log}");
    assert_eq!(host.run_logs("main").len(), 1, "{log}");
    assert_eq!(host.run_ids().len(), 1, "{log}");
    let left = host.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Issue 9: a task the agent schedules over IPC (`schedule_task`, contract §8.7) fires at its time
/// without a poll, runs in its own container, and its answer reaches the chat; the task row and its
/// run log are as contract §2.5 and §6.11–6.12 say.
#[test]
fn task_scheduled_by_the_agent_fires_and_replies() {
    let Some(_serial) = e2e::begin() else {
        return;
    };
    let due = chrono::Utc::now() + chrono::Duration::seconds(4);
    let due_text = due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let api = FakeApi::start(vec![
        Step::tool(
            "schedule_task",
            json!({
                "prompt": "remind the user about the milk",
                "schedule_type": "once",
                "schedule_value": due_text,
            }),
        ),
        Step::text("I will remind you."),
        Step::text("Reminder: buy milk"),
    ])
    .unwrap();
    let mut host = Host::start("st", &api.url(), "10.234.0.0/24");
    let mut c = Client::connect(&host.socket());
    c.say("local:main", "remind me about the milk in a few seconds");
    let ack = c.reply_within("local:main", Duration::from_secs(20));
    assert_eq!(
        ack.as_deref(),
        Some("I will remind you."),
        "requests: {:#?}\n{}",
        api.requests()
            .iter()
            .map(|r| r.body.clone())
            .collect::<Vec<_>>(),
        host.diag()
    );

    // The task is listed by `nanoclaw status` while it waits.
    let text = host.cli_ok(&["status"]);
    assert!(text.contains("tasks: 1 (1 active"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("task-") && l.contains(" active ")),
        "{text}"
    );

    let reminder = c.reply("local:main", &host);
    let arrived = chrono::Utc::now();
    assert_eq!(reminder, "Reminder: buy milk");
    let reqs = api.requests();
    assert_eq!(reqs.len(), 3, "{}", host.diag());
    assert!(
        reqs[2]
            .last_user_text()
            .contains("remind the user about the milk"),
        "{}",
        reqs[2].last_user_text()
    );
    // Not early, and not a minute-long poll late.
    assert!(arrived >= due, "fired before its time");
    assert!(
        arrived - due < chrono::Duration::seconds(15),
        "fired {}s late",
        (arrived - due).num_seconds()
    );

    assert!(host.stop().success(), "log:\n{}", host.diag());
    // Stopped: status says no host runs.
    let out = host.cli(&["status"]);
    assert_eq!(out.status.code(), Some(6));
    let db = host.db();
    let tasks = db.all_tasks().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0];
    assert_eq!(task.chat_jid, "local:main");
    assert_eq!(task.group_folder, "main");
    assert_eq!(task.schedule_value, due_text);
    assert_eq!(task.status.to_string(), "completed");
    assert_eq!(task.next_run, None);
    assert!(task.last_run.is_some());
    assert_eq!(task.last_result.as_deref(), Some("Reminder: buy milk"));
    let logs = db.task_run_logs(&task.id).unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].status.as_str(), "success");
    assert_eq!(logs[0].result.as_deref(), Some("Reminder: buy milk"));
    // The message run and the task run: two containers.
    assert_eq!(host.run_logs("main").len(), 2, "{}", host.diag());
    let left = host.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Issue 9: `kill -9` of the host while a run is streaming, then a restart: the orphaned container,
/// its network namespace and veth are cleaned up at startup, and the message is answered once and
/// only once (contract §12.7: the cursor is durable only after an answer).
#[test]
fn host_killed_mid_run_answers_once_after_restart() {
    let Some(_serial) = e2e::begin() else {
        return;
    };
    let api = FakeApi::start(vec![
        // The crash interrupts this stream; nothing of it may reach the chat.
        Step::text("never delivered").slow(Duration::from_secs(2)),
        Step::text("Answered after the restart"),
    ])
    .unwrap();
    let mut host = Host::start("kr", &api.url(), "10.235.0.0/24");
    let mut c = Client::connect(&host.socket());
    c.say("local:main", "survive the crash");
    assert!(
        api.wait_for_requests(1, Duration::from_secs(30)),
        "{}",
        host.diag()
    );
    let orphaned = netns_with_prefix(&host.prefix);
    assert_eq!(orphaned.len(), 1, "the live run's namespace: {orphaned:?}");
    let runs = host.sandbox_runs();
    assert_eq!(runs.len(), 1, "the live run: {runs:?}");
    let orphan_veth = format!("{}h", orphaned[0]);
    host.kill9();
    // A crash leaves the run's network and its nft rules behind for the next start to find.
    assert_eq!(netns_with_prefix(&host.prefix), orphaned);
    assert!(
        e2e::nft_table().contains(&orphan_veth),
        "{}",
        e2e::nft_table()
    );
    assert_eq!(
        c.reply_within("local:main", Duration::from_millis(200)),
        None
    );

    host.restart();
    let mut c = Client::connect(&host.socket());
    assert_eq!(c.reply("local:main", &host), "Answered after the restart");
    // Startup removed what the crash left: the orphan's container (cgroups, state), namespace, veth
    // and nft rules.
    let log = host.log();
    let swept = log
        .lines()
        .find(|l| l.contains("removed run networks left by a previous process"))
        .unwrap_or_else(|| panic!("no network sweep at restart:\n{}", host.diag()));
    assert!(
        swept.contains(&format!("\"{}\"", orphaned[0])) && swept.contains(&orphan_veth),
        "{swept}"
    );
    assert!(!netns_with_prefix(&host.prefix).contains(&orphaned[0]));
    assert!(
        !e2e::nft_table().contains(&orphan_veth),
        "{}",
        e2e::nft_table()
    );
    assert!(!host.sandbox_runs().contains(&runs[0]));
    assert_eq!(e2e::run_cgroups(&runs[0]), Vec::<std::path::PathBuf>::new());
    // Nothing else arrives: no second answer to the same message.
    assert_eq!(c.reply_within("local:main", Duration::from_secs(3)), None);
    let reqs = api.requests();
    assert_eq!(reqs.len(), 2, "{}", host.diag());
    for r in &reqs {
        assert!(r.last_user_text().contains("survive the crash"));
    }
    let msgs = host.db().messages_since("local:main", "", "Andy").unwrap();
    assert_eq!(msgs.len(), 1, "stored once");
    wait_cursor(&host, "local:main", &msgs[0].timestamp);
    assert!(host.stop().success(), "log:\n{}", host.diag());

    // A further clean restart does not answer it again.
    host.restart();
    let mut c = Client::connect(&host.socket());
    assert_eq!(c.reply_within("local:main", Duration::from_secs(2)), None);
    assert_eq!(api.requests().len(), 2);
    assert!(host.stop().success(), "log:\n{}", host.diag());
    let left = host.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Issue 9: SIGTERM while a run is live → exit code 0 within the grace period, and nothing of the run
/// is left: container processes and cgroups, sandbox state, network namespace, veths, the nft table,
/// mounts (the runner image). The run produced no output, so its cursor is rolled back and the
/// message is answered after the next start (contract §12.17).
#[test]
fn sigterm_mid_run_exits_cleanly_and_leaks_nothing() {
    let Some(_serial) = e2e::begin() else {
        return;
    };
    let api = FakeApi::start(vec![
        Step::text("cut off by shutdown").slow(Duration::from_secs(2)),
        Step::text("Answered after shutdown"),
    ])
    .unwrap();
    let mut host = Host::start("sg", &api.url(), "10.236.0.0/24");
    let mut c = Client::connect(&host.socket());
    c.say("local:main", "are you there");
    assert!(
        api.wait_for_requests(1, Duration::from_secs(30)),
        "{}",
        host.diag()
    );
    assert_eq!(netns_with_prefix(&host.prefix).len(), 1);
    let image_mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&*host.dir.path().join("run/runner-root").to_string_lossy());
    assert!(image_mounted, "the runner image is mounted while serving");
    let t0 = Instant::now();
    let status = host.stop();
    assert_eq!(status.code(), Some(0), "log:\n{}", host.diag());
    // Grace (3 s) plus the kill margin; the run is not waited for forever.
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert_eq!(
        c.reply_within("local:main", Duration::from_millis(200)),
        None
    );
    assert_eq!(host.run_ids().len(), 1, "{}", host.diag());
    let left = host.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(host.diag().contains("stopped"), "{}", host.diag());

    host.restart();
    let mut c = Client::connect(&host.socket());
    assert_eq!(c.reply("local:main", &host), "Answered after shutdown");
    assert!(host.stop().success(), "log:\n{}", host.diag());
    let left = host.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Contract §12.15: a message the agent already sent over IPC counts as output, so a run that fails
/// afterwards is neither rolled back nor retried, and the user gets that message once.
#[test]
fn ipc_send_counts_as_output_when_the_run_then_fails() {
    let Some(_serial) = e2e::begin() else {
        return;
    };
    let api = FakeApi::start(vec![
        // The run fails right after the send: the host settles a failed run only once the watcher
        // has applied the command files it left (launcher::settle_ipc), so no gap is needed.
        Step::tool("send_message", json!({"text": "Partial answer via IPC"})),
        Step::error(400, "invalid_request_error", "the model refuses"),
    ])
    .unwrap();
    let mut host = Host::start("ip", &api.url(), "10.237.0.0/24");
    let mut c = Client::connect(&host.socket());
    c.say("local:main", "answer in parts");
    assert_eq!(c.reply("local:main", &host), "Partial answer via IPC");
    host.wait_log("the failed run", |l| l.contains("message run failed"));
    // A retry would start within a second (retry_base_ms = 500) and ask the model again.
    assert_eq!(c.reply_within("local:main", Duration::from_secs(3)), None);
    assert_eq!(api.requests().len(), 2, "{}", host.diag());
    let log = host.log();
    assert!(log.contains("output_sent=true"), "{log}");
    assert!(!log.contains("retrying message run"), "{log}");
    let msgs = host.db().messages_since("local:main", "", "Andy").unwrap();
    assert_eq!(msgs.len(), 1);
    wait_cursor(&host, "local:main", &msgs[0].timestamp);
    assert!(host.stop().success(), "log:\n{}", host.diag());
    assert_eq!(host.run_logs("main").len(), 1, "{}", host.diag());
}

/// Issue 9 'Done when': without a model credential the host still starts and serves the local
/// channel, and says clearly (log, chat reply, `status`) that no credential is configured; no run
/// reaches the model.
#[test]
fn without_a_credential_the_host_says_so() {
    let Some(_serial) = e2e::begin() else {
        return;
    };
    let api = FakeApi::start(vec![Step::text("unreachable")]).unwrap();
    let mut opts = HostOpts::new("nc", "10.238.0.0/24", api.url());
    opts.credential = false;
    let mut host = Host::start_with(opts);
    let log = host.log();
    assert!(
        log.contains("no model credential is configured")
            && log.contains("ANTHROPIC_API_KEY=")
            && log.contains(&*host.dir.path().join("credentials").to_string_lossy()),
        "{log}"
    );
    let mut c = Client::connect(&host.socket());
    c.say("local:main", "hello?");
    let reply = c.reply("local:main", &host);
    assert!(
        reply.starts_with("No model credential is configured on this host")
            && reply.contains("ANTHROPIC_API_KEY="),
        "{reply}"
    );
    let text = host.cli_ok(&["status"]);
    assert!(text.contains("model credential: MISSING"), "{text}");
    host.wait_log("the refused run", |l| {
        l.contains("no model credential is configured: put ANTHROPIC_API_KEY")
    });
    assert!(api.requests().is_empty());
    assert!(host.stop().success(), "log:\n{}", host.diag());
    let left = host.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}
