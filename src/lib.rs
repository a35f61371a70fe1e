//! nanoclaw: an embedded-first personal-assistant host.
//!
//! Chat messages arrive on a channel, are stored, queued per group, and answered by an agent that runs
//! in a locked-down container. Major components, one module each:
//!
//! - [`core`]: pure domain logic: types, trigger policy, formatting, cursor rules, wire shapes, redaction.
//! - [`store`]: the SQLite database: schema compatible with the original host, versioned additive migrations.
//! - [`net`]: per-run network namespaces, the nftables egress table, the egress proxy and API gateway.
//! - [`channel`]: chat transports behind one trait: the local Unix-socket channel (WhatsApp behind a feature).
//! - [`host`]: the binary's edge: configuration, telemetry, `doctor` checks.
//!
//! See `ARCHITECTURE.md` for the map and the invariants.

pub mod channel;
pub mod core;
pub mod host;
pub mod net;
pub mod store;
