//! Configuration: a TOML file, `NANOCLAW_*` environment overrides, and an embedded profile as defaults.
//!
//! Every knob of the original host (contract §1.2) has a key here; `docs/configuration.md` maps the
//! original's environment names onto ours and explains each default.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::core::redact::redact;

/// Where the service reads its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/nanoclaw/config.toml";
/// Prefix of environment overrides: `NANOCLAW_<KEY>` or `NANOCLAW_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "NANOCLAW_";
/// Environment variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["NANOCLAW_CONFIG"];

pub const DEFAULT_ASSISTANT_NAME: &str = "Andy";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/nanoclaw";
pub const DEFAULT_RUN_DIR: &str = "/run/nanoclaw";
pub const DEFAULT_IMAGE: &str = "/usr/share/nanoclaw/runner.squashfs";
pub const DEFAULT_ALLOWLIST: &str = "/etc/nanoclaw/mount-allowlist.json";
pub const DEFAULT_CREDENTIALS_FILE: &str = "/etc/nanoclaw/credentials";
pub const DEFAULT_UPSTREAM_URL: &str = "https://api.anthropic.com";
/// Hard wall-clock limit of one run. The original's 30 min (contract §12.6) pins a slot for too long on a
/// board with one or two slots; 10 min still covers a long multi-tool turn.
pub const DEFAULT_RUN_TIMEOUT_SECS: u64 = 600;
/// How long a run may sit idle after its last result before its input is closed (contract §5.15).
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 120;
/// Per-stream capture cap (stdout and stderr each); the original's 10 MiB is a lot of RAM on a board.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MEMORY_MAX_MIB: u64 = 256;
pub const DEFAULT_PIDS_MAX: u64 = 128;
pub const DEFAULT_CPU_PERCENT: u64 = 100;
pub const DEFAULT_TMP_SIZE_MIB: u64 = 64;
pub const DEFAULT_MAILBOX_CAPACITY: u64 = 64;
pub const DEFAULT_MAX_RETRIES: u64 = 5;
pub const DEFAULT_RETRY_BASE_MS: u64 = 5000;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
pub const DEFAULT_IPC_MAX_FILE_BYTES: u64 = 64 * 1024;
pub const DEFAULT_IPC_FILES_PER_SECOND: u64 = 20;
pub const DEFAULT_IPC_QUEUE_CAPACITY: u64 = 256;

/// Concurrent runs on an embedded board: one core stays free for the host and the channel,
/// at most two runs, never fewer than one.
pub fn embedded_max_concurrent(cores: usize) -> u64 {
    (cores.saturating_sub(1)).clamp(1, 2) as u64
}

/// Errors of loading and validating configuration. Each names the key or file involved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given with `--config` does not exist.
    #[error("config file {path} does not exist")]
    NotFound { path: PathBuf },
    /// The file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type in the file.
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    /// An environment override names no key or carries a value of the wrong type.
    #[error("environment override {var}: {message}")]
    Env { var: String, message: String },
    /// A numeric value outside its allowed range.
    #[error("{key} = {value} is out of range (allowed: {allowed})")]
    OutOfRange {
        key: &'static str,
        value: String,
        allowed: String,
    },
    /// A value that is not valid for its key.
    #[error("{key} = {value:?} is invalid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when started by systemd (`JOURNAL_STREAM` set), else stderr.
    Auto,
    Stderr,
    Journald,
}

/// The whole configuration. Missing keys take the embedded defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The assistant's name: default trigger `@<name>` and reply prefix `<name>: ` (contract §1.2 ASSISTANT_NAME).
    pub assistant_name: String,
    /// IANA zone for cron and naive `once` times (contract §1.2 TZ). Default: the system zone.
    pub timezone: String,
    /// Database, groups, sessions, IPC and logs (on the data partition).
    pub data_dir: PathBuf,
    /// Run state: sockets, container state dirs (tmpfs).
    pub run_dir: PathBuf,
    pub log: LogConfig,
    pub runs: RunsConfig,
    pub queue: QueueConfig,
    pub ipc: IpcConfig,
    pub mounts: MountsConfig,
    pub model: ModelConfig,
    /// Per-run network and egress policy (docs/egress.md).
    pub egress: crate::net::EgressConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error|warn|info|debug|trace` or a tracing filter directive (contract §1.2 LOG_LEVEL).
    pub level: String,
    pub target: LogTarget,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunsConfig {
    /// Global limit of concurrent agent runs (contract §1.2 MAX_CONCURRENT_CONTAINERS).
    pub max_concurrent: u64,
    /// Hard wall-clock limit per run (contract §1.2 CONTAINER_TIMEOUT).
    pub timeout_secs: u64,
    /// Idle time after the last result before the run's input is closed (contract §1.2 IDLE_TIMEOUT).
    pub idle_timeout_secs: u64,
    /// Capture cap per stream in bytes (contract §1.2 CONTAINER_MAX_OUTPUT_SIZE).
    pub max_output_bytes: u64,
    /// The read-only runner image (contract §1.2 CONTAINER_IMAGE).
    pub image: PathBuf,
    /// cgroup memory limit (swap limited to the same value).
    pub memory_max_mib: u64,
    /// cgroup pids limit.
    pub pids_max: u64,
    /// CPU quota in percent of one core.
    pub cpu_percent: u64,
    /// Size cap of the run's tmpfs `/tmp`.
    pub tmp_size_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Wake-ups and task runs buffered per group actor; messages themselves live in the DB.
    pub mailbox_capacity: u64,
    /// Failed message runs retried this many times (contract §1.6).
    pub max_retries: u64,
    /// First retry delay; doubles each attempt, with jitter (contract §1.6).
    pub retry_base_ms: u64,
    /// How long live runs may finish after SIGTERM before they are killed.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpcConfig {
    pub max_file_bytes: u64,
    pub files_per_second: u64,
    pub queue_capacity: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountsConfig {
    /// Allowlist for additional mounts; never mounted into a run (contract §9.1).
    pub allowlist: PathBuf,
    /// What `~` means in mount paths (contract §1.2 HOME).
    pub home: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Root-only file with the model credential; `$CREDENTIALS_DIRECTORY` wins when set.
    pub credentials_file: PathBuf,
    /// Where the API gateway forwards model requests.
    pub upstream_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            assistant_name: DEFAULT_ASSISTANT_NAME.to_string(),
            timezone: system_timezone(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            log: LogConfig::default(),
            runs: RunsConfig::default(),
            queue: QueueConfig::default(),
            ipc: IpcConfig::default(),
            mounts: MountsConfig::default(),
            model: ModelConfig::default(),
            egress: crate::net::EgressConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
            target: LogTarget::Auto,
        }
    }
}

impl Default for RunsConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            max_concurrent: embedded_max_concurrent(cores),
            timeout_secs: DEFAULT_RUN_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            image: PathBuf::from(DEFAULT_IMAGE),
            memory_max_mib: DEFAULT_MEMORY_MAX_MIB,
            pids_max: DEFAULT_PIDS_MAX,
            cpu_percent: DEFAULT_CPU_PERCENT,
            tmp_size_mib: DEFAULT_TMP_SIZE_MIB,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_base_ms: DEFAULT_RETRY_BASE_MS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
        }
    }
}

impl Default for IpcConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: DEFAULT_IPC_MAX_FILE_BYTES,
            files_per_second: DEFAULT_IPC_FILES_PER_SECOND,
            queue_capacity: DEFAULT_IPC_QUEUE_CAPACITY,
        }
    }
}

impl Default for MountsConfig {
    fn default() -> Self {
        Self {
            allowlist: PathBuf::from(DEFAULT_ALLOWLIST),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            credentials_file: PathBuf::from(DEFAULT_CREDENTIALS_FILE),
            upstream_url: DEFAULT_UPSTREAM_URL.to_string(),
        }
    }
}

/// The system's IANA zone: `$TZ`, then `/etc/timezone`, then the `/etc/localtime` link, else `UTC`.
pub fn system_timezone() -> String {
    if let Ok(tz) = std::env::var("TZ") {
        let tz = tz.trim_start_matches(':').trim();
        if chrono_tz::Tz::from_str(tz).is_ok() {
            return tz.to_string();
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/timezone") {
        let tz = text.trim();
        if chrono_tz::Tz::from_str(tz).is_ok() {
            return tz.to_string();
        }
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime") {
        let text = target.to_string_lossy();
        if let Some((_, tz)) = text.split_once("zoneinfo/")
            && chrono_tz::Tz::from_str(tz).is_ok()
        {
            return tz.to_string();
        }
    }
    "UTC".to_string()
}

/// Loads the configuration: the file (which must exist when `explicit`), then environment overrides,
/// then validation. A missing default file means "all defaults".
pub fn load(
    path: &Path,
    explicit: bool,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotFound {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    from_toml(&text, &path.display().to_string(), env)
}

/// Parses TOML text, applies environment overrides and validates.
pub fn from_toml(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let parse_err = |message: String| ConfigError::Parse {
        path: origin.to_string(),
        message: message.trim().to_string(),
    };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| parse_err(format!("internal: cannot serialize defaults: {e}")))?;
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.contains(&k.as_str()))
        .collect();
    overrides.sort();
    for (var, value) in overrides {
        apply_env(&mut table, &defaults, &var, &value)?;
    }
    let config: Config = table
        .try_into()
        .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
    config.validate()?;
    Ok(config)
}

/// Sets one `NANOCLAW_*` override in `table`, typed like the default value of the key it names.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    var: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let env_err = |message: String| ConfigError::Env {
        var: var.to_string(),
        message,
    };
    let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
    let mut target: Option<(Option<&str>, &str, &toml::Value)> = None;
    for (key, default) in defaults {
        match default {
            toml::Value::Table(section) => {
                if let Some(sub) = rest.strip_prefix(&format!("{key}_"))
                    && let Some((sub_key, sub_default)) = section.get_key_value(sub)
                {
                    target = Some((Some(key.as_str()), sub_key.as_str(), sub_default));
                }
            }
            other if *key == rest => target = Some((None, key.as_str(), other)),
            _ => {}
        }
    }
    let Some((section, key, default)) = target else {
        return Err(env_err("names no configuration key".to_string()));
    };
    let typed = match default {
        toml::Value::Integer(_) => value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| env_err(format!("{value:?} is not an integer")))?,
        toml::Value::Boolean(_) => match value.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(env_err(format!("{value:?} is not true/false"))),
        },
        _ => toml::Value::String(value.to_string()),
    };
    let slot = match section {
        None => table,
        Some(section) => {
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => t,
                _ => return Err(env_err(format!("[{section}] in the file is not a table"))),
            }
        }
    };
    slot.insert(key.to_string(), typed);
    Ok(())
}

fn check_range(
    key: &'static str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            key,
            value: value.to_string(),
            allowed: format!("{}..={}", range.start(), range.end()),
        })
    }
}

fn check_absolute(key: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            value: path.display().to_string(),
            reason: "must be an absolute path (it becomes a mount source)".to_string(),
        })
    }
}

impl Config {
    /// Checks every value; the first problem is returned with its key, value and allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.assistant_name;
        if name.is_empty()
            || name.chars().count() > 64
            || name.starts_with('@')
            || name.chars().any(|c| c.is_control() || c == ':')
        {
            return Err(ConfigError::Invalid {
                key: "assistant_name",
                value: name.clone(),
                reason: "1-64 characters, no control characters or ':', without a leading '@'"
                    .to_string(),
            });
        }
        if chrono_tz::Tz::from_str(&self.timezone).is_err() {
            return Err(ConfigError::Invalid {
                key: "timezone",
                value: self.timezone.clone(),
                reason: "not an IANA time zone name (e.g. \"Europe/Berlin\", \"UTC\")".to_string(),
            });
        }
        check_absolute("data_dir", &self.data_dir)?;
        check_absolute("run_dir", &self.run_dir)?;
        check_absolute("runs.image", &self.runs.image)?;
        check_absolute("mounts.allowlist", &self.mounts.allowlist)?;
        check_absolute("mounts.home", &self.mounts.home)?;
        check_absolute("model.credentials_file", &self.model.credentials_file)?;
        if self.mounts.allowlist.starts_with(&self.data_dir) {
            return Err(ConfigError::Invalid {
                key: "mounts.allowlist",
                value: self.mounts.allowlist.display().to_string(),
                reason: "must be outside data_dir, which runs can see parts of".to_string(),
            });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                value: self.log.level.clone(),
                reason: "use error, warn, info, debug, trace or a tracing filter directive"
                    .to_string(),
            });
        }
        if !(self.model.upstream_url.starts_with("https://")
            || self.model.upstream_url.starts_with("http://"))
        {
            return Err(ConfigError::Invalid {
                key: "model.upstream_url",
                value: self.model.upstream_url.clone(),
                reason: "must be an http:// or https:// URL".to_string(),
            });
        }
        let r = &self.runs;
        check_range("runs.max_concurrent", r.max_concurrent, 1..=64)?;
        check_range("runs.timeout_secs", r.timeout_secs, 10..=86_400)?;
        check_range(
            "runs.idle_timeout_secs",
            r.idle_timeout_secs,
            5..=r.timeout_secs.saturating_sub(1).max(5),
        )?;
        check_range(
            "runs.max_output_bytes",
            r.max_output_bytes,
            4096..=(64 << 20),
        )?;
        check_range("runs.memory_max_mib", r.memory_max_mib, 16..=65_536)?;
        check_range("runs.pids_max", r.pids_max, 8..=32_768)?;
        check_range("runs.cpu_percent", r.cpu_percent, 5..=6_400)?;
        check_range("runs.tmp_size_mib", r.tmp_size_mib, 1..=4_096)?;
        let q = &self.queue;
        check_range("queue.mailbox_capacity", q.mailbox_capacity, 1..=4_096)?;
        check_range("queue.max_retries", q.max_retries, 0..=20)?;
        check_range("queue.retry_base_ms", q.retry_base_ms, 100..=600_000)?;
        check_range("queue.shutdown_grace_secs", q.shutdown_grace_secs, 0..=600)?;
        let i = &self.ipc;
        check_range("ipc.max_file_bytes", i.max_file_bytes, 1024..=(16 << 20))?;
        check_range("ipc.files_per_second", i.files_per_second, 1..=10_000)?;
        check_range("ipc.queue_capacity", i.queue_capacity, 1..=100_000)?;
        self.egress.validate().map_err(|e| match e {
            crate::net::NetError::Config { key, value, reason } => {
                ConfigError::Invalid { key, value, reason }
            }
            other => ConfigError::Invalid {
                key: "egress",
                value: String::new(),
                reason: other.to_string(),
            },
        })?;
        Ok(())
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("nanoclaw.db")
    }

    /// The effective configuration as TOML, with anything credential-like redacted.
    pub fn to_redacted_toml(&self) -> String {
        let text = toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"));
        redact(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_profile_concurrency() {
        assert_eq!(embedded_max_concurrent(1), 1);
        assert_eq!(embedded_max_concurrent(2), 1);
        assert_eq!(embedded_max_concurrent(3), 2);
        assert_eq!(embedded_max_concurrent(16), 2);
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = from_toml("", "t", env(&[])).unwrap();
        assert_eq!(c.assistant_name, "Andy");
        assert_eq!(c.runs.timeout_secs, DEFAULT_RUN_TIMEOUT_SECS);
        assert!(c.runs.idle_timeout_secs < 30 * 60);
    }

    #[test]
    fn env_overrides_are_typed_and_strict() {
        let c = from_toml(
            "[runs]\nmax_concurrent = 1\n",
            "t",
            env(&[
                ("NANOCLAW_RUNS_MAX_CONCURRENT", "2"),
                ("NANOCLAW_ASSISTANT_NAME", "Bob"),
                ("NANOCLAW_LOG_LEVEL", "debug"),
                ("NANOCLAW_CONFIG", "/ignored"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.runs.max_concurrent, 2);
        assert_eq!(c.assistant_name, "Bob");
        assert_eq!(c.log.level, "debug");

        let e = from_toml("", "t", env(&[("NANOCLAW_RUNS_BOGUS", "1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment override NANOCLAW_RUNS_BOGUS: names no configuration key"
        );
        let e = from_toml("", "t", env(&[("NANOCLAW_RUNS_PIDS_MAX", "lots")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment override NANOCLAW_RUNS_PIDS_MAX: \"lots\" is not an integer"
        );
    }

    #[test]
    fn validation_names_key_value_and_range() {
        let e = from_toml("[runs]\nmax_concurrent = 0\n", "t", env(&[])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "runs.max_concurrent = 0 is out of range (allowed: 1..=64)"
        );
        let e = from_toml(
            "[runs]\ntimeout_secs = 60\nidle_timeout_secs = 60\n",
            "t",
            env(&[]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "runs.idle_timeout_secs = 60 is out of range (allowed: 5..=59)"
        );
        let e = from_toml("timezone = \"Mars/Base\"\n", "t", env(&[])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("timezone = \"Mars/Base\" is invalid")
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = from_toml("[runs]\nmax_concurent = 2\n", "cfg.toml", env(&[])).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("config file cfg.toml:"), "{text}");
        assert!(text.contains("max_concurent"), "{text}");
    }
}
