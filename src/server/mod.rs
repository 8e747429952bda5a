//! The process: shared state, the two listeners, the per-connection watchdog and graceful
//! shutdown. The data listener speaks HTTP/1.1 itself ([`h1`]); the admin listener and HTTP/2
//! clients are served by hyper.

pub mod h1;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, StoreConfig};
use crate::metrics::Metrics;
use crate::proxy::ProxyBody;
use crate::snapshot::Snapshot;
use crate::token::{FileStore, TokenStore, Tokens};

/// How long in-flight requests may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The accept queue of each listener (capped by the kernel's `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 4096;
/// Request headers larger than this, or more than [`MAX_HEADERS`] of them, are answered 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 100;
/// A connection on which no request begins for this long (a request head arriving too slowly,
/// or an idle keep-alive connection) is closed, within half as long again.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by both listeners.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub tokens: Tokens,
    pub metrics: Metrics,
    /// Single flight and back-off of token refreshes.
    pub refresher: crate::token::refresh::Refresher,
    /// Authorizations started and not yet called back.
    pub pending: crate::admin::auth::Pending,
    /// Serialises reloads.
    pub reloader: crate::reload::Reloader,
    /// The `default` account name, shared so the hot path does not allocate it.
    pub default_account: Arc<str>,
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Shared {
    /// Ready: a configuration is loaded, both listeners are up, and shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

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
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to [`SHUTDOWN_GRACE`]), then returns.
    pub async fn shutdown(self) {
        self.shared.draining.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Opens the token store, compiles the configuration, binds both listeners and serves.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Metrics::new();
    let sealer = match &config.store_key {
        Some(k) => Some(Arc::new(crate::token::seal::Sealer::from_base64(k.expose()).map_err(StartError::Compile)?)),
        None => None,
    };
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
    let tokens = Tokens::open(store).await?;
    let data_addr = config.listen;
    let admin_addr = config.admin.listen;
    let reloader = crate::reload::Reloader::new(&config);
    let watch_files = config.reload_watch && config.source.is_some();
    let snapshot = Snapshot::compile(config, 1, &metrics, None).map_err(StartError::Compile)?;
    metrics.config_generation.set(1);
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
        tokens,
        metrics,
        refresher: Default::default(),
        pending: Default::default(),
        reloader,
        default_account: crate::token::DEFAULT_ACCOUNT.into(),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    });
    let bind = |addr| listen(addr).map_err(|source| StartError::Bind { addr, source });
    let data = bind(data_addr)?;
    let admin = bind(admin_addr)?;
    let data_addr = data.local_addr().map_err(|source| StartError::Bind { addr: data_addr, source })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind { addr: admin_addr, source })?;
    if let Some(mut changes) = changes {
        // Another replica changed a token: bring this one's copy up to date.
        let s = shared.clone();
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                if let Err(e) = s.tokens.sync(change).await {
                    tracing::warn!(error = %e, "cannot read a changed token from the store");
                }
            }
        });
    }
    let (stop, stop_rx) = watch::channel(false);
    let s = shared.clone();
    let handler = move |req| crate::proxy::handle(s.clone(), req);
    let data_task =
        tokio::spawn(accept(data, stop_rx.clone(), move |stream, stop| h1::serve(stream, handler.clone(), stop)));
    let s = shared.clone();
    let handler = move |req| crate::admin::handle(s.clone(), req);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_HEADER_BYTES);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEADER_BYTES as u32);
    let admin_task = tokio::spawn(accept(admin, stop_rx.clone(), move |stream, stop| {
        let activity = Arc::new(Activity::default());
        let service = counted(activity.clone(), handler.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        drive(conn, activity, stop)
    }));
    let mut tasks = vec![data_task, admin_task];
    if watch_files {
        tasks.extend(crate::reload::spawn_watcher(shared.clone(), stop_rx));
    }
    shared.ready.store(true, Ordering::Release);
    tracing::info!(%data_addr, %admin_addr, "bearerd is serving");
    Ok(Running { data_addr, admin_addr, shared, stop, tasks })
}

/// Binds `addr` with an accept queue of [`LISTEN_BACKLOG`] (the default 128 overflows when
/// clients open connections in bursts, and each overflow costs a client a 1 s SYN retry).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections until `stop` and runs each with `connection`, then tells them to finish
/// and waits for up to [`SHUTDOWN_GRACE`].
async fn accept<C, Fut>(listener: TcpListener, mut stop: watch::Receiver<bool>, connection: C)
where
    C: Fn(TcpStream, oneshot::Receiver<()>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let live = Arc::new(Live::default());
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
                let _ = stream.set_nodelay(true);
                let (id, stop) = live.add();
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
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing remaining connections"),
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
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
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
    body: ProxyBody,
    _busy: Busy,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = crate::proxy::body::BoxError;

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
#[derive(Default)]
struct Live {
    conns: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next: AtomicU64,
    empty: Notify,
}

impl Live {
    fn add(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        (id, rx)
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.remove(&id);
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
