//! nanoclaw: an embedded-first personal-assistant host.
//!
//! Chat messages arrive on a channel, are stored, queued per group, and answered by an agent that runs
//! in a locked-down container. Major components, one module each:
//!
//! - [`core`]: pure domain logic: types, trigger policy, formatting, cursor rules, wire shapes, redaction.
//! - [`store`]: the SQLite database: schema compatible with the original host, versioned additive migrations.
//! - [`queue`]: per-group actors with bounded mailboxes, a global run gate, retries, follow-up piping.
//! - [`scheduler`]: cron/interval/once next-run computation and the event-driven due-task engine.
//! - [`net`]: per-run network namespaces, the nftables egress table, the egress proxy and API gateway.
//! - [`channel`]: chat transports behind one trait: the local Unix-socket channel (WhatsApp behind a feature).
//! - [`sandbox`]: agent runs in OCI containers through youki's libcontainer, driven by a single-threaded helper.
//! - [`host`]: the binary's edge: configuration, telemetry, `doctor` checks.
//! - [`ipc`]: the runner's tool channel: IPC directory layout, snapshots, inotify watcher, authorization.
//! - [`runner`]: the in-container agent loop of `nanoclaw-runner` (Messages API, tools, sessions).
//!
//! See `ARCHITECTURE.md` for the map and the invariants.

pub mod channel;
pub mod core;
pub mod host;
pub mod ipc;
pub mod net;
pub mod queue;
pub mod runner;
pub mod sandbox;
pub mod scheduler;
pub mod store;
