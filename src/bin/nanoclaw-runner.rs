//! `nanoclaw-runner`: the agent runner inside a run's container. Thin: logging, settings from the
//! environment, stdin, then `nanoclaw::runner::run`. Frames go to stdout, diagnostics to stderr with
//! the original's `[agent-runner] ` prefix (contract §10.10).

use std::io::{Read, Write};
use std::process::ExitCode;

use nanoclaw::runner::config::RunnerConfig;
use nanoclaw::runner::frames::FrameWriter;

/// The run input is one JSON object; anything near this size is not one.
const MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024;

/// Buffers one formatted event and writes it to stderr with the prefix, in one write.
struct PrefixedStderr(Vec<u8>);

impl Write for PrefixedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PrefixedStderr {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let mut out = String::with_capacity(text.len() + 16);
        for line in text.lines() {
            out.push_str("[agent-runner] ");
            out.push_str(line);
            out.push('\n');
        }
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOCLAW_RUNNER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(|| PrefixedStderr(Vec::new()))
        .init();
    let stdout = std::io::stdout().lock();
    let cfg = match RunnerConfig::from_env(|k| std::env::var(k).ok()) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = FrameWriter::new(stdout).error(&e.to_string(), None);
            return ExitCode::from(1);
        }
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES)
        .read_to_end(&mut input)
    {
        let _ = FrameWriter::new(stdout).error(&format!("Failed to parse input: {e}"), None);
        return ExitCode::from(1);
    }
    let code = nanoclaw::runner::run(cfg, &input, stdout);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
