//! Per-run network isolation and the egress path (architecture §5, contract §12.4/§12.5 fixes).
//!
//! - [`netns`]: a named network namespace and a veth pair per run, one /30 of a private /24.
//! - [`nft`]: the `inet nanoclaw` table: from run links only the proxy's address:port is reachable;
//!   everything else is dropped and counted; no forwarding; IPv6 denied.
//! - [`proxy`]: the egress proxy on each run's host-side address: the model API gateway (per-run token
//!   swapped for the real credential) and a CONNECT/HTTP proxy applying the allowlist.
//! - [`policy`]: allowlist entries, the per-group decision, overrides, forbidden address ranges.
//! - [`secret`]: the credential broker (root-only file or `$CREDENTIALS_DIRECTORY`).
//! - [`egress`]: the manager the host uses: startup, run begin/end, shutdown, audit.
//!
//! See `docs/egress.md` for the model and the audit schema.

pub mod audit;
pub mod config;
pub mod egress;
pub mod netns;
pub mod nft;
pub mod overrides;
pub mod policy;
pub mod proxy;
pub mod secret;

pub use config::EgressConfig;
pub use egress::{Egress, RunNet};

/// Errors of the `net` module.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A configuration value is invalid.
    #[error("{key} = {value:?} is invalid: {reason}")]
    Config {
        key: &'static str,
        value: String,
        reason: String,
    },
    /// An `ip` command (or a sysctl write) failed.
    #[error("{command}: {message}")]
    Command { command: String, message: String },
    /// `nft` failed to apply or list.
    #[error("nftables: {0}")]
    Nft(String),
    /// Every /30 of the run subnet is taken.
    #[error("no free address slot in the run subnet (64 concurrent runs at most)")]
    NoFreeSlot,
    /// A namespace with this run's derived name exists already.
    #[error("network namespace {0} already exists")]
    NameInUse(String),
    /// The run id has a live network already, or is unknown.
    #[error("run {0}: {1}")]
    Run(String, &'static str),
    /// The proxy could not listen on the run's host-side address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The credential could not be loaded.
    #[error("credentials {path}: {reason}")]
    Credentials { path: String, reason: String },
    /// The upstream URL or TLS setup is invalid.
    #[error("upstream: {0}")]
    Upstream(String),
    /// A policy operation was refused (e.g. an override that is too long).
    #[error("policy: {0}")]
    Policy(String),
}
