//! The IPC tool channel (contract §8): the per-group directory layout, snapshots the host writes for
//! the runner, follow-up piping, and the inotify-driven watcher that applies the runner's command files
//! through the authorization matrix (`core::ipc_auth`) and the host's effects ([`IpcEffects`]).
//!
//! Layout under the IPC root (`data/ipc/` in the original):
//!
//! ```text
//! <folder>/messages/*.json      runner → host   outbound chat messages
//! <folder>/tasks/*.json         runner → host   task and group commands
//! <folder>/input/*.json, _close host → runner   follow-ups and the close sentinel
//! <folder>/current_tasks.json   host → runner   task snapshot (atomic write)
//! <folder>/available_groups.json host → runner  group snapshot (atomic write)
//! errors/<folder>/<kind>-<file> host only        quarantined files, each with a `.reason` file
//! .processing/<folder>/         host only        files claimed by the watcher while they are applied
//! ```
//!
//! Only `<folder>/` is mounted into that group's run; `errors/` and `.processing/` never are.

mod effects;
mod error;
mod handler;
mod input;
mod layout;
mod snapshot;
mod watcher;

pub use effects::{EffectError, IpcEffects, SentMessage, StoreEffects};
pub use error::IpcError;
pub use handler::{HandlerConfig, Outcome, apply_command, new_task_id};
pub use input::{clear_close, pipe_input, write_close};
pub use layout::{ERRORS_DIR, GROUP_SUBDIRS, INPUT_DIR, IpcLayout, PROCESSING_DIR};
pub use snapshot::{available_groups, write_atomic, write_groups_snapshot, write_tasks_snapshot};
pub use watcher::{IpcWatcher, WatcherConfig, WatcherStats};
