//! Runs library sessions for the channel: builds a bot on the auth store, feeds its events to the
//! adapter, and starts a new session with backoff when one ends (contract §12.19).
//!
//! Two layers of reconnecting, by design:
//! - inside a session the library reconnects dropped sockets itself (WA Web's Fibonacci backoff with
//!   10 % jitter, capped at 900 s, reset after a stable connection, longer after a 429);
//! - when a session ends for good for any other reason than a logout or a missing pairing (stream
//!   replaced, an unclassified connect failure, a build error), the supervisor here starts a fresh
//!   one after [`reconnect_backoff`]: exponential from 2 s, capped at 120 s, plus up to 100 % jitter,
//!   never giving up. A logout or a pairing request is terminal: the host exits, as the original did.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use whatsapp_rust::bot::{BotBuilder, EventDelivery, Provided};
use whatsapp_rust::prelude::{Bot, BotHandle, EventKind};
use whatsapp_rust::store::SqliteStore;

use crate::channel::whatsapp::adapter::Adapter;
use crate::channel::whatsapp::ops::ClientOps;
use crate::channel::whatsapp::{LinkState, WhatsAppError};

/// First restart delay after a session ended.
pub const RECONNECT_MIN: Duration = Duration::from_secs(2);
/// Largest restart delay before jitter; with jitter a delay stays below twice this.
pub const RECONNECT_MAX: Duration = Duration::from_secs(120);
/// A session that lasted this long resets the backoff.
pub const STABLE_SESSION: Duration = Duration::from_secs(60);
/// Events buffered between the library's receive loop and the adapter. Ordered delivery keeps
/// contract §11.5's event order; when full, the library drops and counts events rather than block.
pub const EVENT_MAILBOX: usize = 1024;
/// How long a graceful session stop may take before the task is aborted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Event kinds the adapter handles; the library skips materialising all others.
pub const SERVE_EVENT_KINDS: [EventKind; 7] = [
    EventKind::Messages,
    EventKind::Connected,
    EventKind::Disconnected,
    EventKind::LoggedOut,
    EventKind::PairingQrCode,
    EventKind::PairingCode,
    EventKind::GroupUpdate,
];

/// Delays between session restarts: exponential, capped, jittered, unbounded in count.
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(RECONNECT_MIN)
        .with_max_delay(RECONNECT_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// A bot builder on the auth store, with history sync off: the host reads live messages only
/// (contract §3.6), and skipping history saves bandwidth and memory on a small device.
pub async fn open_builder(
    auth_db: &Path,
) -> Result<BotBuilder<Provided, Provided, Provided, Provided>, WhatsAppError> {
    let url = auth_db
        .to_str()
        .ok_or_else(|| WhatsAppError::Store(format!("{} is not UTF-8", auth_db.display())))?;
    let store = SqliteStore::new(url)
        .await
        .map_err(|e| WhatsAppError::Store(e.to_string()))?;
    Ok(Bot::builder().with_backend(store).skip_history_sync())
}

/// Builds a serving bot whose events go to `adapter`. Fails with `NotPaired` before touching the
/// network when the store has no credentials.
pub async fn build_serving_bot(
    adapter: &Arc<Adapter<ClientOps>>,
    auth_db: &Path,
) -> Result<Bot, WhatsAppError> {
    let events = adapter.clone();
    let bot = open_builder(auth_db)
        .await?
        .with_event_delivery(EventDelivery::Ordered {
            capacity: EVENT_MAILBOX,
        })
        .on_event_for(&SERVE_EVENT_KINDS, move |event, _client| {
            let adapter = events.clone();
            async move { adapter.on_event(&event).await }
        })
        .build()
        .await
        .map_err(|e| WhatsAppError::Library(e.to_string()))?;
    if bot.client().pn().is_none() {
        return Err(WhatsAppError::NotPaired);
    }
    Ok(bot)
}

/// Stops a session gracefully (credentials and receipts are flushed), aborting after `grace`.
pub async fn shutdown_bounded(handle: BotHandle, grace: Duration) {
    // On timeout the shutdown future, and the handle in it, is dropped, which aborts the task.
    if tokio::time::timeout(grace, handle.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("whatsapp session did not stop in time; aborted");
    }
}

/// Keeps a session running until `stop` turns true or the link state becomes terminal.
pub async fn supervise(
    adapter: Arc<Adapter<ClientOps>>,
    auth_db: std::path::PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = reconnect_backoff();
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        match build_serving_bot(&adapter, &auth_db).await {
            Ok(bot) => {
                adapter.attach(Arc::new(ClientOps(bot.client())));
                let handle = bot.spawn();
                run_session(&adapter, handle, &mut stop).await;
                adapter.detach();
            }
            Err(WhatsAppError::NotPaired) => {
                tracing::error!("whatsapp is not paired; run `nanoclaw whatsapp pair`");
                adapter.set_state(LinkState::NeedsPairing);
            }
            Err(e) => tracing::warn!(cause = %e, "whatsapp session could not start"),
        }
        if *stop.borrow() || adapter.state().is_terminal() {
            break;
        }
        if started.elapsed() >= STABLE_SESSION {
            backoff = reconnect_backoff();
        }
        let delay = backoff.next().unwrap_or(RECONNECT_MAX);
        tracing::warn!(
            delay_ms = delay.as_millis() as u64,
            "whatsapp session ended; starting a new one"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
    }
    if !adapter.state().is_terminal() {
        adapter.set_state(LinkState::Stopped);
    }
}

/// Waits for the session to end by itself, for a stop request, or for a terminal link state (then
/// stops it: a session asking for a QR code would otherwise keep rotating codes).
async fn run_session(
    adapter: &Adapter<ClientOps>,
    mut handle: BotHandle,
    stop: &mut watch::Receiver<bool>,
) {
    let mut state = adapter.subscribe();
    loop {
        tokio::select! {
            _ = &mut handle => return,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            changed = state.changed() => {
                if changed.is_err() || state.borrow().is_terminal() {
                    break;
                }
            }
        }
    }
    shutdown_bounded(handle, SHUTDOWN_GRACE).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_small_grows_and_stays_capped() {
        for _ in 0..50 {
            let delays: Vec<Duration> = reconnect_backoff().take(40).collect();
            assert_eq!(delays.len(), 40, "never gives up");
            assert!(delays[0] >= RECONNECT_MIN && delays[0] < RECONNECT_MIN * 2);
            for d in &delays {
                assert!(*d >= RECONNECT_MIN, "{d:?}");
                assert!(*d < RECONNECT_MAX * 2, "jittered delay above cap: {d:?}");
            }
            // Once the base reaches the cap, every delay is at least the cap.
            assert!(delays[10..].iter().all(|d| *d >= RECONNECT_MAX));
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let firsts: std::collections::HashSet<Duration> = (0..32)
            .map(|_| reconnect_backoff().next().unwrap())
            .collect();
        assert!(firsts.len() > 1, "32 first delays were all equal");
    }
}
