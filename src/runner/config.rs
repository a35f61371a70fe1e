//! Runner settings: paths inside the run, the model endpoint and the bounds on everything the runner
//! does. Defaults match the runner image's layout; every value can be overridden from the environment
//! (the host sets the endpoint and token; tests point the paths at temp directories).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable with the model API base URL (the host's API gateway, plain HTTP).
pub const ENV_BASE_URL: &str = "ANTHROPIC_BASE_URL";
/// Environment variable with the per-run gateway token (the host's `net` module sets it under the
/// name the Anthropic SDKs read). It is not the model credential: the gateway swaps it for the real one
/// and refuses it once the run has ended.
pub const ENV_API_TOKEN: &str = "ANTHROPIC_API_KEY";
/// Model used when neither the run input nor the environment names one.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// `max_tokens` per model response.
pub const DEFAULT_MAX_TOKENS: u32 = 8192;
/// Model responses per query before the runner gives up on the turn (a tool loop that never ends).
pub const DEFAULT_MAX_TURNS: u32 = 50;
/// The original polls its input directory every 500 ms (contract §10.5); we also wake on inotify.
pub const DEFAULT_POLL: Duration = Duration::from_millis(500);
/// Default and upper bound of a `bash` call's timeout.
pub const DEFAULT_BASH_TIMEOUT: Duration = Duration::from_secs(120);
pub const MAX_BASH_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes of one tool result given back to the model; the rest is cut with a marker.
pub const DEFAULT_MAX_TOOL_OUTPUT: usize = 32 * 1024;
/// Transcript bound: serialized bytes and message count (see [`crate::runner::session`]).
pub const DEFAULT_MAX_TRANSCRIPT_BYTES: usize = 400 * 1024;
pub const DEFAULT_MAX_TRANSCRIPT_MESSAGES: usize = 200;
/// Retries of one model request on 429, 5xx, 529 and transport errors.
pub const DEFAULT_MAX_RETRIES: u32 = 4;
/// First retry delay; doubles per attempt, with jitter, up to [`MAX_RETRY_DELAY`].
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(1000);
/// No single wait between attempts is longer than this, whatever `retry-after` says.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// Longest silence on a response (between SSE events, or before headers) before it counts as lost.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Connect timeout to the gateway (it is on the host side of the run's veth, so this is generous).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the runner needs besides its stdin.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The group folder, also the working directory of tools (`/workspace/group`).
    pub group_dir: PathBuf,
    /// Global memory, read-only, mounted for non-main groups (`/workspace/global`).
    pub global_dir: PathBuf,
    /// The group's IPC namespace (`/workspace/ipc`).
    pub ipc_dir: PathBuf,
    /// Where transcripts are kept between runs (`/home/node/.claude`, the group's session dir).
    pub session_dir: PathBuf,
    /// File tools may only touch paths under these roots (`/workspace`, `/tmp`).
    pub tool_roots: Vec<PathBuf>,
    /// The shell the `bash` tool runs (busybox `sh` in the image).
    pub shell: PathBuf,
    pub api: ApiSettings,
    pub limits: Limits,
}

/// The model endpoint and request defaults.
#[derive(Clone)]
pub struct ApiSettings {
    /// Base URL without the `/v1/messages` path, e.g. `http://10.200.0.1:8080`.
    pub base_url: String,
    /// Per-run gateway token, sent as `x-api-key`.
    pub token: Option<String>,
    pub model: String,
    pub max_tokens: u32,
    /// Ask for SSE streaming (`"stream": true`); the non-streaming form is also supported.
    pub stream: bool,
    pub max_retries: u32,
    pub retry_base: Duration,
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Bounds on one run.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_turns: u32,
    pub poll_interval: Duration,
    pub bash_timeout: Duration,
    pub max_tool_output: usize,
    pub max_transcript_bytes: usize,
    pub max_transcript_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_turns: DEFAULT_MAX_TURNS,
            poll_interval: DEFAULT_POLL,
            bash_timeout: DEFAULT_BASH_TIMEOUT,
            max_tool_output: DEFAULT_MAX_TOOL_OUTPUT,
            max_transcript_bytes: DEFAULT_MAX_TRANSCRIPT_BYTES,
            max_transcript_messages: DEFAULT_MAX_TRANSCRIPT_MESSAGES,
        }
    }
}

/// A setting from the environment that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// the model endpoint is not set
    #[error("{ENV_BASE_URL} is not set: the host must point the runner at its API gateway")]
    MissingBaseUrl,
    /// the endpoint is not a plain `http://` URL (the runner has no TLS; the gateway terminates it)
    #[error(
        "{ENV_BASE_URL}={0:?} is not an http:// URL (the runner speaks plain HTTP to the gateway)"
    )]
    BadBaseUrl(String),
    /// a numeric setting does not parse or is out of range
    #[error("{name}={value:?}: {reason}")]
    BadValue {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
}

impl RunnerConfig {
    /// The image's layout under `workspace` (normally `/workspace`), with the API settings given.
    pub fn with_workspace(workspace: &Path, session_dir: &Path, api: ApiSettings) -> Self {
        Self {
            group_dir: workspace.join("group"),
            global_dir: workspace.join("global"),
            ipc_dir: workspace.join("ipc"),
            session_dir: session_dir.to_path_buf(),
            tool_roots: vec![workspace.to_path_buf(), PathBuf::from("/tmp")],
            shell: PathBuf::from("/bin/sh"),
            api,
            limits: Limits::default(),
        }
    }

    /// Reads the settings from environment variables (`get` is `std::env::var` in production).
    ///
    /// `NANOCLAW_WORKSPACE` (default `/workspace`), `NANOCLAW_SESSION_DIR` (`/home/node/.claude`),
    /// `NANOCLAW_TOOL_ROOTS` (colon-separated, default `<workspace>:/tmp`), `NANOCLAW_SHELL`
    /// (`/bin/sh`), `ANTHROPIC_BASE_URL` (required), `ANTHROPIC_API_KEY` (the run token), `NANOCLAW_MODEL`,
    /// `NANOCLAW_MAX_TOKENS`, `NANOCLAW_MAX_TURNS`, `NANOCLAW_STREAM` (`0`/`1`), `NANOCLAW_POLL_MS`,
    /// `NANOCLAW_MAX_RETRIES`, `NANOCLAW_RETRY_BASE_MS`, `NANOCLAW_READ_TIMEOUT_SECS`,
    /// `NANOCLAW_BASH_TIMEOUT_SECS`, `NANOCLAW_MAX_TRANSCRIPT_BYTES`, `NANOCLAW_MAX_TRANSCRIPT_MESSAGES`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty());
        let base_url = get(ENV_BASE_URL).ok_or(ConfigError::MissingBaseUrl)?;
        if !base_url.starts_with("http://") {
            return Err(ConfigError::BadBaseUrl(base_url));
        }
        let num =
            |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(v) => match v.trim().parse::<u64>() {
                        Ok(n) if (min..=max).contains(&n) => Ok(n),
                        Ok(_) => Err(ConfigError::BadValue {
                            name,
                            value: v,
                            reason: "out of range",
                        }),
                        Err(_) => Err(ConfigError::BadValue {
                            name,
                            value: v,
                            reason: "not a non-negative integer",
                        }),
                    },
                }
            };
        let api = ApiSettings {
            base_url: base_url.trim_end_matches('/').to_string(),
            token: get(ENV_API_TOKEN),
            model: get("NANOCLAW_MODEL").unwrap_or_else(|| DEFAULT_MODEL.to_string()),
            max_tokens: num("NANOCLAW_MAX_TOKENS", DEFAULT_MAX_TOKENS.into(), 1, 1 << 20)? as u32,
            stream: num("NANOCLAW_STREAM", 1, 0, 1)? == 1,
            max_retries: num("NANOCLAW_MAX_RETRIES", DEFAULT_MAX_RETRIES.into(), 0, 10)? as u32,
            retry_base: Duration::from_millis(num(
                "NANOCLAW_RETRY_BASE_MS",
                DEFAULT_RETRY_BASE.as_millis() as u64,
                0,
                60_000,
            )?),
            read_timeout: Duration::from_secs(num(
                "NANOCLAW_READ_TIMEOUT_SECS",
                DEFAULT_READ_TIMEOUT.as_secs(),
                1,
                3600,
            )?),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        };
        let workspace =
            PathBuf::from(get("NANOCLAW_WORKSPACE").unwrap_or_else(|| "/workspace".into()));
        let session_dir = PathBuf::from(
            get("NANOCLAW_SESSION_DIR").unwrap_or_else(|| "/home/node/.claude".into()),
        );
        let mut cfg = Self::with_workspace(&workspace, &session_dir, api);
        if let Some(roots) = get("NANOCLAW_TOOL_ROOTS") {
            cfg.tool_roots = std::env::split_paths(&roots)
                .filter(|p| p.is_absolute())
                .collect();
        }
        if let Some(shell) = get("NANOCLAW_SHELL") {
            cfg.shell = PathBuf::from(shell);
        }
        cfg.limits = Limits {
            max_turns: num("NANOCLAW_MAX_TURNS", DEFAULT_MAX_TURNS.into(), 1, 10_000)? as u32,
            poll_interval: Duration::from_millis(num(
                "NANOCLAW_POLL_MS",
                DEFAULT_POLL.as_millis() as u64,
                5,
                10_000,
            )?),
            bash_timeout: Duration::from_secs(num(
                "NANOCLAW_BASH_TIMEOUT_SECS",
                DEFAULT_BASH_TIMEOUT.as_secs(),
                1,
                MAX_BASH_TIMEOUT.as_secs(),
            )?),
            max_tool_output: DEFAULT_MAX_TOOL_OUTPUT,
            max_transcript_bytes: num(
                "NANOCLAW_MAX_TRANSCRIPT_BYTES",
                DEFAULT_MAX_TRANSCRIPT_BYTES as u64,
                4096,
                64 << 20,
            )? as usize,
            max_transcript_messages: num(
                "NANOCLAW_MAX_TRANSCRIPT_MESSAGES",
                DEFAULT_MAX_TRANSCRIPT_MESSAGES as u64,
                2,
                100_000,
            )? as usize,
        };
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_follow_the_image_layout() {
        let cfg = RunnerConfig::from_env(env(&[(ENV_BASE_URL, "http://10.0.0.1:8080/")])).unwrap();
        assert_eq!(cfg.api.base_url, "http://10.0.0.1:8080");
        assert_eq!(cfg.group_dir, Path::new("/workspace/group"));
        assert_eq!(cfg.ipc_dir, Path::new("/workspace/ipc"));
        assert_eq!(cfg.session_dir, Path::new("/home/node/.claude"));
        assert_eq!(
            cfg.tool_roots,
            vec![PathBuf::from("/workspace"), PathBuf::from("/tmp")]
        );
        assert_eq!(cfg.api.model, DEFAULT_MODEL);
        assert!(cfg.api.stream);
        assert!(cfg.api.token.is_none());
    }

    #[test]
    fn base_url_is_required_and_plain_http() {
        let err = RunnerConfig::from_env(env(&[])).unwrap_err();
        assert!(
            err.to_string().contains("ANTHROPIC_BASE_URL is not set"),
            "{err}"
        );
        let err = RunnerConfig::from_env(env(&[(ENV_BASE_URL, "https://api.anthropic.com")]))
            .unwrap_err();
        assert!(err.to_string().contains("not an http:// URL"), "{err}");
    }

    #[test]
    fn numbers_are_range_checked() {
        let err = RunnerConfig::from_env(env(&[
            (ENV_BASE_URL, "http://h"),
            ("NANOCLAW_BASH_TIMEOUT_SECS", "100000"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "NANOCLAW_BASH_TIMEOUT_SECS=\"100000\": out of range"
        );
        let err = RunnerConfig::from_env(env(&[
            (ENV_BASE_URL, "http://h"),
            ("NANOCLAW_STREAM", "yes"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("not a non-negative integer"));
    }

    #[test]
    fn token_is_not_printed_by_debug() {
        let cfg = RunnerConfig::from_env(env(&[
            (ENV_BASE_URL, "http://h"),
            (ENV_API_TOKEN, "run-token-123"),
        ]))
        .unwrap();
        assert_eq!(cfg.api.token.as_deref(), Some("run-token-123"));
        assert!(!format!("{cfg:?}").contains("run-token-123"));
    }
}
