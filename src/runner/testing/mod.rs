//! Test support: a fake Anthropic Messages API that replays scripted conversations.
//!
//! A test seam, not product code: it stands in for the model behind the host's gateway, which cannot
//! exist here. It is compiled into the library (and dropped from the binaries by the linker) so unit
//! tests, integration tests, later end-to-end tests and `nanoclaw bench runner` all share it.

mod fake_api;

pub use fake_api::{FakeApi, FakeBlock, RecordedRequest, Reply, Step, validate_request};
