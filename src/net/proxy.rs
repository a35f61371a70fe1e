//! The egress proxy: one listener per run on the run's host-side address, serving
//! - the **API gateway** (origin-form requests): the run's token is swapped for the real credential and
//!   the request is forwarded to the model API over TLS, the response streamed back;
//! - **CONNECT** tunnels and **plain-HTTP proxying** (absolute-form requests) to allowlisted
//!   destinations, with the known bypasses closed (see `docs/egress.md`).
//!
//! The listener identifies the run: a connection is served only if it comes from that run's address
//! on that run's link, and a token is valid only on its own run's listener while the run is live.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::Ipv4Net;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use crate::core::audit::{Decision, EgressAction, EgressEvent};
use crate::net::NetError;
use crate::net::audit::AuditSink;
use crate::net::policy::{AllowedBy, Host, Policy, Verdict, forbidden_reason, normalize_host};
use crate::net::secret::{Credential, token_eq};

/// Response body type of the proxy.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Connections served at once per run; further connections wait in the kernel backlog.
pub const MAX_CONNECTIONS_PER_RUN: usize = 64;
/// Upstream TCP connect limit.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the proxy waits for a tunnel's first bytes (TLS ClientHello or HTTP request head) before
/// treating the protocol as server-speaks-first and tunnelling unchecked.
pub const PEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes read from a tunnel to find its SNI or Host.
pub const PEEK_LIMIT: usize = 16 * 1024;
/// Request-head read limit on the proxy's own port (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Name resolution for the proxy: pinned names first (config `egress.hosts`), then, if enabled, the
/// system resolver. Runs never resolve names themselves.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    pins: BTreeMap<String, Vec<IpAddr>>,
    system: bool,
}

impl Resolver {
    /// `pins` keys must be normalized names; `system` enables getaddrinfo for everything else.
    pub fn new(pins: BTreeMap<String, Vec<IpAddr>>, system: bool) -> Self {
        let pins = pins
            .into_iter()
            .filter_map(|(k, v)| normalize_host(&k).ok().map(|k| (k, v)))
            .collect();
        Self { pins, system }
    }

    /// Addresses of `name`.
    pub async fn resolve(&self, name: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        if let Some(ips) = self.pins.get(name) {
            return Ok(ips.clone());
        }
        if !self.system {
            return Err(format!("{name} has no pinned address"));
        }
        let addrs = tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| format!("cannot resolve {name}: {e}"))?;
        let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
        if ips.is_empty() {
            Err(format!("{name} has no addresses"))
        } else {
            Ok(ips)
        }
    }
}

/// Where the gateway forwards model requests.
#[derive(Clone)]
pub struct Upstream {
    https: bool,
    host: String,
    port: u16,
    base_path: String,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Upstream({}://{}:{}{})",
            if self.https { "https" } else { "http" },
            self.host,
            self.port,
            self.base_path
        )
    }
}

impl Upstream {
    /// `url` like `https://api.anthropic.com`; TLS trusts `roots` (use [`webpki_roots_store`]).
    pub fn new(url: &str, roots: rustls::RootCertStore) -> Result<Self, NetError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| NetError::Upstream(format!("{url}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(NetError::Upstream(format!(
                    "{url}: need http:// or https://"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| NetError::Upstream(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let base_path = uri.path().trim_end_matches('/').to_string();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::Upstream(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            https,
            host,
            port,
            base_path,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// The upstream's host name.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// The Mozilla root set compiled in (no system store needed on the device).
pub fn webpki_roots_store() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// State shared by every run's listener.
pub struct Shared {
    pub policy: Mutex<Policy>,
    pub resolver: Resolver,
    pub subnet: Ipv4Net,
    pub proxy_port: u16,
    pub audit: AuditSink,
    pub upstream: Upstream,
    pub credential: Credential,
    /// run id → its token, while the run is live.
    pub tokens: Mutex<HashMap<String, String>>,
}

impl Shared {
    fn token_is_live(&self, run_id: &str, token: &str) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(run_id).is_some_and(|t| token_eq(t, token))
    }
}

/// Who a listener serves.
#[derive(Debug, Clone)]
pub struct RunCtx {
    pub run_id: String,
    pub group: String,
    pub host_ip: Ipv4Addr,
    pub run_ip: Ipv4Addr,
}

impl RunCtx {
    fn audit(
        &self,
        shared: &Shared,
        action: EgressAction,
        dest: String,
        decision: Decision,
        reason: String,
    ) {
        shared.audit.egress(
            &self.group,
            EgressEvent {
                run: self.run_id.clone(),
                action,
                destination: dest,
                decision,
                reason,
            },
        );
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|n: Infallible| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn refusal(status: StatusCode, reason: &str) -> Response<Body> {
    let mut r = text(status, format!("nanoclaw egress proxy: {reason}\n"));
    // A refused client gets nothing more from this connection; closing frees the slot at once.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Accepts connections for one run until the task is aborted (run end); aborting also ends every
/// connection of the run, since they live in this task's [`JoinSet`].
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, ctx: Arc<RunCtx>) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(run = %ctx.run_id, error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if peer.ip() != IpAddr::V4(ctx.run_ip) {
            ctx.audit(
                &shared,
                EgressAction::Connect,
                peer.to_string(),
                Decision::Deny,
                "connection from an address that is not this run's".into(),
            );
            continue;
        }
        if conns.len() >= MAX_CONNECTIONS_PER_RUN {
            tracing::warn!(run = %ctx.run_id, "too many proxy connections; refusing one");
            continue;
        }
        let (s, c) = (shared.clone(), ctx.clone());
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let (s, c) = (s.clone(), c.clone());
                async move { Ok::<_, Infallible>(route(req, s, c).await) }
            });
            // half_close: clients such as `printf … | nc` shut their write side after the request
            // and still wait for the answer (seen from a QEMU guest: no answer without it).
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "proxy connection ended with an error");
            }
        });
    }
}

async fn route(req: Request<Incoming>, shared: Arc<Shared>, ctx: Arc<RunCtx>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        connect(req, shared, ctx).await
    } else if req.uri().scheme().is_some() {
        forward_http(req, shared, ctx).await
    } else {
        gateway(req, shared, ctx).await
    }
}

/// Policy, resolution and address checks for `host:port`. `Err` is the refusal to send.
async fn authorize(
    shared: &Shared,
    ctx: &RunCtx,
    host: &Host,
    port: u16,
    action: EgressAction,
) -> Result<Vec<IpAddr>, Box<Response<Body>>> {
    let dest = format!("{host}:{port}");
    let deny = |status, reason: String| {
        ctx.audit(shared, action, dest.clone(), Decision::Deny, reason.clone());
        Err(Box::new(refusal(status, &reason)))
    };
    let is_proxy = match host {
        Host::Ip(ip) => {
            let ip = crate::net::policy::canonical(*ip);
            ip.is_loopback()
                || ip.is_unspecified()
                || matches!(ip, IpAddr::V4(v4) if shared.subnet.contains(&v4))
        }
        Host::Name(n) => n == "localhost" || n.ends_with(".localhost"),
    };
    if is_proxy && port == shared.proxy_port {
        return deny(
            StatusCode::FORBIDDEN,
            "CONNECT to the proxy itself is refused".into(),
        );
    }
    let verdict = {
        let policy = shared.policy.lock().unwrap_or_else(|e| e.into_inner());
        policy.check(&ctx.group, host, port, Instant::now())
    };
    let (by, explicit) = match verdict {
        Verdict::Deny(reason) => return deny(StatusCode::FORBIDDEN, reason),
        Verdict::Allow {
            by,
            explicit_address,
        } => (by, explicit_address),
    };
    let ips = match host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(n) => match shared.resolver.resolve(n, port).await {
            Ok(ips) => ips,
            Err(reason) => return deny(StatusCode::BAD_GATEWAY, reason),
        },
    };
    // One forbidden address refuses the whole answer: a name that mixes public and internal
    // addresses is a rebinding attempt, not a reason to pick the public one.
    for ip in &ips {
        if let Some(why) = forbidden_reason(*ip, explicit, shared.subnet) {
            return deny(
                StatusCode::FORBIDDEN,
                format!("{host} resolves to a {why} ({ip})"),
            );
        }
    }
    if let AllowedBy::Override(id) = by {
        ctx.audit(
            shared,
            EgressAction::OverrideUsed,
            dest,
            Decision::Allow,
            format!("override {id}"),
        );
    }
    Ok(ips)
}

async fn connect_any(ips: &[IpAddr], port: u16) -> Result<TcpStream, String> {
    let mut last = "no address".to_string();
    for ip in ips {
        match timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(SocketAddr::new(*ip, port)),
        )
        .await
        {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connect timed out".to_string(),
        }
    }
    Err(last)
}

async fn connect(req: Request<Incoming>, shared: Arc<Shared>, ctx: Arc<RunCtx>) -> Response<Body> {
    let Some(auth) = req.uri().authority().cloned() else {
        return refusal(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let Some(port) = auth.port_u16() else {
        return refusal(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let host = match Host::parse(auth.host()) {
        Ok(h) => h,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, &e),
    };
    let ips = match authorize(&shared, &ctx, &host, port, EgressAction::Connect).await {
        Ok(ips) => ips,
        Err(resp) => return *resp,
    };
    let upstream = match connect_any(&ips, port).await {
        Ok(s) => s,
        Err(e) => return refusal(StatusCode::BAD_GATEWAY, &format!("{host}:{port}: {e}")),
    };
    tracing::info!(run = %ctx.run_id, destination = %format!("{host}:{port}"), "tunnel opened");
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => tunnel(TokioIo::new(upgraded), upstream, host, port, shared, ctx).await,
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(
        Full::new(Bytes::new())
            .map_err(|n: Infallible| match n {})
            .boxed(),
    )
}

/// What the first bytes of a tunnel say about where it goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek {
    /// Not enough bytes yet.
    More,
    /// A TLS ClientHello, with its SNI if any.
    Tls(Option<String>),
    /// An HTTP request head with this method and Host (without port).
    Http {
        method: String,
        host: Option<String>,
    },
    /// Neither: tunnel as is.
    Opaque,
}

/// Classifies the first bytes a client sent into a tunnel. TLS is parsed by rustls' `Acceptor`, HTTP
/// by `httparse`: no hand-written protocol parser.
pub fn peek(buf: &[u8]) -> Peek {
    if buf.is_empty() {
        return Peek::More;
    }
    if buf[0] == 0x16 {
        let mut acc = rustls::server::Acceptor::default();
        let mut cur = std::io::Cursor::new(buf);
        while (cur.position() as usize) < buf.len() {
            match acc.read_tls(&mut cur) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        return match acc.accept() {
            Ok(Some(accepted)) => {
                Peek::Tls(accepted.client_hello().server_name().map(str::to_string))
            }
            Ok(None) if buf.len() < PEEK_LIMIT => Peek::More,
            _ => Peek::Opaque,
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|h| strip_port(h).to_string());
            Peek::Http {
                method: req.method.unwrap_or_default().to_string(),
                host,
            }
        }
        Ok(httparse::Status::Partial) if buf.len() < PEEK_LIMIT => {
            // A CONNECT line is recognizable before its headers end.
            if buf.starts_with(b"CONNECT ") {
                Peek::Http {
                    method: "CONNECT".into(),
                    host: None,
                }
            } else {
                Peek::More
            }
        }
        _ => Peek::Opaque,
    }
}

fn strip_port(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => hostport,
    }
}

fn same_host(expected: &Host, named: &str) -> bool {
    Host::parse(named).is_ok_and(|h| h == *expected)
}

async fn tunnel<C>(
    mut client: C,
    mut upstream: TcpStream,
    host: Host,
    port: u16,
    shared: Arc<Shared>,
    ctx: Arc<RunCtx>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let dest = format!("{host}:{port}");
    let mut buf = Vec::with_capacity(4096);
    let deadline = Instant::now() + PEEK_TIMEOUT;
    let verdict = loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Err(_) => break Peek::Opaque, // server-speaks-first protocol
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        match peek(&buf) {
            Peek::More => continue,
            other => break other,
        }
    };
    match &verdict {
        Peek::Tls(Some(sni)) if !same_host(&host, sni) && matches!(host, Host::Name(_)) => {
            ctx.audit(
                &shared,
                EgressAction::Misdirected,
                dest,
                Decision::Deny,
                format!("TLS SNI {sni:?} does not match the CONNECT target"),
            );
            // TLS alert unrecognized_name (fatal): the client sees a handshake failure, not a hang.
            let _ = client
                .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70])
                .await;
            let _ = client.shutdown().await;
            return;
        }
        Peek::Http { method, .. } if method == "CONNECT" => {
            ctx.audit(
                &shared,
                EgressAction::Connect,
                dest,
                Decision::Deny,
                "nested CONNECT inside a tunnel".into(),
            );
            let _ = client
                .write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            let _ = client.shutdown().await;
            return;
        }
        Peek::Http {
            host: Some(named), ..
        } if !same_host(&host, named) => {
            ctx.audit(
                &shared,
                EgressAction::Misdirected,
                dest,
                Decision::Deny,
                format!("HTTP Host {named:?} does not match the CONNECT target"),
            );
            let body = "nanoclaw egress proxy: Host does not match the CONNECT target\n";
            let resp = format!(
                "HTTP/1.1 421 Misdirected Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(resp.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
        _ => {}
    }
    if upstream.write_all(&buf).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap, also_drop: &[HeaderName]) {
    let listed: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for (name, value) in from {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || listed.iter().any(|l| l == n) || also_drop.contains(name) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

async fn send_upstream<S>(io: S, req: Request<Incoming>) -> Result<Response<Body>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(body.boxed());
    *out.status_mut() = parts.status;
    copy_end_to_end(&parts.headers, out.headers_mut(), &[]);
    Ok(out)
}

async fn forward_http(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    ctx: Arc<RunCtx>,
) -> Response<Body> {
    if req.uri().scheme_str() != Some("http") {
        return refusal(
            StatusCode::BAD_REQUEST,
            "only http:// is proxied directly; use CONNECT for TLS",
        );
    }
    let Some(auth) = req.uri().authority().cloned() else {
        return refusal(StatusCode::BAD_REQUEST, "absolute URI without host");
    };
    let port = auth.port_u16().unwrap_or(80);
    let host = match Host::parse(auth.host()) {
        Ok(h) => h,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, &e),
    };
    if let Some(named) = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        && !same_host(&host, strip_port(named))
    {
        let reason = format!("Host {named:?} does not match the request target");
        ctx.audit(
            &shared,
            EgressAction::Misdirected,
            format!("{host}:{port}"),
            Decision::Deny,
            reason.clone(),
        );
        return refusal(StatusCode::MISDIRECTED_REQUEST, &reason);
    }
    let ips = match authorize(&shared, &ctx, &host, port, EgressAction::HttpProxy).await {
        Ok(ips) => ips,
        Err(resp) => return *resp,
    };
    let stream = match connect_any(&ips, port).await {
        Ok(s) => s,
        Err(e) => return refusal(StatusCode::BAD_GATEWAY, &e),
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::new(body);
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = match path.parse() {
        Ok(u) => u,
        Err(_) => return refusal(StatusCode::BAD_REQUEST, "bad path"),
    };
    copy_end_to_end(&parts.headers, out.headers_mut(), &[header::HOST]);
    if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
        out.headers_mut().insert(header::HOST, v);
    }
    match send_upstream(stream, out).await {
        Ok(r) => r,
        Err(e) => refusal(StatusCode::BAD_GATEWAY, &e),
    }
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn gateway(req: Request<Incoming>, shared: Arc<Shared>, ctx: Arc<RunCtx>) -> Response<Body> {
    let up = &shared.upstream;
    let dest = format!("{}:{}", up.host, up.port);
    let valid =
        presented_token(req.headers()).is_some_and(|t| shared.token_is_live(&ctx.run_id, t));
    if !valid {
        ctx.audit(
            &shared,
            EgressAction::Gateway,
            dest,
            Decision::Deny,
            "missing, wrong or expired run token".into(),
        );
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            r#"{"type":"error","error":{"type":"authentication_error","message":"nanoclaw gateway: invalid run token"}}"#.into(),
        );
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let ips = match shared.resolver.resolve(&up.host, up.port).await {
        Ok(ips) => ips,
        Err(e) => return refusal(StatusCode::BAD_GATEWAY, &e),
    };
    let tcp = match connect_any(&ips, up.port).await {
        Ok(s) => s,
        Err(e) => return refusal(StatusCode::BAD_GATEWAY, &format!("model API: {e}")),
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::new(body);
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = match format!("{}{}", up.base_path, path).parse() {
        Ok(u) => u,
        Err(_) => return refusal(StatusCode::BAD_REQUEST, "bad path"),
    };
    copy_end_to_end(
        &parts.headers,
        out.headers_mut(),
        &[
            header::HOST,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
        ],
    );
    let host_header = if (up.https && up.port == 443) || (!up.https && up.port == 80) {
        up.host.clone()
    } else {
        format!("{}:{}", up.host, up.port)
    };
    if let Ok(v) = HeaderValue::from_str(&host_header) {
        out.headers_mut().insert(header::HOST, v);
    }
    let (name, value) = match &shared.credential {
        Credential::ApiKey(s) => (HeaderName::from_static("x-api-key"), s.expose().to_string()),
        Credential::OAuth(s) => (header::AUTHORIZATION, format!("Bearer {}", s.expose())),
    };
    let Ok(mut value) = HeaderValue::from_str(&value) else {
        return refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "credential is not a valid header value",
        );
    };
    // Keeps hyper (and anything formatting headers) from printing or compressing it.
    value.set_sensitive(true);
    out.headers_mut().insert(name, value);
    let result = if up.https {
        let Ok(server_name) = ServerName::try_from(up.host.clone()) else {
            return refusal(
                StatusCode::BAD_GATEWAY,
                "upstream host is not a valid TLS name",
            );
        };
        match up.tls.connect(server_name, tcp).await {
            Ok(tls) => send_upstream(tls, out).await,
            Err(e) => Err(format!("TLS: {e}")),
        }
    } else {
        send_upstream(tcp, out).await
    };
    match result {
        Ok(r) => r,
        Err(e) => refusal(StatusCode::BAD_GATEWAY, &format!("model API: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_http_heads_and_nested_connects() {
        assert_eq!(peek(b""), Peek::More);
        assert_eq!(peek(b"GET / HTTP/1.1\r\nHo"), Peek::More);
        assert_eq!(
            peek(b"GET / HTTP/1.1\r\nHost: Other.Example:443\r\n\r\n"),
            Peek::Http {
                method: "GET".into(),
                host: Some("Other.Example".into())
            }
        );
        assert!(
            matches!(peek(b"CONNECT 10.0.0.1:3128 HTTP/1.1\r\n"), Peek::Http { method, .. } if method == "CONNECT")
        );
        assert_eq!(peek(b"\x00\x01binary"), Peek::Opaque);
        assert_eq!(peek(b"\x16\x03\x01"), Peek::More);
    }

    #[test]
    fn peek_reads_sni_from_a_real_client_hello() {
        // Produce a genuine ClientHello with rustls itself.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("evil.example").unwrap(),
        )
        .unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        assert_eq!(peek(&hello), Peek::Tls(Some("evil.example".into())));
        assert_eq!(peek(&hello[..10]), Peek::More);
    }

    #[test]
    fn hosts_compare_case_and_port_insensitively() {
        let h = Host::parse("allowed.test").unwrap();
        assert!(same_host(&h, strip_port("ALLOWED.test:443")));
        assert!(!same_host(&h, "other.test"));
        assert_eq!(strip_port("[::1]:80"), "::1");
    }

    #[test]
    fn tokens_are_read_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("ncr-abc"));
        assert_eq!(presented_token(&h), Some("ncr-abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer ncr-def"),
        );
        assert_eq!(presented_token(&h), Some("ncr-def"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert_eq!(presented_token(&h), None);
    }
}
