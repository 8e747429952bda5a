//! The token-endpoint client: authorization-code exchange, refresh-token and client-credentials
//! grants, with the integration's client authentication style and custom headers.

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use tokio::time::Instant;

use super::{Token, unix_now};
use crate::config::{IntegrationSpec, TokenAuth};
use crate::http::ResponseHead;
use crate::secret::Secret;
use crate::upstream::{Body, Call, Target, Upstream, UpstreamError};

/// The largest token-endpoint answer bearerd reads.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// A grant sent to the token endpoint.
pub(crate) enum GrantRequest<'a> {
    AuthorizationCode { code: &'a str, redirect_uri: &'a str, verifier: &'a str },
    RefreshToken(&'a Secret),
    ClientCredentials,
}

impl GrantRequest<'_> {
    fn name(&self) -> &'static str {
        match self {
            GrantRequest::AuthorizationCode { .. } => "authorization_code",
            GrantRequest::RefreshToken(_) => "refresh_token",
            GrantRequest::ClientCredentials => "client_credentials",
        }
    }
}

/// Why a grant failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GrantError {
    /// The provider refused the grant itself (`invalid_grant`): the refresh token or code is dead.
    #[error("the provider answered invalid_grant{}", .0.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    InvalidGrant(Option<String>),
    #[error("the token endpoint did not answer in time")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

impl GrantError {
    /// The `result` label of the refresh and authorization counters.
    pub(crate) fn result_label(&self) -> &'static str {
        match self {
            GrantError::InvalidGrant(_) => "invalid_grant",
            GrantError::Timeout => "timeout",
            GrantError::Failed(_) => "error",
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    token_type: Option<String>,
    scope: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Sends one grant to the integration's token endpoint and returns the new token. A refresh
/// that returns no refresh token keeps `previous_refresh`.
pub(crate) async fn request_token(
    upstream: &Upstream,
    integ: &IntegrationSpec,
    grant: GrantRequest<'_>,
    previous_refresh: Option<&Secret>,
    deadline: Instant,
) -> Result<Token, GrantError> {
    let mut form = form_urlencoded(&[("grant_type", grant.name())]);
    match &grant {
        GrantRequest::AuthorizationCode { code, redirect_uri, verifier } => {
            form_push(&mut form, "code", code);
            form_push(&mut form, "redirect_uri", redirect_uri);
            form_push(&mut form, "code_verifier", verifier);
        }
        GrantRequest::RefreshToken(rt) => form_push(&mut form, "refresh_token", rt.expose()),
        GrantRequest::ClientCredentials => {
            if let Some(scope) = integ.option("scope") {
                form_push(&mut form, "scope", scope);
            }
        }
    }
    if let Some(resource) = integ.option("resource") {
        form_push(&mut form, "resource", resource);
    }
    let custom_auth = integ.custom_headers.iter().any(|(n, _)| n == header::AUTHORIZATION);
    if !custom_auth && integ.token_auth == TokenAuth::ClientSecretPost {
        form_push(&mut form, "client_id", &integ.client_id);
        form_push(&mut form, "client_secret", integ.client_secret.expose());
    }
    let target = Target::parse(&integ.token_url).ok_or_else(|| GrantError::Failed("token_url is not a URL".into()))?;
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if !custom_auth && integ.token_auth == TokenAuth::ClientSecretBasic {
        // RFC 6749 2.3.1: both parts form-encoded before they are joined.
        let enc = |v: &str| {
            let mut s = String::new();
            let _ = crate::template::escape::query_value(v, &mut s);
            s
        };
        let creds = format!("{}:{}", enc(&integ.client_id), enc(integ.client_secret.expose()));
        let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(creds));
        if let Ok(mut v) = HeaderValue::from_str(&value) {
            v.set_sensitive(true);
            h.insert(header::AUTHORIZATION, v);
        }
    }
    for (name, value) in &integ.custom_headers {
        if let Ok(mut v) = HeaderValue::from_str(value.expose()) {
            // Custom headers of a token request are kept like secrets (SPEC 1.2).
            v.set_sensitive(true);
            h.insert(name.clone(), v);
        }
    }
    let call = Call { method: &Method::POST, target, headers: &h, deadline, upgrade: false, te_trailers: false };
    let mut head = ResponseHead::new(http::StatusCode::OK);
    let body = upstream.send(call, Body::full(form), &mut head).await.map_err(|e| match e {
        UpstreamError::Timeout { .. } => GrantError::Timeout,
        e => GrantError::Failed(e.to_string()),
    })?;
    let status = head.status;
    let body = match tokio::time::timeout_at(deadline, http_body_util::Limited::new(body, MAX_TOKEN_RESPONSE).collect())
        .await
    {
        Err(_) => return Err(GrantError::Timeout),
        Ok(Err(e)) => return Err(GrantError::Failed(format!("reading the answer failed: {e}"))),
        Ok(Ok(b)) => b.to_bytes(),
    };
    let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
    if let Some(TokenResponse { error: Some(err), error_description, .. }) = &parsed {
        if err == "invalid_grant" {
            return Err(GrantError::InvalidGrant(error_description.clone()));
        }
        return Err(GrantError::Failed(format!("HTTP {}: {err}", status.as_u16())));
    }
    if !status.is_success() {
        return Err(GrantError::Failed(format!("HTTP {}", status.as_u16())));
    }
    let Some(r) = parsed else {
        return Err(GrantError::Failed(format!("HTTP {}: the answer is not a JSON token response", status.as_u16())));
    };
    let Some(access_token) = r.access_token.filter(|t| !t.is_empty()) else {
        return Err(GrantError::Failed(format!("HTTP {}: the answer has no access_token", status.as_u16())));
    };
    let expires_in = match &r.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(Token {
        access_token: Secret::new(access_token),
        refresh_token: r.refresh_token.filter(|t| !t.is_empty()).map(Secret::new).or_else(|| previous_refresh.cloned()),
        expires_at: expires_in.map(|s| unix_now().saturating_add(s)),
        token_type: r.token_type,
        scope: r.scope,
        ..Token::new(Secret::new(""))
    })
}

/// `k=v&k=v`, form-encoded.
fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (k, v) in pairs {
        form_push(&mut s, k, v);
    }
    s
}

fn form_push(s: &mut String, k: &str, v: &str) {
    if !s.is_empty() {
        s.push('&');
    }
    let _ = crate::template::escape::query_value(k, s);
    s.push('=');
    let _ = crate::template::escape::query_value(v, s);
}
