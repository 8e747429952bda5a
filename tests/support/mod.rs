//! In-process test support: a test CA, a mock API (TLS or plain) that records what it received,
//! FDK app fixtures written to a temporary folder, and bearerd started on `127.0.0.1:0`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub use bearerd::server::Running;

pub mod browser;
pub mod jwt;
pub mod lambda;
pub mod provider;
pub mod redis;
pub mod tunnel;

#[allow(unused_imports)]
pub use tunnel::*;

/// A CA generated for one test, and a server certificate it signed for localhost/127.0.0.1.
pub struct TestCa {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
    /// The server certificate and its key, PEM (for a `listen_tls` of bearerd's).
    pub leaf_pem: String,
    pub leaf_key_pem: String,
    ca_params: rcgen::CertificateParams,
    ca_key: Arc<rcgen::KeyPair>,
}

pub fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "bearerd test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TestCa {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
        leaf_pem: format!("{}{}", leaf.pem(), ca_cert.pem()),
        leaf_key_pem: leaf_key.serialize_pem(),
        ca_params,
        ca_key: Arc::new(ca_key),
    }
}

impl TestCa {
    /// A certificate and key (PEM) this CA signs for `dns` names and `uris` (a client
    /// certificate's SANs, or another server's).
    pub fn issue(&self, dns: &[&str], uris: &[&str]) -> (String, String) {
        use rcgen::{CertificateParams, Issuer, KeyPair, SanType};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        for u in uris {
            params.subject_alt_names.push(SanType::URI((*u).try_into().unwrap()));
        }
        let issuer = Issuer::from_params(&self.ca_params, &*self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// What the mock API received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// `:authority` on HTTP/2, `Host` on HTTP/1.1.
    pub authority: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The mock API's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply { status: 200, headers: vec![], body: body.to_string(), delay: Duration::ZERO }
    }
    pub fn status(status: u16) -> Reply {
        Reply { status, ..Reply::ok("") }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

pub type Responder = Arc<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

/// A mock upstream API on 127.0.0.1:0.
pub struct MockApi {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
}

impl MockApi {
    /// Answers 200 `{"ok":true}` to everything.
    pub async fn tls(ca: &TestCa) -> MockApi {
        Self::start(Some(ca.server.clone()), Arc::new(|_, _| Reply::ok(r#"{"ok":true}"#))).await
    }

    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>, responder: Responder) -> MockApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let rec = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (rec, responder, count, tls) = (rec.clone(), responder.clone(), count.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (rec, responder, count) = (rec.clone(), responder.clone(), count.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let authority = parts.uri.authority().map(|a| a.to_string()).unwrap_or_else(|| {
                                parts.headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("").to_string()
                            });
                            let r = Recorded {
                                method: parts.method.to_string(),
                                authority,
                                path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                                headers: parts.headers,
                                body,
                                version: parts.version,
                            };
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            let reply = responder(&r, n);
                            rec.lock().unwrap().push(r);
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
                            *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            for (k, v) in reply.headers {
                                resp.headers_mut().append(
                                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    http::HeaderValue::from_str(&v).unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(cfg) => {
                            let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await else { return };
                            let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        MockApi { addr, received }
    }

    /// `localhost:<port>`, for templates.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// A unique temporary folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "bearerd-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Writes an FDK app folder: a 3.x manifest declaring every template, requests.json, and
    /// oauth_config.json when given.
    pub fn app(&self, name: &str, requests: &Value, oauth: Option<&Value>) {
        let declared: serde_json::Map<String, Value> =
            requests.as_object().unwrap().keys().map(|k| (k.clone(), json!({}))).collect();
        let manifest = json!({"platform-version": "3.0", "modules": {"common": {"requests": declared}}});
        self.write(&format!("apps/{name}/manifest.json"), &manifest.to_string());
        self.write(&format!("apps/{name}/config/requests.json"), &serde_json::to_string_pretty(requests).unwrap());
        if let Some(o) = oauth {
            self.write(&format!("apps/{name}/config/oauth_config.json"), &o.to_string());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// bearerd.yaml for a test, built from types rather than glued YAML: ports 0, the token file
/// `state/tokens.json` in the test's folder (or a Redis), loopback upstreams allowed with a 5 s
/// timeout, the test CA trusted when given. It is written as JSON, which YAML reads as it is.
#[derive(Debug, Clone, Default)]
pub struct Config {
    ca_pem: Option<String>,
    apps: Vec<App>,
    watch: Option<bool>,
    redis_port: Option<u16>,
    timeout: Option<&'static str>,
    listen: Option<&'static str>,
    extra: Vec<(&'static str, Value)>,
}

/// One entry of `apps:`, for the app folder `apps/<name>` (see [`TempDir::app`]).
#[derive(Debug, Clone)]
pub struct App {
    name: String,
    iparams: serde_json::Map<String, Value>,
    oauth_iparams: serde_json::Map<String, Value>,
    endpoint_urls: serde_json::Map<String, Value>,
    allow_hosts: Vec<String>,
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }

    /// Trust `ca` for upstream TLS.
    pub fn ca(mut self, ca: &TestCa) -> Config {
        self.ca_pem = Some(ca.ca_pem.clone());
        self
    }

    pub fn app(mut self, app: App) -> Config {
        self.apps.push(app);
        self
    }

    /// `reload.watch`.
    pub fn watch(mut self, on: bool) -> Config {
        self.watch = Some(on);
        self
    }

    /// The data listener's address (`127.0.0.1:0` unless set).
    pub fn listen(mut self, addr: &'static str) -> Config {
        self.listen = Some(addr);
        self
    }

    /// `upstream.timeout` (5s unless set).
    pub fn upstream_timeout(mut self, timeout: &'static str) -> Config {
        self.timeout = Some(timeout);
        self
    }

    /// Sets any other field, named by its dotted path (`"admin.max_connections"`).
    pub fn set(mut self, path: &'static str, value: Value) -> Config {
        self.extra.push((path, value));
        self
    }

    /// Tokens in the Redis at `port` instead of the token file.
    pub fn redis(mut self, port: u16) -> Config {
        self.redis_port = Some(port);
        self
    }

    /// Writes `bearerd.yaml` (and the CA) into `dir`; its path.
    pub fn write(&self, dir: &TempDir) -> PathBuf {
        let mut upstream = json!({"allow_private_ips": true, "timeout": self.timeout.unwrap_or("5s")});
        if let Some(pem) = &self.ca_pem {
            dir.write("ca.pem", pem);
            upstream["ca_file"] = json!("ca.pem");
        }
        let store = match self.redis_port {
            Some(port) => json!({"redis": format!("redis://127.0.0.1:{port}/0")}),
            None => json!({"file": "state/tokens.json"}),
        };
        let apps: Vec<Value> = self.apps.iter().map(App::to_json).collect();
        let mut config = json!({
            "listen": self.listen.unwrap_or("127.0.0.1:0"),
            "admin": {"listen": "127.0.0.1:0", "public_url": "http://bearerd.test:10001"},
            "store": store,
            "upstream": upstream,
            "apps": apps,
        });
        if let Some(watch) = self.watch {
            config["reload"] = json!({"watch": watch});
        }
        // Stopped at once unless a test sets the drain delay.
        config["shutdown"] = json!({"drain_delay": "0s"});
        for (path, value) in &self.extra {
            let mut at = &mut config;
            for key in path.split('.') {
                if at.get(key).is_none() {
                    at[key] = json!({});
                }
                at = &mut at[key];
            }
            *at = value.clone();
        }
        dir.write("bearerd.yaml", &serde_json::to_string_pretty(&config).unwrap())
    }
}

impl App {
    pub fn new(name: &str) -> App {
        App {
            name: name.into(),
            iparams: Default::default(),
            oauth_iparams: Default::default(),
            endpoint_urls: Default::default(),
            allow_hosts: Vec::new(),
        }
    }

    pub fn iparam(mut self, key: &str, value: &str) -> App {
        self.iparams.insert(key.into(), json!(value));
        self
    }

    /// An oauth_iparam for every integration.
    pub fn oauth_iparam(mut self, key: &str, value: &str) -> App {
        self.oauth_iparams.insert(key.into(), json!(value));
        self
    }

    /// An oauth_iparam for one integration.
    pub fn oauth_iparam_for(mut self, integration: &str, key: &str, value: &str) -> App {
        let entry = self.oauth_iparams.entry(integration.to_string()).or_insert_with(|| json!({}));
        entry[key] = json!(value);
        self
    }

    /// A value for `current_host.endpoint_urls.<key>`.
    pub fn endpoint_url(mut self, key: &str, url: &str) -> App {
        self.endpoint_urls.insert(key.into(), json!(url));
        self
    }

    pub fn allow_host(mut self, pattern: &str) -> App {
        self.allow_hosts.push(pattern.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut app = json!({"name": self.name, "path": format!("apps/{}", self.name)});
        for (key, map) in
            [("iparams", &self.iparams), ("oauth_iparams", &self.oauth_iparams), ("endpoint_urls", &self.endpoint_urls)]
        {
            if !map.is_empty() {
                app[key] = Value::Object(map.clone());
            }
        }
        if !self.allow_hosts.is_empty() {
            app["allow_hosts"] = json!(self.allow_hosts);
        }
        app
    }
}

/// The usual test configuration: the app `name`, the test CA when given.
pub fn config(dir: &TempDir, ca: Option<&TestCa>, name: &str) -> PathBuf {
    let mut c = Config::new().app(App::new(name));
    if let Some(ca) = ca {
        c = c.ca(ca);
    }
    c.write(dir)
}

/// An OAuth config with one integration named `api` pointing at `token_host`.
pub fn oauth_one(token_host: &str, agent: bool) -> Value {
    json!({"integrations": {"api": {
        "display_name": "API",
        "client_id": "cid",
        "client_secret": "csecret",
        "authorize_url": format!("https://{token_host}/authorize"),
        "token_url": format!("https://{token_host}/token"),
        "options": {"scope": "read"},
        "token_type": if agent { "agent" } else { "account" },
    }}})
}

/// The app `demo` most token tests use: template `get` (GET /data on `api_host`, with the access
/// token) and integration `api` whose token endpoint is at `token_host`.
pub fn token_app(dir: &TempDir, api_host: &str, token_host: &str) {
    dir.app(
        "demo",
        &json!({"get": {"schema": {"method": "GET", "host": api_host, "path": "/data",
            "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}}),
        Some(&oauth_one(token_host, false)),
    );
}

/// One app `demo` whose templates (`{name: (method, path)}`) go to a TLS mock API, with the
/// upstream timeout given; no integration.
pub async fn api_app(templates: &[(&str, &str, &str)], timeout: &'static str) -> (TempDir, MockApi, Bearerd) {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    let mut requests = serde_json::Map::new();
    for (name, method, path) in templates {
        requests.insert(name.to_string(), json!({"schema": {"method": method, "host": api.host(), "path": path}}));
    }
    dir.app("demo", &requests.into(), None);
    let cfg = Config::new().ca(&ca).app(App::new("demo")).upstream_timeout(timeout).write(&dir);
    let b = start(&cfg).await;
    (dir, api, b)
}

/// A test CA, a strict mock provider, a mock API that accepts the provider's access tokens, and
/// a folder holding [`token_app`] against them.
pub async fn provider_world() -> (TestCa, provider::Provider, MockApi, TempDir) {
    let ca = test_ca();
    let provider = provider::Provider::start(&ca).await;
    let api = MockApi::start(Some(ca.server.clone()), provider.api_responder()).await;
    let dir = TempDir::new();
    token_app(&dir, &api.host(), &provider.host());
    (ca, provider, api, dir)
}

/// bearerd running in-process.
pub struct Bearerd {
    pub running: Option<Running>,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    /// The TLS data listener (`listen_tls`), when configured.
    pub tls: Option<SocketAddr>,
}

pub async fn start(config: &Path) -> Bearerd {
    let mut cfg = bearerd::config::load(config).unwrap_or_else(|e| panic!("config does not load:\n{e}"));
    // Tests stop bearerd at once unless they test the drain delay itself.
    if !std::fs::read_to_string(config).unwrap_or_default().contains("drain_delay") {
        cfg.shutdown.drain_delay = Duration::ZERO;
    }
    let running = bearerd::server::start(cfg).await.unwrap();
    Bearerd { data: running.data_addr, admin: running.admin_addr, tls: running.tls_addr, running: Some(running) }
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request on a new connection to `addr`. The URI is written as given, so an absolute
/// URI gives an absolute-form request (what an HTTP_PROXY client sends).
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp { status: parts.status.as_u16(), headers: parts.headers, body }
}

pub fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

impl Bearerd {
    pub async fn invoke(&self, template: &str, body: Value) -> Resp {
        self.invoke_with(template, body, &[]).await
    }

    pub async fn invoke_with(&self, template: &str, body: Value, headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("host", "bearerd"), ("content-type", "application/json")];
        h.extend_from_slice(headers);
        send(self.data, request("POST", &format!("/invoke/{template}"), &h, &body.to_string())).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Resp {
        send(self.admin, request(method, path, &[("host", "admin")], body)).await
    }

    pub async fn put_token(&self, app: &str, integration: &str, query: &str, token: Value) -> Resp {
        let r = self.admin("PUT", &format!("/admin/tokens/{app}/{integration}{query}"), &token.to_string()).await;
        assert_eq!(r.status, 200, "token put failed: {}", r.text());
        r
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Sends `n` concurrent `POST /invoke/<template>` requests with an empty JSON body, spread in
/// turn over `addrs`, each on its own connection; the answers in order.
pub async fn invoke_concurrently(addrs: &[SocketAddr], template: &str, n: usize) -> Vec<Resp> {
    let uri = format!("/invoke/{template}");
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (addr, uri) = (addrs[i % addrs.len()], uri.clone());
            tokio::spawn(async move { send(addr, request("POST", &uri, &[("host", "b")], "{}")).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Writes raw bytes on a new connection and reads until the server closes it (or `wait`).
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `check` holds, looking again every 10 ms: for state that another task or process
/// changes (a replica's copy of a token, a reloaded template, a listener going away). Panics
/// naming `what` after `within`; else how long it took.
pub async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = tokio::time::Instant::now();
    while !check().await {
        assert!(t0.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

/// `bearerd run` as a child process whose log (stderr) is collected, for the tests that assert
/// what reaches the log.
pub struct Logged {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub log: String,
    pub data: SocketAddr,
    pub admin: SocketAddr,
}

impl Logged {
    /// Starts bearerd with `RUST_LOG=rust_log` and waits for its listening addresses.
    pub fn start(cfg: &Path, rust_log: &str) -> Logged {
        Logged::run(&["--config".as_ref(), cfg.as_os_str()], rust_log)
    }

    /// Starts `bearerd run ARGS` with `RUST_LOG=rust_log` and waits for its listening addresses.
    pub fn run(args: &[&std::ffi::OsStr], rust_log: &str) -> Logged {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bearerd"));
        command.arg("run").args(args);
        Logged::spawn(command, rust_log)
    }

    /// Starts `command` (bearerd, as the caller prepared it) with `RUST_LOG=rust_log` and waits
    /// for its listening addresses.
    pub fn spawn(mut command: std::process::Command, rust_log: &str) -> Logged {
        let mut child = Logged::child(&mut command, rust_log);
        let (lines, mut log) = Logged::collect(&mut child);
        let addr = |log: &str, key: &str| -> Option<SocketAddr> {
            log.split(key).nth(1)?.split_whitespace().next()?.parse().ok()
        };
        let (data, admin) = loop {
            log.push_str(&lines.recv_timeout(Duration::from_secs(10)).expect("bearerd did not start"));
            if let (Some(d), Some(a)) = (addr(&log, "data_addr="), addr(&log, "admin_addr=")) {
                break (d, a);
            }
        };
        Logged { child, lines, log, data, admin }
    }

    /// Runs `command` (bearerd) to its end, for one that is expected not to start: its status
    /// and log.
    pub fn failing(mut command: std::process::Command, rust_log: &str) -> (std::process::ExitStatus, String) {
        let mut child = Logged::child(&mut command, rust_log);
        let (lines, mut log) = Logged::collect(&mut child);
        let status = child.wait().unwrap();
        while let Ok(chunk) = lines.recv_timeout(Duration::from_millis(500)) {
            log.push_str(&chunk);
        }
        (status, log)
    }

    fn child(command: &mut std::process::Command, rust_log: &str) -> std::process::Child {
        command.env("RUST_LOG", rust_log).stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
        command.spawn().unwrap()
    }

    fn collect(child: &mut std::process::Child) -> (std::sync::mpsc::Receiver<String>, String) {
        use std::io::Read as _;
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                    break;
                }
            }
        });
        (lines, String::new())
    }

    /// Sends a signal (`-TERM`, `-HUP`).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill").arg(sig).arg(self.child.id().to_string()).status();
        assert!(status.unwrap().success());
    }

    /// Waits for bearerd to exit: its status and whole log.
    pub fn wait(self) -> (std::process::ExitStatus, String) {
        let (status, _, log) = self.wait_timed();
        (status, log)
    }

    /// [`Logged::wait`], with the Unix time in milliseconds at which the exit was seen.
    pub fn wait_timed(mut self) -> (std::process::ExitStatus, u64, String) {
        let status = self.child.wait().unwrap();
        let at = lambda::now_ms();
        while let Ok(chunk) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.log.push_str(&chunk);
        }
        (status, at, self.log)
    }

    /// Stops bearerd (SIGTERM) and returns its whole log.
    pub fn stop(self) -> String {
        self.signal("-TERM");
        self.wait().1
    }
}

pub type Sample = (String, std::collections::HashMap<String, String>, f64);

/// A strict parser of the Prometheus text format (0.0.4): HELP and TYPE lines, samples with
/// escaped label values, every sample's family declared by a TYPE line first.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut typed = std::collections::HashMap::new();
    let mut out = Vec::new();
    let name_ok = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    for (i, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(n), _) if name_ok(n) => {}
                (Some("TYPE"), Some(n), Some(t)) if name_ok(n) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err("unknown type"));
                    }
                    typed.insert(n.to_string(), t.to_string());
                }
                _ => return Err(err("malformed comment")),
            }
            continue;
        }
        let (head, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("bad value"))?,
        };
        let (name, labels) = match head.split_once('{') {
            None => (head, std::collections::HashMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(|| err("unclosed labels"))?;
                let mut labels = std::collections::HashMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    if !name_ok(&key) || chars.next() != Some('"') {
                        return Err(err("bad label"));
                    }
                    let mut v = String::new();
                    loop {
                        match chars.next().ok_or_else(|| err("unterminated label value"))? {
                            '\\' => match chars.next() {
                                Some('n') => v.push('\n'),
                                Some(c @ ('\\' | '"')) => v.push(c),
                                _ => return Err(err("bad escape")),
                            },
                            '"' => break,
                            c => v.push(c),
                        }
                    }
                    labels.insert(key, v);
                    match chars.next() {
                        None => break,
                        Some(',') => {}
                        _ => return Err(err("expected , between labels")),
                    }
                }
                (n, labels)
            }
        };
        if !name_ok(name) {
            return Err(err("bad metric name"));
        }
        let family =
            ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|f| typed.contains_key(*f));
        if !typed.contains_key(name) && family.is_none() {
            return Err(err("sample without a TYPE line"));
        }
        out.push((name.to_string(), labels, value));
    }
    Ok(out)
}

/// Parses the exposition with the Prometheus project's own Python parser (`prometheus_client`,
/// from Debian's python3-prometheus-client, which scripts/test.sh installs): Ok, or its error.
pub fn parse_with_prometheus_client(text: &str) -> Result<usize, String> {
    use std::io::Write as _;
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
                  print(sum(len(f.samples) for f in p(sys.stdin.read())))";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{python}: {e}"))?;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("{e}"))
}
