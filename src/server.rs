//! The process: shared state, the two listeners, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, StoreConfig};
use crate::metrics::Metrics;
use crate::proxy::ProxyBody;
use crate::snapshot::Snapshot;
use crate::token::{FileStore, TokenStore, Tokens};

/// How long in-flight requests may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Request headers larger than this are answered 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A request whose headers take longer than this to arrive loses its connection.
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
    let bind = |addr| async move { TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source }) };
    let data = bind(data_addr).await?;
    let admin = bind(admin_addr).await?;
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
    let data_task = tokio::spawn(serve(data, stop_rx.clone(), move |req| crate::proxy::handle(s.clone(), req)));
    let s = shared.clone();
    let admin_task = tokio::spawn(serve(admin, stop_rx.clone(), move |req| crate::admin::handle(s.clone(), req)));
    let mut tasks = vec![data_task, admin_task];
    if watch_files {
        tasks.extend(crate::reload::spawn_watcher(shared.clone(), stop_rx));
    }
    shared.ready.store(true, Ordering::Release);
    tracing::info!(%data_addr, %admin_addr, "bearerd is serving");
    Ok(Running { data_addr, admin_addr, shared, stop, tasks })
}

/// Accepts connections until `stop`, then drains them for up to [`SHUTDOWN_GRACE`].
async fn serve<F, Fut>(listener: TcpListener, mut stop: watch::Receiver<bool>, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_HEADER_BYTES);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
                let h = handler.clone();
                let conn = builder
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(h))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}
