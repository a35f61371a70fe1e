//! Pure domain logic: types, trigger policy, formatting, cursor rules and wire shapes. No I/O, so every
//! rule here is unit-tested without a database, a container or a clock.

pub mod audit;
pub mod cursor;
pub mod format;
pub mod ipc;
pub mod ipc_auth;
pub mod mount_policy;
pub mod redact;
pub mod route;
pub mod schedule;
pub mod time;
pub mod trigger;
pub mod types;
pub mod wire;
