//! Where egress audit events go: a structured log line at once, and a bounded queue that a writer
//! thread drains into the `audit_events` table. The proxy never waits on the database: when the queue
//! is full the event is still logged, counted as lost, and dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::core::audit::{AuditEvent, EgressEvent};
use crate::core::time::now_iso;
use crate::store::Store;

/// Events buffered between the proxy and the store writer.
pub const AUDIT_QUEUE: usize = 1024;

/// Cloneable handle that emits audit events.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<(String, AuditEvent)>,
    lost: Arc<AtomicU64>,
}

/// The receiving end; hand it to [`spawn_store_writer`] or read it in tests.
pub type AuditReceiver = mpsc::Receiver<(String, AuditEvent)>;

impl AuditSink {
    pub fn new(capacity: usize) -> (Self, AuditReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                lost: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Logs the event and queues it (stamped now) for the store.
    pub fn emit(&self, event: AuditEvent) {
        event.log();
        if self.tx.try_send((now_iso(), event)).is_err() {
            let n = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(target: "audit", lost = n, "audit queue full or closed; event not stored");
        }
    }

    /// Shorthand for an egress event of `group`.
    pub fn egress(&self, group: &str, event: EgressEvent) {
        self.emit(AuditEvent::egress(group, event));
    }

    /// Events that could not be queued.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

/// Drains `rx` into the database at `db` on a dedicated thread (rusqlite blocks). The thread ends when
/// every [`AuditSink`] is dropped.
pub fn spawn_store_writer(
    db: PathBuf,
    mut rx: AuditReceiver,
) -> std::thread::JoinHandle<Result<u64, crate::store::StoreError>> {
    std::thread::spawn(move || {
        let store = Store::open(&db)?;
        let mut written = 0;
        while let Some((time, event)) = rx.blocking_recv() {
            if let Err(e) = store.insert_audit(&event.record(&time)) {
                tracing::warn!(error = %e, "cannot store audit event");
            } else {
                written += 1;
            }
        }
        Ok(written)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::audit::{Decision, EgressAction};

    fn ev(dest: &str) -> EgressEvent {
        EgressEvent {
            run: "r".into(),
            action: EgressAction::Connect,
            destination: dest.into(),
            decision: Decision::Deny,
            reason: "test".into(),
        }
    }

    #[test]
    fn events_reach_the_table_and_a_full_queue_loses_not_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("n.db");
        let (sink, rx) = AuditSink::new(2);
        sink.egress("g", ev("a:443"));
        sink.egress("g", ev("b:443"));
        sink.egress("g", ev("c:443"));
        assert_eq!(sink.lost(), 1);
        let writer = spawn_store_writer(db.clone(), rx);
        drop(sink);
        assert_eq!(writer.join().unwrap().unwrap(), 2);
        let rows = Store::open(&db).unwrap().audit_events(None).unwrap();
        let dests: Vec<_> = rows
            .iter()
            .map(|r| r.destination.clone().unwrap())
            .collect();
        assert_eq!(dests, ["a:443", "b:443"]);
        assert!(crate::core::time::is_store_format(&rows[0].time));
    }
}
