//! Adapter tests at the library boundary: real library event types (built the way the library builds
//! them), a recording fake for the five library calls, and the real credential store on disk.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::mpsc;
use whatsapp_rust::Jid;
use whatsapp_rust::prelude::{Event, MessageInfo, wa};
use whatsapp_rust::wacore::net::DisconnectReason;
use whatsapp_rust::wacore::stanza::groups::GroupNotificationAction;
use whatsapp_rust::wacore::types::events::{
    BatchOrigin, ConnectFailureReason, Connected, Disconnected, GroupUpdate, InboundMessage,
    LoggedOut, MessageBatch, PairingQrCode,
};

use super::adapter::{Adapter, GROUP_SYNC_MAX_AGE, OUTBOX_CAPACITY, Outgoing};
use super::ops::{OpsError, WaOps};
use super::{GroupSink, GroupSubjects, LinkState, WhatsAppError};
use crate::channel::{Channel, ChannelError, Inbound};

/// Records every call; answers from its configuration.
#[derive(Default)]
struct FakeOps {
    lids: HashMap<String, String>,
    lid_error: bool,
    own: Option<(Jid, Jid)>,
    groups: Mutex<Groups>,
    fail_sends: AtomicBool,
    sent: Mutex<Vec<(String, String)>>,
    states: Mutex<Vec<(String, bool)>>,
    lid_calls: AtomicUsize,
    group_calls: AtomicUsize,
}

/// What `participating_groups` answers; no groups by default.
struct Groups(Result<Vec<(String, String)>, OpsError>);

impl Default for Groups {
    fn default() -> Self {
        Self(Ok(Vec::new()))
    }
}

#[async_trait]
impl WaOps for FakeOps {
    async fn send_text(&self, to: &Jid, text: &str) -> Result<(), OpsError> {
        if self.fail_sends.load(Ordering::SeqCst) {
            return Err(OpsError("socket closed".into()));
        }
        self.sent
            .lock()
            .unwrap()
            .push((to.to_string(), text.to_string()));
        Ok(())
    }

    async fn chat_state(&self, to: &Jid, composing: bool) -> Result<(), OpsError> {
        self.states
            .lock()
            .unwrap()
            .push((to.to_string(), composing));
        if self.fail_sends.load(Ordering::SeqCst) {
            return Err(OpsError("socket closed".into()));
        }
        Ok(())
    }

    async fn participating_groups(&self) -> Result<Vec<(String, String)>, OpsError> {
        self.group_calls.fetch_add(1, Ordering::SeqCst);
        self.groups.lock().unwrap().0.clone()
    }

    async fn lid_to_phone(&self, lid_user: &str) -> Result<Option<String>, OpsError> {
        self.lid_calls.fetch_add(1, Ordering::SeqCst);
        if self.lid_error {
            return Err(OpsError("store locked".into()));
        }
        Ok(self.lids.get(lid_user).cloned())
    }

    fn own_ids(&self) -> (Option<Jid>, Option<Jid>) {
        match &self.own {
            Some((pn, lid)) => (Some(pn.clone()), Some(lid.clone())),
            None => (None, None),
        }
    }
}

struct Rig {
    adapter: Arc<Adapter<FakeOps>>,
    ops: Arc<FakeOps>,
    rx: mpsc::Receiver<Inbound>,
    /// Every batch the group sink received.
    synced: Arc<Mutex<Vec<GroupSubjects>>>,
}

fn rig_with(ops: FakeOps, last_sync: Option<chrono::DateTime<Utc>>) -> Rig {
    let (tx, rx) = mpsc::channel(16);
    let synced = Arc::new(Mutex::new(Vec::new()));
    let sink_log = synced.clone();
    let sink: GroupSink = Arc::new(move |groups| sink_log.lock().unwrap().push(groups));
    let adapter = Arc::new(Adapter::new(tx, Some(sink), last_sync));
    let ops = Arc::new(ops);
    adapter.attach(ops.clone());
    Rig {
        adapter,
        ops,
        rx,
        synced,
    }
}

fn rig(ops: FakeOps) -> Rig {
    rig_with(ops, None)
}

fn jid(s: &str) -> Jid {
    s.parse().unwrap()
}

fn info(chat: &str, sender: &str, id: &str) -> MessageInfo {
    let mut info = MessageInfo::default();
    info.source.chat = jid(chat);
    info.source.sender = jid(sender);
    info.source.is_group = chat.ends_with("@g.us");
    info.id = id.to_string();
    info.push_name = "Bob".to_string();
    info.timestamp = chrono::TimeZone::timestamp_opt(&Utc, 1_770_714_010, 0).unwrap();
    info
}

fn text(t: &str) -> wa::Message {
    wa::Message {
        conversation: Some(t.to_string()),
        ..Default::default()
    }
}

fn batch(items: Vec<(wa::Message, MessageInfo)>) -> Event {
    let messages: Vec<InboundMessage> = items
        .into_iter()
        .map(|(m, i)| {
            InboundMessage::builder()
                .message(Arc::new(m))
                .info(Arc::new(i))
                .build()
        })
        .collect();
    Event::Messages(
        MessageBatch::builder()
            .messages(Arc::from(messages))
            .origin(BatchOrigin::Live)
            .build(),
    )
}

fn connected() -> Event {
    Event::Connected(Connected::builder().build())
}

fn drain(rx: &mut mpsc::Receiver<Inbound>) -> Vec<Inbound> {
    let mut out = Vec::new();
    while let Ok(item) = rx.try_recv() {
        out.push(item);
    }
    out
}

/// Waits (bounded) for background work the adapter spawned.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn inbound_batch_maps_in_order_with_lid_chat_translated_once() {
    let mut r = rig(FakeOps {
        lids: HashMap::from([("12345678901234".into(), "15550001111".into())]),
        ..Default::default()
    });
    let event = batch(vec![
        (
            text("@Andy hi"),
            info("120363000000000001@g.us", "12345678901234:4@lid", "A1"),
        ),
        (
            text("dm one"),
            info("12345678901234@lid", "12345678901234:4@lid", "A2"),
        ),
        (
            text("dm two"),
            info("12345678901234:4@lid", "12345678901234:4@lid", "A3"),
        ),
    ]);
    r.adapter.on_event(&event).await;
    let got = drain(&mut r.rx);
    assert_eq!(got.len(), 3);
    let group = &got[0].message;
    assert_eq!(group.chat_jid, "120363000000000001@g.us");
    // Senders are never translated (contract §11.4).
    assert_eq!(group.sender, "12345678901234@lid");
    assert_eq!(group.content, "@Andy hi");
    assert_eq!(group.timestamp, "2026-02-10T09:00:10.000Z");
    assert!(got[0].chat_name.is_none());
    for dm in &got[1..] {
        assert_eq!(dm.message.chat_jid, "15550001111@s.whatsapp.net");
        assert_eq!(dm.message.sender, "12345678901234@lid");
    }
    assert_eq!(got[1].message.id, "A2");
    assert_eq!(got[2].message.id, "A3");
    assert_eq!(
        r.ops.lid_calls.load(Ordering::SeqCst),
        1,
        "second lookup is cached"
    );
}

#[tokio::test]
async fn status_broadcast_is_dropped_and_empty_content_still_delivered() {
    let mut r = rig(FakeOps::default());
    let sticker = wa::Message {
        sticker_message: whatsapp_rust::prelude::MessageField::some(Default::default()),
        ..Default::default()
    };
    let event = batch(vec![
        (
            text("my status"),
            info("status@broadcast", "15550001111@s.whatsapp.net", "S1"),
        ),
        (
            sticker,
            info(
                "15550001111@s.whatsapp.net",
                "15550001111@s.whatsapp.net",
                "M1",
            ),
        ),
    ]);
    r.adapter.on_event(&event).await;
    let got = drain(&mut r.rx);
    assert_eq!(got.len(), 1, "status message dropped");
    assert_eq!(got[0].message.id, "M1");
    assert_eq!(got[0].message.content, "");
    assert_eq!(got[0].message.sender_name, "Bob");
}

#[tokio::test]
async fn unmapped_or_failing_lid_lookups_keep_the_lid_chat() {
    let mut r = rig(FakeOps::default());
    r.adapter
        .on_event(&batch(vec![(
            text("x"),
            info("99999@lid", "99999@lid", "L1"),
        )]))
        .await;
    assert_eq!(drain(&mut r.rx)[0].message.chat_jid, "99999@lid");

    let mut r = rig(FakeOps {
        lid_error: true,
        lids: HashMap::from([("99999".into(), "15550001111".into())]),
        ..Default::default()
    });
    r.adapter
        .on_event(&batch(vec![(
            text("x"),
            info("99999@lid", "99999@lid", "L2"),
        )]))
        .await;
    assert_eq!(drain(&mut r.rx)[0].message.chat_jid, "99999@lid");
}

#[tokio::test]
async fn open_records_our_own_lid_mapping() {
    let mut r = rig(FakeOps {
        own: Some((jid("15550009999:3@s.whatsapp.net"), jid("77777:3@lid"))),
        ..Default::default()
    });
    r.adapter.on_event(&connected()).await;
    r.adapter
        .on_event(&batch(vec![(
            text("note to self"),
            info("77777@lid", "77777:3@lid", "N1"),
        )]))
        .await;
    let got = drain(&mut r.rx);
    assert_eq!(got[0].message.chat_jid, "15550009999@s.whatsapp.net");
    assert_eq!(r.ops.lid_calls.load(Ordering::SeqCst), 0);
    assert!(r.adapter.is_connected());
    assert_eq!(r.adapter.state(), LinkState::Connected);
}

#[tokio::test]
async fn replies_wait_while_disconnected_and_flush_in_order_on_open() {
    let r = rig(FakeOps::default());
    assert!(!r.adapter.is_connected());
    r.adapter
        .send_text("15550001111@s.whatsapp.net", "one")
        .await
        .unwrap();
    r.adapter
        .send_text("120363000000000001@g.us", "two")
        .await
        .unwrap();
    assert!(r.ops.sent.lock().unwrap().is_empty());
    assert_eq!(r.adapter.queued().len(), 2);
    r.adapter.on_event(&connected()).await;
    eventually("flush", || r.ops.sent.lock().unwrap().len() == 2).await;
    assert_eq!(
        *r.ops.sent.lock().unwrap(),
        vec![
            ("15550001111@s.whatsapp.net".to_string(), "one".to_string()),
            ("120363000000000001@g.us".to_string(), "two".to_string()),
        ]
    );
    assert!(r.adapter.queued().is_empty());
    r.adapter
        .send_text("15550001111@s.whatsapp.net", "three")
        .await
        .unwrap();
    assert_eq!(r.ops.sent.lock().unwrap().len(), 3, "sent directly");
}

#[tokio::test]
async fn failed_sends_are_queued_and_keep_their_order() {
    let r = rig(FakeOps::default());
    r.adapter.on_event(&connected()).await;
    r.ops.fail_sends.store(true, Ordering::SeqCst);
    // A send never fails to the caller (contract §11.6): it is queued.
    r.adapter
        .send_text("15550001111@s.whatsapp.net", "first")
        .await
        .unwrap();
    r.adapter
        .send_text("15550001111@s.whatsapp.net", "second")
        .await
        .unwrap();
    assert_eq!(
        r.adapter.queued(),
        vec![
            Outgoing {
                jid: "15550001111@s.whatsapp.net".into(),
                text: "first".into()
            },
            Outgoing {
                jid: "15550001111@s.whatsapp.net".into(),
                text: "second".into()
            },
        ]
    );
    r.ops.fail_sends.store(false, Ordering::SeqCst);
    // A new reply while older ones wait goes behind them.
    r.adapter
        .send_text("15550001111@s.whatsapp.net", "third")
        .await
        .unwrap();
    let texts: Vec<String> = r
        .ops
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(texts, ["first", "second", "third"]);
}

#[tokio::test]
async fn outbox_is_bounded_and_foreign_jids_are_refused() {
    let r = rig(FakeOps::default());
    for i in 0..OUTBOX_CAPACITY {
        r.adapter
            .send_text("15550001111@s.whatsapp.net", &i.to_string())
            .await
            .unwrap();
    }
    let err = r
        .adapter
        .send_text("15550001111@s.whatsapp.net", "overflow")
        .await
        .unwrap_err();
    assert!(matches!(err, WhatsAppError::OutboxFull(OUTBOX_CAPACITY)));
    for foreign in ["local:main", "status@broadcast", "12345@lid"] {
        let err = r.adapter.send_text(foreign, "x").await.unwrap_err();
        assert!(matches!(err, WhatsAppError::InvalidJid(_)), "{foreign}");
    }
    assert_eq!(r.adapter.queued().len(), OUTBOX_CAPACITY);
    // Through the trait the error keeps its type.
    let channel_err: ChannelError = WhatsAppError::OutboxFull(1).into();
    assert_eq!(
        channel_err.to_string(),
        "whatsapp outbox full (1 replies waiting)"
    );
}

#[tokio::test]
async fn typing_maps_to_composing_and_paused_and_never_fails() {
    let r = rig(FakeOps::default());
    // Disconnected: nothing sent, no error.
    r.adapter
        .set_typing("120363000000000001@g.us", true)
        .await
        .unwrap();
    assert!(r.ops.states.lock().unwrap().is_empty());
    r.adapter.on_event(&connected()).await;
    r.adapter
        .set_typing("120363000000000001@g.us", true)
        .await
        .unwrap();
    r.ops.fail_sends.store(true, Ordering::SeqCst);
    r.adapter
        .set_typing("120363000000000001@g.us", false)
        .await
        .unwrap();
    assert_eq!(
        *r.ops.states.lock().unwrap(),
        vec![
            ("120363000000000001@g.us".to_string(), true),
            ("120363000000000001@g.us".to_string(), false),
        ]
    );
}

#[tokio::test]
async fn group_sync_honours_the_daily_cache_force_and_errors() {
    let r = rig(FakeOps {
        groups: Mutex::new(Groups(Ok(vec![
            ("120363000000000002@g.us".into(), "Family".into()),
            ("120363000000000001@g.us".into(), "".into()),
        ]))),
        ..Default::default()
    });
    assert!(matches!(
        r.adapter.sync_groups(false).await,
        Err(WhatsAppError::NotConnected)
    ));
    r.adapter.on_event(&connected()).await;
    // The open itself syncs (not forced) and delivers to the sink; empty subjects are left out.
    eventually("sync on open", || !r.synced.lock().unwrap().is_empty()).await;
    assert_eq!(
        r.synced.lock().unwrap()[0],
        GroupSubjects {
            groups: vec![("120363000000000002@g.us".to_string(), "Family".to_string())],
            full_sync: true,
        }
    );
    assert_eq!(r.ops.group_calls.load(Ordering::SeqCst), 1);
    assert_eq!(r.adapter.sync_groups(false).await.unwrap(), None, "cached");
    assert_eq!(r.ops.group_calls.load(Ordering::SeqCst), 1);
    let forced = r.adapter.sync_groups(true).await.unwrap().unwrap();
    assert_eq!(forced.len(), 1);
    assert_eq!(r.ops.group_calls.load(Ordering::SeqCst), 2);

    // A failed fetch does not advance the sync time: the next unforced call fetches again.
    let r = rig_with(
        FakeOps {
            groups: Mutex::new(Groups(Err(OpsError("iq timeout".into())))),
            ..Default::default()
        },
        Some(Utc::now() - GROUP_SYNC_MAX_AGE - chrono::Duration::minutes(1)),
    );
    r.adapter.on_event(&connected()).await;
    eventually("failed sync on open", || {
        r.ops.group_calls.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(matches!(
        r.adapter.sync_groups(false).await,
        Err(WhatsAppError::Library(_))
    ));
    *r.ops.groups.lock().unwrap() = Groups(Ok(vec![("1@g.us".into(), "G".into())]));
    assert!(r.adapter.sync_groups(false).await.unwrap().is_some());
    assert_eq!(r.ops.group_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn recent_seeded_sync_time_skips_the_open_sync() {
    let r = rig_with(
        FakeOps::default(),
        Some(Utc::now() - chrono::Duration::hours(1)),
    );
    r.adapter.on_event(&connected()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(r.ops.group_calls.load(Ordering::SeqCst), 0);
    assert!(r.synced.lock().unwrap().is_empty());
}

#[tokio::test]
async fn subject_change_notifications_reach_the_sink() {
    let r = rig(FakeOps::default());
    let update = GroupUpdate::builder()
        .group_jid(jid("120363000000000003@g.us"))
        .timestamp(Utc::now())
        .is_lid_addressing_mode(false)
        .action(GroupNotificationAction::Subject {
            subject: "Book club".into(),
            subject_owner: None,
            subject_time: None,
        })
        .build();
    r.adapter.on_event(&Event::GroupUpdate(update)).await;
    assert_eq!(
        *r.synced.lock().unwrap(),
        vec![GroupSubjects {
            groups: vec![(
                "120363000000000003@g.us".to_string(),
                "Book club".to_string()
            )],
            full_sync: false,
        }]
    );
}

#[tokio::test]
async fn logout_is_terminal_and_maps_to_exit_zero() {
    let r = rig(FakeOps::default());
    r.adapter.on_event(&connected()).await;
    let logged_out = LoggedOut::builder()
        .on_connect(false)
        .reason(ConnectFailureReason::LoggedOut)
        .build();
    r.adapter.on_event(&Event::LoggedOut(logged_out)).await;
    assert!(!r.adapter.is_connected());
    assert_eq!(r.adapter.state(), LinkState::LoggedOut);
    // A late disconnect or open does not hide why the session ended.
    let disconnected = Disconnected::builder()
        .reason(DisconnectReason::StreamEnded)
        .build();
    r.adapter.on_event(&Event::Disconnected(disconnected)).await;
    r.adapter.on_event(&connected()).await;
    assert_eq!(r.adapter.state(), LinkState::LoggedOut);
    assert_eq!(LinkState::LoggedOut.exit_code(), Some(0));
}

#[tokio::test]
async fn disconnect_is_not_terminal_and_a_qr_request_is() {
    let r = rig(FakeOps::default());
    r.adapter.on_event(&connected()).await;
    let disconnected = Disconnected::builder()
        .reason(DisconnectReason::ReadError("reset".into()))
        .build();
    r.adapter.on_event(&Event::Disconnected(disconnected)).await;
    assert_eq!(r.adapter.state(), LinkState::Disconnected);
    assert!(!r.adapter.is_connected());
    r.adapter.on_event(&connected()).await;
    assert_eq!(r.adapter.state(), LinkState::Connected);
    let qr = PairingQrCode::builder()
        .code("2@ref".into())
        .timeout(Duration::from_secs(20))
        .build();
    r.adapter.on_event(&Event::PairingQrCode(qr)).await;
    assert_eq!(r.adapter.state(), LinkState::NeedsPairing);
    assert_eq!(LinkState::NeedsPairing.exit_code(), Some(1));
    assert_eq!(LinkState::Disconnected.exit_code(), None);
}

#[tokio::test]
async fn a_closed_host_queue_does_not_break_the_event_path() {
    let r = rig(FakeOps::default());
    let Rig { adapter, rx, .. } = r;
    drop(rx);
    adapter
        .on_event(&batch(vec![(
            text("x"),
            info(
                "15550001111@s.whatsapp.net",
                "15550001111@s.whatsapp.net",
                "Z",
            ),
        )]))
        .await;
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The library's real diesel store, opened on the prepared file, keeps the secrets 0600: the
/// database and the WAL/SHM files SQLite creates next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_auth_store_stays_private() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = super::auth::WaPaths::new(tmp.path());
    super::auth::prepare(&paths).unwrap();
    let store = whatsapp_rust::store::SqliteStore::new(paths.auth_db.to_str().unwrap())
        .await
        .unwrap();
    assert!(
        std::fs::metadata(&paths.auth_db).unwrap().len() > 0,
        "migrated"
    );
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&paths.dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    // The store runs in WAL mode: its sidecars exist while it is open, and are private too.
    assert_eq!(names, ["auth.db", "auth.db-shm", "auth.db-wal"]);
    assert_eq!(mode(&paths.dir), 0o700);
    drop(store);
}

/// A fresh store has no credentials: the real builder sees that offline and the channel refuses to
/// start instead of asking WhatsApp for a QR code (contract §11.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaired_store_fails_connect_without_network() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(4);
    let mut options = super::WhatsAppOptions::new(tmp.path());
    options.connect_timeout = Duration::from_secs(30);
    let channel = super::WhatsAppChannel::new(options, tx);
    let states = channel.link_state();
    let started = std::time::Instant::now();
    let err = channel.connect().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "failed fast");
    let ChannelError::Backend(source) = &err else {
        panic!("unexpected error {err}");
    };
    assert!(
        matches!(
            source.downcast_ref::<WhatsAppError>(),
            Some(WhatsAppError::NotPaired)
        ),
        "{err}"
    );
    assert_eq!(*states.borrow(), LinkState::NeedsPairing);
    assert!(!channel.is_connected());
    assert_eq!(mode(channel.auth_db()), 0o600);
    assert_eq!(channel.name(), "whatsapp");
    assert!(channel.wants_prefix());
    assert!(channel.owns_jid("120363000000000001@g.us"));
    assert!(!channel.owns_jid("local:main"));
    channel.disconnect().await.unwrap();
}
