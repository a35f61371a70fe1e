//! The IPC watcher (contract §8.3–8.5, fixes §12.2, §12.25): inotify-driven, no polling.
//!
//! Per group, `messages/` is handled before `tasks/`, each in file-name order (names start with epoch
//! milliseconds, so that is creation order). Each file is claimed by renaming it into the host-only
//! `.processing/<folder>/` before it is read, so it is applied at most once even across a crash; then it
//! is parsed, authorized and applied, and removed, or quarantined under `errors/<folder>/` with a
//! `.reason` file.
//!
//! Hostile-runner limits: files are opened without following symlinks and must be regular files no
//! bigger than the cap (a FIFO cannot block us); each group has a token bucket (files per second), a cap on
//! files taken per pass and on its quarantine. Over a limit, work is deferred (a timer, not a poll) or
//! dropped, and an audit event says so. An inotify queue overflow triggers a full rescan.
//!
//! Partially written files: the original's agents are told to `echo … > tasks/x.json`, which is not
//! atomic. A file that is cut short (JSON ended early) and was modified within `settle` is put back
//! and retried when its writer closes it (`IN_CLOSE_WRITE`) or when `settle` has passed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::core::audit::{AuditEvent, AuditKind};
use crate::core::ipc::{
    IpcKind, IpcRejection, MAX_IPC_FILE_BYTES, is_valid_source_dir, parse_command,
};
use crate::ipc::IpcError;
use crate::ipc::effects::IpcEffects;
use crate::ipc::handler::{HandlerConfig, Outcome, apply_command};
use crate::ipc::layout::{ERRORS_DIR, IpcLayout, PROCESSING_DIR};

/// Limits and settings of the watcher. The defaults suit a device: an agent writes a handful of files
/// per turn, so 20 files per second with a burst of 100 never bites a well-behaved run.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    pub handler: HandlerConfig,
    /// Files larger than this are quarantined unread.
    pub max_file_bytes: usize,
    /// Sustained files per second per group.
    pub files_per_second: u32,
    /// Files a group may use at once before the rate applies.
    pub burst: u32,
    /// Most `.json` files taken from one directory per pass; more wait for the next pass.
    pub queue_cap: usize,
    /// Most files kept in one group's quarantine; further rejects are deleted (still audited).
    pub max_quarantined_per_group: usize,
    /// How long a cut-short file may still be being written.
    pub settle: Duration,
    /// Most group directories tracked.
    pub max_groups: usize,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            handler: HandlerConfig {
                timezone: chrono_tz::UTC,
            },
            max_file_bytes: MAX_IPC_FILE_BYTES,
            files_per_second: 20,
            burst: 100,
            queue_cap: 10_000,
            max_quarantined_per_group: 1_000,
            settle: Duration::from_secs(2),
            max_groups: 1_024,
        }
    }
}

/// Counters the watcher keeps; read them through [`IpcWatcher::stats`].
#[derive(Debug, Default)]
pub struct WatcherStats {
    /// Files claimed.
    pub claimed: AtomicU64,
    /// Commands applied.
    pub applied: AtomicU64,
    /// Commands denied by authorization.
    pub denied: AtomicU64,
    /// Files rejected (quarantined or dropped).
    pub rejected: AtomicU64,
    /// Times a group hit its rate limit.
    pub rate_limited: AtomicU64,
    /// Full rescans (start, inotify overflow).
    pub rescans: AtomicU64,
    /// inotify events read.
    pub events: AtomicU64,
    /// Group passes run.
    pub passes: AtomicU64,
}

impl WatcherStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
enum WatchTarget {
    Root,
    Group(String),
    Kind(String),
}

struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            last: now,
            rate: f64::from(rate.max(1)),
            burst,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until `n` tokens are available.
    fn wait_for(&self, n: f64) -> Duration {
        let missing = (n.min(self.burst) - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate).max(Duration::from_millis(10))
    }
}

struct GroupState {
    bucket: TokenBucket,
    /// Rate-limited: no pass before this.
    blocked_until: Option<Instant>,
    /// Wake for a settling file.
    recheck_at: Option<Instant>,
    /// Cut-short files put back, by name, with the time their grace ends.
    settling: HashMap<String, Instant>,
    watched: bool,
    quarantined: usize,
    /// When `quarantined` was last counted from disk (an operator may have emptied the quarantine).
    quarantine_counted: Instant,
    quarantine_full_reported: bool,
    limit_reported: bool,
    /// Shared so a file can be handled while the state is borrowed elsewhere.
    processing: Option<Arc<OwnedFd>>,
    errors: Option<Arc<OwnedFd>>,
}

/// The watcher. Create it with [`IpcWatcher::new`], then drive it with [`IpcWatcher::run`].
pub struct IpcWatcher<E: IpcEffects> {
    layout: IpcLayout,
    effects: Arc<E>,
    config: WatcherConfig,
    inotify: AsyncFd<Inotify>,
    watches: HashMap<WatchDescriptor, WatchTarget>,
    groups: BTreeMap<String, GroupState>,
    dirty: BTreeSet<String>,
    rescan_all: bool,
    stats: Arc<WatcherStats>,
}

const KIND_MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::EXCL_UNLINK);
const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW);
const KINDS: [IpcKind; 2] = [IpcKind::Messages, IpcKind::Tasks];
/// Cut-short files remembered per group; beyond this they are rejected at once.
const MAX_SETTLING: usize = 256;
/// How often a full quarantine is recounted from disk.
const RECOUNT_EVERY: Duration = Duration::from_secs(60);
/// Files between cooperative yields inside one pass.
const YIELD_EVERY: usize = 64;

impl<E: IpcEffects> IpcWatcher<E> {
    /// Sets up inotify and the host-only directories. Must be called inside a tokio runtime.
    pub fn new(
        layout: IpcLayout,
        effects: Arc<E>,
        config: WatcherConfig,
    ) -> Result<Self, IpcError> {
        for dir in [
            layout.root().to_path_buf(),
            layout.root().join(ERRORS_DIR),
            layout.root().join(PROCESSING_DIR),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| IpcError::io("create", &dir, e))?;
        }
        let inotify = Inotify::init().map_err(IpcError::Inotify)?;
        let root_wd = inotify
            .watches()
            .add(layout.root(), DIR_MASK)
            .map_err(|e| IpcError::io("watch", layout.root(), e))?;
        // SAFETY: `Inotify` owns its descriptor (closed only when the last handle drops, which is after
        // the `AsyncFd` since we never take it back out), and `as_raw_fd` always returns that descriptor.
        let inotify = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) }
            .map_err(|e| IpcError::Inotify(e.into_parts().1))?;
        let mut watches = HashMap::new();
        watches.insert(root_wd, WatchTarget::Root);
        Ok(Self {
            layout,
            effects,
            config,
            inotify,
            watches,
            groups: BTreeMap::new(),
            dirty: BTreeSet::new(),
            rescan_all: true,
            stats: Arc::new(WatcherStats::default()),
        })
    }

    /// Shared counters, readable while the watcher runs.
    pub fn stats(&self) -> Arc<WatcherStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `shutdown` completes. Only setup failures end it early; everything a runner can
    /// cause is handled, audited and survived.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), IpcError> {
        tokio::pin!(shutdown);
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            if self.rescan_all {
                self.rescan();
            }
            self.process_dirty().await;
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                ready = self.inotify.readable_mut() => {
                    let mut guard = ready.map_err(IpcError::Inotify)?;
                    let mut batch = Vec::new();
                    match guard.try_io(|inner| {
                        let events = inner.get_mut().read_events(&mut buffer)?;
                        for event in events {
                            batch.push((
                                event.wd.clone(),
                                event.mask,
                                event.name.map(|n| n.to_string_lossy().into_owned()),
                            ));
                        }
                        Ok(())
                    }) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(IpcError::Inotify(e)),
                        Err(_would_block) => {}
                    }
                    drop(guard);
                    for (wd, mask, name) in batch {
                        self.on_event(&wd, mask, name);
                    }
                }
                () = sleep_until_opt(deadline), if deadline.is_some() => self.promote_due(),
            }
        }
    }

    fn on_event(&mut self, wd: &WatchDescriptor, mask: EventMask, name: Option<String>) {
        WatcherStats::bump(&self.stats.events);
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!("inotify queue overflowed; rescanning the IPC tree");
            self.rescan_all = true;
            return;
        }
        let Some(target) = self.watches.get(wd).cloned() else {
            return;
        };
        if mask.contains(EventMask::IGNORED) {
            self.watches.remove(wd);
            match target {
                WatchTarget::Root => self.rescan_all = true,
                WatchTarget::Group(folder) | WatchTarget::Kind(folder) => self.unwatch(&folder),
            }
            return;
        }
        match target {
            WatchTarget::Root => {
                // Only directories are group namespaces (a symlink is not one).
                if !mask.contains(EventMask::ISDIR) {
                    return;
                }
                if let Some(name) = name.filter(|n| is_valid_source_dir(n)) {
                    self.dirty.insert(name);
                }
            }
            WatchTarget::Group(folder) => {
                if name
                    .as_deref()
                    .is_some_and(|n| KINDS.iter().any(|k| k.dir_name() == n))
                {
                    // A kind directory was recreated: watch the new one.
                    self.unwatch(&folder);
                }
            }
            WatchTarget::Kind(folder) => {
                let Some(name) = name else { return };
                if !name.ends_with(".json") {
                    return;
                }
                if mask.contains(EventMask::CLOSE_WRITE)
                    && let Some(state) = self.groups.get_mut(&folder)
                {
                    state.settling.remove(&name);
                }
                self.dirty.insert(folder);
            }
        }
    }

    /// Forgets a group's watches so its next pass sets them up again.
    fn unwatch(&mut self, folder: &str) {
        if let Some(state) = self.groups.get_mut(folder) {
            state.watched = false;
        }
        self.dirty.insert(folder.to_string());
    }

    fn rescan(&mut self) {
        self.rescan_all = false;
        WatcherStats::bump(&self.stats.rescans);
        let entries = match std::fs::read_dir(self.layout.root()) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(root = %self.layout.root().display(), cause = %e, "cannot list IPC root; retrying on the next event");
                return;
            }
        };
        for entry in entries.flatten().take(self.config.max_groups * 2) {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `file_type` does not follow symlinks: a symlinked "group" is not one.
            if is_valid_source_dir(&name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
                if let Some(state) = self.groups.get_mut(&name) {
                    state.watched = false;
                }
                self.dirty.insert(name);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let ready_now = self.rescan_all
            || self.dirty.iter().any(|f| {
                self.groups
                    .get(f)
                    .is_none_or(|s| s.blocked_until.is_none_or(|t| t <= now))
            });
        if ready_now {
            return Some(now);
        }
        self.groups
            .values()
            .flat_map(|s| [s.blocked_until, s.recheck_at])
            .flatten()
            .min()
    }

    fn promote_due(&mut self) {
        let now = Instant::now();
        for (folder, state) in &mut self.groups {
            if state.blocked_until.is_some_and(|t| t <= now) {
                state.blocked_until = None;
                self.dirty.insert(folder.clone());
            }
            if state.recheck_at.is_some_and(|t| t <= now) {
                state.recheck_at = None;
                self.dirty.insert(folder.clone());
            }
        }
    }

    async fn process_dirty(&mut self) {
        let now = Instant::now();
        let ready: Vec<String> = self
            .dirty
            .iter()
            .filter(|f| {
                self.groups
                    .get(*f)
                    .is_none_or(|s| s.blocked_until.is_none_or(|t| t <= now))
            })
            .cloned()
            .collect();
        for folder in ready {
            self.dirty.remove(&folder);
            self.process_group(&folder).await;
        }
    }

    /// Creates the group's state, directories and watches if needed. `false` if the group is unusable.
    fn prepare_group(&mut self, folder: &str) -> bool {
        // A group directory that is gone (removed by an operator) is forgotten quietly.
        if std::fs::symlink_metadata(self.layout.group_dir(folder))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            self.groups.remove(folder);
            return false;
        }
        if !self.groups.contains_key(folder) {
            if self.groups.len() >= self.config.max_groups {
                self.audit(
                    folder,
                    AuditKind::IpcUnsafeEntry {
                        path: folder.to_string(),
                        reason: format!("more than {} group directories", self.config.max_groups),
                    },
                );
                return false;
            }
            let state = self.new_group_state(folder);
            self.groups.insert(folder.to_string(), state);
        }
        if self.groups.get(folder).is_some_and(|s| s.watched) {
            return true;
        }
        match self.watch_group(folder) {
            Ok(()) => {
                if let Some(state) = self.groups.get_mut(folder) {
                    state.watched = true;
                }
                true
            }
            Err(reason) => {
                let gone = std::fs::symlink_metadata(self.layout.group_dir(folder))
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                if gone {
                    // Removed while we looked: not an attack, just forget it.
                    self.groups.remove(folder);
                } else {
                    self.audit(
                        folder,
                        AuditKind::IpcUnsafeEntry {
                            path: self.layout.group_dir(folder).display().to_string(),
                            reason,
                        },
                    );
                }
                false
            }
        }
    }

    fn new_group_state(&mut self, folder: &str) -> GroupState {
        let open_host_dir = |path: std::path::PathBuf| -> Option<Arc<OwnedFd>> {
            std::fs::create_dir_all(&path).ok()?;
            rustix::fs::open(&path, dir_flags(), Mode::empty())
                .ok()
                .map(Arc::new)
        };
        let processing = open_host_dir(self.layout.processing_dir(folder));
        let errors = open_host_dir(self.layout.errors_dir(folder));
        let quarantined = std::fs::read_dir(self.layout.errors_dir(folder))
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().ends_with(".reason"))
                    .count()
            })
            .unwrap_or(0);
        let mut state = GroupState {
            bucket: TokenBucket::new(
                self.config.files_per_second,
                self.config.burst,
                Instant::now(),
            ),
            blocked_until: None,
            recheck_at: None,
            settling: HashMap::new(),
            watched: false,
            quarantined,
            quarantine_counted: Instant::now(),
            quarantine_full_reported: false,
            limit_reported: false,
            processing,
            errors,
        };
        self.recover_interrupted(folder, &mut state);
        state
    }

    /// Files left in `.processing/` by a stopped host are quarantined, never re-applied (at most once).
    fn recover_interrupted(&self, folder: &str, state: &mut GroupState) {
        let Some(proc_fd) = state.processing.clone() else {
            return;
        };
        for name in list_names(&proc_fd, 10_000, |_| true).0 {
            self.audit(
                folder,
                AuditKind::IpcRejected {
                    file: name.clone(),
                    reason: IpcRejection::Interrupted,
                },
            );
            quarantine_file(
                state,
                &name,
                &IpcRejection::Interrupted,
                self.config.max_quarantined_per_group,
            );
        }
    }

    /// Watches the group directory and its command directories. Only an unusable group directory is
    /// fatal; a bad command directory is audited and the other one is still served.
    fn watch_group(&mut self, folder: &str) -> Result<(), String> {
        let group_path = self.layout.group_dir(folder);
        let group_fd = rustix::fs::open(&group_path, dir_flags(), Mode::empty())
            .map_err(|e| format!("group directory unusable (symlink or not a directory?): {e}"))?;
        let mut watches = self.inotify.get_ref().watches();
        let wd = watches
            .add(&group_path, DIR_MASK)
            .map_err(|e| format!("cannot watch: {e}"))?;
        self.watches
            .insert(wd, WatchTarget::Group(folder.to_string()));
        for kind in KINDS {
            // Refuses a symlink planted in place of the directory. A missing directory is not an
            // error: the host creates it before the group's next run and the group watch sees that.
            let watched =
                match rustix::fs::openat(&group_fd, kind.dir_name(), dir_flags(), Mode::empty()) {
                    Err(Errno::NOENT) => continue,
                    Err(e) => Err(format!("unusable directory (symlink?): {e}")),
                    Ok(_) => match watches.add(group_path.join(kind.dir_name()), KIND_MASK) {
                        // Removed between the open and the watch.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        other => other.map_err(|e| format!("cannot watch: {e}")),
                    },
                };
            match watched {
                Ok(wd) => {
                    self.watches
                        .insert(wd, WatchTarget::Kind(folder.to_string()));
                }
                Err(reason) => self.audit(
                    folder,
                    AuditKind::IpcUnsafeEntry {
                        path: format!("{folder}/{}", kind.dir_name()),
                        reason,
                    },
                ),
            }
        }
        Ok(())
    }

    async fn process_group(&mut self, folder: &str) {
        if !self.prepare_group(folder) {
            return;
        }
        WatcherStats::bump(&self.stats.passes);
        let mut registered = match self.effects.registered_groups().await {
            Ok(groups) => groups,
            Err(e) => {
                tracing::warn!(%folder, cause = %e, "cannot read registered groups; retrying in 1 s");
                if let Some(state) = self.groups.get_mut(folder) {
                    state.recheck_at = Some(Instant::now() + Duration::from_secs(1));
                }
                return;
            }
        };
        let group_fd =
            match rustix::fs::open(self.layout.group_dir(folder), dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(_) => {
                    self.unwatch_quietly(folder);
                    return;
                }
            };
        let mut more_waiting = false;
        let mut handled = 0usize;
        for kind in KINDS {
            // Already audited when the watch was set up; skipped until the directory is fixed.
            let Ok(kind_fd) =
                rustix::fs::openat(&group_fd, kind.dir_name(), dir_flags(), Mode::empty())
            else {
                continue;
            };
            let (names, more) = self.take_names(folder, &kind_fd);
            more_waiting |= more;
            for name in names {
                let now = Instant::now();
                let Some(state) = self.groups.get_mut(folder) else {
                    return;
                };
                if !state.bucket.take(now) {
                    let wait = state.bucket.wait_for(16.0);
                    state.blocked_until = Some(now + wait);
                    WatcherStats::bump(&self.stats.rate_limited);
                    self.report_limit(
                        folder,
                        AuditKind::IpcRateLimited {
                            deferred_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        },
                    );
                    return;
                }
                self.process_file(folder, kind, &kind_fd, &name, &mut registered)
                    .await;
                handled += 1;
                if handled.is_multiple_of(YIELD_EVERY) {
                    tokio::task::yield_now().await;
                }
            }
        }
        if more_waiting {
            self.dirty.insert(folder.to_string());
        } else if let Some(state) = self.groups.get_mut(folder) {
            state.limit_reported = false;
        }
    }

    /// The names to handle this pass, in name order, and whether more are waiting.
    ///
    /// A directory read that races with writers can miss an entry while returning a later one, which
    /// would break name order. So the directory is read twice: every file that existed when the first
    /// read ended is in the second, and only names up to the first read's largest are taken now; newer
    /// ones wait for the next pass. For a writer whose names increase (epoch-ms prefixes) the result is
    /// strict name order. Over the queue cap, one read's sorted subset is taken and the overflow audited.
    fn take_names(&mut self, folder: &str, kind_fd: &OwnedFd) -> (Vec<String>, bool) {
        let cap = self.config.queue_cap;
        let now = Instant::now();
        let read = |fd: &OwnedFd, settling: Option<&HashMap<String, Instant>>| {
            list_names(fd, cap, |name| {
                name.ends_with(".json")
                    && !name.starts_with('.')
                    && settling.is_none_or(|s| s.get(name).is_none_or(|until| *until <= now))
            })
        };
        let settling = self.groups.get(folder).map(|s| &s.settling);
        let (mut first, overflow) = read(kind_fd, settling);
        if overflow {
            first.sort();
            self.report_limit(folder, AuditKind::IpcQueueOverflow { cap });
            return (first, true);
        }
        let Some(cutoff) = first.iter().max().cloned() else {
            return (Vec::new(), false);
        };
        let (second, overflow) = read(kind_fd, settling);
        let more = overflow || second.iter().any(|n| *n > cutoff);
        let mut names: Vec<String> = second.into_iter().filter(|n| *n <= cutoff).collect();
        names.sort();
        (names, more)
    }

    fn unwatch_quietly(&mut self, folder: &str) {
        if let Some(state) = self.groups.get_mut(folder) {
            state.watched = false;
        }
    }

    /// Limit events are audited once per episode, not once per file.
    fn report_limit(&mut self, folder: &str, kind: AuditKind) {
        let Some(state) = self.groups.get_mut(folder) else {
            return;
        };
        if !state.limit_reported {
            state.limit_reported = true;
            self.audit(folder, kind);
        }
    }

    async fn process_file(
        &mut self,
        folder: &str,
        kind: IpcKind,
        kind_fd: &OwnedFd,
        name: &str,
        registered: &mut Vec<crate::core::types::RegisteredGroup>,
    ) {
        let settle = self.config.settle;
        let claimed = format!("{}-{name}", kind.dir_name());
        let Some(proc_fd) = self.groups.get(folder).and_then(|s| s.processing.clone()) else {
            tracing::warn!(%folder, "no processing directory; leaving IPC files in place");
            return;
        };
        match rustix::fs::renameat(kind_fd, name, &*proc_fd, claimed.as_str()) {
            Ok(()) => {}
            // Gone already (the runner removed it): nothing to do.
            Err(Errno::NOENT) => return,
            Err(e) => {
                tracing::warn!(%folder, file = %name, cause = %e, "cannot claim IPC file");
                return;
            }
        }
        WatcherStats::bump(&self.stats.claimed);
        let read = read_claimed(&proc_fd, &claimed, self.config.max_file_bytes);
        let (bytes, mtime) = match read {
            Ok(ok) => ok,
            Err(reason) => return self.reject(folder, &claimed, reason),
        };
        let command = match parse_command(kind, &bytes) {
            Ok(c) => c,
            Err(reason) => {
                let now_wall = SystemTime::now();
                let fresh = now_wall.duration_since(mtime).is_ok_and(|age| age < settle)
                    || mtime > now_wall;
                if fresh
                    && is_cut_short(&bytes)
                    && self.put_back(folder, kind_fd, &claimed, name, settle)
                {
                    return;
                }
                return self.reject(folder, &claimed, reason);
            }
        };
        let outcome = apply_command(
            folder,
            name,
            command,
            registered,
            self.effects.as_ref(),
            &self.layout,
            &self.config.handler,
            chrono::Utc::now(),
        )
        .await;
        match outcome {
            Ok(Outcome::Applied) => {
                WatcherStats::bump(&self.stats.applied);
                self.remove_claimed(folder, &claimed);
            }
            Ok(Outcome::Denied(_)) => {
                WatcherStats::bump(&self.stats.denied);
                self.remove_claimed(folder, &claimed);
            }
            Ok(Outcome::Rejected(reason)) => self.reject(folder, &claimed, reason),
            Err(e) => self.reject(folder, &claimed, IpcRejection::EffectFailed(e.0)),
        }
    }

    /// Returns a cut-short file to its directory to wait for its writer. `false` if that failed.
    fn put_back(
        &mut self,
        folder: &str,
        kind_fd: &OwnedFd,
        claimed: &str,
        name: &str,
        settle: Duration,
    ) -> bool {
        let Some(state) = self.groups.get_mut(folder) else {
            return false;
        };
        // Entries of files that vanished while settling would otherwise stay forever.
        let now = Instant::now();
        state
            .settling
            .retain(|_, until| now.saturating_duration_since(*until) < settle * 10);
        if state.settling.len() >= MAX_SETTLING && !state.settling.contains_key(name) {
            return false;
        }
        // The grace starts at the first put-back and is not renewed: a writer that keeps a file open
        // and cut short past it gets the file rejected.
        if state.settling.get(name).is_some_and(|until| *until <= now) {
            return false;
        }
        let Some(proc_fd) = state.processing.clone() else {
            return false;
        };
        if rustix::fs::renameat_with(&*proc_fd, claimed, kind_fd, name, RenameFlags::NOREPLACE)
            .is_err()
        {
            return false;
        }
        let until = *state
            .settling
            .entry(name.to_string())
            .or_insert(now + settle);
        state.recheck_at = Some(state.recheck_at.map_or(until, |t| t.min(until)));
        true
    }

    fn remove_claimed(&mut self, folder: &str, claimed: &str) {
        if let Some(state) = self.groups.get_mut(folder) {
            forget_settling(state, claimed);
            if let Some(proc_fd) = state.processing.as_ref()
                && let Err(e) = rustix::fs::unlinkat(&**proc_fd, claimed, AtFlags::empty())
            {
                tracing::warn!(%folder, file = %claimed, cause = %e, "cannot remove processed IPC file");
            }
        }
    }

    fn reject(&mut self, folder: &str, claimed: &str, reason: IpcRejection) {
        WatcherStats::bump(&self.stats.rejected);
        self.audit(
            folder,
            AuditKind::IpcRejected {
                file: claimed.to_string(),
                reason: reason.clone(),
            },
        );
        let cap = self.config.max_quarantined_per_group;
        let Some(state) = self.groups.get_mut(folder) else {
            return;
        };
        forget_settling(state, claimed);
        if !quarantine_file(state, claimed, &reason, cap) && !state.quarantine_full_reported {
            state.quarantine_full_reported = true;
            self.audit(
                folder,
                AuditKind::IpcQuarantineFull {
                    file: claimed.to_string(),
                },
            );
        }
    }

    fn audit(&self, folder: &str, kind: AuditKind) {
        self.effects.audit(AuditEvent::new(folder, kind));
    }
}

fn forget_settling(state: &mut GroupState, claimed: &str) {
    if let Some((_, name)) = claimed.split_once('-') {
        state.settling.remove(name);
    }
}

/// Moves a claimed file into the group's quarantine with a `.reason` file; deletes it when the
/// quarantine is full. Returns `false` when it was deleted for lack of room.
fn quarantine_file(
    state: &mut GroupState,
    claimed: &str,
    reason: &IpcRejection,
    cap: usize,
) -> bool {
    let (Some(proc_fd), Some(err_fd)) = (state.processing.clone(), state.errors.clone()) else {
        return false;
    };
    let (proc_fd, err_fd) = (&*proc_fd, &*err_fd);
    if state.quarantined >= cap && state.quarantine_counted.elapsed() >= RECOUNT_EVERY {
        state.quarantined = list_names(err_fd, cap, |n| !n.ends_with(".reason")).0.len();
        state.quarantine_counted = Instant::now();
        if state.quarantined < cap {
            state.quarantine_full_reported = false;
        }
    }
    if state.quarantined < cap && rustix::fs::renameat(proc_fd, claimed, err_fd, claimed).is_ok() {
        state.quarantined += 1;
        let reason_name = format!("{claimed}.reason");
        if let Ok(fd) = rustix::fs::openat(
            err_fd,
            reason_name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            let _ = rustix::io::write(&fd, format!("{reason}\n").as_bytes());
        }
        return true;
    }
    let _ = rustix::fs::unlinkat(proc_fd, claimed, AtFlags::empty());
    false
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Reads directory entry names passing `keep`, at most `cap` of them (and at most `4 × cap` entries
/// looked at). Returns the names and whether more were left unread.
fn list_names(dir: &OwnedFd, cap: usize, keep: impl Fn(&str) -> bool) -> (Vec<String>, bool) {
    let mut names = Vec::new();
    let Ok(mut reader) = rustix::fs::Dir::read_from(dir) else {
        return (names, false);
    };
    let mut looked = 0usize;
    let look_cap = cap.saturating_mul(4).max(64);
    for entry in reader.by_ref() {
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        looked += 1;
        if names.len() >= cap || looked > look_cap {
            return (names, true);
        }
        if let Ok(name) = std::str::from_utf8(name)
            && keep(name)
        {
            names.push(name.to_string());
        }
    }
    (names, false)
}

/// Opens a claimed file without following symlinks or blocking, and reads at most `max` bytes.
fn read_claimed(
    dir: &OwnedFd,
    name: &str,
    max: usize,
) -> Result<(Vec<u8>, SystemTime), IpcRejection> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP => IpcRejection::NotRegularFile,
        other => IpcRejection::Unreadable(other.to_string()),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| IpcRejection::Unreadable(e.to_string()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(IpcRejection::NotRegularFile);
    }
    if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > max as u64 {
        return Err(IpcRejection::TooLarge);
    }
    // The stat field types differ between architectures.
    #[allow(clippy::useless_conversion)]
    let mtime = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(stat.st_mtime).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(stat.st_mtime_nsec).unwrap_or(0));
    let mut bytes = Vec::with_capacity(usize::try_from(stat.st_size).unwrap_or(0).min(max));
    std::fs::File::from(fd)
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| IpcRejection::Unreadable(e.to_string()))?;
    if bytes.len() > max {
        return Err(IpcRejection::TooLarge);
    }
    Ok((bytes, mtime))
}

/// Empty, or JSON that ends before it is complete: what a writer caught mid-write leaves.
fn is_cut_short(bytes: &[u8]) -> bool {
    bytes.is_empty()
        || serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err_and(|e| e.is_eof())
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_short_detection() {
        assert!(is_cut_short(b""));
        assert!(is_cut_short(br#"{"type":"refr"#));
        assert!(is_cut_short(br#"{"type":"refresh_groups""#));
        assert!(!is_cut_short(br#"{"type":"refresh_groups"}"#));
        assert!(!is_cut_short(b"not json"));
        assert!(!is_cut_short(br#"{"a":1}}"#));
    }

    #[tokio::test]
    async fn token_bucket_rate_and_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(!bucket.take(start), "burst exhausted");
        // 10 per second: one token after 100 ms, never more than the burst.
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.take(later));
        }
        assert!(!bucket.take(later));
        let wait = bucket.wait_for(2.0);
        assert!(
            wait >= Duration::from_millis(199) && wait <= Duration::from_millis(201),
            "{wait:?}"
        );
    }

    #[test]
    fn list_names_caps_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(dir.path().join(format!("{i}.json")), "").unwrap();
            std::fs::write(dir.path().join(format!("{i}.json.tmp")), "").unwrap();
        }
        let fd = rustix::fs::open(dir.path(), dir_flags(), Mode::empty()).unwrap();
        let (names, more) = list_names(&fd, 100, |n| n.ends_with(".json"));
        assert_eq!((names.len(), more), (10, false));
        let (names, more) = list_names(&fd, 4, |n| n.ends_with(".json"));
        assert_eq!((names.len(), more), (4, true));
    }

    #[test]
    fn read_claimed_refuses_specials_and_oversize() {
        let dir = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(dir.path(), dir_flags(), Mode::empty()).unwrap();
        std::fs::write(dir.path().join("ok.json"), "{}").unwrap();
        std::fs::write(dir.path().join("big.json"), "x".repeat(11)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("ok.json"), dir.path().join("link.json"))
            .unwrap();
        std::fs::create_dir(dir.path().join("dir.json")).unwrap();
        assert_eq!(read_claimed(&fd, "ok.json", 10).unwrap().0, b"{}");
        assert_eq!(
            read_claimed(&fd, "big.json", 10).unwrap_err(),
            IpcRejection::TooLarge
        );
        assert_eq!(
            read_claimed(&fd, "link.json", 10).unwrap_err(),
            IpcRejection::NotRegularFile
        );
        assert_eq!(
            read_claimed(&fd, "dir.json", 10).unwrap_err(),
            IpcRejection::NotRegularFile
        );
    }
}
