//! systemd integration: `READY=1` once serving, `STATUS=` with live counts, `WATCHDOG=1` from a task that
//! proves the runtime is alive, `STOPPING=1` on shutdown. Every call is a no-op outside systemd
//! (`NOTIFY_SOCKET` unset); a failed notification is logged, never fatal.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

fn send(state: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(cause = %e, "sd_notify failed");
    }
}

/// The service is serving.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A one-line status for `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The keep-alive interval: half of `WATCHDOG_USEC`, when systemd asked for a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Pings the watchdog every `interval` until `stop` turns true. It runs as an ordinary task on the
/// runtime, so a wedged runtime stops the pings and systemd restarts the service.
pub async fn watchdog(interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => send(&[NotifyState::Watchdog]),
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
        }
    }
}
