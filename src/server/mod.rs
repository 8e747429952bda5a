//! The process: it builds the shared state, the control plane and the reloader, binds the two
//! listeners, and runs the per-connection watchdog and graceful shutdown. The data listener
//! speaks HTTP/1.1 itself ([`h1`], with [`crate::http::server`]); the admin listener and HTTP/2
//! clients are served by hyper.

pub(crate) mod h1;
pub mod lambda;
mod tunnel;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::config::{Config, StoreConfig};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use crate::state::State;
use crate::token::{Change, FileStore, TokenStore, Tokens};
use crate::upstream::{Body, Upstream};

/// The accept queue of each listener (capped by the kernel's `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;
/// Request headers larger than this, or more than [`crate::http::MAX_HEADERS`] of them, are
/// answered 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A connection on which no request begins for this long (a request head arriving too slowly,
/// or an idle keep-alive connection) is closed, within half as long again.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Compile(String),
    #[error(transparent)]
    Store(#[from] crate::token::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A running bearerd.
pub struct Running {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The TLS data listener's address (`listen_tls`), when one is configured.
    pub tls_addr: Option<SocketAddr>,
    /// The shared state (public for benches and tests that store a token before they run).
    pub state: Arc<State>,
    /// The control plane (public for tests that watch readiness).
    pub admin: Arc<Admin>,
    /// Reloads the configuration (SIGHUP).
    pub reloader: Arc<Reloader>,
    stop_data: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    /// Set by [`Running::shutdown_within`]: the instant by which connections must be done,
    /// in place of `shutdown.grace`.
    stop_by: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// The data listeners (plain, and TLS when configured).
    data_tasks: Vec<JoinHandle<()>>,
    /// The admin listener and the file watcher: stopped after the data listener.
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The shutdown sequence of SPEC 4, with the `shutdown` settings in force: `/readyz`
    /// answers 503 at once and the data listener keeps serving for `drain_delay` (the
    /// application beside bearerd is draining too and still makes its last calls); then it
    /// stops accepting and in-flight requests get `grace` to finish; the admin listener answers
    /// until the end.
    pub async fn shutdown(self) {
        let settings = self.state.snapshot.load().config.shutdown;
        tracing::info!(
            drain_delay_ms = settings.drain_delay.as_millis() as u64,
            grace_ms = settings.grace.as_millis() as u64,
            "shutting down: not ready; serving until the drain delay is over"
        );
        self.stop(settings.drain_delay).await;
    }

    /// The shutdown of a Lambda `SHUTDOWN` event (SPEC 7): no drain delay (the function is not
    /// called any more), and in-flight requests get what is `left` of the deadline in place of
    /// `shutdown.grace`, the admin listener's included.
    pub async fn shutdown_within(self, left: Duration) {
        *self.stop_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now() + left);
        self.stop(Duration::ZERO).await;
    }

    async fn stop(self, drain_delay: Duration) {
        self.admin.set_draining();
        tokio::time::sleep(drain_delay).await;
        tracing::info!("no new connections; finishing in-flight requests");
        let _ = self.stop_data.send(true);
        for t in self.data_tasks {
            let _ = t.await;
        }
        let _ = self.stop_admin.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Opens the token store, compiles the configuration, binds both listeners and serves.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let sealer = config.store_key.as_ref().map(|k| Arc::new(crate::token::seal::Sealer::new(k)));
    let store: Arc<dyn TokenStore> = match &config.store {
        StoreConfig::File(path) => Arc::new(FileStore::open(path, sealer)?),
        StoreConfig::Redis { url, prefix } => Arc::new(
            crate::token::redis_store::RedisStore::connect(
                url.expose(),
                prefix,
                crate::token::refresh::LEASE_TTL,
                sealer,
                &metrics,
            )
            .await?,
        ),
    };
    let changes = store.changes();
    let tokens = Arc::new(Tokens::open(store).await?);
    let upstream =
        Arc::new(Upstream::new(&config.upstream, crate::snapshot::is_bearerd_header).map_err(StartError::Compile)?);
    let keys = Arc::new(crate::caller::Keys::new(upstream.clone(), metrics.clone()));
    let data_addr = config.listen;
    let tls_addr = config.listen_tls.as_ref().map(|t| t.address);
    let admin_addr = config.admin.listen;
    let (config_max_connections, admin_max_connections) = (config.max_connections, config.admin.max_connections);
    let watch_files = config.reload_watch && config.source.is_some();
    let files = crate::reload::inputs(&config);
    let intercept = open_intercept(&config, &metrics)?;
    let snapshot = Snapshot::compile(config, 1, &metrics, &keys);
    metrics.config_generation.set(1);
    let state = Arc::new(State::new(snapshot, tokens, upstream, metrics, intercept, keys));
    let reloader = Arc::new(Reloader::new(state.clone(), &files));
    let admin = Arc::new(Admin::new(state.clone(), reloader.clone()));
    let bind = |addr| listen(addr).map_err(|source| StartError::Bind { addr, source });
    let data = bind(data_addr)?;
    let control = bind(admin_addr)?;
    let tls = tls_addr.map(bind).transpose()?;
    let data_addr = data.local_addr().map_err(|source| StartError::Bind { addr: data_addr, source })?;
    let admin_addr = control.local_addr().map_err(|source| StartError::Bind { addr: admin_addr, source })?;
    let tls_addr = match (&tls, tls_addr) {
        (Some(l), Some(addr)) => Some(l.local_addr().map_err(|source| StartError::Bind { addr, source })?),
        _ => None,
    };
    state.set_data_port(data_addr.port());
    if let Some(a) = tls_addr {
        state.set_tls_port(a.port());
    }
    if let Some(mut changes) = changes {
        // Another replica changed a token: bring this one's copy up to date.
        let tokens = state.tokens.clone();
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                // A reload of everything follows a reconnect, when the store's own connection
                // may not be back yet: it is tried again for a few seconds.
                let tries = if matches!(change, Change::Key(_)) { 1 } else { 20 };
                for attempt in 1..=tries {
                    match tokens.sync(change.clone()).await {
                        Ok(()) => break,
                        Err(e) if attempt == tries => {
                            tracing::warn!(error = %e, "cannot read changed tokens from the store");
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                    }
                }
            }
        });
    }
    let (stop_data, data_stop_rx) = watch::channel(false);
    let (stop_admin, admin_stop_rx) = watch::channel(false);
    let s = state.clone();
    let handler = move |req, proxy_auth| crate::proxy::handle(s.clone(), req, proxy_auth);
    let s = state.clone();
    let data_state = state.clone();
    let data_cap = Cap::new("data", config_max_connections.unwrap_or_else(default_max_connections), &state.metrics);
    let admin_cap = Cap::new("admin", admin_max_connections, &state.metrics);
    let stop_by = Arc::new(Mutex::new(None::<tokio::time::Instant>));
    let grace = {
        let (s, stop_by) = (state.clone(), stop_by.clone());
        move || match *stop_by.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(by) => by.saturating_duration_since(tokio::time::Instant::now()),
            None => s.snapshot.load().config.shutdown.grace,
        }
    };
    let mut data_tasks = Vec::new();
    if let Some(tls) = tls {
        let cap = Cap::new("data_tls", config_max_connections.unwrap_or_else(default_max_connections), &state.metrics);
        let s = state.clone();
        let stop = data_stop_rx.clone();
        data_tasks.push(tokio::spawn(accept(tls, cap, stop, grace.clone(), move |stream, stop| {
            tls_connection(s.clone(), stream, stop)
        })));
    }
    data_tasks.push(tokio::spawn(accept(data, data_cap, data_stop_rx, grace.clone(), move |stream, stop| {
        // A client that stops reading holds an answer no longer than the upstream timeout.
        let write_timeout = s.snapshot.load().config.upstream.timeout;
        let listener = h1::Listener { state: data_state.clone(), cert: None };
        h1::serve(crate::http::io::split_tcp(stream), handler.clone(), stop, write_timeout, Some(listener))
    })));
    let a = admin.clone();
    let handler = move |req| {
        let answer = crate::admin::handle(a.clone(), req);
        async move { Ok::<_, Infallible>(answer.await) }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_HEADER_BYTES);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEADER_BYTES as u32);
    let admin_task = tokio::spawn(accept(control, admin_cap, admin_stop_rx.clone(), grace, move |stream, stop| {
        let activity = Arc::new(Activity::default());
        let service = counted(activity.clone(), handler.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        drive(conn, activity, stop)
    }));
    let mut tasks = vec![admin_task];
    if watch_files {
        tasks.extend(crate::reload::spawn_watcher(reloader.clone(), admin_stop_rx));
    }
    admin.set_ready();
    let tls_shown = tls_addr.map(|a| a.to_string()).unwrap_or_else(|| "none".into());
    let callers = state.snapshot.load().config.callers.len();
    tracing::info!(%data_addr, tls_addr = %tls_shown, %admin_addr, callers, apps = %crate::admin::summary(&state), "bearerd is serving");
    Ok(Running {
        data_addr,
        admin_addr,
        tls_addr,
        state,
        admin,
        reloader,
        stop_data,
        stop_admin,
        stop_by,
        data_tasks,
        tasks,
    })
}

/// One connection of the TLS data listener (SPEC 2.2 `listen_tls`): the handshake with the
/// certificate of the configuration in force (a reload re-reads it), within the header timeout;
/// the client certificate's names when one was verified; then what the plain listener serves
/// (HTTP/1.1 with `CONNECT` and interception inside, or HTTP/2 by ALPN).
async fn tls_connection(state: Arc<State>, stream: TcpStream, stop: oneshot::Receiver<()>) {
    let Some(server) = state.snapshot.load().config.listen_tls.as_ref().map(|t| t.server.0.clone()) else { return };
    let accept = tokio_rustls::TlsAcceptor::from(server).accept(stream);
    let tls = match tokio::time::timeout(HEADER_READ_TIMEOUT, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake on the data listener failed");
            return;
        }
        Err(_) => return,
    };
    let session = tls.get_ref().1;
    let cert = session.peer_certificates().and_then(crate::caller::ClientCert::of).map(Arc::new);
    let h2 = session.alpn_protocol() == Some(b"h2");
    let write_timeout = state.snapshot.load().config.upstream.timeout;
    let listener = h1::Listener { state: state.clone(), cert: cert.clone() };
    let handler = move |mut req: Request<Body>, proxy_auth| {
        if let Some(c) = &cert {
            req.extensions_mut().insert(c.clone());
        }
        crate::proxy::handle(state.clone(), req, proxy_auth)
    };
    if h2 {
        Box::pin(h1::serve_h2(tls, handler, stop)).await
    } else {
        h1::serve(crate::http::io::split_shared(tls), handler, stop, write_timeout, Some(listener)).await
    }
}

/// The intercept CA and the certificates it signs (SPEC 2.1). A CA the configuration names
/// must open (or bearerd does not start); one bearerd would generate but cannot (a read-only
/// folder) leaves interception off, with a warning: plain HTTP works without it.
fn open_intercept(
    config: &Config,
    metrics: &Metrics,
) -> Result<Result<Arc<crate::intercept::Certificates>, String>, StartError> {
    use crate::intercept::{Authority, CA_WARN, Certificates};
    let ca = match Authority::open(&config.intercept) {
        Ok(ca) => ca,
        Err(e) if config.intercept.generate => {
            tracing::warn!(error = %e, "HTTPS interception is off: the intercept CA cannot be created");
            return Ok(Err(e.to_string()));
        }
        Err(e) => return Err(StartError::Compile(e.to_string())),
    };
    let left = ca.remaining();
    if left < CA_WARN {
        tracing::warn!(
            ca = %config.intercept.ca_cert.display(),
            days_left = left.as_secs() / 86_400,
            "the intercept CA expires soon: replace it (clients must then trust the new one)"
        );
    }
    Ok(Ok(Arc::new(Certificates::new(Arc::new(ca), metrics.certificates_issued.clone()))))
}

/// Binds `addr` with an accept queue of [`LISTEN_BACKLOG`] (the default 128 overflows when
/// clients open connections in bursts, and each overflow costs a client a 1 s SYN retry).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// File descriptors kept out of the data listener's default cap: the admin listener's
/// connections, upstream connections, the token store, the watched files.
const RESERVED_FDS: usize = 256;
/// The data listener's default cap when the open-file limit is high or unknown.
const DEFAULT_MAX_CONNECTIONS: usize = 25_000;

/// The data listener's default connection cap: what the soft open-file limit leaves after
/// [`RESERVED_FDS`], so that connections held open by clients (slow ones included) cannot take
/// the descriptors that upstream connections, the store and the admin listener need.
fn default_max_connections() -> usize {
    match open_file_limit() {
        Some(limit) => limit.saturating_sub(RESERVED_FDS).clamp(64, DEFAULT_MAX_CONNECTIONS),
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

/// The soft `RLIMIT_NOFILE`, read from `/proc/self/limits` (`None` where there is no procfs, or
/// the limit is `unlimited`).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// A listener's connection cap. The accept loop counts refusals and warns at most once a second.
struct Cap {
    listener: &'static str,
    max: usize,
    open: prometheus::IntGauge,
    refused: prometheus::IntCounter,
    warned: Option<tokio::time::Instant>,
}

impl Cap {
    fn new(listener: &'static str, max: usize, metrics: &Metrics) -> Cap {
        Cap {
            listener,
            max,
            open: metrics.open_connections.with_label_values(&[listener]),
            refused: metrics.connections_refused.with_label_values(&[listener]),
            warned: None,
        }
    }

    fn refuse(&mut self) {
        self.refused.inc();
        let now = tokio::time::Instant::now();
        if self.warned.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            self.warned = Some(now);
            tracing::warn!(
                listener = self.listener,
                max_connections = self.max,
                refused_total = self.refused.get(),
                "connection refused: the listener holds its max_connections"
            );
        }
    }
}

/// Accepts connections until `stop` and runs each with `connection`, then tells them to finish
/// and waits for up to `grace()` (the setting in force then). A connection beyond the cap is
/// closed at once.
async fn accept<C, Fut>(
    listener: TcpListener,
    mut cap: Cap,
    mut stop: watch::Receiver<bool>,
    grace: impl Fn() -> Duration,
    connection: C,
) where
    C: Fn(TcpStream, oneshot::Receiver<()>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let live = Arc::new(Live::new(cap.open.clone()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some((id, stop)) = live.add(cap.max) else {
                    cap.refuse();
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn = connection(stream, stop);
                let live = live.clone();
                tokio::spawn(async move {
                    conn.await;
                    live.remove(id);
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = live.shutdown() => {}
        _ = tokio::time::sleep(grace()) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

/// A hyper service that runs `handler` and counts each request as open in `activity` until its
/// answer is finished, for [`drive`].
fn counted<F, Fut>(
    activity: Arc<Activity>,
    handler: F,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Counted>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Counted>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let service = move |req| {
        let busy = Busy::new(&activity);
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await?.map(|body| Counted { body, _busy: busy })) }
    };
    hyper::service::service_fn(service)
}

/// What one connection is doing: requests begun or finished (a count of both), and requests
/// whose answer (head and body) is not finished.
#[derive(Default)]
struct Activity {
    events: AtomicU64,
    open: AtomicU64,
}

/// One request being served on a connection; dropped with the answer's body.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Busy {
        a.events.fetch_add(1, Ordering::Relaxed);
        a.open.fetch_add(1, Ordering::Relaxed);
        Busy(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// An answer body that keeps its request counted as open until it is finished or dropped.
struct Counted {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = crate::http::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Runs one connection to its end. It is shut down gracefully (answers in progress finish, then
/// it closes) when the listener stops. When no request has begun or ended for
/// [`HEADER_READ_TIMEOUT`] (checked every half of it, so after 10-15 s) and none is open, the
/// connection is idle or its
/// next request head is arriving too slowly: it is told to shut down and closed a second later
/// at most. This costs one timer per connection every 5 s instead of one per request.
async fn drive<C>(conn: C, activity: Arc<Activity>, mut stop: oneshot::Receiver<()>)
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    let tick = HEADER_READ_TIMEOUT / 2;
    let mut watchdog = std::pin::pin!(tokio::time::sleep(tick));
    let (mut seen, mut quiet) = (0u64, 0u32);
    loop {
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            _ = &mut stop => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
            _ = watchdog.as_mut() => {
                let events = activity.events.load(Ordering::Relaxed);
                let open = activity.open.load(Ordering::Relaxed);
                // A tick that saw a request begin, end or run starts the count again, so the
                // connection has been idle at least 10 s when it is closed.
                quiet = if events == seen && open == 0 { quiet + 1 } else { 0 };
                seen = events;
                if quiet >= 2 {
                    break;
                }
                watchdog.as_mut().reset(tokio::time::Instant::now() + tick);
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    // An idle connection closes at once; one still waiting for a head does not, and is dropped
    // unless a request has begun meanwhile.
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if activity.open.load(Ordering::Relaxed) == 0 {
                    return;
                }
            }
        }
    }
}

/// The live connections of one listener, each with the sender that tells it to finish. Touched
/// once when a connection opens and once when it closes, never per request.
struct Live {
    conns: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next: AtomicU64,
    empty: Notify,
    /// The listener's `open_connections` gauge.
    open: prometheus::IntGauge,
}

impl Live {
    fn new(open: prometheus::IntGauge) -> Live {
        Live { conns: Mutex::default(), next: AtomicU64::new(0), empty: Notify::new(), open }
    }

    /// Registers a new connection, unless `max` are open already.
    fn add(&self, max: usize) -> Option<(u64, oneshot::Receiver<()>)> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns.len() >= max {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conns.insert(id, tx);
        self.open.set(conns.len() as i64);
        Some((id, rx))
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.remove(&id);
        self.open.set(conns.len() as i64);
        if conns.is_empty() {
            self.empty.notify_waiters();
        }
    }

    /// Tells every connection to finish, then waits until all have.
    async fn shutdown(&self) {
        let senders: Vec<oneshot::Sender<()>> = {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            // Keep the ids (with closed senders) so that `remove` still sees them go.
            conns.iter_mut().map(|(_, tx)| std::mem::replace(tx, oneshot::channel().0)).collect()
        };
        for tx in senders {
            let _ = tx.send(());
        }
        loop {
            let notified = self.empty.notified();
            if self.conns.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                return;
            }
            notified.await;
        }
    }
}
