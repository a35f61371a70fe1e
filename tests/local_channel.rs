//! The local channel over a real Unix socket: inbound lines, malformed input, replies, typing,
//! history, permissions, stale sockets, and the `nanoclaw chat` client end to end.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use nanoclaw::channel::client::{self, ChatOptions};
use nanoclaw::channel::local::{HistoryFn, LocalChannel, MAX_LINE_BYTES};
use nanoclaw::channel::{Channel, Inbound};
use nanoclaw::core::wire::LocalHistoryEntry;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    async fn connect(path: &std::path::Path) -> Self {
        let (r, w) = UnixStream::connect(path).await.unwrap().into_split();
        Self {
            lines: BufReader::new(r).lines(),
            write: w,
        }
    }
    async fn send(&mut self, line: &str) {
        self.write.write_all(line.as_bytes()).await.unwrap();
        self.write.write_all(b"\n").await.unwrap();
    }
    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("reply in time")
            .unwrap()
            .expect("open");
        serde_json::from_str(&line).unwrap()
    }
}

fn channel(
    dir: &std::path::Path,
    history: Option<HistoryFn>,
) -> (Arc<LocalChannel>, mpsc::Receiver<Inbound>) {
    let (tx, rx) = mpsc::channel(8);
    let ch = Arc::new(LocalChannel::new(
        dir.join("run/local.sock"),
        "Andy",
        tx,
        history,
    ));
    (ch, rx)
}

#[tokio::test]
async fn inbound_lines_become_messages_and_bad_lines_get_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (ch, mut rx) = channel(dir.path(), None);
    ch.connect().await.unwrap();
    let mode = std::fs::metadata(ch.socket_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    let mut c = Client::connect(ch.socket_path()).await;

    c.send(r#"{"chat":"local:main","sender":"local:ana","sender_name":"Ana","text":"@Andy hi"}"#)
        .await;
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message.chat_jid, "local:main");
    assert_eq!(got.message.sender_name, "Ana");
    assert_eq!(got.message.content, "@Andy hi");
    assert!(!got.message.is_from_me);
    assert!(nanoclaw::core::time::is_store_format(
        &got.message.timestamp
    ));

    c.send("{not json").await;
    assert!(
        c.recv().await["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed line")
    );
    c.send(r#"{"chat":"local:../main","text":"x"}"#).await;
    assert!(
        c.recv().await["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid chat")
    );
    c.send(r#"{"chat":"local:main"}"#).await;
    assert!(
        c.recv().await["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed line")
    );
    c.send(&format!(
        r#"{{"chat":"local:main","text":"{}"}}"#,
        "y".repeat(MAX_LINE_BYTES)
    ))
    .await;
    assert!(
        c.recv().await["error"]
            .as_str()
            .unwrap()
            .contains("longer than")
    );
    // The connection still works after all that.
    c.send(r#"{"chat":"local:main","text":"still here"}"#).await;
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message.content, "still here");
    assert_eq!(got.message.sender_name, "local:user");
    ch.disconnect().await.unwrap();
    assert!(!ch.socket_path().exists());
}

#[tokio::test]
async fn replies_and_typing_reach_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let (ch, _rx) = channel(dir.path(), None);
    ch.connect().await.unwrap();
    let mut a = Client::connect(ch.socket_path()).await;
    let mut b = Client::connect(ch.socket_path()).await;
    // Let both subscriptions start before broadcasting.
    tokio::time::sleep(Duration::from_millis(50)).await;
    ch.set_typing("local:main", true).await.unwrap();
    ch.send_message("local:main", "hello there").await.unwrap();
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.recv().await,
            serde_json::json!({"chat":"local:main","typing":true})
        );
        assert_eq!(
            c.recv().await,
            serde_json::json!({"chat":"local:main","from":"Andy","text":"hello there"})
        );
    }
    assert!(!ch.wants_prefix());
    assert!(ch.owns_jid("local:x") && !ch.owns_jid("1@g.us"));
    ch.disconnect().await.unwrap();
    assert!(ch.send_message("local:main", "late").await.is_err());
}

#[tokio::test]
async fn history_requests_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let history: HistoryFn = Arc::new(|chat: &str, limit: usize| {
        (0..limit.min(2))
            .map(|i| LocalHistoryEntry {
                sender_name: format!("{chat}-{i}"),
                text: "t".into(),
                time: "2026-01-01T00:00:00.000Z".into(),
            })
            .collect()
    });
    let (ch, _rx) = channel(dir.path(), Some(history));
    ch.connect().await.unwrap();
    let mut c = Client::connect(ch.socket_path()).await;
    c.send(r#"{"op":"history","chat":"local:main","limit":5}"#)
        .await;
    let v = c.recv().await;
    assert_eq!(v["chat"], "local:main");
    assert_eq!(v["history"].as_array().unwrap().len(), 2);
    assert_eq!(v["history"][1]["sender_name"], "local:main-1");
    ch.disconnect().await.unwrap();
}

#[tokio::test]
async fn stale_socket_is_replaced_but_a_regular_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (ch, _rx) = channel(dir.path(), None);
    ch.connect().await.unwrap();
    // Simulate a crash: the socket file stays behind.
    std::mem::forget(ch);
    let (ch2, _rx2) = channel(dir.path(), None);
    ch2.connect().await.unwrap();
    ch2.disconnect().await.unwrap();

    std::fs::write(dir.path().join("run/local.sock"), b"precious").unwrap();
    let (ch3, _rx3) = channel(dir.path(), None);
    let err = ch3.connect().await.unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("run/local.sock")).unwrap(),
        b"precious"
    );
}

#[tokio::test]
async fn chat_client_sends_input_and_prints_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let (ch, mut rx) = channel(dir.path(), None);
    ch.connect().await.unwrap();
    let responder = {
        let ch = ch.clone();
        tokio::spawn(async move {
            let got = rx.recv().await.unwrap();
            ch.set_typing(&got.message.chat_jid, true).await.unwrap();
            ch.send_message(
                &got.message.chat_jid,
                &format!("echo: {}", got.message.content),
            )
            .await
            .unwrap();
        })
    };
    let opts = ChatOptions {
        chat: "local:main".into(),
        sender_name: "tester".into(),
        history: 0,
        wait_after_eof: Duration::from_secs(5),
    };
    let mut out = Vec::new();
    client::run(ch.socket_path(), &opts, &b"ping\n"[..], &mut out)
        .await
        .unwrap();
    responder.await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out, "(typing...)\nAndy: echo: ping\n");
    ch.disconnect().await.unwrap();
}

#[tokio::test]
async fn chat_client_explains_a_missing_host() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ChatOptions {
        chat: "local:main".into(),
        sender_name: "t".into(),
        history: 0,
        wait_after_eof: Duration::ZERO,
    };
    let err = client::run(&dir.path().join("none.sock"), &opts, &b""[..], Vec::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is `nanoclaw run` running"),
        "{err}"
    );
}
