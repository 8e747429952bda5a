//! The data plane: match -> render -> token -> send -> stream back.
//!
//! [`handle`] is the outer function: it loads the snapshot once, runs [`serve`], turns an error
//! into its answer ([`error`]), and records metrics and one access-log line. [`serve`] is the
//! path of one request, step by step.

pub mod body;
pub mod error;
pub mod h1;
pub mod upstream;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use tokio::time::Instant;

use crate::config::TemplateSpec;
use crate::server::Shared;
use crate::snapshot::Snapshot;
use crate::template::{Context, RenderError, RequestScope};
use crate::token::refresh::Target;
use crate::token::{DEFAULT_ACCOUNT, TokenKey};
pub use body::ProxyBody;
pub use error::ProxyError;
use upstream::Target as UpstreamTarget;

/// The largest `/invoke` body.
pub const MAX_INVOKE_BODY: usize = 1 << 20;

// Names, not strings: a lookup by `&str` parses the name every time.
const X_APP: HeaderName = HeaderName::from_static("x-bearerd-app");
const X_ACCOUNT: HeaderName = HeaderName::from_static("x-bearerd-account");
const X_TEMPLATE: HeaderName = HeaderName::from_static("x-bearerd-template");
const X_ATTEMPTS: HeaderName = HeaderName::from_static("x-bearerd-attempts");

/// What the access log and the metrics need to know about a request.
#[derive(Default)]
struct Outcome {
    app: Option<usize>,
    template: Option<usize>,
    attempts: u32,
    host: Option<String>,
}

/// Decrements the in-flight gauge even when the client goes away mid-request.
struct InflightGuard<'a>(&'a prometheus::IntGauge);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one data-plane request. Never fails: errors become FDK-shaped answers.
pub async fn handle(shared: Arc<Shared>, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let snap = shared.snapshot.load_full();
    shared.metrics.inflight.inc();
    let _guard = InflightGuard(&shared.metrics.inflight);
    let method = req.method().clone();
    let mut out = Outcome::default();
    let resp = match serve(&shared, &snap, req, start, &mut out).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(kind) = e.upstream_kind() {
                let (app, template) = labels(&snap, &out);
                shared.metrics.upstream_errors.with_label_values(&[app, template, kind]).inc();
            }
            tracing::debug!(error = %e, "request failed");
            e.into_response()
        }
    };
    let elapsed = start.elapsed();
    let (app, template) = labels(&snap, &out);
    let status = resp.status();
    match (out.app, out.template) {
        (Some(a), Some(t)) => {
            snap.apps[a].template_metrics[t].record(&shared.metrics, app, template, status, elapsed.as_secs_f64());
        }
        _ => shared.metrics.requests.with_label_values(&[app, template, status.as_str()]).inc(),
    }
    tracing::info!(
        target: "bearerd::access",
        app,
        template,
        %method,
        upstream = upstream_host(&snap, &out),
        status = status.as_u16(),
        attempts = out.attempts,
        ms = elapsed.as_secs_f64() * 1000.0,
    );
    Ok(resp)
}

/// The upstream host for the access log: the template's literal host, or the one rendered.
fn upstream_host<'a>(snap: &'a Snapshot, out: &'a Outcome) -> &'a str {
    match (&out.host, out.app, out.template) {
        (Some(h), _, _) => h,
        (None, Some(a), Some(t)) if out.attempts > 0 => snap.apps[a].templates()[t].host.as_literal().unwrap_or(""),
        _ => "",
    }
}

fn labels<'a>(snap: &'a Snapshot, out: &Outcome) -> (&'a str, &'a str) {
    match out.app.map(|a| &snap.apps[a]) {
        Some(app) => (&app.name, out.template.map_or("", |t| app.templates()[t].name.as_str())),
        None => ("", ""),
    }
}

/// The path of one request.
async fn serve(
    shared: &Arc<Shared>,
    snap: &Arc<Snapshot>,
    req: Request<ProxyBody>,
    start: Instant,
    out: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (parts, body) = req.into_parts();

    // 1. Which app.
    let app_idx = select_app(snap, &parts.headers)?;
    out.app = Some(app_idx);
    let app = &snap.apps[app_idx];
    let refresh = &snap.config.refresh;

    // 2. Which template: by name, or by method + host + path.
    let invoke_json: serde_json::Map<String, serde_json::Value>;
    let mut ctx = Context::default();
    let is_invoke =
        parts.uri.authority().is_none() && parts.method == Method::POST && parts.uri.path().starts_with("/invoke/");
    let (t_idx, body, json_body, request_query) = if is_invoke {
        let name = &parts.uri.path()["/invoke/".len()..];
        let idx = *app.by_name.get(name).ok_or_else(|| ProxyError::TemplateNotFound(truncate(name, 100)))?;
        out.template = Some(idx);
        let (map, body, is_json) = read_invoke(body, &parts.headers).await?;
        invoke_json = map;
        if let Some(serde_json::Value::Object(c)) = invoke_json.get("context") {
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
        }
        (idx, body, is_json, None)
    } else {
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let m = app
            .router
            .find(&parts.method, host, parts.uri.path())
            .ok_or_else(|| ProxyError::NoMatch { method: parts.method.clone(), host: truncate(host, 255) })?;
        out.template = Some(m.template);
        for (k, v) in m.captures {
            ctx.insert(k, v);
        }
        let body = read_transparent(body, refresh.replay_buffer).await?;
        (m.template, body, false, parts.uri.query())
    };
    let t = &app.templates()[t_idx];

    // 3. The token, when the template has an integration: fresh from memory, or refreshed once
    //    for all the requests that need it.
    let deadline = start + snap.upstream.config().timeout;
    let mut auth = match t.integration {
        None => None,
        Some(i) => {
            let integ = app.integration(i);
            let account = match parts.headers.get(X_ACCOUNT) {
                Some(v) => match v.to_str() {
                    Ok(s) if !s.is_empty() && s.len() <= 256 => s,
                    _ => {
                        return Err(ProxyError::BadAppHeader(
                            "x-bearerd-account must be 1-256 visible characters".into(),
                        ));
                    }
                },
                None if integ.agent => return Err(ProxyError::MissingAccount { integration: integ.name.clone() }),
                None => DEFAULT_ACCOUNT,
            };
            let key = TokenKey {
                app: app.name.clone(),
                integration: app.integrations[i].clone(),
                account: if account == DEFAULT_ACCOUNT { shared.default_account.clone() } else { account.into() },
            };
            let target = Target { app: app_idx, integration: i };
            // A fresh token without an await; a refresh (rare, and a large future) boxed.
            let token = match shared.refresher.fresh(shared, snap, target, &key)? {
                Some(t) => t,
                None => Box::pin(shared.refresher.token(shared, snap, target, &key, deadline)).await?,
            };
            Some((key, target, token))
        }
    };

    // 4. Render host, path, query and headers, each escaped for its position.
    let scope = RequestScope { context: &ctx, token: auth.as_ref().map(|a| a.2.access_token.expose()) };
    let authority = t.render_host(&scope, &app.config.allow_hosts).map_err(ProxyError::Render)?;
    if let Cow::Owned(h) = &authority {
        out.host = Some(h.clone());
    }
    snap.upstream.check_literal(&authority)?;
    let mut url = crate::reuse::take::<String>(authority.len() + parts.uri.path().len() + 64);
    let scheme = if t.https { "https://" } else { "http://" };
    url.push_str(scheme);
    url.push_str(&authority);
    let path_start = url.len();
    t.render_path_and_query(&scope, request_query, &mut url).map_err(ProxyError::Render)?;
    let target = UpstreamTarget::split(&url, t.https, scheme.len(), path_start)
        .ok_or(ProxyError::Render(RenderError::InvalidHost))?;

    let mut headers = if is_invoke {
        crate::reuse::give_back(parts.headers);
        crate::reuse::take::<HeaderMap>(t.headers.len() + 2)
    } else {
        let mut h = parts.headers;
        strip_request_headers(&mut h);
        h
    };
    apply_template_headers(shared, app, t_idx, &scope, auth.as_ref().map(|(k, _, tok)| (k, tok)), &mut headers)?;
    if json_body && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }

    // 5. Send. A status in refresh.on_status forces one refresh and one replay (which does not
    //    use up maxAttempts); connect errors, 429 and 5xx are retried as the template allows.
    let on_status = &snap.config.refresh.on_status;
    let mut body = Some(body);
    let mut attempts = 0u32;
    let mut tries = 0u32;
    let mut replayed = false;
    let mut stale_retried = false;
    // The template's method: for /invoke it is not the method of the invoke call.
    let idempotent = matches!(t.method, Method::GET | Method::PUT | Method::DELETE);
    let resp = loop {
        attempts += 1;
        tries += 1;
        let may_retry = tries < u32::from(t.max_attempts);
        let may_replay = auth.is_some() && !replayed && !on_status.is_empty();
        let may_resend = idempotent && !stale_retried;
        let (this_body, replayable) = match body.as_ref().and_then(ProxyBody::try_clone) {
            Some(b) if may_retry || may_replay || may_resend => (b, true),
            _ => (body.take().unwrap_or_default(), false),
        };
        let result = snap.upstream.send(&t.method, target, &headers, this_body, deadline).await;
        if matches!(result, Err(ProxyError::UpstreamClosed { .. })) && replayable && may_resend {
            // The pooled connection was stale: send an idempotent request once more, at once.
            stale_retried = true;
            tries -= 1;
            continue;
        }
        if let (Ok(r), Some((key, target, token))) = (&result, auth.as_mut())
            && !replayed
            && on_status.contains(&r.status().as_u16())
        {
            replayed = true;
            if replayable {
                tracing::debug!(template = %t.name, status = r.status().as_u16(), "token rejected: refreshing and replaying");
                drop(result);
                *token =
                    Box::pin(shared.refresher.after_rejection(shared, snap, *target, key, token.version, deadline))
                        .await?;
                let scope = RequestScope { context: &ctx, token: Some(token.access_token.expose()) };
                apply_headers(t, &scope, &mut headers)?;
                tries -= 1;
                continue;
            }
        }
        let wait = match &result {
            Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS || r.status().is_server_error() => {
                Some(retry_after(r.headers()).unwrap_or(t.retry_delay).max(t.retry_delay))
            }
            Err(ProxyError::UpstreamConnect { .. }) => Some(t.retry_delay),
            _ => None,
        };
        match wait {
            Some(wait) if replayable && may_retry && Instant::now() + wait < deadline => {
                tracing::debug!(template = %t.name, attempts, "retrying");
                drop(result);
                tokio::time::sleep(wait).await;
            }
            _ => {
                out.attempts = attempts;
                break result?;
            }
        }
    };

    // 6. Stream the answer back, with bearerd's own headers: behind the upstream's header lines
    //    when those pass on raw (no map is built for them), in the map otherwise.
    crate::reuse::give_back(headers);
    crate::reuse::give_back(url);
    let (mut rparts, mut rbody) = resp.into_parts();
    match rbody.raw_head_mut() {
        Some(raw) if attempts == 1 => raw.set_extra(app.answer_lines[t_idx].clone()),
        Some(raw) => raw.set_extra(answer_lines(&app.template_headers[t_idx], attempts)),
        None => {
            strip_hop_by_hop(&mut rparts.headers);
            rparts.headers.insert(X_TEMPLATE, app.template_headers[t_idx].clone());
            rparts.headers.insert(X_ATTEMPTS, attempts_value(attempts));
        }
    }
    Ok(Response::from_parts(rparts, rbody))
}

/// The `x-bearerd-attempts` value, without allocating for the usual counts.
fn attempts_value(n: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// Whether `name` is one of the headers bearerd sets on every answer ([`answer_lines`]).
pub fn is_answer_header(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(X_TEMPLATE.as_str().as_bytes())
        || name.eq_ignore_ascii_case(X_ATTEMPTS.as_str().as_bytes())
}

/// `x-bearerd-template` and `x-bearerd-attempts` as header lines, for an answer whose other
/// lines pass on raw. `template` is the template's `x-bearerd-template` value.
pub fn answer_lines(template: &HeaderValue, attempts: u32) -> Bytes {
    let mut w = Vec::with_capacity(64 + template.len());
    crate::http1::put_header(&mut w, X_TEMPLATE.as_str().as_bytes(), template.as_bytes());
    crate::http1::put_header(&mut w, X_ATTEMPTS.as_str().as_bytes(), attempts_value(attempts).as_bytes());
    Bytes::from(w)
}

/// Renders template `t_idx`'s headers into `headers`. With the default account's token they come
/// from the template's [`crate::snapshot::HeaderCache`] when this exact token rendered them
/// before, and are kept there otherwise.
fn apply_template_headers(
    shared: &Shared,
    app: &crate::snapshot::App,
    t_idx: usize,
    scope: &RequestScope<'_>,
    auth: Option<(&TokenKey, &Arc<crate::token::Token>)>,
    headers: &mut HeaderMap,
) -> Result<(), ProxyError> {
    let t = &app.templates()[t_idx];
    let cache = &app.header_cache[t_idx];
    let token = match auth {
        Some((key, token)) if cache.enabled() && Arc::ptr_eq(&key.account, &shared.default_account) => token,
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

fn select_app(snap: &Snapshot, headers: &HeaderMap) -> Result<usize, ProxyError> {
    match headers.get(X_APP) {
        Some(v) => {
            let name = v.to_str().unwrap_or("");
            snap.app_index(name)
                .ok_or_else(|| ProxyError::BadAppHeader(format!("x-bearerd-app names no app: {}", truncate(name, 100))))
        }
        None if snap.apps.len() == 1 => Ok(0),
        None => {
            Err(ProxyError::BadAppHeader("several apps are configured: name one in the x-bearerd-app header".into()))
        }
    }
}

/// Reads an `/invoke` body: `{"context": {...}, "body": "<string>" | <json>}`.
async fn read_invoke(
    body: ProxyBody,
    headers: &HeaderMap,
) -> Result<(serde_json::Map<String, serde_json::Value>, ProxyBody, bool), ProxyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_INVOKE_BODY as u64) {
        return Err(ProxyError::InvokeBodyTooLarge { limit: MAX_INVOKE_BODY });
    }
    let bytes = match http_body_util::Limited::new(body, MAX_INVOKE_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::InvokeBodyTooLarge { limit: MAX_INVOKE_BODY });
        }
        Err(e) => return Err(ProxyError::BadFraming(e.to_string())),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((serde_json::Map::new(), ProxyBody::Empty, false));
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
        None | Some(serde_json::Value::Null) => (ProxyBody::Empty, false),
        Some(serde_json::Value::String(s)) => (ProxyBody::full(s), false),
        Some(v) => (ProxyBody::full(v.to_string()), true),
    };
    Ok((map, body, is_json))
}

/// Buffers a transparent request body up to `limit` (so it can be replayed, and so a malformed
/// one is refused before anything is sent); a larger body is streamed.
async fn read_transparent(mut body: ProxyBody, limit: usize) -> Result<ProxyBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(ProxyBody::Empty);
    }
    if matches!(body, ProxyBody::Full(_)) || body.size_hint().exact().is_some_and(|n| n > limit as u64) {
        return Ok(body);
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BadFraming(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(ProxyBody::Prefixed(Some(buf.freeze()), Box::new(body)));
            }
        }
    }
    Ok(ProxyBody::full(Bytes::from(buf)))
}

/// Removes what must not travel from the application to the upstream: hop-by-hop headers,
/// `x-bearerd-*`, `Host` (taken from the template) and framing (recomputed).
fn strip_request_headers(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    h.remove(header::HOST);
    h.remove(header::CONTENT_LENGTH);
    if h.keys().any(|k| k.as_str().starts_with("x-bearerd-")) {
        let ours: Vec<HeaderName> = h.keys().filter(|k| k.as_str().starts_with("x-bearerd-")).cloned().collect();
        for k in ours {
            h.remove(k);
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    crate::http1::is_hop_by_hop(name.as_str().as_bytes())
}

/// Removes hop-by-hop headers, including those named in `Connection`. Costs one pass over the
/// names when there are none, as is usual.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
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

/// `Retry-After` in seconds (the HTTP-date form is not honoured).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let secs: u64 = h.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
