//! bearerd: an egress sidecar that puts OAuth access tokens into outbound API calls.
//!
//! # Module map
//! Imports flow one way, from the top of this list to the bottom (`tests/architecture.rs` fails
//! on a cycle or on an edge against the grain):
//!
//! - [`server`]: the process: builds everything below, binds the listeners (the data listener,
//!   the TLS data listener of `listen_tls`, the admin listener; each with its connection cap),
//!   runs each connection ([`server::h1`]: the data listeners' HTTP/1.1, HTTP/2 handed to hyper,
//!   a websocket relayed after its `101`; `server::tunnel`: `CONNECT` carried out, TLS (or plain
//!   HTTP) terminated for an intercepted host and its connection served like the listener's, or
//!   a blind tunnel), the per-connection watchdog and the shutdown sequence (drain delay, then
//!   grace); [`server::lambda`]: the AWS Lambda extension lifecycle (register, events, a
//!   `SHUTDOWN` whose deadline bounds the shutdown, `init/error`).
//! - [`admin`]: the control plane (health, readiness, metrics, the token admin API, reload, the
//!   authorization-code flow in [`admin::auth`], whose pending table it owns, the admin page in
//!   `admin::page`, the installation page of FDK apps, `/custom_configs`, in
//!   `admin::custom_configs`, and the dry run of [`admin::explain`]).
//! - [`proxy`]: the data plane in named phases (admit the caller, plan, admit the plan, token,
//!   render, send, respond); [`proxy::admit`] who is calling and whether it may use what the
//!   plan names; [`proxy::plan`] the app, template and account of a request, a pure function
//!   that `explain` shows too; [`proxy::connect`] what a `CONNECT` may reach; [`proxy::retry`]
//!   the retry/replay policy as a pure function; [`proxy::error`] the one place where an error
//!   becomes a status and an FDK-shaped body.
//! - [`reload`]: file watcher, SIGHUP and `POST /admin/reload`, one path: load, validate,
//!   compile, swap; the old snapshot stays on failure.
//! - [`state`]: what every request shares (snapshot, tokens, refresher, upstream client,
//!   metrics); nothing of the control plane.
//! - [`snapshot`]: one immutable compiled configuration, swapped whole under an `ArcSwap`.
//! - [`intercept`]: the intercept CA (configured, or generated beside the token file) and the
//!   TLS settings per `CONNECT` host, each with a leaf certificate minted off the async workers
//!   and cached.
//! - [`caller`]: who is calling (SPEC 2.2): [`caller::credential`], the one reader of a
//!   request's credential; secrets by their SHA-256, JWTs against JWKS files or URLs
//!   ([`caller::keys`], shared across reloads), client certificates' SANs; a verification cache.
//!   It knows no proxy.
//! - [`token`]: tokens per (app, integration, account), the lock-free view the data plane
//!   reads, the stores behind it ([`token::store`], [`token::redis_store`], [`token::seal`]),
//!   the token-endpoint client ([`token::oauth`]) and single-flight refresh with back-off
//!   ([`token::refresh`]), the latest token events for the admin page ([`token::events`]), the
//!   installation values `/custom_configs` saved, sealed like tokens ([`token::settings`]); its
//!   own `TokenError`. It is handed the integration it refreshes.
//! - [`upstream`]: the upstream client: connect, TLS, the address policy, the HTTP/1.1 pool
//!   ([`upstream::pool`], [`upstream::h1`]) and HTTP/2; the data path's body type
//!   ([`upstream::body`]); its own `UpstreamError`.
//! - [`config`]: `bearerd.yaml` ([`config::file`]) and FDK app folders ([`config::fdk`], one
//!   file per FDK file kind) read, validated (every error, with file and JSON path) and
//!   converted into internal types; [`config::install`]: what an app folder leaves open for a
//!   person to enter, and `run --app`'s configuration of one folder.
//! - [`template`]: the compiled template ([`template::spec`]), the `<%= %>` language
//!   ([`template::expr`]), escaping per position ([`template::escape`]), transparent matching
//!   ([`template::route`]) and rendering.
//! - Beneath everything, knowing nothing of each other: [`jose`] (JWS and JWKs verified with
//!   ring), [`http`] (HTTP/1.1 for both sides, once:
//!   heads, framing, bodies, keep-alive and hop-by-hop rules, the client connection's two sides
//!   over TCP or TLS; it knows nothing of bearerd),
//!   [`metrics`] (every metric, registered in one place), [`secret`], [`fasthash`] (the unkeyed
//!   hash of maps keyed by configuration) and [`reuse`] (per-thread reuse of request buffers).
//!
//! - [`fuzzing`] (feature `fuzzing`, and in `cargo test`): the parser checks the fuzz targets
//!   in `fuzz/` and the property tests share, with their oracles ([`http`]'s `oracle`: hyper's
//!   HTTP/1.1 server and client read the same bytes).
//!
//! # The path of one request
//! 1. [`server::h1`] accepts and reads the request head with [`http::server`] (headers parsed
//!    once, into the map that is forwarded; `Proxy-Authorization` set aside) and runs
//!    [`proxy::handle`] in the connection's task; it loads the current [`snapshot::Snapshot`]
//!    once from the [`state::State`]. A `CONNECT`
//!    goes to `server::tunnel` instead: for a templated host, `200`, TLS with a certificate from
//!    [`intercept`], and each request inside comes back to step 1 marked with its tunnel (its
//!    host must be the tunnel's: 421).
//! 2. With callers configured, [`proxy::admit`] reads the credential ([`caller::credential`])
//!    and finds the caller (from the cache for one seen before): none, or one no caller accepts,
//!    is 407/401 before any other work. Then [`proxy::plan`]: the app (`x-bearerd-app`, a
//!    `Proxy-Authorization` user, the only app of the caller's, or the only one whose templates
//!    match), the template (`POST /invoke/<name>` by name, anything else by method + host + path
//!    through [`template::route::Router`]; no match is 403, never an open proxy) and the account;
//!    and whether the caller may use that app and account (403).
//! 3. The token for (app, integration, account) comes from [`token::Refresher`]: a lock-free
//!    read when fresh; a token near expiry is refreshed first, once for all requests that need
//!    it. Only then is the body read (an invoke body's JSON, or a transparent body up to the
//!    replay buffer), so a request refused so far never asks for it (`Expect: 100-continue`).
//! 4. Render host, path, query and headers, each value escaped for where it lands.
//! 5. Send with [`upstream::Upstream`] over a pooled connection (rustls for https) with
//!    timeouts and the address check; on HTTP/1.1 the request's task writes the request and
//!    reads the answer head itself ([`upstream::h1`], [`http::client`]). [`proxy::retry`]
//!    decides whether to send again: a stale pooled connection, `maxAttempts` for connect
//!    errors, 429 and 5xx, and one refresh and replay for a status in `refresh.on_status`.
//! 6. Respond: the answer head (beside its body; an HTTP/1.1 upstream's header lines stay raw)
//!    gets `x-bearerd-template` and `x-bearerd-attempts`, and the body streams back from the
//!    pooled connection, which goes back to the pool at its end.
//! 7. Metrics and one access-log line (template, upstream host, status, attempts, duration;
//!    never a token, a path or a query).
//!
//! # Public surface
//! Items are `pub(crate)` unless the binary (`src/main.rs`), the integration tests or the
//! benches need them: loading and checking configuration ([`config`]), starting and stopping
//! ([`server::start`], [`server::Running`], [`reload::Reloader`]), storing a token before a test
//! or bench runs ([`token`]), and the template compiler and router the hot-path bench measures.

#![warn(unreachable_pub)]

pub mod admin;
pub(crate) mod caller;
pub mod config;
pub(crate) mod fasthash;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod http;
pub mod intercept;
pub(crate) mod jose;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub mod reload;
pub(crate) mod reuse;
pub mod secret;
pub mod server;
pub(crate) mod snapshot;
pub mod state;
pub mod template;
pub mod token;
pub(crate) mod upstream;
