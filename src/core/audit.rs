//! Structured audit events: security-relevant decisions the host records (denials, rejections, limits),
//! as data rather than log strings, so tests and operators can count and filter them.
//!
//! Shape shared with the IPC branch (`AuditEvent { source, kind }`, `source` = group folder); the
//! egress events are one variant, [`AuditKind::Egress`]. Every event flattens into an [`AuditRecord`],
//! the row of the `audit_events` table.

use serde::{Deserialize, Serialize};

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
}
