//! The control plane: health, readiness, metrics, the token admin API, reload, and the
//! authorization flow ([`auth`]), whose pending authorizations it owns. `/admin/*` needs
//! `Authorization: Bearer <admin.token>` when a token is configured.

pub(crate) mod auth;
pub(crate) mod custom_configs;
pub mod explain;
pub(crate) mod page;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use serde::Deserialize;

use crate::reload::Reloader;
use crate::secret::Secret;
use crate::snapshot::Snapshot;
use crate::state::State;
use crate::token::{DEFAULT_ACCOUNT, Token, TokenKey, TokenState, unix_now};
use crate::upstream::Body;

const MAX_ADMIN_BODY: usize = 64 * 1024;
/// How long an admin request body may take to arrive.
const ADMIN_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The control plane: the shared state it reads and changes, and what is its own.
pub struct Admin {
    pub(crate) state: Arc<State>,
    reloader: Arc<Reloader>,
    /// Authorizations started and not yet called back.
    pending: auth::Pending,
    ready: AtomicBool,
    draining: AtomicBool,
    /// The admin page's per-process token: its forms carry it, other origins cannot know it.
    csrf: Secret,
}

impl Admin {
    pub(crate) fn new(state: Arc<State>, reloader: Arc<Reloader>) -> Admin {
        Admin {
            state,
            reloader,
            pending: auth::Pending::default(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            csrf: {
                use base64::Engine as _;
                let mut b = [0u8; 24];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
                Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
            },
        }
    }

    /// Whether `given` is the admin page's token (compared in constant time).
    pub(crate) fn csrf_matches(&self, given: &str) -> bool {
        self.csrf.constant_time_eq(given.as_bytes())
    }

    /// A configuration is loaded and both listeners are up.
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Shutdown has begun: `/readyz` answers 503 from now on.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Ready: a configuration is loaded, both listeners are up, and shutdown has not begun
    /// (public for the shutdown test).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// Serves one control-plane request.
pub(crate) async fn handle(admin: Arc<Admin>, req: Request<Incoming>) -> Response<Body> {
    // Every body is read whole before anything is done, so a malformed or late body refuses the
    // request instead of being ignored by an endpoint that does not look at it.
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = Request::from_parts(parts, body);
    let shared = &admin.state;
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            // Detail that does not change readiness: an intercept CA that expires soon.
            let detail = match &shared.intercept {
                Ok(c) if c.authority().remaining() < crate::intercept::CA_WARN => format!(
                    "warning: the intercept CA expires in {} days\n",
                    c.authority().remaining().as_secs() / 86_400
                ),
                _ => String::new(),
            };
            if admin.is_ready() {
                text(StatusCode::OK, "text/plain", format!("ready\n{detail}"))
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready\n{detail}"))
            }
        }
        (&Method::GET, "/ca.pem") => match &shared.intercept {
            Ok(c) => text(StatusCode::OK, "application/x-pem-file", c.authority().cert_pem().to_string()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("no intercept CA: {why}\n")),
        },
        (&Method::GET, "/metrics") => {
            count_token_states(shared, &shared.snapshot.load());
            let mut r = Response::new(Body::full(shared.metrics.render()));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            r
        }
        (&Method::GET, "/auth/callback") => {
            auth::callback(&admin, &shared.snapshot.load_full(), req.uri().query()).await
        }
        (&Method::GET, p) if p.starts_with("/auth/authorize/") => {
            // Starting an authorization binds an account to whoever consents: with an admin
            // token, only those who have it may (the callback needs the single-use state).
            if let Err(r) = authorized(shared, &req) {
                return *r;
            }
            let snap = shared.snapshot.load_full();
            match p["/auth/authorize/".len()..].split_once('/') {
                Some((app, integration)) if !integration.contains('/') => {
                    auth::authorize(&admin, &snap, app, integration, req.uri().query())
                }
                _ => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"message": "use /auth/authorize/<app>/<integration>"}),
                ),
            }
        }
        (_, p) if p.starts_with("/admin/") => match authorized(shared, &req) {
            // A web page the operator visits cannot reload, forget or put tokens.
            Ok(())
                if req.method() != Method::GET
                    && !same_origin(&req, &shared.snapshot.load().config.admin.public_url) =>
            {
                json(
                    StatusCode::FORBIDDEN,
                    serde_json::json!({"message": "a cross-site request cannot change bearerd's state (Origin / Sec-Fetch-Site)"}),
                )
            }
            Ok(()) => admin_api(&admin, req).await,
            Err(r) => *r,
        },
        (&Method::GET, "/") => match authorized(shared, &req) {
            Ok(()) => page::page(&admin, query_param(req.uri().query(), "notice").as_deref()),
            Err(r) => *r,
        },
        (&Method::GET, "/custom_configs") => match authorized(shared, &req) {
            Ok(()) => custom_configs::page(&admin, query_param(req.uri().query(), "notice").as_deref()),
            Err(r) => *r,
        },
        (&Method::POST, "/custom_configs") => match authorized(shared, &req) {
            Ok(()) => custom_configs::save(&admin, &req).await,
            Err(r) => *r,
        },
        (&Method::POST, p) if p.starts_with("/ui/") => match authorized(shared, &req) {
            Ok(()) => page::act(&admin, &req).await,
            Err(r) => *r,
        },
        _ => json(StatusCode::NOT_FOUND, serde_json::json!({"message": "not found"})),
    }
}

/// A request body, read whole: at most [`MAX_ADMIN_BODY`] within [`ADMIN_BODY_TIMEOUT`]. The
/// refusals close the connection (what is left of the body cannot be told from a next request).
async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    let refuse = |status, message: &str| {
        let mut r = json(status, serde_json::json!({ "message": message }));
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let collect = http_body_util::Limited::new(body, MAX_ADMIN_BODY).collect();
    match tokio::time::timeout(ADMIN_BODY_TIMEOUT, collect).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "the body is larger than 64 KiB"))
        }
        Ok(Err(_)) => Err(refuse(StatusCode::BAD_REQUEST, "the request body is malformed")),
        Err(_) => Err(refuse(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time")),
    }
}

/// Whether a state-changing admin request comes from the admin listener's own origin (SPEC 2.2):
/// its `Sec-Fetch-Site` (browsers send it) is `same-origin` or `none`, and an `Origin`, when
/// given, is `public_url`'s, or the request's own `Host` where that is an IP address or
/// `localhost` (another name that resolves here, DNS rebinding, is not this listener's origin).
/// Scripts (curl) send neither header.
pub(crate) fn same_origin<B>(req: &Request<B>, public_url: &str) -> bool {
    let header = |n: header::HeaderName| req.headers().get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = header(header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = header(header::ORIGIN) else { return true };
    // public_url's origin: its scheme and authority (it may have a path behind a proxy).
    let own = public_url.find("://").map(|i| i + 3 + public_url[i + 3..].find('/').unwrap_or(public_url.len() - i - 3));
    if own.is_some_and(|end| origin.eq_ignore_ascii_case(&public_url[..end])) {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else { return false };
    let Some(host) = header(header::HOST) else { return false };
    let (name, _) = crate::template::escape::split_port(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let local = name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok();
    local && authority.eq_ignore_ascii_case(host)
}

/// When `admin.token` is configured: the request must carry it, as `Authorization: Bearer
/// <token>` (scripts) or as the password of HTTP Basic (a browser asks for it).
fn authorized(shared: &State, req: &Request<Bytes>) -> Result<(), Box<Response<Body>>> {
    use base64::Engine as _;
    let snap = shared.snapshot.load();
    let Some(token) = &snap.config.admin.token else {
        return Ok(());
    };
    let value = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let given: Vec<u8> = if let Some(bearer) = value.strip_prefix("Bearer ") {
        bearer.as_bytes().to_vec()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).unwrap_or_default();
        match decoded.iter().position(|&b| b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => Vec::new(),
        }
    } else {
        Vec::new()
    };
    if token.constant_time_eq(&given) {
        Ok(())
    } else {
        let mut r = json(StatusCode::UNAUTHORIZED, serde_json::json!({"message": "admin token required"}));
        r.headers_mut().append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r.headers_mut().append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"bearerd\""));
        Err(Box::new(r))
    }
}

async fn admin_api(admin: &Admin, req: Request<Bytes>) -> Response<Body> {
    let shared = &admin.state;
    let snap = shared.snapshot.load_full();
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method().clone(), segs.as_slice()) {
        (Method::GET, ["admin", "tokens"]) => json(StatusCode::OK, list_tokens(shared, &snap)),
        // The app's installation parameters, for `bearerd-fdk` to hand to its handlers as
        // `args.iparams` (secure ones are not among them: bearerd keeps those).
        (Method::GET, ["admin", "iparams", app]) => match snap.app(app) {
            Some(a) => json(StatusCode::OK, custom_configs::iparams_json(a)),
            None => json(StatusCode::NOT_FOUND, serde_json::json!({"message": format!("no app named {app}")})),
        },
        (Method::POST, ["admin", "explain"]) => match serde_json::from_slice::<explain::ExplainRequest>(req.body()) {
            Ok(r) => {
                json(StatusCode::OK, explain::explain(&snap, Some(&shared.tokens), &|p| shared.is_data_port(p), &r))
            }
            Err(e) => {
                bad(&format!("invalid explain body: {e} (fields: method, url, headers?, app?, account?, caller?)"))
            }
        },
        (Method::POST, ["admin", "reload"]) => match admin.reloader.reload("admin").await {
            Ok(r) => json(
                StatusCode::OK,
                serde_json::json!({"generation": r.generation, "changed": r.changed, "notes": r.notes}),
            ),
            Err(errors) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>()}),
            ),
        },
        (m, ["admin", "tokens", app, integration]) if m == Method::PUT || m == Method::DELETE => {
            let account = query_param(req.uri().query(), "account");
            let (key, binding) = match token_key(&snap, app, integration, account.as_deref()) {
                Ok(k) => k,
                Err(r) => return *r,
            };
            if m == Method::DELETE {
                return match shared.tokens.delete(&key).await {
                    Ok(true) => {
                        tracing::info!(token = %key, outcome = "deleted", "token deleted through the admin API");
                        shared.tokens.events.push(&key, "deleted", None);
                        json(StatusCode::OK, serde_json::json!({"deleted": true}))
                    }
                    Ok(false) => json(StatusCode::NOT_FOUND, serde_json::json!({"message": "no token stored"})),
                    Err(e) => store_error(e),
                };
            }
            let put: PutToken = match serde_json::from_slice(req.body()) {
                Ok(p) => p,
                Err(e) => return bad(&format!("invalid token body: {e}")),
            };
            if put.access_token.is_empty() {
                return bad("access_token must not be empty");
            }
            let token = Token {
                access_token: Secret::new(put.access_token),
                refresh_token: put.refresh_token.filter(|r| !r.is_empty()).map(Secret::new),
                expires_at: put.expires_in.map(|s| unix_now().saturating_add(s)),
                token_type: put.token_type,
                scope: put.scope,
                binding: Some(binding.clone()),
                ..Token::new(Secret::new(""))
            };
            match shared.tokens.put(&key, token).await {
                Ok(t) => {
                    shared.refresher.reset(&key);
                    tracing::info!(token = %key, "token stored through the admin API");
                    shared.tokens.events.push(&key, "stored", None);
                    json(StatusCode::OK, entry(&key, Some(&t), t.state(unix_now(), &binding)))
                }
                Err(e) => store_error(e),
            }
        }
        _ => json(StatusCode::NOT_FOUND, serde_json::json!({"message": "not found"})),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutToken {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

fn token_key(
    snap: &Snapshot,
    app: &str,
    integration: &str,
    account: Option<&str>,
) -> Result<(TokenKey, String), Box<Response<Body>>> {
    let not_found = |m: String| Box::new(json(StatusCode::NOT_FOUND, serde_json::json!({ "message": m })));
    let Some(a) = snap.app(app) else {
        return Err(not_found(format!("no app named {app}")));
    };
    let Some((_, integ)) = a.integration_by_name(integration) else {
        return Err(not_found(format!("app {app} has no integration named {integration}")));
    };
    // The data plane's account rule: a token stored here is one a request can use.
    let account = match crate::token::account(integ, account) {
        Ok(a) if a.ignored => {
            return Err(Box::new(bad(&format!(
                "integration {integration} uses client credentials: it has one token, under no account"
            ))));
        }
        Ok(a) => a.name,
        Err(crate::token::AccountError::Invalid) => {
            return Err(Box::new(bad("account must be 1-256 visible characters")));
        }
        Err(crate::token::AccountError::Required(_)) => {
            return Err(Box::new(bad("this integration has agent tokens: give ?account=<agent id>")));
        }
    };
    Ok((TokenKey::new(app, integration, account), integ.binding.clone()))
}

/// Every configured (app, integration) with the accounts that have tokens.
/// The token states, in the order [`state_counts`] counts them.
const STATES: [TokenState; 4] = [TokenState::Valid, TokenState::Expired, TokenState::Missing, TokenState::Reauthorize];

/// Every account of every configured integration with its token and that token's state: the
/// stored ones, and the default account of a non-agent integration that has none (missing).
/// What `/admin/tokens`, the admin page and the `tokens` gauge show.
fn accounts<'s>(
    stored: &'s [(TokenKey, Arc<Token>)],
    snap: &'s Snapshot,
    mut each: impl FnMut(&TokenKey, Option<&Token>, &crate::config::IntegrationSpec, TokenState),
) {
    let now = unix_now();
    for app in &snap.apps {
        for integ in &app.config.fdk.integrations {
            let mut any = false;
            for (k, t) in stored.iter().filter(|(k, _)| *k.app == *app.name && *k.integration == *integ.name) {
                any |= &*k.account == DEFAULT_ACCOUNT;
                each(k, Some(t), integ, t.state(now, &integ.binding));
            }
            if !any && !integ.agent {
                each(&TokenKey::new(&app.name, &integ.name, DEFAULT_ACCOUNT), None, integ, TokenState::Missing);
            }
        }
    }
}

/// Each configured integration (app, integration), in order, with its accounts by state (as
/// [`STATES`]).
fn state_counts<'s>(stored: &'s [(TokenKey, Arc<Token>)], snap: &'s Snapshot) -> Vec<(&'s str, &'s str, [usize; 4])> {
    let mut counts: Vec<(&str, &str, [usize; 4])> = snap
        .apps
        .iter()
        .flat_map(|a| a.config.fdk.integrations.iter().map(move |i| (&*a.name, i.name.as_str(), [0; 4])))
        .collect();
    accounts(stored, snap, |k, _, _, state| {
        if let Some(c) = counts.iter_mut().find(|c| c.0 == &*k.app && c.1 == &*k.integration) {
            c.2[STATES.iter().position(|s| *s == state).unwrap_or(2)] += 1;
        }
    });
    counts
}

fn list_tokens(shared: &State, snap: &Snapshot) -> serde_json::Value {
    let stored = shared.tokens.list();
    let mut out = Vec::new();
    accounts(&stored, snap, |k, t, _, state| {
        let mut e = entry(k, t, state);
        if state != TokenState::Valid {
            e["authorize"] = snap.authorize_url(&k.app, &k.integration, &k.account).into();
        }
        out.push(e);
    });
    serde_json::Value::Array(out)
}

/// One line for the log: each app with its templates and its accounts by token state
/// (`demo: 3 templates, api 1 valid 1 missing`). Never a token.
pub(crate) fn summary(shared: &State) -> String {
    let snap = shared.snapshot.load();
    let stored = shared.tokens.list();
    let counts = state_counts(&stored, &snap);
    let mut apps = Vec::new();
    for app in &snap.apps {
        let mut line = format!("{}: {} templates", app.name, app.templates().len());
        for (_, integ, n) in counts.iter().filter(|c| c.0 == &*app.name) {
            line.push_str(&format!(", {integ}"));
            for (n, state) in n.iter().zip(STATES).filter(|(n, _)| **n > 0) {
                line.push_str(&format!(" {n} {}", state.as_str()));
            }
        }
        apps.push(line);
    }
    apps.join("; ")
}

/// Sets `tokens{app,integration,state}`: every configured integration's four states, most at 0.
fn count_token_states(shared: &State, snap: &Snapshot) {
    let stored = shared.tokens.list();
    let gauge = &shared.metrics.tokens;
    gauge.reset();
    for (app, integ, counts) in state_counts(&stored, snap) {
        for (n, state) in counts.iter().zip(STATES) {
            gauge.with_label_values(&[app, integ, state.as_str()]).set(*n as i64);
        }
    }
}

fn entry(k: &TokenKey, t: Option<&Token>, state: TokenState) -> serde_json::Value {
    serde_json::json!({
        "app": &*k.app,
        "integration": &*k.integration,
        "account": &*k.account,
        "state": state,
        "expires_at": t.and_then(|t| t.expires_at).map(rfc3339),
        "scope": t.and_then(|t| t.scope.clone()),
    })
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-29T10:00:00Z`).
pub(crate) fn rfc3339(secs: u64) -> String {
    let (y, m, d) = crate::http::write::civil_date(secs / 86_400);
    let rem = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The first value of `name` in a query string, percent-decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
    })
}

fn store_error(e: crate::token::StoreError) -> Response<Body> {
    tracing::error!(error = %e, "token store write failed");
    json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"message": e.to_string()}))
}

fn bad(message: &str) -> Response<Body> {
    json(StatusCode::BAD_REQUEST, serde_json::json!({ "message": message }))
}

pub(crate) fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = text(status, "application/json", "");
    *r.body_mut() = Body::full(v.to_string());
    r
}

pub(crate) fn text(status: StatusCode, content_type: &'static str, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn state_changes_come_from_the_listeners_own_origin() {
        let req = |headers: &[(&str, &str)]| {
            let mut b = Request::builder().method("POST").uri("/admin/reload");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        let public = "https://bearerd.example/admin";
        assert!(same_origin(&req(&[]), public), "a script sends neither header");
        assert!(same_origin(&req(&[("origin", "https://bearerd.example"), ("host", "x")]), public));
        let local = [("origin", "http://127.0.0.1:10001"), ("host", "127.0.0.1:10001")];
        assert!(same_origin(&req(&local), public));
        assert!(same_origin(&req(&[("origin", "http://localhost:10001"), ("host", "localhost:10001")]), public));
        assert!(same_origin(&req(&[("sec-fetch-site", "same-origin"), ("host", "x")]), public));
        assert!(!same_origin(&req(&[("origin", "http://evil.example"), ("host", "127.0.0.1:10001")]), public));
        assert!(!same_origin(&req(&[("sec-fetch-site", "cross-site")]), public));
        assert!(!same_origin(&req(&[("sec-fetch-site", "same-site")]), public));
        assert!(!same_origin(&req(&[("origin", "null"), ("host", "127.0.0.1:10001")]), public));
        // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
        let rebound = [("origin", "http://evil.example:10001"), ("host", "evil.example:10001")];
        assert!(!same_origin(&req(&rebound), public));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&account=agent%2042"), "account").as_deref(), Some("agent 42"));
        assert_eq!(query_param(Some("a=1"), "account"), None);
    }
}
