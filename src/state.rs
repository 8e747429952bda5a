//! What every request shares: the current configuration snapshot, the tokens and their
//! refresher, the upstream client, the intercept CA's certificates and the metrics. Nothing of the control plane lives here:
//! readiness, pending authorizations and reloads belong to [`crate::admin`] and
//! [`crate::reload`], which hold this state, never the other way round.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use arc_swap::ArcSwap;

use crate::caller::Keys;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::token::{Refresher, Tokens};
use crate::upstream::Upstream;

/// The process's shared state.
pub struct State {
    /// The current configuration; a request loads it once and keeps it to its end.
    pub(crate) snapshot: ArcSwap<Snapshot>,
    /// The tokens (public for benches that store one before they run).
    pub tokens: Arc<Tokens>,
    /// Single flight and back-off of token refreshes.
    pub(crate) refresher: Arc<Refresher>,
    /// The one upstream client: data plane and token endpoints.
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) metrics: Arc<Metrics>,
    /// The `default` account name, shared so the hot path does not allocate it.
    pub(crate) default_account: Arc<str>,
    /// The data listener's port once it is bound: a request addressed to it is for bearerd.
    data_port: AtomicU16,
    /// The TLS data listener's port, when it is bound.
    tls_port: AtomicU16,
    /// The keys of `jwt` callers' `jwks_url`s, kept across reloads.
    pub(crate) keys: Arc<Keys>,
    /// The intercept CA's certificates for CONNECT hosts; `None` when the CA could not be
    /// opened (CONNECT to a templated host then gets 503 saying why).
    pub(crate) intercept: Result<Arc<crate::intercept::Certificates>, String>,
}

impl State {
    pub(crate) fn new(
        snapshot: Snapshot,
        tokens: Arc<Tokens>,
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        intercept: Result<Arc<crate::intercept::Certificates>, String>,
        keys: Arc<Keys>,
    ) -> State {
        let refresher = Arc::new(Refresher::new(tokens.clone(), upstream.clone(), &metrics));
        State {
            snapshot: ArcSwap::from_pointee(snapshot),
            tokens,
            refresher,
            upstream,
            metrics,
            default_account: crate::token::DEFAULT_ACCOUNT.into(),
            data_port: AtomicU16::new(0),
            tls_port: AtomicU16::new(0),
            keys,
            intercept,
        }
    }

    pub(crate) fn data_port(&self) -> u16 {
        self.data_port.load(Ordering::Relaxed)
    }

    pub(crate) fn set_data_port(&self, port: u16) {
        self.data_port.store(port, Ordering::Relaxed);
    }

    /// Whether `port` is one of the data listeners' (a request addressed to it is for bearerd).
    pub(crate) fn is_data_port(&self, port: u16) -> bool {
        port != 0 && (port == self.data_port() || port == self.tls_port.load(Ordering::Relaxed))
    }

    pub(crate) fn set_tls_port(&self, port: u16) {
        self.tls_port.store(port, Ordering::Relaxed);
    }
}
