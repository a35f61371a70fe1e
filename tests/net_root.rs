//! Egress layer against the real kernel: network namespaces, veth pairs and the `inet nanoclaw`
//! nftables table, with a fake "internet" in a namespace of its own.
//!
//! Each test runs its host side on a thread that moved into a fresh network namespace (so the
//! machine's own ruleset and interfaces are never touched), uses its own name prefix (so parallel tests
//! and their cleanup never meet), and plays the run's client from a thread that joined the run's
//! namespace. Needs root, `ip` (iproute2) and `nft` (nftables); elsewhere each test prints why it skips.
//! The shared setup (fake internet, egress world, run-side clients) is `tests/support/net.rs`.

#[macro_use]
#[path = "support/net.rs"]
mod net_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanoclaw::net::audit::AuditSink;
use nanoclaw::net::netns;
use nanoclaw::net::nft;
use nanoclaw::net::overrides::{self, Applied, persist_override};
use nanoclaw::net::proxy::Upstream;
use nanoclaw::net::secret::Credential;
use nanoclaw::net::{Egress, RunNet};
use nanoclaw::store::Store;
use net_support::*;

/// Captured log output of the test thread (all levels).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every test in this binary logs into one process-wide buffer. A thread-local subscriber misses events
/// when tests run in parallel (tracing caches per-callsite interest globally), so the log scan reads
/// everything all tests logged: a stronger check, never a flaky one.
fn global_logs() -> LogBuf {
    static LOGS: std::sync::OnceLock<LogBuf> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuf::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first global subscriber");
        logs
    })
    .clone()
}

#[test]
fn direct_traffic_ipv6_and_dns_are_dropped_counted_and_audited() {
    require_root!();
    on_host_thread(|| async {
        let w = world("drop", "tda", &format!("ANTHROPIC_API_KEY={REAL_KEY}")).await;
        // Sanity: the host side itself reaches the fake internet, so a failure from the run is the
        // ruleset's doing, not a broken test network.
        assert!(tcp_reachable(SocketAddr::from((UPSTREAM_IP, 443))));
        let run = w.egress.begin_run("run-drop-1", "dev").await.unwrap();
        assert!(run.link.netns_path().exists());
        let proxy = run.proxy;
        let host_ip = run.link.host_ip;
        let (direct, other_port, proxy_ok, udp_reply, v6) = in_run_async(&run.link, move || {
            let direct = tcp_reachable(SocketAddr::from((UPSTREAM_IP, 443)));
            let other_port = tcp_reachable(SocketAddr::from((host_ip, 22)));
            let proxy_ok = tcp_reachable(proxy);
            // A raw DNS query to a resolver IP that really answers (it echoes).
            let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
            udp.set_read_timeout(Some(SHORT)).unwrap();
            let _ = udp.send_to(
                b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
                (RESOLVER_IP, 53),
            );
            let mut buf = [0u8; 64];
            let udp_reply = udp.recv_from(&mut buf).is_ok();
            // IPv6: no address, no route.
            let v6 = TcpStream::connect_timeout(&"[2001:db8::10]:443".parse().unwrap(), SHORT)
                .map_err(|e| e.to_string());
            (direct, other_port, proxy_ok, udp_reply, v6)
        })
        .await;
        assert!(!direct, "direct connection to the internet must be dropped");
        assert!(!other_port, "other host ports must be dropped");
        assert!(proxy_ok, "the proxy must be reachable");
        assert!(!udp_reply, "DNS to a public resolver must be dropped");
        assert!(v6.is_err(), "IPv6 must not work");
        assert_eq!(w.internet.seen.lock().unwrap().udp_datagrams, 0);
        assert!(w.internet.requests().is_empty());
        // The run has no IPv6 address at all.
        let addrs = Command::new("ip")
            .args(["-n", &run.link.names.netns, "-6", "addr"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&addrs.stdout).trim().is_empty());
        // Counted by nftables, per run.
        let listing = nft::list_table().unwrap().unwrap();
        let (packets, _) = nft::run_rules(&listing, &run.link.names.host_if);
        assert!(packets >= 3, "dropped packets counted: {packets}");
        let summary = w.egress.end_run("run-drop-1").await.unwrap();
        assert!(summary.dropped_packets >= packets);
        assert!(!run.link.netns_path().exists());
        let rows = w.finish().await;
        let drops = rows_of(&rows, "egress.packets_dropped");
        assert_eq!(drops.len(), 1, "{rows:?}");
        assert_eq!(drops[0].run.as_deref(), Some("run-drop-1"));
        assert_eq!(drops[0].group, "dev");
        assert_eq!(drops[0].decision, "deny");
    });
}

#[test]
fn connect_proxy_applies_the_allowlist_and_closes_the_known_bypasses() {
    require_root!();
    on_host_thread(|| async {
        let w = world("conn", "tcb", &format!("ANTHROPIC_API_KEY={REAL_KEY}")).await;
        let run = w.egress.begin_run("run-conn-1", "dev").await.unwrap();
        let proxy = run.proxy;
        let roots = w.ca_roots.clone();
        let host_ip = run.link.host_ip;
        let results = in_run_async(&run.link, move || {
            let mut r = BTreeMap::new();
            // Allowlisted: tunnel + TLS with the matching SNI works end to end.
            let (st, _, s) = proxy_connect(proxy, "allowed.test:443");
            r.insert("allowed", (st, tls_get(s, "allowed.test", roots.clone()).unwrap_or_default()));
            // Not allowlisted.
            let (st, text, _) = proxy_connect(proxy, "other.test:443");
            r.insert("other", (st, text));
            // Allowlisted name, port not in its entry.
            let (st, text, _) = proxy_connect(proxy, "allowed.test:8443");
            r.insert("port", (st, text));
            // Allowlisted names whose answer points at loopback / cloud metadata.
            let (st, text, _) = proxy_connect(proxy, "loop.test:443");
            r.insert("loopback", (st, text));
            let (st, text, _) = proxy_connect(proxy, "meta.test:443");
            r.insert("metadata", (st, text));
            // SNI differs from the CONNECT target: the tunnel is cut before any byte goes upstream.
            let (st, _, s) = proxy_connect(proxy, "allowed.test:443");
            let sni = tls_get(s, "other.test", roots.clone());
            r.insert("sni", (st, format!("{sni:?}")));
            // HTTP Host differs from the CONNECT target: 421.
            let (st, _, mut s) = proxy_connect(proxy, "allowed.test:80");
            s.write_all(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n").unwrap();
            r.insert("host", (st, read_all(&mut s)));
            // CONNECT to the proxy itself, and CONNECT nested inside an allowed tunnel.
            let (st, text, _) = proxy_connect(proxy, &format!("{host_ip}:{PROXY_PORT}"));
            r.insert("self", (st, text));
            let (st, _, mut s) = proxy_connect(proxy, "allowed.test:80");
            let nested = format!("CONNECT {host_ip}:{PROXY_PORT} HTTP/1.1\r\nHost: x\r\n\r\n");
            s.write_all(nested.as_bytes()).unwrap();
            r.insert("nested", (st, read_all(&mut s)));
            // Plain HTTP proxying (absolute-form) to an allowlisted host:80.
            let text = http(
                proxy,
                "GET http://allowed.test/plain HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
            );
            r.insert("plain", (0, text));
            let text = http(
                proxy,
                "GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
            );
            r.insert("plain-denied", (0, text));
            r
        })
        .await;
        let (st, body) = &results["allowed"];
        assert_eq!(*st, 200);
        assert!(body.contains("hello from allowed.test"), "{body}");
        let (st, text) = &results["other"];
        assert_eq!(*st, 403);
        assert!(
            text.contains("other.test is not in the allowlist"),
            "{text}"
        );
        let (st, text) = &results["port"];
        assert_eq!(*st, 403);
        assert!(text.contains("port 8443 is not allowed"), "{text}");
        let (st, text) = &results["loopback"];
        assert_eq!(*st, 403);
        assert!(text.contains("loopback address"), "{text}");
        let (st, text) = &results["metadata"];
        assert_eq!(*st, 403);
        assert!(text.contains("cloud metadata address"), "{text}");
        let (st, sni) = &results["sni"];
        assert_eq!(*st, 200);
        assert!(
            sni.starts_with("Err("),
            "TLS with a mismatched SNI must fail: {sni}"
        );
        let (st, text) = &results["host"];
        assert_eq!(*st, 200);
        assert!(text.starts_with("HTTP/1.1 421"), "{text}");
        let (st, text) = &results["self"];
        assert_eq!(*st, 403);
        assert!(text.contains("proxy itself"), "{text}");
        let (_, text) = &results["nested"];
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        let (_, text) = &results["plain"];
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("hello from allowed.test"), "{text}");
        let (_, text) = &results["plain-denied"];
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        // Upstream saw only the allowed requests: never other.test.
        let seen: Vec<String> = w.internet.requests().into_iter().map(|r| r.0).collect();
        assert_eq!(seen, ["allowed.test", "allowed.test"], "{seen:?}");
        w.egress.end_run("run-conn-1").await.unwrap();
        let rows = w.finish().await;
        let denied: Vec<(String, String)> = rows
            .iter()
            .filter(|r| r.decision == "deny")
            .map(|r| (r.kind.clone(), r.destination.clone().unwrap_or_default()))
            .collect();
        for expected in [
            ("egress.connect", "other.test:443"),
            ("egress.connect", "allowed.test:8443"),
            ("egress.connect", "loop.test:443"),
            ("egress.connect", "meta.test:443"),
            ("egress.misdirected", "allowed.test:443"),
            ("egress.misdirected", "allowed.test:80"),
            ("egress.connect", "allowed.test:80"),
            ("egress.http_proxy", "other.test:80"),
        ] {
            assert!(
                denied.contains(&(expected.0.to_string(), expected.1.to_string())),
                "missing audit {expected:?} in {denied:?}"
            );
        }
        assert!(rows.iter().all(|r| r.run.as_deref() == Some("run-conn-1")));
    });
}

#[test]
fn gateway_swaps_the_run_token_for_the_real_key_and_tokens_die_with_their_run() {
    require_root!();
    let logs = global_logs();
    on_host_thread(move || async move {
        let w = world("gw", "tgc", &format!("ANTHROPIC_API_KEY={REAL_KEY}")).await;
        let a = w.egress.begin_run("run-gw-a", "dev").await.unwrap();
        let b = w.egress.begin_run("run-gw-b", "main").await.unwrap();
        // Nothing the run receives holds the real key.
        for (k, v) in a.env.iter().chain(b.env.iter()) {
            assert!(!v.contains(REAL_KEY), "{k} leaks the key");
        }
        let env = |n: &RunNet, k: &str| n.env.iter().find(|(x, _)| x == k).unwrap().1.clone();
        assert_eq!(env(&a, "ANTHROPIC_API_KEY"), a.token);
        assert_eq!(env(&a, "ANTHROPIC_BASE_URL"), format!("http://{}", a.proxy));
        let post = |token: &str| {
            format!(
                "POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: {token}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{{}}"
            )
        };
        let (pa, pb) = (a.proxy, b.proxy);
        let (ta, tb) = (a.token.clone(), b.token.clone());
        let (req_a, req_b) = (post(&ta), post(&tb));
        let req_a2 = req_a.clone();
        let (ok, wrong, cross_link) = in_run_async(&a.link, move || {
            let ok = http(pa, &req_a);
            let wrong = http(pa, &req_b);
            // Run A cannot even reach run B's listener (nft accepts only its own link's address).
            let cross_link = tcp_reachable(pb);
            (ok, wrong, cross_link)
        })
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("hello from api.test"), "{ok}");
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
        assert!(!cross_link);
        let b_with_a = in_run_async(&b.link, move || http(pb, &req_a2)).await;
        assert!(
            b_with_a.starts_with("HTTP/1.1 401"),
            "token A on run B: {b_with_a}"
        );
        {
            let seen = w.internet.seen.lock().unwrap();
            assert_eq!(seen.requests.len(), 1);
            let (host, key, auth, path) = &seen.requests[0];
            assert_eq!(host, "api.test");
            assert_eq!(key, REAL_KEY, "upstream receives the real key");
            assert!(auth.is_empty());
            assert_eq!(path, "/v1/messages");
        }
        // After run A ends its token is worthless, on a new run of the same group too.
        w.egress.end_run("run-gw-a").await.unwrap();
        let a2 = w.egress.begin_run("run-gw-a2", "dev").await.unwrap();
        let pa2 = a2.proxy;
        let req_old = post(&ta);
        let stale = in_run_async(&a2.link, move || http(pa2, &req_old)).await;
        assert!(stale.starts_with("HTTP/1.1 401"), "{stale}");
        let req_old = post(&ta);
        let stale_b = in_run_async(&b.link, move || http(pb, &req_old)).await;
        assert!(stale_b.starts_with("HTTP/1.1 401"), "{stale_b}");
        assert_eq!(w.internet.requests().len(), 1);
        let rows = w.finish().await;
        let gw: Vec<_> = rows_of(&rows, "egress.gateway");
        assert_eq!(gw.len(), 4, "{gw:?}");
        assert!(gw.iter().all(|r| r.decision == "deny"));
    });
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        text.contains("egress denied") && text.contains("run-gw-a"),
        "logs were captured: {text}"
    );
    assert!(
        !text.contains(REAL_KEY),
        "the real key appeared in the logs"
    );
    assert!(
        !text.contains("REAL-KEY"),
        "part of the real key appeared in the logs"
    );
}

#[test]
fn oauth_credentials_go_upstream_as_a_bearer_token() {
    require_root!();
    on_host_thread(|| async {
        let token = "oauth-REAL-token-0123456789abcdef";
        let w = world("oa", "tdo", &format!("CLAUDE_CODE_OAUTH_TOKEN={token}")).await;
        let run = w.egress.begin_run("run-oauth", "dev").await.unwrap();
        let (p, t) = (run.proxy, run.token.clone());
        let resp = in_run_async(&run.link, move || {
            http(
                p,
                &format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"),
            )
        })
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        {
            let seen = w.internet.seen.lock().unwrap();
            assert_eq!(seen.requests[0].2, format!("Bearer {token}"));
            assert!(seen.requests[0].1.is_empty());
        }
        w.egress.end_run("run-oauth").await.unwrap();
        w.finish().await;
    });
}

#[test]
fn a_short_override_opens_a_host_and_expires_by_itself() {
    require_root!();
    on_host_thread(|| async {
        let w = world("ovr", "tef", &format!("ANTHROPIC_API_KEY={REAL_KEY}")).await;
        let run = w.egress.begin_run("run-ovr", "dev").await.unwrap();
        let proxy = run.proxy;
        let before =
            in_run_async(&run.link, move || proxy_connect(proxy, "other.test:443").0).await;
        assert_eq!(before, 403);
        // The CLI's path: a row in the database, picked up by the running host.
        {
            let store = Store::open(&w.db).unwrap();
            persist_override(&store, "dev", "other.test", "2s").unwrap();
            let applied = Applied::default();
            let rows = store.active_overrides(&overrides::now()).unwrap();
            assert_eq!(w.egress.sync_overrides(&rows, &applied), 1);
            assert_eq!(w.egress.sync_overrides(&rows, &applied), 0, "applied once");
        }
        let roots = w.ca_roots.clone();
        let during = in_run_async(&run.link, move || {
            let (st, _, s) = proxy_connect(proxy, "other.test:443");
            (st, tls_get(s, "other.test", roots).unwrap_or_default())
        })
        .await;
        assert_eq!(during.0, 200);
        assert!(during.1.contains("hello from other.test"));
        tokio::time::sleep(Duration::from_millis(2300)).await;
        let after = in_run_async(&run.link, move || proxy_connect(proxy, "other.test:443").0).await;
        assert_eq!(after, 403);
        // Another group never had it.
        w.egress.end_run("run-ovr").await.unwrap();
        let rows = w.finish().await;
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        for k in [
            "egress.override_granted",
            "egress.override_used",
            "egress.override_expired",
        ] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
        let granted = rows_of(&rows, "egress.override_granted");
        assert_eq!(granted[0].destination.as_deref(), Some("other.test:443"));
    });
}

#[test]
fn twenty_runs_leave_nothing_behind() {
    require_root!();
    on_host_thread(|| async {
        let w = world("twenty", "tgh", &format!("ANTHROPIC_API_KEY={REAL_KEY}")).await;
        for i in 0..20 {
            let id = format!("run-20-{i}");
            let run = w.egress.begin_run(&id, "dev").await.unwrap();
            if i % 5 == 0 {
                // Some traffic, so counters and connections exist at teardown.
                let p = run.proxy;
                in_run_async(&run.link, move || {
                    let _ = tcp_reachable(SocketAddr::from((UPSTREAM_IP, 80)));
                    let _ = proxy_connect(p, "other.test:443");
                })
                .await;
            }
            assert_eq!(w.egress.slots_in_use(), 1);
            w.egress.end_run(&id).await.unwrap();
        }
        // A run whose setup fails half-way (its name is taken) also leaves nothing.
        let taken = netns::LinkNames::for_run("tgh", "run-collide").netns;
        sh(&["ip", "netns", "add", &taken]);
        assert!(w.egress.begin_run("run-collide", "dev").await.is_err());
        sh(&["ip", "netns", "del", &taken]);
        assert_eq!(leftovers("tgh"), (vec![], vec![], 0));
        assert_eq!(w.egress.slots_in_use(), 0);
        assert!(w.egress.live_runs().is_empty());
        w.finish().await;
    });
}

#[test]
fn a_killed_host_leaves_run_networks_that_the_next_start_removes() {
    require_root!();
    let holder = holder_binary();
    on_host_thread(move || async move {
        let ca = test_ca();
        let mut child = std::process::Command::new(&holder)
            .args(["tij", "3"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        // SIGKILL: no destructor, no shutdown path runs.
        child.kill().unwrap();
        child.wait().unwrap();
        let (ns, ifs, rules) = leftovers("tij");
        assert_eq!(
            (ns.len(), ifs.len()),
            (3, 3),
            "the kill left the runs' networks"
        );
        assert_eq!(rules, 6, "and their nft rules");
        let (audit, _rx) = AuditSink::new(16);
        let egress = Egress::start(
            &config("tij"),
            Upstream::new("https://api.test", ca.roots).unwrap(),
            Credential::parse("ANTHROPIC_API_KEY=sk-ant-restart-000000000").unwrap(),
            resolver(),
            audit,
        )
        .await
        .unwrap();
        assert_eq!(leftovers("tij"), (vec![], vec![], 0));
        // And the restarted host works.
        let run = egress.begin_run("after-restart", "dev").await.unwrap();
        let p = run.proxy;
        assert!(in_run_async(&run.link, move || tcp_reachable(p)).await);
        egress.shutdown().await.unwrap();
        assert_eq!(leftovers("tij"), (vec![], vec![], 0));
    });
}

/// `examples/net_holder.rs`, which `cargo test` builds next to the test binaries.
fn holder_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join("examples").join("net_holder");
    if !p.exists() {
        // `cargo test --all-targets` does not always leave the example's final binary behind; build it.
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", "net_holder"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example net_holder");
        assert!(status.success(), "building the net_holder example failed");
    }
    assert!(p.exists(), "{} missing after building it", p.display());
    p
}

#[test]
fn the_table_is_applied_atomically_and_only_once() {
    require_root!();
    on_host_thread(|| async {
        let w = world("tbl", "tkl", &format!("ANTHROPIC_API_KEY={REAL_KEY}")).await;
        // Re-applying the base ruleset replaces the table instead of stacking a second copy.
        nft::apply(&nft::render_base(&nft::RulesetParams {
            prefix: "tkl".into(),
            proxy_port: PROXY_PORT,
        }))
        .unwrap();
        let out = Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.matches("table inet nanoclaw").count(), 1, "{text}");
        assert!(text.contains("fib daddr . iif type local"), "{text}");
        w.finish().await;
        let out = Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&out.stdout).contains("nanoclaw"));
    });
}

#[test]
fn run_network_shutdown_is_idempotent_for_unknown_runs() {
    require_root!();
    on_host_thread(|| async {
        let w = world("idem", "tmn", &format!("ANTHROPIC_API_KEY={REAL_KEY}")).await;
        assert!(w.egress.end_run("never-started").await.is_err());
        let run = w.egress.begin_run("r", "dev").await.unwrap();
        assert!(
            w.egress.begin_run("r", "dev").await.is_err(),
            "one network per run"
        );
        w.egress.end_run("r").await.unwrap();
        assert!(w.egress.end_run("r").await.is_err());
        assert!(!run.link.netns_path().exists());
        w.finish().await;
    });
}
