//! Structured audit events: security-relevant decisions the host records (denials, rejections, limits),
//! as data rather than log strings, so tests and operators can count and filter them.

use crate::core::ipc::IpcRejection;
use crate::core::ipc_auth::DenyReason;

/// One audit event. `source` is the group folder (IPC directory name) the event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub source: String,
    pub kind: AuditKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditKind {
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

impl AuditEvent {
    pub fn new(source: impl Into<String>, kind: AuditKind) -> Self {
        Self {
            source: source.into(),
            kind,
        }
    }

    /// Emits the event as a structured `warn` log line under the `audit` target. Hosts call this from
    /// their audit sink; message bodies never appear in it.
    pub fn log(&self) {
        match &self.kind {
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
