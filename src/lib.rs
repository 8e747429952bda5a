//! bearerd: an egress sidecar that puts OAuth access tokens into outbound API calls.
//!
//! # Module map
//! - [`config`]: `bearerd.yaml` ([`config::file`]) and FDK app folders ([`config::fdk`]) read,
//!   validated (every error, with file and JSON path) and converted into internal types.
//! - [`template`]: the `<%= %>` language ([`template::expr`]), escaping per position
//!   ([`template::escape`]), transparent matching ([`template::route`]) and rendering.
//! - [`snapshot`]: one immutable compiled configuration, swapped whole under an `ArcSwap`.
//! - [`token`]: tokens per (app, integration, account) and the lock-free view the data plane
//!   reads; the durable stores behind it ([`token::store`]: the trait and the embedded file
//!   store; [`token::redis_store`]: shared by replicas, with leases and change notifications),
//!   encryption at rest ([`token::seal`]), the token-endpoint client ([`token::oauth`]), and
//!   single-flight refresh with back-off, across replicas through the store's lease
//!   ([`token::refresh`]).
//! - [`proxy`]: the data plane; [`proxy::upstream`] the upstream client (connect, TLS, pool,
//!   HTTP/2 where negotiated) and [`proxy::h1`] its HTTP/1.1, run in the request's own task;
//!   [`proxy::error`] the one place where an error becomes a status and an FDK-shaped body.
//! - [`admin`]: the control plane (health, readiness, metrics, token admin API, reload,
//!   and the authorization-code flow in [`admin::auth`]).
//! - [`reload`]: file watcher, SIGHUP and `POST /admin/reload`, one path: load, validate,
//!   compile, swap; the old snapshot stays on failure.
//! - [`metrics`]: every metric, registered in one place.
//! - [`server`]: shared state, listeners, the per-connection watchdog, graceful shutdown;
//!   [`server::h1`] the data listener's HTTP/1.1 (HTTP/2 clients are handed to hyper).
//! - [`http1`]: HTTP/1.1 framing shared by [`server::h1`] and [`proxy::h1`]: body delimitation,
//!   the chunked decoder, hop-by-hop names.
//! - [`fasthash`]: the unkeyed hash of the maps read on every request.
//! - [`reuse`]: per-thread reuse of each request's header map and upstream URL.
//!
//! # The path of one request ([`proxy::handle`])
//! 1. The listener accepts; [`server::h1`] reads the request head (headers parsed once, into the
//!    map that is forwarded) and runs the handler in the connection's task; the handler loads
//!    the current [`snapshot::Snapshot`] once.
//! 2. The app is chosen (`x-bearerd-app` when several), then the template: `POST /invoke/<name>`
//!    by name, anything else by method + host + path through [`template::route::Router`]; no
//!    match is 403 (never an open proxy).
//! 3. The access token for (app, integration, account) is read from [`token::Tokens`] without a
//!    lock; a token near expiry is refreshed first, once for all requests that need it.
//! 4. Host, path, query and headers are rendered, each value escaped for where it lands.
//! 5. [`proxy::upstream::Upstream`] sends over a pooled connection (rustls for https) with
//!    timeouts and the address check; `maxAttempts` retries connect errors, 429 and 5xx. On
//!    HTTP/1.1 the request's task writes the request and reads the answer itself
//!    ([`proxy::h1`]); the body streams from the pooled connection, which goes back to the pool
//!    at its end, and the answer's header lines reach an HTTP/1.1 client as they came, minus
//!    hop-by-hop headers.
//! 6. A status in `refresh.on_status` forces one refresh and one replay; the answer streams
//!    back with `x-bearerd-template` and `x-bearerd-attempts`.
//! 7. Metrics and one access-log line (template, upstream host, status, attempts, duration;
//!    never a token, a path or a query).

pub mod admin;
pub mod config;
pub mod fasthash;
pub mod http1;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod reuse;
pub mod secret;
pub mod server;
pub mod snapshot;
pub mod template;
pub mod token;
