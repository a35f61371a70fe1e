//! The egress manager the host holds for its lifetime: applies the nftables table at startup (after
//! removing what a killed predecessor left), creates and destroys each run's network, runs each run's
//! proxy listener, turns drop counters into audit events, and expires overrides.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::core::audit::{Decision, EgressAction, EgressEvent};
use crate::net::NetError;
use crate::net::audit::AuditSink;
use crate::net::config::EgressConfig;
use crate::net::netns::{self, RunLink, SlotAllocator};
use crate::net::nft::{self, RulesetParams};
use crate::net::policy::{AllowEntry, Policy};
use crate::net::proxy::{self, Resolver, RunCtx, Shared, Upstream};
use crate::net::secret::{Credential, new_run_token};

/// What a run needs to know about its network; `env` goes into the container's environment and
/// holds no secret (the token only works on this run's link while the run is live).
#[derive(Debug, Clone)]
pub struct RunNet {
    pub link: RunLink,
    pub proxy: SocketAddr,
    pub token: String,
    pub env: Vec<(String, String)>,
}

/// Totals reported when a run's network is torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Packets from the run dropped by nftables over its whole life.
    pub dropped_packets: u64,
}

struct LiveRun {
    group: String,
    link: RunLink,
    server: JoinHandle<()>,
    /// Dropped packets already reported as audit events.
    reported: u64,
}

/// The host's egress layer.
pub struct Egress {
    prefix: String,
    subnet: Ipv4Net,
    proxy_port: u16,
    log_rate: u32,
    shared: Arc<Shared>,
    slots: SlotAllocator,
    runs: Mutex<HashMap<String, LiveRun>>,
    /// Serializes nft rule edits (list-then-delete must not interleave).
    nft_lock: Mutex<()>,
    expiry: Mutex<Option<JoinHandle<()>>>,
    /// Wakes the expiry task when a grant may have moved the next deadline earlier.
    granted: Arc<tokio::sync::Notify>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NetError::Command {
            command: "blocking task".into(),
            message: e.to_string(),
        })?
}

impl Egress {
    /// Removes leftovers of a previous process (namespaces and links with our prefix), then installs the
    /// `inet nanoclaw` table in one transaction, and starts the override expiry task.
    pub async fn start(
        cfg: &EgressConfig,
        upstream: Upstream,
        credential: Credential,
        resolver: Resolver,
        audit: AuditSink,
    ) -> Result<Arc<Self>, NetError> {
        cfg.validate()?;
        let subnet = cfg.subnet()?;
        let policy = Policy::new(cfg.global_entries()?, cfg.group_entries()?);
        let prefix = cfg.name_prefix.clone();
        let params = RulesetParams {
            prefix: prefix.clone(),
            proxy_port: cfg.proxy_port,
        };
        let p = prefix.clone();
        let removed = blocking(move || {
            let removed = netns::cleanup_prefix(&p)?;
            nft::apply(&nft::render_base(&params))?;
            Ok(removed)
        })
        .await?;
        if !removed.is_empty() {
            tracing::warn!(?removed, "removed run networks left by a previous process");
        }
        let egress = Arc::new(Self {
            prefix,
            subnet,
            proxy_port: cfg.proxy_port,
            log_rate: cfg.drop_log_rate,
            shared: Arc::new(Shared {
                policy: Mutex::new(policy),
                resolver,
                subnet,
                proxy_port: cfg.proxy_port,
                audit,
                upstream,
                credential,
                tokens: Mutex::new(HashMap::new()),
            }),
            slots: SlotAllocator::default(),
            runs: Mutex::new(HashMap::new()),
            nft_lock: Mutex::new(()),
            expiry: Mutex::new(None),
            granted: Arc::new(tokio::sync::Notify::new()),
        });
        let weak = Arc::downgrade(&egress);
        let granted = egress.granted.clone();
        let task = tokio::spawn(async move {
            loop {
                let next = match weak.upgrade() {
                    Some(e) => e.expire_overrides(Instant::now()),
                    None => return,
                };
                // Sleep until the next expiry; a new grant wakes us to recompute it.
                let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = granted.notified() => {}
                }
            }
        });
        *egress.expiry.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(egress)
    }

    /// Creates the run's namespace and link, its nft drop rules and its proxy listener, and registers
    /// its token. Everything is undone if any step fails.
    pub async fn begin_run(&self, run_id: &str, group: &str) -> Result<RunNet, NetError> {
        if self.lock_runs().contains_key(run_id) {
            return Err(NetError::Run(run_id.to_string(), "already has a network"));
        }
        let slot = self.slots.take().ok_or(NetError::NoFreeSlot)?;
        let (prefix, subnet, rid) = (self.prefix.clone(), self.subnet, run_id.to_string());
        let link = match blocking(move || netns::create(&prefix, subnet, &rid, slot)).await {
            Ok(l) => l,
            Err(e) => {
                self.slots.release(slot);
                return Err(e);
            }
        };
        match self.finish_begin(&link, group).await {
            Ok(net) => Ok(net),
            Err(e) => {
                self.teardown_link(link).await;
                Err(e)
            }
        }
    }

    async fn finish_begin(&self, link: &RunLink, group: &str) -> Result<RunNet, NetError> {
        let ifname = link.names.host_if.clone();
        let rate = self.log_rate;
        blocking(move || nft::apply(&nft::render_run_add(&ifname, rate))).await?;
        let addr = SocketAddr::new(IpAddr::V4(link.host_ip), self.proxy_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NetError::Listen { addr, source })?;
        let token = new_run_token()?;
        let ctx = Arc::new(RunCtx {
            run_id: link.run_id.clone(),
            group: group.to_string(),
            host_ip: link.host_ip,
            run_ip: link.run_ip,
        });
        self.shared
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(link.run_id.clone(), token.clone());
        let server = tokio::spawn(proxy::serve(listener, self.shared.clone(), ctx));
        self.lock_runs().insert(
            link.run_id.clone(),
            LiveRun {
                group: group.to_string(),
                link: link.clone(),
                server,
                reported: 0,
            },
        );
        let base = format!("http://{addr}");
        let env = vec![
            ("ANTHROPIC_BASE_URL".to_string(), base.clone()),
            ("ANTHROPIC_API_KEY".to_string(), token.clone()),
            ("HTTPS_PROXY".to_string(), base.clone()),
            ("HTTP_PROXY".to_string(), base.clone()),
            ("https_proxy".to_string(), base.clone()),
            ("http_proxy".to_string(), base),
            ("NO_PROXY".to_string(), link.host_ip.to_string()),
        ];
        Ok(RunNet {
            link: link.clone(),
            proxy: addr,
            token,
            env,
        })
    }

    fn lock_runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveRun>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends a run's network: the token stops working at once, every proxy connection of the run is
    /// closed, the drop counter is read (and audited if it grew), the rules, link and namespace are
    /// removed and the slot is freed.
    pub async fn end_run(&self, run_id: &str) -> Result<RunSummary, NetError> {
        self.shared
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id);
        let Some(run) = self.lock_runs().remove(run_id) else {
            return Err(NetError::Run(run_id.to_string(), "has no network"));
        };
        run.server.abort();
        let _ = run.server.await;
        let dropped = self.report_drops(&run.group, &run.link, run.reported).await;
        self.teardown_link(run.link).await;
        Ok(RunSummary {
            dropped_packets: dropped.unwrap_or(run.reported),
        })
    }

    /// Reads the run's counter, audits any growth since `reported`, returns the total.
    async fn report_drops(&self, group: &str, link: &RunLink, reported: u64) -> Option<u64> {
        let ifname = link.names.host_if.clone();
        let listing = blocking(nft::list_table).await.ok().flatten()?;
        let (packets, _) = nft::run_rules(&listing, &ifname);
        if packets > reported {
            self.shared.audit.egress(
                group,
                EgressEvent {
                    run: link.run_id.clone(),
                    action: EgressAction::PacketsDropped,
                    destination: format!("{} packets not to the proxy", packets - reported),
                    decision: Decision::Deny,
                    reason: format!(
                        "dropped by nftables on {ifname}; kernel log prefix \"nanoclaw drop {ifname}: \" has the addresses"
                    ),
                },
            );
        }
        Some(packets)
    }

    async fn teardown_link(&self, link: RunLink) {
        let slot = link.slot;
        let ifname = link.names.host_if.clone();
        let _guard_holder = ();
        let lock = &self.nft_lock;
        let handles = {
            let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
            // Listing and deleting in the blocking pool would need the guard across await; the two
            // nft calls take a few ms, so they run here under the lock.
            match nft::list_table() {
                Ok(Some(listing)) => nft::run_rules(&listing, &ifname).1,
                _ => Vec::new(),
            }
        };
        let result = blocking(move || {
            if !handles.is_empty() {
                nft::apply(&nft::render_rule_delete(nft::RUN_DROPS_CHAIN, &handles))?;
            }
            netns::destroy(&link);
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "run network teardown incomplete");
        }
        self.slots.release(slot);
    }

    /// Audits drops of live runs since the last sweep; the host calls this periodically.
    pub async fn sweep_counters(&self) {
        let live: Vec<(String, String, RunLink, u64)> = self
            .lock_runs()
            .iter()
            .map(|(id, r)| (id.clone(), r.group.clone(), r.link.clone(), r.reported))
            .collect();
        for (id, group, link, reported) in live {
            if let Some(total) = self.report_drops(&group, &link, reported).await
                && let Some(r) = self.lock_runs().get_mut(&id)
            {
                r.reported = total;
            }
        }
    }

    /// Grants `host` (an allowlist entry, default port 443) to `group` for `duration`, audited.
    pub fn grant_override(
        &self,
        group: &str,
        host: &str,
        duration: Duration,
    ) -> Result<u64, NetError> {
        let entry: AllowEntry = host.parse().map_err(NetError::Policy)?;
        let dest = entry.to_string();
        let o = self
            .shared
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .grant(group, entry, duration, Instant::now())
            .map_err(NetError::Policy)?;
        self.granted.notify_one();
        self.shared.audit.egress(
            group,
            EgressEvent {
                run: String::new(),
                action: EgressAction::OverrideGranted,
                destination: dest,
                decision: Decision::Allow,
                reason: format!("override {} for {}s", o.id, duration.as_secs()),
            },
        );
        Ok(o.id)
    }

    /// Removes overrides that ended (auditing each); returns the next expiry.
    pub fn expire_overrides(&self, now: Instant) -> Option<Instant> {
        let mut policy = self.shared.policy.lock().unwrap_or_else(|e| e.into_inner());
        for o in policy.expire(now) {
            self.shared.audit.egress(
                &o.group,
                EgressEvent {
                    run: String::new(),
                    action: EgressAction::OverrideExpired,
                    destination: o.entry.to_string(),
                    decision: Decision::Deny,
                    reason: format!("override {} ended", o.id),
                },
            );
        }
        policy.next_expiry()
    }

    /// Live runs.
    pub fn live_runs(&self) -> Vec<String> {
        self.lock_runs().keys().cloned().collect()
    }

    /// Address slots in use.
    pub fn slots_in_use(&self) -> usize {
        self.slots.in_use()
    }

    /// Ends every run and removes the table.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        if let Some(t) = self.expiry.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        for id in self.live_runs() {
            let _ = self.end_run(&id).await;
        }
        blocking(|| nft::apply(&nft::render_delete())).await
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        if let Some(t) = self.expiry.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}
