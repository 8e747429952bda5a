//! The upstream client: HTTP/1.1 driven by the request's own task ([`h1`]) over plain TCP or
//! rustls, and HTTP/2 (hyper) where TLS negotiates h2; pooled connections ([`pool`]), connect
//! and total timeouts, and the address check that keeps bearerd from reaching loopback, private
//! or link-local addresses. Trust: webpki roots + system roots + `upstream.ca_file`; SNI; ALPN
//! h2/http1.1. One client serves the process (the data plane and the token endpoint calls); a
//! reload that changes the upstream settings reconfigures it in place.

pub(crate) mod body;
pub(crate) mod h1;
pub(crate) mod pool;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderMap, Method, Request, Uri};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub(crate) use body::Body;
use h1::{Io, SendError, UpstreamConn};
use pool::{Checkout, Pool, WaitTicket};

use crate::config::UpstreamConfig;
use crate::http::ResponseHead;
use crate::template::escape::split_port;

/// Why an upstream request failed. Messages name the upstream host, never a path or a query.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("Upstream connection to {host} failed: {reason}")]
    Connect { host: String, reason: String },
    #[error("Upstream TLS handshake with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("Upstream {host} failed: {reason}")]
    Protocol { host: String, reason: String },
    /// A pooled connection the upstream had closed while it was idle: an idempotent request may
    /// be sent again at once.
    #[error("Upstream {host} closed the connection before answering")]
    Closed { host: String },
    #[error("Upstream {host} did not answer within {secs} s")]
    Timeout { host: String, secs: u64 },
    #[error("Upstream {0} resolves to an address that is not allowed (loopback, private or link-local)")]
    AddressNotAllowed(String),
    /// The request body being sent failed on the application's side.
    #[error("Malformed request body: {0}")]
    RequestBody(String),
}

impl UpstreamError {
    /// The kind label of `upstream_errors_total`, for failures that are the upstream's.
    pub(crate) fn kind(&self) -> Option<&'static str> {
        match self {
            UpstreamError::Connect { .. } => Some("connect"),
            UpstreamError::Tls { .. } => Some("tls"),
            UpstreamError::Protocol { .. } => Some("protocol"),
            UpstreamError::Closed { .. } => Some("closed"),
            UpstreamError::Timeout { .. } => Some("timeout"),
            UpstreamError::AddressNotAllowed(_) | UpstreamError::RequestBody(_) => None,
        }
    }
}

/// How long an unused keep-alive connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle HTTP/1 connections kept per upstream origin.
const MAX_IDLE_PER_ORIGIN: usize = 1024;
/// Connections being opened to one origin at a time (the rest wait for one of those, or for a
/// pooled one).
const MAX_CONNECTING_PER_ORIGIN: usize = 32;

/// Where a request goes: `origin` is `scheme://authority` (the pool key), `path_and_query` the
/// origin-form target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) https: bool,
    pub(crate) origin: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) path_and_query: &'a str,
}

/// One request to send, less its body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) method: &'a Method,
    pub(crate) target: Target<'a>,
    pub(crate) headers: &'a HeaderMap,
    /// The answer's head must arrive by then.
    pub(crate) deadline: Instant,
    /// A protocol upgrade (websocket): sent on a new HTTP/1.1 connection, and a `101` answer's
    /// body is that connection ([`Body::Upgraded`]).
    pub(crate) upgrade: bool,
    /// The request asked for `TE: trailers`: sent on HTTP/2 (RFC 9113 8.2.2; gRPC servers look
    /// for it), where it is the one value allowed; on HTTP/1.1 TE is hop-by-hop.
    pub(crate) te_trailers: bool,
}

impl<'a> Target<'a> {
    /// Splits an absolute `http(s)://authority/path?query` URL.
    pub(crate) fn parse(url: &'a str) -> Option<Target<'a>> {
        let (https, rest) =
            if let Some(r) = url.strip_prefix("https://") { (true, r) } else { (false, url.strip_prefix("http://")?) };
        let scheme_len = url.len() - rest.len();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        Target::split(url, https, scheme_len, scheme_len + end)
    }

    /// The target of an absolute URL whose authority is known to start at `authority_start` and
    /// end at `path_start` (as when it was just written).
    pub(crate) fn split(url: &'a str, https: bool, authority_start: usize, path_start: usize) -> Option<Target<'a>> {
        let authority = url.get(authority_start..path_start)?;
        if authority.is_empty() || authority.contains(['/', '?', '#']) {
            return None;
        }
        Some(Target { https, origin: &url[..path_start], authority, path_and_query: &url[path_start..] })
    }
}

/// The upstream client with bearerd's policies.
pub(crate) struct Upstream {
    settings: ArcSwap<Settings>,
    /// `allow_private_ips` of the settings, read on every request without loading them.
    allow_private_ips: AtomicBool,
    h1: Arc<Pool>,
    h2: Mutex<HashMap<Arc<str>, http2::SendRequest<Body>>>,
    sweeping: AtomicBool,
    /// Answer header lines the caller sets itself: left out of raw lines.
    leave_out: fn(&[u8]) -> bool,
}

/// What the configuration decides: timeouts, trust, the address policy.
struct Settings {
    config: UpstreamConfig,
    tls: tokio_rustls::TlsConnector,
    /// ALPN `http/1.1` alone: for upgrades, which HTTP/2 does not carry.
    tls_h1: tokio_rustls::TlsConnector,
}

impl Settings {
    fn new(config: &UpstreamConfig) -> Result<Settings, String> {
        let mut tls = tls_config(config.ca_file.as_deref())?;
        let mut tls_h1 = tls.clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tls_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Settings {
            config: config.clone(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            tls_h1: tokio_rustls::TlsConnector::from(Arc::new(tls_h1)),
        })
    }
}

/// A new connection: HTTP/1.1, or an HTTP/2 sender when TLS negotiated h2.
enum Connected {
    H1(Box<UpstreamConn>),
    H2(http2::SendRequest<Body>),
}

/// False for loopback, private, link-local, unspecified, shared and multicast addresses.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Builds the rustls client configuration: webpki roots, system roots, and `ca_file`.
pub(crate) fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("upstream.ca_file {}: no PEM certificates in it", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Upstream {
    /// A client for `config`. `leave_out` names the answer header lines the caller sets itself:
    /// an upstream's own lines of those names are not passed on raw.
    pub(crate) fn new(config: &UpstreamConfig, leave_out: fn(&[u8]) -> bool) -> Result<Upstream, String> {
        Ok(Upstream {
            settings: ArcSwap::from_pointee(Settings::new(config)?),
            allow_private_ips: AtomicBool::new(config.allow_private_ips),
            h1: Arc::new(Pool::new(IDLE_TIMEOUT, MAX_IDLE_PER_ORIGIN, MAX_CONNECTING_PER_ORIGIN)),
            h2: Mutex::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
            leave_out,
        })
    }

    /// Takes new settings, if they differ: connections opened under the old ones are closed (at
    /// once when idle, when their answer ends otherwise). `Ok(false)` when nothing changed.
    pub(crate) fn reconfigure(&self, config: &UpstreamConfig) -> Result<bool, String> {
        if self.settings.load().config == *config {
            return Ok(false);
        }
        self.settings.store(Arc::new(Settings::new(config)?));
        self.allow_private_ips.store(config.allow_private_ips, Ordering::Relaxed);
        self.h1.clear();
        self.h2.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(true)
    }

    /// The whole-request timeout (`upstream.timeout`).
    pub(crate) fn timeout(&self) -> Duration {
        self.settings.load().config.timeout
    }

    /// Refuses an IP-literal host that the policy does not allow (names are checked when they
    /// are resolved).
    pub(crate) fn check_literal(&self, authority: &str) -> Result<(), UpstreamError> {
        if self.allow_private_ips.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (host, _) = split_port(authority);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) if !is_public(ip) => Err(UpstreamError::AddressNotAllowed(authority.to_string())),
            _ => Ok(()),
        }
    }

    /// Sends one request; the answer's head must arrive by the call's deadline, and is written
    /// into `head` (in place: it is large); the answer's body is returned. A request on a pooled
    /// connection that the upstream had closed fails with [`UpstreamError::Closed`] (the caller
    /// may send an idempotent one again).
    pub(crate) async fn send(
        &self,
        call: Call<'_>,
        body: Body,
        head: &mut ResponseHead,
    ) -> Result<Body, UpstreamError> {
        let target = call.target;
        head.informational.clear();
        if call.upgrade {
            return Box::pin(self.upgrade(call, head)).await;
        }
        if target.path_and_query.bytes().any(|b| b <= b' ' || b == 0x7f) || !target.path_and_query.starts_with('/') {
            // Rendering escapes every value: this is a bug, never something to send.
            return Err(UpstreamError::Protocol {
                host: target.authority.to_string(),
                reason: "refusing to send an invalid request target".into(),
            });
        }
        let timeout = || UpstreamError::Timeout { host: target.authority.to_string(), secs: self.timeout().as_secs() };
        // A pooled HTTP/1 connection keeps the deadline with its own timer; waiting for one,
        // connecting and HTTP/2 (all boxed: their futures are large, and the pooled path should
        // not carry their size) are bounded here.
        let deadline = call.deadline;
        let mut waited: Option<WaitTicket> = None;
        let conn = loop {
            if target.https
                && let Some(sender) = self.h2_sender(target.origin)
            {
                if let Some(ticket) = waited.take() {
                    ticket.pass_on();
                }
                let send = self.send_h2(sender, &call, body, true, head);
                return Box::pin(tokio::time::timeout_at(deadline, send)).await.unwrap_or_else(|_| Err(timeout()));
            }
            let checkout = self.h1.checkout(target.origin);
            // No longer waiting (a new wait takes a new ticket).
            drop(waited.take());
            match checkout {
                Checkout::Idle(c) => break c,
                Checkout::Connect(permit) => {
                    let connected =
                        Box::pin(tokio::time::timeout_at(deadline, self.connect(target, false, false))).await;
                    drop(permit);
                    match connected.map_err(|_| timeout())?? {
                        Connected::H1(c) => break c,
                        Connected::H2(sender) => {
                            let send = self.send_h2(sender, &call, body, false, head);
                            return Box::pin(tokio::time::timeout_at(deadline, send))
                                .await
                                .unwrap_or_else(|_| Err(timeout()));
                        }
                    }
                }
                Checkout::Wait(ticket) => {
                    Box::pin(tokio::time::timeout_at(deadline, ticket.ready())).await.map_err(|_| timeout())?;
                    waited = Some(ticket);
                }
            }
        };
        let sent = conn.send(&self.h1, &call, body, self.leave_out, head).await;
        self.h1_result(&call, sent)
    }

    /// An HTTP/1.1 exchange's outcome as the caller sees it.
    fn h1_result(&self, call: &Call<'_>, sent: Result<Body, (SendError, bool)>) -> Result<Body, UpstreamError> {
        let host = || call.target.authority.to_string();
        match sent {
            Ok(body) => Ok(body),
            Err((SendError::Closed, true)) => Err(UpstreamError::Closed { host: host() }),
            Err((SendError::Timeout, _)) => {
                Err(UpstreamError::Timeout { host: host(), secs: self.timeout().as_secs() })
            }
            Err((SendError::Body(e), _)) => Err(UpstreamError::RequestBody(e.to_string())),
            Err((e, _)) => Err(UpstreamError::Protocol { host: host(), reason: e.to_string() }),
        }
    }

    /// An upgrade request (websocket) on a new HTTP/1.1 connection (ALPN `http/1.1` alone; never
    /// a pooled one): a `101` answer's body is the connection, for the caller to relay; any other
    /// answer is an ordinary one.
    async fn upgrade(&self, call: Call<'_>, head: &mut ResponseHead) -> Result<Body, UpstreamError> {
        let host = || call.target.authority.to_string();
        let timeout = || UpstreamError::Timeout { host: host(), secs: self.timeout().as_secs() };
        let connected = tokio::time::timeout_at(call.deadline, self.connect(call.target, true, false)).await;
        let conn = match connected.map_err(|_| timeout())?? {
            Connected::H1(c) => c,
            Connected::H2(_) => {
                return Err(UpstreamError::Protocol { host: host(), reason: "HTTP/2 chosen for an upgrade".into() });
            }
        };
        let sent = conn.send(&self.h1, &call, Body::Empty, self.leave_out, head).await;
        self.h1_result(&call, sent)
    }

    /// A live HTTP/2 connection to `origin`, if there is one.
    fn h2_sender(&self, origin: &str) -> Option<http2::SendRequest<Body>> {
        let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(origin) {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                map.remove(origin);
                None
            }
            None => None,
        }
    }

    async fn send_h2(
        &self,
        mut sender: http2::SendRequest<Body>,
        call: &Call<'_>,
        body: Body,
        reused: bool,
        head: &mut ResponseHead,
    ) -> Result<Body, UpstreamError> {
        let target = call.target;
        let host = target.authority;
        let uri = Uri::builder()
            .scheme("https")
            .authority(target.authority)
            .path_and_query(target.path_and_query)
            .build()
            .map_err(|e| UpstreamError::Protocol { host: host.to_string(), reason: e.to_string() })?;
        let mut req = Request::new(body);
        *req.method_mut() = call.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = call.headers.clone();
        if call.te_trailers {
            req.headers_mut().insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        }
        let result = match sender.ready().await {
            Ok(()) => sender.send_request(req).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                *head = ResponseHead {
                    status: parts.status,
                    version: parts.version,
                    headers: parts.headers,
                    raw: None,
                    informational: Vec::new(),
                    reason: None,
                };
                Ok(Body::Hyper(body))
            }
            Err(e) => {
                let closed = e.is_canceled() || e.is_closed() || e.is_incomplete_message();
                if sender.is_closed() {
                    let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
                    if map.get(target.origin).is_some_and(|s| s.is_closed()) {
                        map.remove(target.origin);
                    }
                }
                if closed && reused {
                    Err(UpstreamError::Closed { host: host.to_string() })
                } else {
                    Err(UpstreamError::Protocol { host: host.to_string(), reason: chain(&e) })
                }
            }
        }
    }

    /// A `GET` of a URL of the operator's own configuration (a caller's JWKS): over verified TLS
    /// like any upstream call, but not subject to the address policy (which guards against hosts a
    /// request chooses), on a connection of its own that is never pooled. The answer's status,
    /// headers and body (at most `limit` bytes), by `deadline`.
    pub(crate) async fn fetch_trusted(
        &self,
        url: &str,
        limit: usize,
        deadline: Instant,
    ) -> Result<(http::StatusCode, HeaderMap, bytes::Bytes), UpstreamError> {
        use http_body_util::BodyExt as _;
        let target = Target::parse(url)
            .ok_or_else(|| UpstreamError::Protocol { host: url.to_string(), reason: "not an http(s) URL".into() })?;
        let host = || target.authority.to_string();
        let timeout = || UpstreamError::Timeout { host: host(), secs: self.timeout().as_secs() };
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("application/json"));
        let call =
            Call { method: &Method::GET, target, headers: &headers, deadline, upgrade: false, te_trailers: false };
        let exchange = async {
            let conn = match self.connect(target, true, true).await? {
                Connected::H1(c) => c,
                Connected::H2(_) => return Err(UpstreamError::Protocol { host: host(), reason: "h2 chosen".into() }),
            };
            let mut head = ResponseHead::new(http::StatusCode::OK);
            let sent = conn.send(&self.h1, &call, Body::Empty, self.leave_out, &mut head).await;
            let body = self.h1_result(&call, sent)?;
            let bytes = http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| UpstreamError::Protocol { host: host(), reason: format!("reading the answer: {e}") })?;
            let (status, headers) = head.into_map();
            Ok((status, headers, bytes.to_bytes()))
        };
        tokio::time::timeout_at(deadline, exchange).await.unwrap_or_else(|_| Err(timeout()))
    }

    /// Resolves (with the address policy, unless `trusted`), connects (with the connect timeout)
    /// and, for https, runs the TLS handshake.
    /// `h1_only`: offer ALPN `http/1.1` alone (an upgrade). `trusted`: a URL of the operator's
    /// own configuration ([`Upstream::fetch_trusted`]): no address policy, never pooled.
    async fn connect(&self, target: Target<'_>, h1_only: bool, trusted: bool) -> Result<Connected, UpstreamError> {
        self.start_sweeping();
        let settings = self.settings.load_full();
        let generation = self.h1.generation();
        let host = || target.authority.to_string();
        let (name, port) = split_port(target.authority);
        let port = match port {
            Some(p) => {
                p.parse::<u16>().map_err(|_| UpstreamError::Connect { host: host(), reason: "bad port".into() })?
            }
            None if target.https => 443,
            None => 80,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let tcp = self.connect_tcp(name, port, target.authority, !trusted).await?;
        let _ = tcp.set_nodelay(true);
        // A trusted connection is never pooled: no request can check it out under its key, and
        // its generation is never the pool's.
        let (key, generation): (Arc<str>, u64) = if trusted {
            (format!("trusted {}", target.origin).into(), u64::MAX)
        } else {
            (target.origin.into(), generation)
        };
        let _ = socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
        if !target.https {
            return Ok(Connected::H1(UpstreamConn::new(Io::Plain(tcp), key, generation)));
        }
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| UpstreamError::Tls { host: host(), reason: e.to_string() })?;
        let connector = if h1_only { &settings.tls_h1 } else { &settings.tls };
        let tls = connector.connect(server_name, tcp).await.map_err(|e| {
            match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(t) => UpstreamError::Tls { host: host(), reason: t.to_string() },
                None => UpstreamError::Connect { host: host(), reason: e.to_string() },
            }
        })?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(Connected::H1(UpstreamConn::new(Io::Tls(Box::new(tls)), key, generation)));
        }
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| UpstreamError::Protocol { host: host(), reason: chain(&e) })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.h2.lock().unwrap_or_else(|p| p.into_inner()).insert(target.origin.into(), sender.clone());
        Ok(Connected::H2(sender))
    }

    /// A TCP connection to `name:port` (a host name or an IP literal): resolved with the
    /// connect timeout, each address checked against the address policy (when `policy`),
    /// connected with the connect timeout. `shown` names the upstream in errors. Also the blind
    /// tunnel's connect.
    pub(crate) async fn connect_tcp(
        &self,
        name: &str,
        port: u16,
        shown: &str,
        policy: bool,
    ) -> Result<TcpStream, UpstreamError> {
        let config = &self.settings.load().config;
        let host = || shown.to_string();
        let connect_error = |e: io::Error| UpstreamError::Connect { host: host(), reason: e.to_string() };
        let connect_timeout = || UpstreamError::Timeout { host: host(), secs: config.connect_timeout.as_secs() };
        let all: Vec<SocketAddr> = match name.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(config.connect_timeout, tokio::net::lookup_host((name, port)))
                .await
                .map_err(|_| connect_timeout())?
                .map_err(connect_error)?
                .collect(),
        };
        let allowed = all.iter().copied().filter(|a| !policy || config.allow_private_ips || is_public(a.ip()));
        let mut last = None;
        for addr in allowed {
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = Some(connect_error(e)),
                Err(_) => last = Some(connect_timeout()),
            }
        }
        Err(match last {
            Some(e) => e,
            None if !all.is_empty() => UpstreamError::AddressNotAllowed(host()),
            None => UpstreamError::Connect { host: host(), reason: "the name has no address".into() },
        })
    }

    /// Closes idle connections past their time, every half idle timeout, for as long as this
    /// client exists.
    fn start_sweeping(&self) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(&self.h1);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TIMEOUT / 2).await;
                match pool.upgrade() {
                    Some(p) => p.sweep(),
                    None => return,
                }
            }
        });
    }
}

/// The error and its causes, joined.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_policy() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }
}
