//! Every metric bearerd exports, registered in one place on bearerd's own registry.
//! Label values are bounded by the configuration: app, template and integration names, status
//! codes, and fixed result and error kinds.

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for an egress call: 1 ms to 30 s.
pub(crate) const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0];

pub(crate) struct Metrics {
    registry: Registry,
    /// `requests_total{app,template,code}`
    pub requests: IntCounterVec,
    /// `request_duration_seconds{app,template}`
    pub duration: HistogramVec,
    /// `upstream_errors_total{app,template,kind}`
    pub upstream_errors: IntCounterVec,
    /// `token_refreshes_total{app,integration,result}`
    pub token_refreshes: IntCounterVec,
    /// `token_refresh_waiters_total{app,integration}`
    pub token_refresh_waiters: IntCounterVec,
    /// `authorizations_total{app,integration,result}`
    pub authorizations: IntCounterVec,
    /// `token_lease_waits_total{app,integration}`: refreshes that waited on another replica's lease
    pub lease_waits: IntCounterVec,
    /// `token_store_operations_total{op,result}`
    pub store_operations: IntCounterVec,
    /// `token_cache_total{result="hit"}`: tokens served from memory without any store access
    pub token_cache_hit: prometheus::IntCounter,
    /// `token_cache_total{result="miss"}`: tokens that needed a refresh or a store read
    pub token_cache_miss: prometheus::IntCounter,
    /// `config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub inflight: IntGauge,
    /// `open_connections{listener}`: connections each listener holds open
    pub open_connections: IntGaugeVec,
    /// `connections_refused_total{listener}`: connections closed at once because the listener
    /// held its `max_connections`
    pub connections_refused: IntCounterVec,
    /// `tokens{app,integration,state}`: accounts in each state, set when metrics are read
    pub tokens: IntGaugeVec,
    /// `config_last_reload_successful`: 1 when the last reload (or the start) succeeded
    pub config_last_reload_successful: IntGauge,
    /// `intercepted_connections_total{result}`: CONNECT requests by outcome
    /// ([`CONNECT_RESULTS`])
    pub intercepted_connections: IntCounterVec,
    /// `certificates_issued_total`: leaf certificates minted from the intercept CA
    pub certificates_issued: prometheus::IntCounter,
    /// `caller_requests_total{caller,app}`: data-plane requests each caller made, by app
    pub caller_requests: IntCounterVec,
    /// `caller_auth_failures_total{reason}`: requests refused for their caller ([`AUTH_FAILURES`])
    pub caller_auth_failures: IntCounterVec,
    /// `jwks_fetches_total{caller,result}`: fetches of a `jwt` caller's `jwks_url`
    pub jwks_fetches: IntCounterVec,
}

/// The reasons `caller_auth_failures_total` counts: no credential, one that cannot be read, one
/// no caller has, an expired token, a token whose issuer, audience or claims are not a caller's,
/// and a caller refused an app or account (403).
pub(crate) const AUTH_FAILURES: [&str; 6] = ["missing", "malformed", "unknown", "expired", "claims", "forbidden"];
/// The results `jwks_fetches_total` counts.
pub(crate) const JWKS_RESULTS: [&str; 2] = ["ok", "error"];

/// The outcomes `intercepted_connections_total` counts: TLS terminated by bearerd
/// (`intercepted`), a blind tunnel (`tunneled`), CONNECT refused (`refused`), the client's TLS
/// handshake failed or never came (`handshake_failed`), a blind tunnel's connect failed
/// (`upstream_failed`).
pub(crate) const CONNECT_RESULTS: [&str; 5] =
    ["intercepted", "tunneled", "refused", "handshake_failed", "upstream_failed"];

/// The results `token_refreshes_total` counts.
pub(crate) const REFRESH_RESULTS: [&str; 4] = ["ok", "invalid_grant", "error", "timeout"];
/// The results `authorizations_total` counts.
pub(crate) const AUTHORIZATION_RESULTS: [&str; 5] = ["ok", "denied", "invalid_grant", "error", "timeout"];

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new_custom(Some("bearerd".into()), None).expect("static prefix is valid");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let requests =
            counter("requests_total", "Data-plane requests by app, template and status", &["app", "template", "code"]);
        let upstream_errors =
            counter("upstream_errors_total", "Upstream failures by kind", &["app", "template", "kind"]);
        let token_refreshes = counter(
            "token_refreshes_total",
            "Refresh-token and client-credentials grants by result",
            &["app", "integration", "result"],
        );
        let token_refresh_waiters = counter(
            "token_refresh_waiters_total",
            "Requests that waited on a refresh another request started",
            &["app", "integration"],
        );
        let authorizations = counter(
            "authorizations_total",
            "Authorization-code exchanges by result",
            &["app", "integration", "result"],
        );
        let config_reloads = counter("config_reloads_total", "Configuration reloads by result", &["result"]);
        let lease_waits = counter(
            "token_lease_waits_total",
            "Refreshes that waited for another replica holding the refresh lease",
            &["app", "integration"],
        );
        let cache = counter(
            "token_cache_total",
            "Token lookups served from memory (hit) or needing a refresh or store read (miss)",
            &["result"],
        );
        let store_operations =
            counter("token_store_operations_total", "Shared token store operations by result", &["op", "result"]);
        let duration = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Data-plane request duration, until the response head")
                .buckets(DURATION_BUCKETS.to_vec()),
            &["app", "template"],
        );
        let duration = registered(&registry, duration);
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help));
        let config_generation = gauge("config_generation", "Generation of the configuration being served");
        let inflight = gauge("inflight_requests", "Data-plane requests in flight");
        // Gauges by label, registered like the counters above.
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let open_connections = gauges("open_connections", "Connections each listener holds open", &["listener"]);
        let connections_refused = counter(
            "connections_refused_total",
            "Connections closed at once because the listener held its max_connections",
            &["listener"],
        );
        let tokens = gauges(
            "tokens",
            "Accounts by token state (reauthorize: a person must authorize again)",
            &["app", "integration", "state"],
        );
        let config_last_reload_successful =
            gauge("config_last_reload_successful", "1 when the last reload (or the start) succeeded");
        config_last_reload_successful.set(1);
        let build_info = gauges("build_info", "bearerd's version", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]).reset();
        }
        let intercepted_connections =
            counter("intercepted_connections_total", "CONNECT requests by outcome", &["result"]);
        for result in CONNECT_RESULTS {
            intercepted_connections.with_label_values(&[result]).reset();
        }
        let certificates_issued = registered(
            &registry,
            prometheus::IntCounter::new("certificates_issued_total", "Leaf certificates minted from the intercept CA"),
        );
        let caller_requests =
            counter("caller_requests_total", "Data-plane requests by caller and app", &["caller", "app"]);
        let caller_auth_failures = counter(
            "caller_auth_failures_total",
            "Data-plane requests refused for their caller, by reason",
            &["reason"],
        );
        for reason in AUTH_FAILURES {
            caller_auth_failures.with_label_values(&[reason]).reset();
        }
        let jwks_fetches =
            counter("jwks_fetches_total", "Fetches of a jwt caller's jwks_url by result", &["caller", "result"]);
        for listener in ["data", "admin"] {
            open_connections.with_label_values(&[listener]).set(0);
            connections_refused.with_label_values(&[listener]).reset();
        }
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            token_refreshes,
            token_refresh_waiters,
            authorizations,
            config_reloads,
            lease_waits,
            store_operations,
            token_cache_hit: cache.with_label_values(&["hit"]),
            token_cache_miss: cache.with_label_values(&["miss"]),
            config_generation,
            inflight,
            open_connections,
            connections_refused,
            tokens,
            config_last_reload_successful,
            intercepted_connections,
            certificates_issued,
            caller_requests,
            caller_auth_failures,
            jwks_fetches,
        }
    }

    /// Makes the series of an integration exist at 0 from the start, so that dashboards and
    /// alerts see 0 rather than no data.
    pub(crate) fn integration_known(&self, app: &str, integration: &str) {
        for result in REFRESH_RESULTS {
            self.token_refreshes.with_label_values(&[app, integration, result]).inc_by(0);
        }
        for result in AUTHORIZATION_RESULTS {
            self.authorizations.with_label_values(&[app, integration, result]).inc_by(0);
        }
        self.token_refresh_waiters.with_label_values(&[app, integration]).inc_by(0);
        self.lease_waits.with_label_values(&[app, integration]).inc_by(0);
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// A metric from a static definition (which cannot fail), registered once on `registry`.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("static metric definition");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
