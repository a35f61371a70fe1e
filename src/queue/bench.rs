//! The queue load benchmark (`nanoclaw bench queue`): many groups, several messages each, a small global
//! limit. It drives the real queue and a real (in-memory) SQLite store; only the runs are in-process
//! scripts that reply at once. It checks that every message reached an agent exactly once and in order
//! per group, and reports peak mailbox depth, peak concurrency and memory. It asserts no timing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::core::time::iso_from_epoch_ms;
use crate::core::types::{Message, RegisteredGroup};
use crate::queue::testing::{Behavior, RecordingOutbound, ScriptedLauncher};
use crate::queue::{Queue, QueueSettings, RunKind};
use crate::store::{Store, StoreError, StoreHandle, StoreHandleError};

/// Benchmark parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    pub groups: usize,
    pub messages_per_group: usize,
    pub max_concurrent_runs: usize,
    pub mailbox_capacity: usize,
    /// Messages stored per store call by the producer (the channel's burst size).
    pub store_batch: usize,
    /// Give up waiting for completion after this long (tokio time).
    pub deadline: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            groups: 1000,
            messages_per_group: 10,
            max_concurrent_runs: 2,
            mailbox_capacity: crate::queue::DEFAULT_MAILBOX_CAPACITY,
            store_batch: 50,
            deadline: Duration::from_secs(600),
        }
    }
}

/// What the benchmark saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub options: LoadOptions,
    /// Messages stored.
    pub messages: usize,
    /// Runs started.
    pub runs: usize,
    /// Follow-ups piped into live runs.
    pub piped: usize,
    /// Messages handed to agents, counting repeats.
    pub delivered: usize,
    pub peak_active_runs: usize,
    pub peak_mailbox_depth: usize,
    /// Wall time of the whole benchmark (setup excluded).
    pub elapsed: Duration,
    /// Peak resident set (VmHWM) and current resident set (VmRSS) in KiB, when /proc says.
    pub rss_peak_kib: Option<u64>,
    pub rss_now_kib: Option<u64>,
    /// Broken guarantees (empty when all messages arrived once, in order per group). At most 20 listed.
    pub violations: Vec<String>,
}

impl LoadReport {
    /// True when every message was handed to an agent exactly once, in per-group order, and the global
    /// limit held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = |v: Option<u64>| v.map_or_else(|| "n/a".to_string(), |k| format!("{k} KiB"));
        writeln!(
            f,
            "queue load: {} groups x {} messages, max_concurrent_runs {}",
            self.options.groups, self.options.messages_per_group, self.options.max_concurrent_runs
        )?;
        writeln!(
            f,
            "  messages {}  delivered {}  runs {}  piped {}",
            self.messages, self.delivered, self.runs, self.piped
        )?;
        writeln!(
            f,
            "  peak active runs {}  peak mailbox depth {}",
            self.peak_active_runs, self.peak_mailbox_depth
        )?;
        writeln!(
            f,
            "  elapsed {:.3} s  rss peak {}  rss now {}",
            self.elapsed.as_secs_f64(),
            kib(self.rss_peak_kib),
            kib(self.rss_now_kib)
        )?;
        if self.ok() {
            write!(f, "  result: every message exactly once, FIFO per group")
        } else {
            write!(
                f,
                "  result: {} violation(s): {:?}",
                self.violations.len(),
                self.violations
            )
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("benchmark store: {0}")]
    Store(#[from] StoreError),
    #[error("benchmark store call: {0}")]
    StoreCall(#[from] StoreHandleError),
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn content(group: usize, n: usize) -> String {
    format!("g{group}-m{n}")
}

/// Contents of the `<message>` lines of a prompt, in order.
fn prompt_contents(prompt: &str) -> impl Iterator<Item = &str> {
    prompt.lines().filter_map(|l| {
        let start = l.find("\">")? + 2;
        let end = l.rfind("</message>")?;
        l.get(start..end)
    })
}

/// Runs the benchmark inside the current tokio runtime. Works with a real clock (the CLI) and with a paused
/// test clock.
pub async fn run_queue_load(options: LoadOptions) -> Result<LoadReport, BenchError> {
    let store = StoreHandle::new(Store::open_in_memory()?);
    let groups: Vec<RegisteredGroup> = (0..options.groups)
        .map(|i| RegisteredGroup {
            jid: format!("bench-{i}@g.us"),
            name: format!("bench {i}"),
            folder: format!("bench-{i}"),
            trigger: "@Andy".to_string(),
            added_at: "2026-01-01T00:00:00.000Z".to_string(),
            container_config: None,
            requires_trigger: Some(false),
        })
        .collect();
    let rows = groups.clone();
    store
        .call(move |s| {
            for g in &rows {
                s.register_group(g)?;
            }
            Ok(())
        })
        .await?;
    let launcher = ScriptedLauncher::always(Behavior::reply("ok"));
    let queue = Queue::new(
        QueueSettings {
            max_concurrent_runs: options.max_concurrent_runs,
            mailbox_capacity: options.mailbox_capacity,
            ..QueueSettings::default()
        },
        store.clone(),
        Arc::new(launcher.clone()),
        Arc::new(RecordingOutbound::new()),
    );
    for g in &groups {
        queue.register_group(g.clone());
    }
    let started = std::time::Instant::now();
    let base_ms: i64 = 1_767_225_600_000;
    let mut seq: i64 = 0;
    // Messages arrive round-robin across groups (one per group per round), stored in batches of
    // `store_batch` per store call and announced right after their batch, so that wake-ups, runs and new
    // messages interleave.
    let order: Vec<(usize, usize)> = (0..options.messages_per_group)
        .flat_map(|n| (0..options.groups).map(move |gi| (gi, n)))
        .collect();
    for chunk in order.chunks(options.store_batch.max(1)) {
        let batch: Vec<Message> = chunk
            .iter()
            .map(|&(gi, n)| {
                let timestamp = iso_from_epoch_ms(base_ms + seq).unwrap_or_default();
                seq += 1;
                Message {
                    id: format!("{gi}-{n}"),
                    chat_jid: groups[gi].jid.clone(),
                    sender: "bench@s.whatsapp.net".to_string(),
                    sender_name: "Bench".to_string(),
                    content: content(gi, n),
                    timestamp,
                    is_from_me: false,
                }
            })
            .collect();
        store
            .call(move |s| {
                for m in &batch {
                    s.store_inbound(m, true)?;
                }
                Ok(())
            })
            .await?;
        for &(gi, _) in chunk {
            queue.notify_messages(&groups[gi].jid);
        }
    }
    let total = options.groups * options.messages_per_group;
    let deadline = tokio::time::Instant::now() + options.deadline;
    loop {
        let delivered = launcher.message_lines();
        if (delivered >= total && launcher.live() == 0) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let records = launcher.records();
    let stats = queue.stats();
    queue.shutdown().await;

    let mut seen: Vec<Vec<String>> = vec![Vec::new(); options.groups];
    let mut piped = 0;
    for r in records.iter().filter(|r| r.spec.kind == RunKind::Message) {
        let Some(gi) = r
            .spec
            .group
            .folder
            .strip_prefix("bench-")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let Some(list) = seen.get_mut(gi) else {
            continue;
        };
        list.extend(prompt_contents(&r.spec.input.prompt).map(str::to_string));
        for input in &r.inputs {
            piped += 1;
            list.extend(prompt_contents(input).map(str::to_string));
        }
    }
    let mut violations = Vec::new();
    for (gi, list) in seen.iter().enumerate() {
        let expected: Vec<String> = (0..options.messages_per_group)
            .map(|n| content(gi, n))
            .collect();
        if *list != expected && violations.len() < 20 {
            violations.push(format!("group {gi}: got {list:?}"));
        }
    }
    if launcher.peak_live() > options.max_concurrent_runs.max(1) {
        violations.push(format!(
            "{} runs live at once, limit {}",
            launcher.peak_live(),
            options.max_concurrent_runs
        ));
    }
    Ok(LoadReport {
        messages: total,
        runs: records.len(),
        piped,
        delivered: seen.iter().map(Vec::len).sum(),
        peak_active_runs: stats.peak_active_runs,
        peak_mailbox_depth: stats.peak_mailbox_depth,
        elapsed,
        rss_peak_kib: proc_status_kib("VmHWM:"),
        rss_now_kib: proc_status_kib("VmRSS:"),
        violations,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,000 groups × 10 messages with max_concurrent 2: all processed exactly once, FIFO per group. Prints
    /// the figures; asserts no timing.
    #[tokio::test(start_paused = true)]
    async fn load_1000_groups_x_10_messages_max_concurrent_2() {
        let report = run_queue_load(LoadOptions::default()).await.unwrap();
        println!("{report}");
        assert!(report.ok(), "{report}");
        assert_eq!(report.delivered, 10_000);
        assert!(report.peak_active_runs <= 2);
        assert!(report.peak_mailbox_depth >= 1);
    }
}
