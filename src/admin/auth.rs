//! The authorization-code flow: `GET /auth/authorize/<app>/<integration>[?account=]` sends the
//! browser to the provider with `state` and a PKCE S256 challenge; `GET /auth/callback` checks the
//! state (single use, 10 minutes, bound to app, integration and account), exchanges the code and
//! stores the token. Codes, verifiers and states are secrets: they are never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderValue, Response, StatusCode, header};
use tokio::time::Instant;

use super::{Admin, query_param};
use crate::config::Grant;
use crate::secret::Secret;
use crate::snapshot::Snapshot;
use crate::token::TokenKey;
use crate::token::oauth::{self, GrantError, GrantRequest};
use crate::upstream::Body;

/// How long a started authorization may take.
pub(crate) const STATE_TTL: Duration = Duration::from_secs(600);
/// Started authorizations kept at most (the oldest are dropped beyond it).
const MAX_PENDING: usize = 10_000;

struct Started {
    key: TokenKey,
    verifier: Secret,
    at: Instant,
}

/// Authorizations started and not yet called back, by `state`.
#[derive(Default)]
pub(crate) struct Pending(Mutex<HashMap<String, Started>>);

impl Pending {
    fn insert(&self, state: String, s: Started) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, v| v.at.elapsed() < STATE_TTL);
        if m.len() >= MAX_PENDING
            && let Some(oldest) = m.iter().min_by_key(|(_, v)| v.at).map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(state, s);
    }

    /// Takes a state: it can be used once, and only within [`STATE_TTL`].
    fn take(&self, state: &str) -> Option<Started> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(state)?;
        (s.at.elapsed() < STATE_TTL).then_some(s)
    }
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// PKCE S256: base64url(sha256(verifier)).
pub(crate) fn challenge(verifier: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// `GET /auth/authorize/<app>/<integration>[?account=]`
pub(crate) fn authorize(
    admin: &Admin,
    snap: &Snapshot,
    app: &str,
    integration: &str,
    query: Option<&str>,
) -> Response<Body> {
    let Some(a) = snap.app(app) else {
        return page(StatusCode::NOT_FOUND, "Unknown app", &format!("No app named {app}."));
    };
    let Some((_, integ)) = a.integration_by_name(integration) else {
        return page(
            StatusCode::NOT_FOUND,
            "Unknown integration",
            &format!("App {app} has no integration named {integration}."),
        );
    };
    if !a.config.missing.is_empty() {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not configured yet",
            &format!(
                "App {app} still needs values: {}. Enter them at /custom_configs first.",
                a.config.missing.join(", ")
            ),
        );
    }
    if integ.grant == Grant::ClientCredentials {
        return page(
            StatusCode::BAD_REQUEST,
            "Nothing to authorize",
            "This integration uses client credentials: bearerd fetches its tokens itself.",
        );
    }
    let named = query_param(query, "account");
    let account = match crate::token::account(integ, named.as_deref()) {
        Ok(a) => a.name.to_string(),
        Err(crate::token::AccountError::Invalid) => {
            return page(StatusCode::BAD_REQUEST, "Bad account", "account must be 1-256 visible characters.");
        }
        Err(crate::token::AccountError::Required(_)) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Account required",
                "This integration has agent tokens: add ?account=<agent id>.",
            );
        }
    };
    let Some(authorize_url) = &integ.authorize_url else {
        return page(StatusCode::BAD_REQUEST, "No authorize_url", "The integration has no authorize_url.");
    };
    let state = random_token();
    let verifier = random_token();
    let redirect_uri = format!("{}/auth/callback", snap.config.admin.public_url);
    let mut url = authorize_url.clone();
    let mut push = |k: &str, v: &str| {
        url.push(if url.contains('?') { '&' } else { '?' });
        let _ = crate::template::escape::query_value(k, &mut url);
        url.push('=');
        let _ = crate::template::escape::query_value(v, &mut url);
    };
    push("response_type", "code");
    push("client_id", &integ.client_id);
    push("redirect_uri", &redirect_uri);
    push("state", &state);
    push("code_challenge", &challenge(&verifier));
    push("code_challenge_method", "S256");
    for (k, v) in &integ.authorize_params {
        if !matches!(
            k.as_str(),
            "response_type" | "client_id" | "redirect_uri" | "state" | "code_challenge" | "code_challenge_method"
        ) {
            push(k, v);
        }
    }
    admin.pending.insert(
        state,
        Started { key: TokenKey::new(app, integration, &account), verifier: Secret::new(verifier), at: Instant::now() },
    );
    tracing::info!(app, integration, "authorization started");
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /auth/callback?code=&state=` (or `?error=&state=`).
pub(crate) async fn callback(admin: &Admin, snap: &Snapshot, query: Option<&str>) -> Response<Body> {
    let shared = &admin.state;
    let Some(state) = query_param(query, "state") else {
        return page(StatusCode::BAD_REQUEST, "Authorization failed", "The callback has no state.");
    };
    let Some(started) = admin.pending.take(&state) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "The state is unknown, expired or already used. Start the authorization again.",
        );
    };
    let key = started.key;
    let counted = |result: &str| {
        shared.metrics.authorizations.with_label_values(&[&*key.app, &*key.integration, result]).inc();
        if result != "ok" {
            shared.tokens.events.push(&key, "authorization failed", Some(result.to_string()));
        }
    };
    let Some((_, integ)) = snap.app(&key.app).and_then(|a| a.integration_by_name(&key.integration)) else {
        return page(StatusCode::BAD_REQUEST, "Authorization failed", "The integration is no longer configured.");
    };
    if let Some(err) = query_param(query, "error") {
        counted("denied");
        let desc = query_param(query, "error_description").unwrap_or_default();
        tracing::warn!(app = %key.app, integration = %key.integration, error = %err, "the provider refused the authorization");
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization refused",
            &format!("The provider answered: {err}. {desc}"),
        );
    }
    if let Some(issuer) = &integ.issuer
        && query_param(query, "iss").as_deref() != Some(issuer.as_str())
    {
        counted("error");
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "The callback's iss does not match the integration's issuer.",
        );
    }
    let Some(code) = query_param(query, "code").filter(|c| !c.is_empty()) else {
        counted("error");
        return page(StatusCode::BAD_REQUEST, "Authorization failed", "The callback has no code.");
    };
    let redirect_uri = format!("{}/auth/callback", snap.config.admin.public_url);
    let deadline = Instant::now() + shared.upstream.timeout();
    let grant = GrantRequest::AuthorizationCode {
        code: &code,
        redirect_uri: &redirect_uri,
        verifier: started.verifier.expose(),
    };
    let mut token = match oauth::request_token(&shared.upstream, integ, grant, None, deadline).await {
        Ok(t) => t,
        Err(e) => {
            counted(e.result_label());
            tracing::warn!(token = %key, error = %e, "code exchange failed");
            let status =
                if matches!(e, GrantError::Timeout) { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
            return page(status, "Authorization failed", &format!("The token endpoint refused the code: {e}"));
        }
    };
    token.binding = Some(integ.binding.clone());
    if let Err(e) = shared.tokens.put(&key, token).await {
        counted("error");
        tracing::error!(token = %key, error = %e, "storing the new token failed");
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Authorization failed",
            "The token could not be stored; see bearerd's log.",
        );
    }
    counted("ok");
    shared.refresher.reset(&key);
    tracing::info!(token = %key, "authorized");
    shared.tokens.events.push(&key, "authorized", None);
    let name = integ.display_name.as_deref().unwrap_or(&integ.name);
    let text = format!("{name} is authorized for app {} (account {}).", key.app, key.account);
    page(StatusCode::OK, "Authorized", &text)
}

fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{x}</p><p><a href=\"/\">Back to bearerd</a></p></body></html>\n",
        t = html_escape(title),
        x = html_escape(text)
    );
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_is_base64url_of_sha256() {
        // Computed independently: base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip('=')
        assert_eq!(
            challenge("dBjftJeZ4CVP-mJ0kZFk9hAbtnSeJE0u7X8sgYhGgTE"),
            "f0ZmO-UMqnagCKTVHrNYgyXcF036uXueHgzRYz3yeJ8"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn states_expire_after_ten_minutes() {
        let p = Pending::default();
        let started =
            || Started { key: TokenKey::new("a", "i", "default"), verifier: Secret::new("v"), at: Instant::now() };
        p.insert("late".into(), started());
        p.insert("in-time".into(), started());
        tokio::time::advance(STATE_TTL - Duration::from_secs(1)).await;
        assert!(p.take("in-time").is_some(), "within ten minutes");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(p.take("late").is_none(), "expired");
        // Expired states are dropped when the next one is started.
        p.insert("old".into(), started());
        tokio::time::advance(STATE_TTL).await;
        p.insert("new".into(), started());
        assert_eq!(p.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn states_are_single_use() {
        let p = Pending::default();
        p.insert(
            "s".into(),
            Started { key: TokenKey::new("a", "i", "default"), verifier: Secret::new("v"), at: Instant::now() },
        );
        assert!(p.take("s").is_some());
        assert!(p.take("s").is_none());
        assert!(p.take("other").is_none());
        assert_eq!(html_escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
