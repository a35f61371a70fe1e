//! Structured audit events: security-relevant decisions the host records (denials, rejections, limits),
//! as data rather than log strings, so tests and operators can count and filter them.
//!
//! `AuditEvent { source, kind }`, `source` = group folder. Egress events are one variant
//! ([`AuditKind::Egress`]); the IPC watcher's denials, rejections and limits are the `Ipc*` variants.
//! Every event flattens into an [`AuditRecord`], the row of the `audit_events` table.

use serde::{Deserialize, Serialize};

use crate::core::ipc::IpcRejection;
use crate::core::ipc_auth::DenyReason;

/// One audit event. `source` is the group folder the event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub source: String,
    pub kind: AuditKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditKind {
    /// A decision of the egress layer (nftables drop, proxy refusal, override lifecycle).
    Egress(EgressEvent),
    /// An IPC command parsed but was not authorized (contract §8.11); it had no effect.
    IpcDenied {
        file: String,
        command: &'static str,
        reason: DenyReason,
    },
    /// An IPC file was refused before authorization and quarantined (or dropped when quarantine is full).
    IpcRejected { file: String, reason: IpcRejection },
    /// A group wrote files faster than its rate cap; the rest waits for a later pass.
    IpcRateLimited { deferred_ms: u64 },
    /// A group's directory holds more files than one pass takes; the rest waits.
    IpcQueueOverflow { cap: usize },
    /// A group's quarantine is full; rejected files are deleted instead of kept.
    IpcQuarantineFull { file: String },
    /// An entry of the IPC tree was skipped because it is unsafe to touch (symlinked directory, bad name).
    IpcUnsafeEntry { path: String, reason: String },
}

/// An egress decision about one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressEvent {
    /// The run the traffic came from; empty for events outside a run (an override granted by the CLI).
    pub run: String,
    pub action: EgressAction,
    /// `host:port`, `ip:port`, or a description when the kernel does not tell us (packet counters).
    pub destination: String,
    pub decision: Decision,
    /// Why, in a few words. Never contains message bodies or credentials.
    pub reason: String,
}

/// The kind of egress event; its [`EgressAction::as_str`] is the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EgressAction {
    /// Packets from a run interface dropped by the `inet nanoclaw` table (read back from its counter).
    PacketsDropped,
    /// A CONNECT request to the egress proxy.
    Connect,
    /// A plain-HTTP proxy request (absolute-form URI).
    HttpProxy,
    /// A request to the model API gateway.
    Gateway,
    /// The name inside a tunnel (TLS SNI or HTTP Host) differs from the CONNECT target.
    Misdirected,
    /// A time-bounded allowlist override was granted.
    OverrideGranted,
    /// A request was allowed only because of an override.
    OverrideUsed,
    /// An override reached its end.
    OverrideExpired,
}

impl EgressAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PacketsDropped => "egress.packets_dropped",
            Self::Connect => "egress.connect",
            Self::HttpProxy => "egress.http_proxy",
            Self::Gateway => "egress.gateway",
            Self::Misdirected => "egress.misdirected",
            Self::OverrideGranted => "egress.override_granted",
            Self::OverrideUsed => "egress.override_used",
            Self::OverrideExpired => "egress.override_expired",
        }
    }
}

/// What the host did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// The flat row stored in `audit_events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// ISO 8601 UTC with milliseconds, like every other timestamp in the store.
    pub time: String,
    pub group: String,
    pub run: Option<String>,
    pub kind: String,
    pub destination: Option<String>,
    pub decision: String,
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(source: impl Into<String>, kind: AuditKind) -> Self {
        Self {
            source: source.into(),
            kind,
        }
    }

    /// An egress event for `group`.
    pub fn egress(group: impl Into<String>, event: EgressEvent) -> Self {
        Self::new(group, AuditKind::Egress(event))
    }

    /// The row for `audit_events`, stamped with `time`.
    pub fn record(&self, time: &str) -> AuditRecord {
        let ipc = |kind: &str, destination: &str, decision: &str, detail: String| AuditRecord {
            time: time.to_string(),
            group: self.source.clone(),
            run: None,
            kind: kind.to_string(),
            destination: (!destination.is_empty()).then(|| destination.to_string()),
            decision: decision.to_string(),
            detail: (!detail.is_empty()).then_some(detail),
        };
        match &self.kind {
            AuditKind::Egress(e) => AuditRecord {
                time: time.to_string(),
                group: self.source.clone(),
                run: (!e.run.is_empty()).then(|| e.run.clone()),
                kind: e.action.as_str().to_string(),
                destination: (!e.destination.is_empty()).then(|| e.destination.clone()),
                decision: e.decision.as_str().to_string(),
                detail: (!e.reason.is_empty()).then(|| e.reason.clone()),
            },
            AuditKind::IpcDenied {
                file,
                command,
                reason,
            } => ipc("ipc.denied", file, "deny", format!("{command}: {reason}")),
            AuditKind::IpcRejected { file, reason } => {
                ipc("ipc.rejected", file, "deny", reason.to_string())
            }
            AuditKind::IpcRateLimited { deferred_ms } => ipc(
                "ipc.rate_limited",
                "",
                "defer",
                format!("deferred {deferred_ms} ms"),
            ),
            AuditKind::IpcQueueOverflow { cap } => ipc(
                "ipc.queue_overflow",
                "",
                "defer",
                format!("more than {cap} files"),
            ),
            AuditKind::IpcQuarantineFull { file } => ipc(
                "ipc.quarantine_full",
                file,
                "deny",
                "quarantine full; rejected files are deleted".to_string(),
            ),
            AuditKind::IpcUnsafeEntry { path, reason } => {
                ipc("ipc.unsafe_entry", path, "deny", reason.clone())
            }
        }
    }

    /// Emits the event as a structured `warn` (denials) or `info` (allowances) log line under the
    /// `audit` target. Message bodies and credentials never appear in it.
    pub fn log(&self) {
        match &self.kind {
            AuditKind::Egress(e) => {
                let kind = e.action.as_str();
                match e.decision {
                    Decision::Deny => tracing::warn!(
                        target: "audit", source = %self.source, run = %e.run, kind,
                        destination = %e.destination, decision = "deny", reason = %e.reason,
                        "egress denied"
                    ),
                    Decision::Allow => tracing::info!(
                        target: "audit", source = %self.source, run = %e.run, kind,
                        destination = %e.destination, decision = "allow", reason = %e.reason,
                        "egress allowed"
                    ),
                }
            }
            AuditKind::IpcDenied {
                file,
                command,
                reason,
            } => {
                tracing::warn!(target: "audit", source = %self.source, %file, command, %reason, "ipc command denied")
            }
            AuditKind::IpcRejected { file, reason } => {
                tracing::warn!(target: "audit", source = %self.source, %file, %reason, "ipc file rejected")
            }
            AuditKind::IpcRateLimited { deferred_ms } => {
                tracing::warn!(target: "audit", source = %self.source, deferred_ms, "ipc rate limit reached; deferring")
            }
            AuditKind::IpcQueueOverflow { cap } => {
                tracing::warn!(target: "audit", source = %self.source, cap, "ipc queue over capacity; deferring the rest")
            }
            AuditKind::IpcQuarantineFull { file } => {
                tracing::warn!(target: "audit", source = %self.source, %file, "ipc quarantine full; dropping rejected file")
            }
            AuditKind::IpcUnsafeEntry { path, reason } => {
                tracing::warn!(target: "audit", source = %self.source, %path, %reason, "ipc entry skipped")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_event_flattens_to_a_row() {
        let e = AuditEvent::egress(
            "family",
            EgressEvent {
                run: "r1".into(),
                action: EgressAction::Connect,
                destination: "evil.example:443".into(),
                decision: Decision::Deny,
                reason: "not in allowlist".into(),
            },
        );
        let r = e.record("2026-01-01T00:00:00.000Z");
        assert_eq!(r.group, "family");
        assert_eq!(r.run.as_deref(), Some("r1"));
        assert_eq!(r.kind, "egress.connect");
        assert_eq!(r.destination.as_deref(), Some("evil.example:443"));
        assert_eq!(r.decision, "deny");
        assert_eq!(r.detail.as_deref(), Some("not in allowlist"));
        let granted = AuditEvent::egress(
            "family",
            EgressEvent {
                run: String::new(),
                action: EgressAction::OverrideGranted,
                destination: String::new(),
                decision: Decision::Allow,
                reason: String::new(),
            },
        )
        .record("t");
        assert_eq!(
            (granted.run, granted.destination, granted.detail),
            (None, None, None)
        );
    }

    #[test]
    fn ipc_events_flatten_to_rows() {
        let denied = AuditEvent::new(
            "family",
            AuditKind::IpcDenied {
                file: "1.json".into(),
                command: "schedule_task",
                reason: DenyReason::UnregisteredTarget,
            },
        )
        .record("t");
        assert_eq!(denied.kind, "ipc.denied");
        assert_eq!(denied.group, "family");
        assert_eq!(denied.run, None);
        assert_eq!(denied.destination.as_deref(), Some("1.json"));
        assert_eq!(denied.decision, "deny");
        assert_eq!(
            denied.detail.as_deref(),
            Some("schedule_task: target JID is not registered")
        );
        let limited =
            AuditEvent::new("family", AuditKind::IpcRateLimited { deferred_ms: 160 }).record("t");
        assert_eq!(
            (
                limited.kind.as_str(),
                limited.decision.as_str(),
                limited.destination
            ),
            ("ipc.rate_limited", "defer", None)
        );
        let rejected = AuditEvent::new(
            "family",
            AuditKind::IpcRejected {
                file: "messages-2.json".into(),
                reason: IpcRejection::TooLarge,
            },
        )
        .record("t");
        assert_eq!(
            rejected.detail.as_deref(),
            Some("file is larger than 131072 bytes")
        );
    }
}
