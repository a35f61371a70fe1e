//! The binary's edge: configuration, telemetry, operator commands and host checks.

pub mod commands;
pub mod config;
pub mod control;
pub mod doctor;
pub mod effects;
pub mod launcher;
pub mod observability;
pub mod router;
pub mod run;
pub mod systemd;
#[cfg(feature = "whatsapp")]
pub mod whatsapp;

/// Process exit codes, distinct per way the process can stop.
pub mod exit {
    pub const OK: u8 = 0;
    /// An operation failed (I/O, unexpected state).
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: u8 = 2;
    /// The configuration is missing, malformed or out of range.
    pub const CONFIG: u8 = 3;
    /// The database cannot be opened, is corrupt or fails its checks.
    pub const DATABASE: u8 = 4;
    /// `doctor` found at least one failing check.
    pub const CHECKS_FAILED: u8 = 5;
    /// `status` found no running host.
    pub const NOT_RUNNING: u8 = 6;
}
