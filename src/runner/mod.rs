//! The in-container agent runner behind the `nanoclaw-runner` binary (contract §10, architecture §6).
//!
//! It reads the run input on stdin, runs an agent loop against the Anthropic Messages API through the
//! host's gateway, offers shell, file and NanoClaw IPC tools, keeps the session transcript in the
//! group's session dir, consumes follow-ups and `_close` from the IPC input dir, and writes output
//! frames on stdout. Nothing is compiled at run time and no credential is ever inside the run.
//!
//! - [`config`]: paths, endpoint and bounds (from the environment).
//! - [`api`], [`sse`]: the Messages API client (JSON and SSE), bounded retries.
//! - [`tools`]: `bash`, `read_file`, `write_file`, `edit_file`, `list_files`, `grep`, IPC tools.
//! - [`session`]: transcripts, resume, the bound.
//! - [`input`]: follow-ups and the close sentinel.
//! - [`frames`]: output frames.
//! - [`testing`]: a fake Messages API server for tests and benchmarks.
//! - [`bench`]: `nanoclaw bench runner` (cold start to first request, peak memory).

mod agent;
pub mod api;
pub mod bench;
pub mod config;
pub mod frames;
pub mod input;
pub mod prompt;
pub mod session;
pub mod sse;
pub mod testing;
pub mod tools;

pub use agent::{DEFAULT_ASSISTANT_NAME, run};

/// Why a run ended with an error frame.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// the input directory could not be prepared
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// the session transcript could not be read or written
    #[error(transparent)]
    Session(#[from] session::SessionError),
    /// the model API failed for good
    #[error(transparent)]
    Api(#[from] api::ApiError),
    /// stdout is gone (the host closed it)
    #[error("writing output frames: {0}")]
    Output(std::io::Error),
}
