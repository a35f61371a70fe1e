//! The adapter logic between library events and the host: inbound mapping with LID translation, the
//! outgoing FIFO, typing, group-subject sync and the link state. Generic over [`WaOps`] so tests drive it
//! with the library's own event types and a recording fake instead of WhatsApp.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tokio::sync::{mpsc, watch};
use whatsapp_rust::prelude::{Event, MessageInfo, wa};
use whatsapp_rust::wacore::stanza::groups::GroupNotificationAction;

use crate::channel::Inbound;
use crate::channel::whatsapp::inbound::{is_ignored, map_inbound};
use crate::channel::whatsapp::jid::{lid_user, parse_chat, phone_chat, to_host_jid};
use crate::channel::whatsapp::ops::WaOps;
use crate::channel::whatsapp::{GroupSink, GroupSubjects, LinkState, WhatsAppError};

/// Replies kept while disconnected (contract §11.6 keeps an unbounded in-memory FIFO; we bound it).
pub const OUTBOX_CAPACITY: usize = 256;
/// LID→phone translations cached in the adapter; the library keeps the full mapping in its store.
pub const LID_CACHE_CAPACITY: usize = 4096;
/// Group subjects are fetched at most this often unless forced (contract §11.8).
pub const GROUP_SYNC_MAX_AGE: ChronoDuration = ChronoDuration::hours(24);

/// One reply waiting for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub jid: String,
    pub text: String,
}

/// Adapter state shared by the library's event callback, the supervisor and the [`Channel`] methods.
///
/// [`Channel`]: crate::channel::Channel
pub struct Adapter<O: WaOps> {
    inbound: mpsc::Sender<Inbound>,
    /// The current client; `None` between sessions. A std lock: it is only held to clone the `Arc`.
    ops: RwLock<Option<Arc<O>>>,
    connected: AtomicBool,
    state: watch::Sender<LinkState>,
    /// LID user part → `<phone>@s.whatsapp.net` (contract §11.4).
    lid_cache: Mutex<HashMap<String, String>>,
    outbox: Mutex<VecDeque<Outgoing>>,
    /// Re-entry guard: one flush at a time (contract §11.6).
    flushing: AtomicBool,
    /// Time of the last successful group sync; the async mutex also serialises syncs.
    group_sync: tokio::sync::Mutex<Option<DateTime<Utc>>>,
    group_sink: Option<GroupSink>,
}

impl<O: WaOps> Adapter<O> {
    /// `last_group_sync` seeds the 24 h cache, normally from the `__group_sync__` chat row.
    pub fn new(
        inbound: mpsc::Sender<Inbound>,
        group_sink: Option<GroupSink>,
        last_group_sync: Option<DateTime<Utc>>,
    ) -> Self {
        let (state, _) = watch::channel(LinkState::Starting);
        Self {
            inbound,
            ops: RwLock::new(None),
            connected: AtomicBool::new(false),
            state,
            lid_cache: Mutex::new(HashMap::new()),
            outbox: Mutex::new(VecDeque::new()),
            flushing: AtomicBool::new(false),
            group_sync: tokio::sync::Mutex::new(last_group_sync),
            group_sink,
        }
    }

    /// Makes a (new) client current; events and sends go through it from now on.
    pub fn attach(&self, ops: Arc<O>) {
        *self.ops.write().unwrap_or_else(|e| e.into_inner()) = Some(ops);
    }

    /// Forgets the client after its session ended.
    pub fn detach(&self) {
        self.connected.store(false, Ordering::SeqCst);
        *self.ops.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.set_state(LinkState::Disconnected);
    }

    fn ops(&self) -> Option<Arc<O>> {
        self.ops.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Back to `Starting` for a new [`connect`](crate::channel::Channel::connect), whatever the
    /// previous session ended in.
    pub fn restart_state(&self) {
        self.state.send_replace(LinkState::Starting);
    }

    /// Moves to `next`, except that a terminal state (logged out, needs pairing, stopped) is never
    /// left: a late `Disconnected` must not hide why the session ended.
    pub fn set_state(&self, next: LinkState) {
        self.state.send_if_modified(|current| {
            if current.is_terminal() || *current == next {
                false
            } else {
                *current = next;
                true
            }
        });
    }

    /// Handles one library event. Called in event order by the library's ordered delivery.
    pub async fn on_event(self: &Arc<Self>, event: &Event) {
        match event {
            Event::Messages(batch) => {
                for m in batch {
                    self.on_message(&m.message, &m.info).await;
                }
            }
            Event::Connected(_) => self.on_open(),
            Event::Disconnected(d) => {
                tracing::info!(reason = %d.reason, "whatsapp disconnected; the library reconnects");
                self.connected.store(false, Ordering::SeqCst);
                self.set_state(LinkState::Disconnected);
            }
            Event::LoggedOut(l) => {
                tracing::error!(reason = ?l.reason, "whatsapp logged out; pair again");
                self.connected.store(false, Ordering::SeqCst);
                self.set_state(LinkState::LoggedOut);
            }
            Event::PairingQrCode(_) | Event::PairingCode(_) => {
                // The host never pairs interactively (contract §11.2): `nanoclaw whatsapp pair` does.
                tracing::error!("whatsapp is not paired; run `nanoclaw whatsapp pair`");
                self.connected.store(false, Ordering::SeqCst);
                self.set_state(LinkState::NeedsPairing);
            }
            Event::GroupUpdate(update) => {
                if let GroupNotificationAction::Subject { subject, .. } = &update.action
                    && !subject.is_empty()
                    && let Some(sink) = &self.group_sink
                {
                    sink(GroupSubjects {
                        groups: vec![(to_host_jid(&update.group_jid), subject.clone())],
                        full_sync: false,
                    });
                }
            }
            _ => {}
        }
    }

    /// Connection open (contract §11.3): remember our own LID, flush replies, sync group subjects.
    fn on_open(self: &Arc<Self>) {
        self.connected.store(true, Ordering::SeqCst);
        self.set_state(LinkState::Connected);
        tracing::info!("whatsapp connected");
        if let Some(ops) = self.ops()
            && let (Some(pn), Some(lid)) = ops.own_ids()
        {
            self.remember_lid(lid.user.as_str(), phone_chat(pn.user.as_str()));
        }
        // Off the event path: both make network round trips.
        let me = self.clone();
        tokio::spawn(async move {
            me.flush_outbox().await;
            me.sync_to_sink().await;
        });
    }

    /// One inbound message (contract §3.2): dropped if it is status or chatless, chat LID translated,
    /// mapped, and handed to the host. Waits when the host's queue is full rather than dropping.
    pub async fn on_message(&self, message: &wa::Message, info: &MessageInfo) {
        if is_ignored(info) {
            return;
        }
        let chat = self.translate_chat(to_host_jid(&info.source.chat)).await;
        let message = map_inbound(message, info, chat);
        if self
            .inbound
            .send(Inbound {
                message,
                chat_name: None,
            })
            .await
            .is_err()
        {
            tracing::warn!("whatsapp inbound dropped: the host stopped receiving");
        }
    }

    /// Chat LID → phone chat (contract §11.4): cache, then the library's mapping, else unchanged.
    pub async fn translate_chat(&self, chat: String) -> String {
        let Some(user) = lid_user(&chat) else {
            return chat;
        };
        if let Some(hit) = self
            .lid_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
        {
            return hit.clone();
        }
        let Some(ops) = self.ops() else {
            return chat;
        };
        match ops.lid_to_phone(user).await {
            Ok(Some(phone)) if !phone.is_empty() => {
                let translated = phone_chat(&phone);
                self.remember_lid(user, translated.clone());
                translated
            }
            Ok(_) => chat,
            Err(e) => {
                tracing::debug!(cause = %e, "lid lookup failed; keeping the lid chat");
                chat
            }
        }
    }

    fn remember_lid(&self, lid_user: &str, phone_chat: String) {
        let mut cache = self.lid_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= LID_CACHE_CAPACITY && !cache.contains_key(lid_user) {
            // Crude bound; misses fall back to the library's own (persistent) mapping.
            cache.clear();
        }
        cache.insert(lid_user.to_string(), phone_chat);
    }

    /// Sends text (contract §11.6): straight out when connected and nothing is queued, else into the
    /// FIFO; a failed send is queued too. Only a full FIFO or a foreign JID is an error.
    pub async fn send_text(&self, jid: &str, text: &str) -> Result<(), WhatsAppError> {
        let to = parse_chat(jid).ok_or_else(|| WhatsAppError::InvalidJid(jid.to_string()))?;
        let item = Outgoing {
            jid: jid.to_string(),
            text: text.to_string(),
        };
        let queued_before = !self
            .outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        match self.ops() {
            // Keep order: while older replies wait, a new one waits behind them.
            Some(ops) if self.is_connected() && !queued_before => {
                if let Err(e) = ops.send_text(&to, text).await {
                    tracing::warn!(cause = %e, "whatsapp send failed; queued for the next connection");
                    self.enqueue(item)?;
                }
                Ok(())
            }
            _ => {
                self.enqueue(item)?;
                if self.is_connected() {
                    self.flush_outbox().await;
                }
                Ok(())
            }
        }
    }

    fn enqueue(&self, item: Outgoing) -> Result<(), WhatsAppError> {
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if outbox.len() >= OUTBOX_CAPACITY {
            return Err(WhatsAppError::OutboxFull(OUTBOX_CAPACITY));
        }
        outbox.push_back(item);
        Ok(())
    }

    /// Sends queued replies in order, one at a time; stops at the first failure and keeps that reply
    /// at the head for the next open.
    pub async fn flush_outbox(&self) {
        if self.flushing.swap(true, Ordering::SeqCst) {
            return;
        }
        while self.is_connected() {
            let Some(ops) = self.ops() else { break };
            let next = self
                .outbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            let Some(item) = next else { break };
            let sent = match parse_chat(&item.jid) {
                Some(to) => ops.send_text(&to, &item.text).await,
                None => Ok(()), // validated when queued; unreachable in practice
            };
            if let Err(e) = sent {
                tracing::warn!(cause = %e, "whatsapp resend failed; kept queued");
                self.outbox
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_front(item);
                break;
            }
        }
        self.flushing.store(false, Ordering::SeqCst);
    }

    /// Replies waiting for a connection.
    pub fn queued(&self) -> Vec<Outgoing> {
        self.outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Typing on = `composing`, off = `paused` (contract §11.7). Errors and disconnection are ignored.
    pub async fn set_typing(&self, jid: &str, typing: bool) -> Result<(), WhatsAppError> {
        let to = parse_chat(jid).ok_or_else(|| WhatsAppError::InvalidJid(jid.to_string()))?;
        if let Some(ops) = self.ops().filter(|_| self.is_connected())
            && let Err(e) = ops.chat_state(&to, typing).await
        {
            tracing::debug!(cause = %e, "whatsapp typing indicator failed");
        }
        Ok(())
    }

    /// Group subjects (contract §11.8). `Ok(None)` when skipped because the last successful sync is
    /// younger than 24 h and `force` is off. Groups without a subject are left out. On error the sync
    /// time is not advanced.
    pub async fn sync_groups(
        &self,
        force: bool,
    ) -> Result<Option<Vec<(String, String)>>, WhatsAppError> {
        let mut last = self.group_sync.lock().await;
        let now = Utc::now();
        if !force && last.is_some_and(|t| now.signed_duration_since(t) < GROUP_SYNC_MAX_AGE) {
            return Ok(None);
        }
        let ops = self
            .ops()
            .filter(|_| self.is_connected())
            .ok_or(WhatsAppError::NotConnected)?;
        let mut groups = ops
            .participating_groups()
            .await
            .map_err(|e| WhatsAppError::Library(e.0))?;
        groups.retain(|(_, subject)| !subject.is_empty());
        groups.sort();
        *last = Some(now);
        Ok(Some(groups))
    }

    /// A sync the channel starts itself (each open, the daily timer): results go to the sink.
    pub async fn sync_to_sink(&self) {
        let Some(sink) = &self.group_sink else { return };
        match self.sync_groups(false).await {
            Ok(Some(groups)) => {
                tracing::info!(groups = groups.len(), "whatsapp group subjects synced");
                sink(GroupSubjects {
                    groups,
                    full_sync: true,
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(cause = %e, "whatsapp group sync failed"),
        }
    }
}
