//! Shared setup for the egress root tests (`tests/net_root.rs`, `tests/egress_run_root.rs`): a fresh
//! "host" network namespace per test, a fake internet in a namespace of its own (HTTP/HTTPS servers and
//! UDP echo "resolvers"), the egress layer started against it with an audit writer into a real SQLite
//! database, and clients that act from inside a run's namespace.
//!
//! Include with `#[macro_use] #[path = "support/net.rs"] mod net_support;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use nanoclaw::core::audit::AuditRecord;
use nanoclaw::net::audit::{AuditSink, spawn_store_writer};
use nanoclaw::net::netns::{self, RunLink, in_netns};
use nanoclaw::net::nft;
use nanoclaw::net::proxy::{Resolver, Upstream};
use nanoclaw::net::secret::Credential;
use nanoclaw::net::{Egress, EgressConfig};
use nanoclaw::store::Store;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

pub const REAL_KEY: &str = "sk-ant-api03-REAL-KEY-never-in-a-run-0123456789";
pub const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const RESOLVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 53);
/// A well-known public resolver address, served by the fake internet (the test host routes it there).
pub const PUBLIC_RESOLVER_IP: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
pub const PROXY_PORT: u16 = 3128;

pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, nftables)".into());
    }
    for tool in ["ip", "nft"] {
        let ok = Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!("`{tool}` not installed (apt: iproute2 nftables)"));
        }
    }
    None
}

macro_rules! require_root {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread into a fresh network namespace with `lo` up.
pub fn enter_fresh_netns() {
    // SAFETY: unshare(CLONE_NEWNET) only affects the calling thread's namespace membership.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    sh(&["ip", "link", "set", "lo", "up"]);
}

pub struct Ca {
    pub roots: rustls::RootCertStore,
    pub leaf: CertificateDer<'static>,
    pub key: Vec<u8>,
}

pub fn test_ca() -> Ca {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![
        "api.test".to_string(),
        "allowed.test".to_string(),
        "other.test".to_string(),
    ])
    .unwrap()
    .signed_by(&leaf_key, &issuer)
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    Ca {
        roots,
        leaf: leaf.der().clone(),
        key: leaf_key.serialize_der(),
    }
}

/// What the fake internet saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// `host header | x-api-key | authorization | path` per request.
    pub requests: Vec<(String, String, String, String)>,
    pub udp_datagrams: usize,
}

/// The fake internet: a namespace with an HTTPS server (443, 8443), an HTTP server (80) at
/// 198.18.0.10 and UDP echo "resolvers" at 198.18.0.53:53 and 1.1.1.1:53, linked to the test's host
/// namespace (which routes 198.18.0.0/24 and 1.1.1.1 to it).
pub struct Internet {
    pub ns: String,
    pub seen: Arc<Mutex<Seen>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Internet {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

pub async fn record_and_answer(
    req: hyper::Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Seen>>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let host = h("host");
    seen.lock().unwrap().requests.push((
        host.clone(),
        h("x-api-key"),
        h("authorization"),
        req.uri().path().to_string(),
    ));
    Ok(hyper::Response::new(Full::new(Bytes::from(format!(
        "hello from {host}"
    )))))
}

impl Internet {
    /// The requests seen so far: `(host header, x-api-key, authorization, path)`.
    pub fn requests(&self) -> Vec<(String, String, String, String)> {
        self.seen.lock().unwrap().requests.clone()
    }

    /// Must be called from the test's host-namespace thread.
    pub fn start(tag: &str, ca: &Ca) -> Self {
        let ns = format!("nctest-{tag}-inet");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", "inet0", "type", "veth", "peer", "name", "inet1", "netns", &ns,
        ]);
        sh(&["ip", "addr", "add", "198.18.0.1/24", "dev", "inet0"]);
        sh(&["ip", "link", "set", "inet0", "up"]);
        for a in ["198.18.0.10/24", "198.18.0.53/24"] {
            sh(&["ip", "-n", &ns, "addr", "add", a, "dev", "inet1"]);
        }
        sh(&["ip", "-n", &ns, "addr", "add", "1.1.1.1/32", "dev", "inet1"]);
        sh(&["ip", "-n", &ns, "link", "set", "inet1", "up"]);
        sh(&["ip", "route", "add", "1.1.1.1/32", "dev", "inet0"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![ca.leaf.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.key.clone())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let path = PathBuf::from(format!("/run/netns/{ns}"));
        let s2 = seen.clone();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: joins the fake internet's namespace on this thread only.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for port in [80u16, 443, 8443] {
                    let l = tokio::net::TcpListener::bind((UPSTREAM_IP, port))
                        .await
                        .unwrap();
                    let (seen, acceptor) = (s2.clone(), acceptor.clone());
                    tasks.spawn(async move {
                        loop {
                            let Ok((s, _)) = l.accept().await else {
                                continue;
                            };
                            let (seen, acceptor) = (seen.clone(), acceptor.clone());
                            tokio::spawn(async move {
                                let svc = service_fn(move |r| record_and_answer(r, seen.clone()));
                                let b = hyper::server::conn::http1::Builder::new();
                                if port == 80 {
                                    let _ = b.serve_connection(TokioIo::new(s), svc).await;
                                } else if let Ok(tls) = acceptor.accept(s).await {
                                    let _ = b.serve_connection(TokioIo::new(tls), svc).await;
                                }
                            });
                        }
                    });
                }
                let udp = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 53))
                    .await
                    .unwrap();
                let seen = s2.clone();
                tasks.spawn(async move {
                    let mut buf = [0u8; 512];
                    loop {
                        if let Ok((n, from)) = udp.recv_from(&mut buf).await {
                            seen.lock().unwrap().udp_datagrams += 1;
                            let _ = udp.send_to(&buf[..n], from).await;
                        }
                    }
                });
                ready_tx.send(()).unwrap();
                let _ = stop_rx.await;
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Internet {
            ns,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

pub struct World {
    pub egress: Arc<Egress>,
    pub internet: Internet,
    pub ca_roots: rustls::RootCertStore,
    pub db: PathBuf,
    writer: Option<std::thread::JoinHandle<Result<u64, nanoclaw::store::StoreError>>>,
    pub prefix: String,
    /// Holds the database; tests may put other files here too.
    pub dir: tempfile::TempDir,
}

pub fn config(prefix: &str) -> EgressConfig {
    EgressConfig {
        name_prefix: prefix.to_string(),
        allow: vec!["api.anthropic.com".into()],
        groups: BTreeMap::from([(
            "dev".to_string(),
            vec![
                "allowed.test:443,80".to_string(),
                "loop.test".to_string(),
                "meta.test".to_string(),
            ],
        )]),
        ..EgressConfig::default()
    }
}

pub fn resolver() -> Resolver {
    let ip = |s: &str| vec![s.parse::<IpAddr>().unwrap()];
    Resolver::new(
        BTreeMap::from([
            ("api.test".to_string(), ip("198.18.0.10")),
            ("allowed.test".to_string(), ip("198.18.0.10")),
            ("other.test".to_string(), ip("198.18.0.10")),
            // An allowlisted name whose DNS answer points inside the host or at cloud metadata.
            ("loop.test".to_string(), ip("127.0.0.1")),
            ("meta.test".to_string(), ip("169.254.169.254")),
        ]),
        false,
    )
}

pub async fn world(tag: &str, prefix: &str, credential: &str) -> World {
    let ca = test_ca();
    let internet = Internet::start(tag, &ca);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nanoclaw.db");
    let (audit, rx) = AuditSink::new(1024);
    let writer = spawn_store_writer(db.clone(), rx);
    let upstream = Upstream::new("https://api.test", ca.roots.clone()).unwrap();
    let egress = Egress::start(
        &config(prefix),
        upstream,
        Credential::parse(credential).unwrap(),
        resolver(),
        audit,
    )
    .await
    .unwrap();
    World {
        egress,
        internet,
        ca_roots: ca.roots,
        db,
        writer: Some(writer),
        prefix: prefix.to_string(),
        dir,
    }
}

impl World {
    /// Shuts the egress layer down, flushes the audit writer, returns every audit row.
    pub async fn finish(mut self) -> Vec<AuditRecord> {
        self.egress.shutdown().await.unwrap();
        assert!(
            nft::list_table().unwrap().is_none(),
            "table removed on shutdown"
        );
        let prefix = self.prefix.clone();
        assert!(netns::netns_with_prefix(&prefix).is_empty());
        drop(self.egress);
        let writer = self.writer.take().unwrap();
        tokio::task::spawn_blocking(move || writer.join().unwrap().unwrap())
            .await
            .unwrap();
        let rows = Store::open(&self.db).unwrap().audit_events(None).unwrap();
        drop(self.internet);
        rows
    }
}

/// Runs the test body on a thread whose network namespace is a fresh "host".
pub fn on_host_thread<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        enter_fresh_netns();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(body());
    })
    .join()
    .expect("test body panicked");
}

/// Runs `f` as a client inside the run's namespace.
pub fn in_run<T: Send + 'static>(link: &RunLink, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_netns(&link.netns_path(), f).unwrap()
}

pub async fn in_run_async<T: Send + 'static>(
    link: &RunLink,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let link = link.clone();
    tokio::task::spawn_blocking(move || in_run(&link, f))
        .await
        .unwrap()
}

pub const SHORT: Duration = Duration::from_millis(700);

pub fn tcp_reachable(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, SHORT).is_ok()
}

/// Sends a CONNECT; returns the status and the stream (positioned after the response head).
pub fn proxy_connect(proxy: SocketAddr, target: &str) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut text = head;
    if status != 200 {
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest);
        text.push_str(&rest);
    }
    (status, text, s)
}

pub fn read_all(s: &mut impl Read) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// TLS through an established tunnel with `sni`, then `GET /` with Host `sni`.
pub fn tls_get(
    mut s: TcpStream,
    sni: &str,
    roots: rustls::RootCertStore,
) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(cfg),
        ServerName::try_from(sni.to_string()).unwrap(),
    )
    .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut s);
    write!(
        tls,
        "GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out).to_string()),
        Err(e) if !out.is_empty() => Ok(format!("{}{e}", String::from_utf8_lossy(&out))),
        Err(e) => Err(e.to_string()),
    }
}

/// A raw HTTP/1.1 request to `addr`; returns the whole response text.
pub fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    read_all(&mut s)
}

pub fn rows_of<'a>(rows: &'a [AuditRecord], kind: &str) -> Vec<&'a AuditRecord> {
    rows.iter().filter(|r| r.kind == kind).collect()
}

/// Run networks named with `prefix`: namespaces under /run/netns, host-side links and the host
/// interfaces of the nft run rules in this thread's namespace.
pub fn run_networks(prefix: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let links: Vec<String> = netns::host_interfaces()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    let rules = nft::list_table()
        .unwrap()
        .map(|l| nft::all_run_rules(&l).into_iter().map(|r| r.0).collect())
        .unwrap_or_default();
    (netns::netns_with_prefix(prefix), links, rules)
}

/// [`run_networks`] with the run rules counted.
pub fn leftovers(prefix: &str) -> (Vec<String>, Vec<String>, usize) {
    let (ns, links, rules) = run_networks(prefix);
    (ns, links, rules.len())
}
