//! The agent loop (contract §10.3–10.9) over the Messages API.
//!
//! A *query* starts with a user prompt and runs model responses and tool calls until the model ends
//! its turn. Each finished turn emits a result frame. Between steps the input directory is checked:
//! follow-ups join the conversation in order (after tool results, or as the next user turn), and
//! `_close` lets the current turn finish and then ends the run without a session frame. When a query
//! ends on its own, the runner emits the session frame and waits for input or `_close`.

use std::io::Write;

use crate::core::wire::RunnerInput;
use crate::runner::RunnerError;
use crate::runner::api::{ApiClient, ContentBlock, Message, Role};
use crate::runner::config::RunnerConfig;
use crate::runner::frames::FrameWriter;
use crate::runner::input::{InputDir, Wake};
use crate::runner::prompt;
use crate::runner::session::{self, Session};
use crate::runner::tools::{Identity, Toolbox};

/// Name used for the assistant when the host does not send one.
pub const DEFAULT_ASSISTANT_NAME: &str = "Andy";

/// Runs one container invocation: `stdin` is the whole input; frames go to `out`. Returns the exit
/// code: 0 after a clean close, 1 after an error frame (contract §10.1, §10.9, §10.13).
pub fn run<W: Write>(mut cfg: RunnerConfig, stdin: &[u8], out: W) -> i32 {
    let mut frames = FrameWriter::new(out);
    let parsed: RunnerInput = match serde_json::from_slice(stdin) {
        Ok(p) => p,
        Err(e) => {
            let _ = frames.error(&format!("Failed to parse input: {e}"), None);
            return 1;
        }
    };
    let options = parsed.options;
    if let Some(model) = options.model.filter(|m| !m.trim().is_empty()) {
        cfg.api.model = model;
    }
    if let Some(n) = options.max_tokens.filter(|&n| n > 0) {
        cfg.api.max_tokens = n;
    }
    if let Some(n) = options.max_turns.filter(|&n| n > 0) {
        cfg.limits.max_turns = n;
    }
    let assistant = options
        .assistant_name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ASSISTANT_NAME.to_string());
    let mut agent = match Agent::start(cfg, &parsed.input, assistant) {
        Ok(agent) => agent,
        Err(e) => {
            let _ = frames.error(&e.to_string(), parsed.input.session_id.as_deref());
            return 1;
        }
    };
    let queued = agent.input.drain();
    let first = prompt::initial_prompt(&parsed.input, &queued);
    match agent.run(first, &mut frames) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "run failed");
            let _ = frames.error(&e.to_string(), Some(&agent.session.id));
            1
        }
    }
}

struct Agent {
    cfg: RunnerConfig,
    client: ApiClient,
    tools: Toolbox,
    input: InputDir,
    session: Session,
    system: String,
    assistant: String,
}

impl Agent {
    fn start(
        cfg: RunnerConfig,
        input: &crate::core::wire::ContainerInput,
        assistant: String,
    ) -> Result<Self, RunnerError> {
        let input_dir = InputDir::prepare(&cfg.ipc_dir.join("input"))?;
        let session = Session::open(&cfg.session_dir, input.session_id.as_deref())?;
        tracing::info!(
            session = %session.id,
            resumed = !session.messages.is_empty(),
            model = %cfg.api.model,
            "starting"
        );
        let identity = Identity {
            chat_jid: input.chat_jid.clone(),
            group_folder: input.group_folder.clone(),
            is_main: input.is_main,
        };
        Ok(Self {
            client: ApiClient::new(&cfg.api),
            tools: Toolbox::new(&cfg, identity),
            system: prompt::system_prompt(&cfg, input, &assistant),
            input: input_dir,
            session,
            cfg,
            assistant,
        })
    }

    fn run<W: Write>(
        &mut self,
        mut prompt: String,
        frames: &mut FrameWriter<W>,
    ) -> Result<(), RunnerError> {
        loop {
            if self.query(prompt, frames)? {
                tracing::info!("closed during the query");
                return Ok(());
            }
            frames
                .success(None, &self.session.id)
                .map_err(RunnerError::Output)?;
            match self.input.wait(self.cfg.limits.poll_interval) {
                Wake::Close => {
                    tracing::info!("close sentinel; exiting");
                    return Ok(());
                }
                Wake::Messages(texts) => {
                    tracing::info!(count = texts.len(), "follow-up messages");
                    prompt = texts.join("\n");
                }
            }
        }
    }

    /// Appends user content, merging into a trailing user message (the API wants alternating roles).
    fn push_user(&mut self, blocks: Vec<ContentBlock>) {
        match self.session.messages.last_mut() {
            Some(last) if last.role == Role::User => last.content.extend(blocks),
            _ => self.session.messages.push(Message {
                role: Role::User,
                content: blocks,
            }),
        }
    }

    fn bound_and_save(&mut self) -> Result<(), RunnerError> {
        let limits = &self.cfg.limits;
        let dropped = self
            .session
            .bound(limits.max_transcript_messages, limits.max_transcript_bytes);
        if !dropped.is_empty() {
            tracing::info!(
                messages = dropped.len(),
                "transcript bound: dropped the oldest turns"
            );
            session::archive(
                &self.cfg.group_dir,
                &self.session.id,
                &self.assistant,
                &dropped,
            );
        }
        self.session.save()?;
        Ok(())
    }

    /// One query; returns whether `_close` was consumed during it.
    fn query<W: Write>(
        &mut self,
        prompt: String,
        frames: &mut FrameWriter<W>,
    ) -> Result<bool, RunnerError> {
        let mut closed = false;
        let mut turns = 0u32;
        self.push_user(vec![ContentBlock::Text { text: prompt }]);
        loop {
            self.bound_and_save()?;
            if turns >= self.cfg.limits.max_turns {
                tracing::warn!(max_turns = self.cfg.limits.max_turns, "turn limit reached");
                // As the original reports an error result subtype: success without text (contract §10.8).
                frames
                    .success(None, &self.session.id)
                    .map_err(RunnerError::Output)?;
                return Ok(closed);
            }
            let response = self.client.create(
                &self.system,
                &self.session.messages,
                self.tools.defs(),
                &mut |e, delay| tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "model request failed; retrying"),
            )?;
            turns += 1;
            let stop = response.stop_reason.clone().unwrap_or_default();
            let mut content = response.content;
            if stop != "tool_use" {
                // A tool call cut off by max_tokens (or any stop other than tool_use) is not run.
                content.retain(|b| !matches!(b, ContentBlock::ToolUse { .. }));
            }
            let calls: Vec<(String, String, serde_json::Value)> = content
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::ToolUse { id, name, input } => {
                        Some((id.clone(), name.clone(), input.clone()))
                    }
                    _ => None,
                })
                .collect();
            let assistant = Message {
                role: Role::Assistant,
                content,
            };
            let text = assistant.text();
            if !assistant.content.is_empty() {
                self.session.messages.push(assistant);
            }
            if !closed && self.input.take_close() {
                closed = true;
            }
            if !calls.is_empty() {
                let mut results = Vec::with_capacity(calls.len());
                for (id, name, input) in calls {
                    tracing::info!(tool = %name, "tool call");
                    let out = self.tools.call(&name, &input);
                    results.push(ContentBlock::ToolResult {
                        tool_use_id: id,
                        content: out.content,
                        is_error: out.is_error,
                    });
                }
                if !closed {
                    results.extend(
                        self.input
                            .drain()
                            .into_iter()
                            .map(|text| ContentBlock::Text { text }),
                    );
                }
                self.push_user(results);
                continue;
            }
            self.session.save()?;
            frames
                .success(text, &self.session.id)
                .map_err(RunnerError::Output)?;
            if closed || self.input.take_close() {
                return Ok(true);
            }
            let follow_ups = self.input.drain();
            if follow_ups.is_empty() {
                return Ok(false);
            }
            tracing::info!(
                count = follow_ups.len(),
                "follow-up messages during the query"
            );
            self.push_user(
                follow_ups
                    .into_iter()
                    .map(|text| ContentBlock::Text { text })
                    .collect(),
            );
            turns = 0;
        }
    }
}
