//! The data plane, in named phases: select the app -> match the template -> get the token ->
//! render the upstream request -> send it (again, as [`retry`] decides) -> respond.
//!
//! [`handle`] is the outer function: it loads the snapshot once, runs [`forward`], turns an error
//! into its answer ([`error`], the one place where an error becomes a status and an FDK-shaped
//! body), and records metrics and one access-log line. [`forward`] is the path of one request,
//! phase by phase.

pub(crate) mod admit;
pub(crate) mod connect;
pub(crate) mod error;
pub(crate) mod plan;
pub(crate) mod retry;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, request::Parts};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use tokio::time::Instant;

use crate::caller::ClientCert;
use crate::http::ResponseHead;
use crate::snapshot::{App, Snapshot, X_ATTEMPTS, X_TEMPLATE, answer_lines, attempts_value, is_bearerd_header};
use crate::state::State;
use crate::template::{Context, RenderError, RequestScope, TemplateSpec};
use crate::token::{Account, DEFAULT_ACCOUNT, Need, Token, TokenKey};
use crate::upstream::{Body, Call, Target, UpstreamError};
use connect::Tunneled;
pub(crate) use error::ProxyError;
use retry::{Next, Policy, Sent, Tally};

/// The largest `/invoke` body.
pub(crate) const MAX_INVOKE_BODY: usize = 1 << 20;

// Names, not strings: a lookup by `&str` parses the name every time.
const X_APP: HeaderName = HeaderName::from_static("x-bearerd-app");
const X_ACCOUNT: HeaderName = HeaderName::from_static("x-bearerd-account");

/// An answer for the application: its head beside its body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) head: ResponseHead,
    pub(crate) body: Body,
}

/// What the access log and the metrics need to know about a request.
#[derive(Default)]
pub(crate) struct Record {
    pub(crate) app: Option<usize>,
    pub(crate) template: Option<usize>,
    pub(crate) attempts: u32,
    pub(crate) host: Option<String>,
    pub(crate) caller: Option<usize>,
}

/// Decrements the in-flight gauge even when the client goes away mid-request.
struct InflightGuard<'a>(&'a prometheus::IntGauge);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one data-plane request. Never fails: errors become FDK-shaped answers. `proxy_auth`:
/// its `Proxy-Authorization`, when the HTTP/1.1 server set it aside (else it is in the headers).
pub(crate) async fn handle(state: Arc<State>, req: Request<Body>, proxy_auth: Option<Bytes>) -> Answer {
    let start = Instant::now();
    let snap = state.snapshot.load_full();
    let metrics = &state.metrics;
    metrics.inflight.inc();
    let _guard = InflightGuard(&metrics.inflight);
    let method = req.method().clone();
    let mut out = Record::default();
    // The answer's head is filled in place (it is large): by the upstream, or by the error.
    let mut head = ResponseHead::new(http::StatusCode::OK);
    let body = match forward(&state, &snap, req, proxy_auth, start, &mut out, &mut head).await {
        Ok(body) => body,
        Err(e) => {
            if let Some(kind) = e.upstream_kind() {
                let (app, template) = labels(&snap, &out);
                metrics.upstream_errors.with_label_values(&[app, template, kind]).inc();
            }
            if let Some(reason) = e.auth_reason() {
                snap.callers.refused(reason);
            }
            tracing::debug!(error = %e, "request failed");
            e.into_answer(&mut head)
        }
    };
    let elapsed = start.elapsed();
    let (app, template) = labels(&snap, &out);
    let status = head.status;
    match (out.app, out.template) {
        (Some(a), Some(t)) => {
            snap.apps[a].template_metrics[t].record(metrics, app, template, status, elapsed.as_secs_f64());
        }
        _ => metrics.requests.with_label_values(&[app, template, status.as_str()]).inc(),
    }
    tracing::info!(
        target: "bearerd::access",
        app,
        template,
        caller = out.caller.map_or("", |c| &*snap.callers.get(c).name),
        %method,
        upstream = upstream_host(&snap, &out),
        status = status.as_u16(),
        attempts = out.attempts,
        // Microseconds, shown as milliseconds (`0.19`, not `0.18965200000000002`).
        ms = elapsed.as_micros() as f64 / 1000.0,
    );
    Answer { head, body }
}

/// The upstream host for the access log: the template's literal host, or the one rendered.
fn upstream_host<'a>(snap: &'a Snapshot, out: &'a Record) -> &'a str {
    match (&out.host, out.app, out.template) {
        (Some(h), _, _) => h,
        (None, Some(a), Some(t)) if out.attempts > 0 => snap.apps[a].templates()[t].host.as_literal().unwrap_or(""),
        _ => "",
    }
}

fn labels<'a>(snap: &'a Snapshot, out: &Record) -> (&'a str, &'a str) {
    match out.app.map(|a| &snap.apps[a]) {
        Some(app) => (&app.name, out.template.map_or("", |t| app.templates()[t].name.as_str())),
        None => ("", ""),
    }
}

/// The token a request sends, and what refreshing it after a rejection needs.
struct Auth {
    key: TokenKey,
    integration: usize,
    token: Arc<Token>,
}

/// The path of one request: the answer's head goes into `head`, its body is returned.
async fn forward(
    state: &Arc<State>,
    snap: &Arc<Snapshot>,
    req: Request<Body>,
    proxy_auth: Option<Bytes>,
    start: Instant,
    out: &mut Record,
    head: &mut ResponseHead,
) -> Result<Body, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let marks = Marks::of(&parts.headers);
    // The proxy credential: set aside by the HTTP/1.1 server, or out of the map at once (HTTP/2,
    // or a second one). It is never forwarded; what reads it (the caller, or the app its user
    // names) reads it here.
    let in_map = if marks.proxy_auth { parts.headers.remove(header::PROXY_AUTHORIZATION) } else { None };
    let proxy_auth: Option<&[u8]> = proxy_auth.as_deref().or(in_map.as_ref().map(HeaderValue::as_bytes));
    let tunnel = parts.extensions.get::<Tunneled>();
    if parts.method == Method::CONNECT {
        return Err(ProxyError::BadConnect("CONNECT inside a tunnel, or over HTTP/2".into()));
    }
    // The request's host: its absolute form's or `:authority`, else `Host`. Inside a tunnel it
    // must be the CONNECT's host (RFC 9110 7.4: 421 for a request this connection cannot serve).
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    if let Some(t) = tunnel
        && !connect::is_tunnel_host(t, host)
    {
        return Err(ProxyError::Misdirected { host: truncate(host, 255), tunnel: t.name.to_string() });
    }

    let is_invoke = tunnel.is_none() && is_invoke(|p| state.is_data_port(p), snap, &parts, host);

    // 0. Who is calling (SPEC 2.2): before anything else, so a refused caller costs nothing.
    let caller = if snap.callers.is_empty() {
        None
    } else {
        let cert = parts.extensions.get::<Arc<ClientCert>>();
        match admit::known(snap, proxy_auth, &parts.headers, is_invoke, tunnel, cert) {
            admit::Known::Decided(r) => r?,
            // Boxed: rare, and its future is large.
            admit::Known::Unseen(o) => Box::pin(admit::verify(snap, o, is_invoke)).await?,
        }
    };
    out.caller = caller.as_ref().map(|c| c.caller);

    // 1. and 2. The plan: which app, which template (its path's context values captured), and
    //    the account of its token; then whether the caller may use them.
    let planned = plan::Head {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        host,
        marks,
        proxy_auth,
        tunnel,
        invoke: is_invoke,
    };
    let plan::Plan { app: app_idx, template: t_idx, mut ctx, query, account } =
        plan::plan(snap, &planned, caller.as_ref(), out)?;
    if let Some(c) = &caller {
        admit::admit(snap, app_idx, account.as_ref(), c)?;
        snap.callers.get(c.caller).count(app_idx);
    }
    let app = &snap.apps[app_idx];
    if !app.config.missing.is_empty() {
        return Err(ProxyError::NotConfigured {
            app: app.name.to_string(),
            missing: app.config.missing.join(", "),
            page: format!("{}/custom_configs", snap.config.admin.public_url),
        });
    }
    let invoke_json: serde_json::Map<String, serde_json::Value>;
    // A websocket handshake is forwarded as one (SPEC 2), over HTTP/1.1 only (HTTP/2 carries no
    // `Upgrade`); another upgrade (`h2c`) is hop-by-hop, and dropped like the rest.
    let upgrade = marks.upgrade && is_websocket(&parts);
    let t = &app.templates()[t_idx];
    if is_invoke {
        let declared =
            parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_INVOKE_BODY as u64) {
            return Err(ProxyError::InvokeBodyTooLarge { limit: MAX_INVOKE_BODY });
        }
    }

    // 3. The token, when the template has an integration: fresh from memory, or refreshed once
    //    for all the requests that need it. Before the body is read: a request refused here
    //    never asks the client for its body (`Expect: 100-continue`).
    let deadline = start + snap.config.upstream.timeout;
    let mut auth = match (t.integration, account) {
        (Some(i), Some(account)) => Some(token(state, snap, app, i, account, deadline).await?),
        _ => None,
    };

    // The body: an invoke body's JSON (and its context values), or a transparent body buffered
    // up to the replay buffer; by the request's deadline, so a body that trickles in cannot hold
    // the request longer than one that stops (which the connection cuts after 10 s).
    let (body, json_body) = if is_invoke {
        let (json, body, json_body) = within(deadline, read_invoke(body)).await?;
        invoke_json = json;
        invoke_context(&invoke_json, &mut ctx)?;
        (body, json_body)
    } else {
        (within(deadline, read_transparent(body, snap.config.refresh.replay_buffer)).await?, false)
    };

    // 4. Render host, path, query and headers, each escaped for its position.
    let scope = RequestScope { context: &ctx, token: auth.as_ref().map(|a| a.token.access_token.expose()) };
    let authority = t.render_host(&scope, &app.config.allow_hosts).map_err(ProxyError::Render)?;
    if let Cow::Owned(h) = &authority {
        out.host = Some(h.clone());
    }
    state.upstream.check_literal(&authority)?;
    let mut url = crate::reuse::take::<String>(authority.len() + parts.uri.path().len() + 64);
    let scheme = if t.https { "https://" } else { "http://" };
    url.push_str(scheme);
    url.push_str(&authority);
    let path_start = url.len();
    t.render_path_and_query(&scope, query, &mut url).map_err(ProxyError::Render)?;
    let target =
        Target::split(&url, t.https, scheme.len(), path_start).ok_or(ProxyError::Render(RenderError::InvalidHost))?;
    let mut te_trailers = false;
    let mut headers = if is_invoke {
        crate::reuse::give_back(parts.headers);
        crate::reuse::take::<HeaderMap>(t.headers.len() + 2)
    } else {
        let mut h = parts.headers;
        te_trailers = strip_request_headers(&mut h, marks);
        h
    };
    apply_template_headers(state, app, t_idx, &scope, auth.as_ref(), &mut headers)?;
    if json_body && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }

    // 5. Send, and again as the retry policy decides.
    let policy = Policy {
        max_attempts: u32::from(t.max_attempts),
        retry_delay: t.retry_delay,
        on_status: &snap.config.refresh.on_status,
        // The template's method: for /invoke it is not the method of the invoke call.
        idempotent: matches!(t.method, Method::GET | Method::PUT | Method::DELETE),
        has_token: auth.is_some(),
    };
    let mut body = Some(body);
    let mut tally = Tally::default();
    let body = loop {
        tally.start();
        let (this_body, replayable) = match body.as_ref().and_then(Body::try_clone) {
            Some(b) if policy.keep_body(&tally) => (b, true),
            _ => (body.take().unwrap_or_default(), false),
        };
        let call = Call { method: &t.method, target, headers: &headers, deadline, upgrade, te_trailers };
        let result = state.upstream.send(call, this_body, head).await;
        let sent = match &result {
            Ok(_) => Sent::Answer(head.status, retry_after_of(head)),
            Err(UpstreamError::Closed { .. }) => Sent::Closed,
            Err(UpstreamError::Connect { .. }) => Sent::ConnectFailed,
            Err(_) => Sent::Failed,
        };
        match policy.next(&mut tally, sent, replayable, || deadline.saturating_duration_since(Instant::now())) {
            Next::Return => {
                out.attempts = tally.sends;
                break result?;
            }
            Next::Resend => {}
            Next::RefreshAndReplay => {
                drop(result);
                if let Some(a) = auth.as_mut() {
                    tracing::debug!(template = %t.name, "token rejected: refreshing and replaying");
                    a.token = refreshed(state, snap, app, a, deadline).await?;
                    let scope = RequestScope { context: &ctx, token: Some(a.token.access_token.expose()) };
                    apply_headers(t, &scope, &mut headers)?;
                }
            }
            Next::Retry(wait) => {
                tracing::debug!(template = %t.name, attempts = tally.sends, "retrying");
                drop(result);
                tokio::time::sleep(wait).await;
            }
        }
    };
    crate::reuse::give_back(headers);
    crate::reuse::give_back(url);

    // 6. Respond, with bearerd's own headers: behind the upstream's header lines when those pass
    //    on raw (no map is built for them), in the map otherwise.
    respond(app, t_idx, tally.sends, head);
    Ok(body)
}

/// Whether a request is `POST /invoke/<name>`: in origin form, or addressed to bearerd itself
/// (absolute form or HTTP/2's `:authority` with the data listener's port, for a host no template
/// covers: a client whose runtime sends everything through `HTTP_PROXY`).
pub(crate) fn is_invoke(ours: impl Fn(u16) -> bool, snap: &Snapshot, parts: &Parts, host: &str) -> bool {
    if parts.method != Method::POST || !parts.uri.path().starts_with("/invoke/") {
        return false;
    }
    let Some(authority) = parts.uri.authority() else { return true };
    let ours = authority.port_u16().is_some_and(ours);
    let lower = host.to_ascii_lowercase();
    ours && snap.apps.iter().all(|a| a.router.covers(&lower).is_none())
}

/// Whether a request asks for a websocket (RFC 6455 4.1): `GET` over HTTP/1.1 with `Upgrade:
/// websocket` and `Connection: upgrade`.
fn is_websocket(parts: &Parts) -> bool {
    let upgrade = parts.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let connection =
        parts.headers.get_all(header::CONNECTION).iter().any(|v| crate::http::lists(v.as_bytes(), b"upgrade"));
    upgrade && connection && parts.method == Method::GET && parts.version == http::Version::HTTP_11
}

/// The invoke body's `context` values, as text.
fn invoke_context<'j>(
    json: &'j serde_json::Map<String, serde_json::Value>,
    ctx: &mut Context<'j>,
) -> Result<(), ProxyError> {
    let Some(serde_json::Value::Object(c)) = json.get("context") else { return Ok(()) };
    for (k, v) in c {
        let v = match v {
            serde_json::Value::String(s) => Cow::Borrowed(s.as_str()),
            serde_json::Value::Number(n) => Cow::Owned(n.to_string()),
            serde_json::Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            serde_json::Value::Null => continue,
            _ => {
                return Err(ProxyError::BadInvokeBody(format!(
                    "context.{} must be a string, number or boolean",
                    truncate(k, 100)
                )));
            }
        };
        ctx.insert(k.as_str(), v);
    }
    Ok(())
}

/// Phase 3: the token for the template's integration and the planned account.
async fn token(
    state: &Arc<State>,
    snap: &Snapshot,
    app: &App,
    integration: usize,
    account: Account<'_>,
    deadline: Instant,
) -> Result<Auth, ProxyError> {
    let integ = app.integration(integration);
    let key = TokenKey {
        app: app.name.clone(),
        integration: app.integrations[integration].clone(),
        account: if account.name == DEFAULT_ACCOUNT { state.default_account.clone() } else { account.name.into() },
    };
    let need = Need { key: &key, integration: integ, skew: snap.config.refresh.skew };
    // A fresh token without an await; a refresh (rare, and a large future) boxed.
    let token = match state.refresher.fresh(need).map_err(|e| ProxyError::from_token(e, snap))? {
        Some(t) => t,
        None => Box::pin(state.refresher.token(need, deadline)).await.map_err(|e| ProxyError::from_token(e, snap))?,
    };
    Ok(Auth { key, integration, token })
}

/// The token that replaces `auth`'s after the upstream rejected it.
async fn refreshed(
    state: &Arc<State>,
    snap: &Snapshot,
    app: &App,
    auth: &Auth,
    deadline: Instant,
) -> Result<Arc<Token>, ProxyError> {
    let need = Need { key: &auth.key, integration: app.integration(auth.integration), skew: snap.config.refresh.skew };
    Box::pin(state.refresher.after_rejection(need, auth.token.version, deadline))
        .await
        .map_err(|e| ProxyError::from_token(e, snap))
}

/// Phase 6: the upstream's answer head gets `x-bearerd-template` and `x-bearerd-attempts`.
fn respond(app: &App, t_idx: usize, attempts: u32, head: &mut ResponseHead) {
    match head.raw.as_mut() {
        Some(raw) if attempts == 1 => raw.set_extra(app.answer_lines[t_idx].clone()),
        Some(raw) => raw.set_extra(answer_lines(&app.template_headers[t_idx], attempts)),
        None => {
            strip_hop_by_hop(&mut head.headers);
            strip_bearerd_headers(&mut head.headers);
            head.headers.insert(X_TEMPLATE, app.template_headers[t_idx].clone());
            head.headers.insert(X_ATTEMPTS, attempts_value(attempts));
        }
    }
}

/// Renders template `t_idx`'s headers into `headers`. With the default account's token they come
/// from the template's [`crate::snapshot::HeaderCache`] when this exact token rendered them
/// before, and are kept there otherwise.
fn apply_template_headers(
    state: &State,
    app: &App,
    t_idx: usize,
    scope: &RequestScope<'_>,
    auth: Option<&Auth>,
    headers: &mut HeaderMap,
) -> Result<(), ProxyError> {
    let t = &app.templates()[t_idx];
    let cache = &app.header_cache[t_idx];
    let token = match auth {
        Some(a) if cache.enabled() && Arc::ptr_eq(&a.key.account, &state.default_account) => &a.token,
        _ => return apply_headers(t, scope, headers),
    };
    if let Some(cached) = cache.get(token) {
        for (name, value) in &cached.headers {
            headers.insert(name.clone(), value.clone());
        }
        return Ok(());
    }
    let mut rendered = Vec::with_capacity(t.headers.len());
    t.render_headers(scope, |name, value| rendered.push((name.clone(), value))).map_err(ProxyError::Render)?;
    for (name, value) in &rendered {
        headers.insert(name.clone(), value.clone());
    }
    cache.put(token, rendered);
    Ok(())
}

/// Renders the template's headers into `headers`, replacing what is there under those names.
fn apply_headers(t: &TemplateSpec, scope: &RequestScope<'_>, headers: &mut HeaderMap) -> Result<(), ProxyError> {
    t.render_headers(scope, |name, value| {
        headers.insert(name.clone(), value);
    })
    .map_err(ProxyError::Render)
}

/// Reads an `/invoke` body: `{"context": {...}, "body": "<string>" | <json>}`.
/// Reads a request body by `deadline`: 408 when it has not all arrived by then.
async fn within<T>(deadline: Instant, read: impl Future<Output = Result<T, ProxyError>>) -> Result<T, ProxyError> {
    tokio::time::timeout_at(deadline, read).await.unwrap_or(Err(ProxyError::BodyTimeout))
}

async fn read_invoke(body: Body) -> Result<(serde_json::Map<String, serde_json::Value>, Body, bool), ProxyError> {
    let bytes = match http_body_util::Limited::new(body, MAX_INVOKE_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::InvokeBodyTooLarge { limit: MAX_INVOKE_BODY });
        }
        Err(e) => return Err(ProxyError::BadFraming(e.to_string())),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((serde_json::Map::new(), Body::Empty, false));
    }
    let mut map = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(_) => {
            return Err(ProxyError::BadInvokeBody("the body must be a JSON object".into()));
        }
        Err(e) => return Err(ProxyError::BadInvokeBody(format!("not JSON: {e}"))),
    };
    match map.get("context") {
        None | Some(serde_json::Value::Object(_)) | Some(serde_json::Value::Null) => {}
        Some(_) => {
            return Err(ProxyError::BadInvokeBody("`context` must be an object".into()));
        }
    }
    let (body, is_json) = match map.remove("body") {
        None | Some(serde_json::Value::Null) => (Body::Empty, false),
        Some(serde_json::Value::String(s)) => (Body::full(s), false),
        Some(v) => (Body::full(v.to_string()), true),
    };
    Ok((map, body, is_json))
}

/// Buffers a transparent request body up to `limit` (so it can be replayed, and so a malformed
/// one is refused before anything is sent); a larger body is streamed.
async fn read_transparent(mut body: Body, limit: usize) -> Result<Body, ProxyError> {
    if body.is_end_stream() {
        return Ok(Body::Empty);
    }
    if matches!(body, Body::Full(_)) || body.size_hint().exact().is_some_and(|n| n > limit as u64) {
        return Ok(body);
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BadFraming(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Body::Prefixed(Some(buf.freeze()), Box::new(body)));
            }
        }
    }
    Ok(Body::full(Bytes::from(buf)))
}

/// Removes what must not travel from the application to the upstream: hop-by-hop headers
/// (`Proxy-Authorization` is out already), `x-bearerd-*`, `Host` (taken from the template) and
/// framing (recomputed).
///
/// Returns whether the request asked for `TE: trailers` (it goes on to an HTTP/2 upstream: see
/// [`crate::upstream::Call::te_trailers`]).
fn strip_request_headers(h: &mut HeaderMap, marks: Marks) -> bool {
    let mut te_trailers = false;
    if marks.hop_by_hop {
        te_trailers = h.get(header::TE).is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers"));
        strip_hop_by_hop(h);
    }
    h.remove(header::HOST);
    h.remove(header::CONTENT_LENGTH);
    if marks.ours {
        strip_bearerd_headers(h);
    }
    te_trailers
}

/// What one pass over a request's header names finds: hop-by-hop headers (`Connection`,
/// `Upgrade`, ...), `Proxy-Authorization` (hop-by-hop too, but read before it is dropped) and
/// bearerd's own `x-bearerd-*`. Most requests carry none, and then none of them is looked up or
/// stripped; a caller's usually carries only `Proxy-Authorization`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    /// Hop-by-hop headers other than `Proxy-Authorization`.
    pub(crate) hop_by_hop: bool,
    /// `Upgrade` is one of them.
    pub(crate) upgrade: bool,
    pub(crate) proxy_auth: bool,
    pub(crate) ours: bool,
}

impl Marks {
    pub(crate) fn of(h: &HeaderMap) -> Marks {
        let mut m = Marks { hop_by_hop: false, upgrade: false, proxy_auth: false, ours: false };
        for name in h.keys() {
            let name = name.as_str().as_bytes();
            if crate::http::is_hop_by_hop(name) {
                // Names in the map are lower case; of the hop-by-hop ones, only this one is 19
                // bytes long, and only `upgrade` and `trailer` 7.
                match name.len() {
                    19 => m.proxy_auth = true,
                    7 if name == b"upgrade" => (m.hop_by_hop, m.upgrade) = (true, true),
                    _ => m.hop_by_hop = true,
                }
            }
            m.ours |= is_bearerd_header(name);
        }
        m
    }
}

/// Removes `x-bearerd-*` (bearerd's own namespace, in either direction).
fn strip_bearerd_headers(h: &mut HeaderMap) {
    let ours = |k: &HeaderName| is_bearerd_header(k.as_str().as_bytes());
    if h.keys().any(ours) {
        let names: Vec<HeaderName> = h.keys().filter(|k| ours(k)).cloned().collect();
        for k in names {
            h.remove(k);
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    crate::http::is_hop_by_hop(name.as_str().as_bytes())
}

/// Removes hop-by-hop headers, including those named in `Connection`. Costs one pass over the
/// names when there are none, as is usual.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(conn) = h.remove(header::CONNECTION) {
        for name in conn.to_str().unwrap_or("").split(',') {
            let name = name.trim();
            if !name.is_empty() && !name.eq_ignore_ascii_case("close") {
                h.remove(name);
            }
        }
    }
    let hops: Vec<HeaderName> = h.keys().filter(|k| is_hop_by_hop(k)).cloned().collect();
    for n in hops {
        h.remove(n);
    }
}

/// `Retry-After` (seconds, or an HTTP-date: the time until then), for the answers the retry
/// policy reads it on (429 and 5xx); at most an hour.
fn retry_after_of(head: &ResponseHead) -> Option<Duration> {
    if head.status != http::StatusCode::TOO_MANY_REQUESTS && !head.status.is_server_error() {
        return None;
    }
    let value = head.headers.get(header::RETRY_AFTER)?.as_bytes().trim_ascii();
    let secs = match std::str::from_utf8(value).ok()?.parse::<u64>() {
        Ok(secs) => secs,
        Err(_) => crate::http::write::parse_http_date(value)?.saturating_sub(crate::token::unix_now()),
    };
    Some(Duration::from_secs(secs.min(3600)))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<&str>) -> ResponseHead {
        let mut head = ResponseHead::new(http::StatusCode::from_u16(status).unwrap());
        if let Some(v) = retry_after {
            head.headers.insert(header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        }
        head
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(retry_after_of(&answer(503, Some("7"))), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_of(&answer(429, Some(" 120 "))), Some(Duration::from_secs(120)));
        assert_eq!(retry_after_of(&answer(503, Some("86400"))), Some(Duration::from_secs(3600)), "capped");
        let in_30s = crate::http::write::http_date(crate::token::unix_now() + 30);
        let d = retry_after_of(&answer(503, Some(std::str::from_utf8(&in_30s).unwrap()))).unwrap();
        assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(28), "{d:?}");
        let past = retry_after_of(&answer(503, Some("Sun, 06 Nov 1994 08:49:37 GMT")));
        assert_eq!(past, Some(Duration::ZERO), "a date passed: no wait beyond retryDelay");
        assert_eq!(retry_after_of(&answer(503, Some("soon"))), None);
        assert_eq!(retry_after_of(&answer(200, Some("7"))), None, "read on 429 and 5xx only");
        assert_eq!(retry_after_of(&answer(503, None)), None);
    }
}
