//! Data-plane errors and the one place where an error becomes a status and an FDK-shaped body:
//! `{"status": 404, "message": "...", "errorSource": "APP"}`, with `x-bearerd-error: 1`.

use http::{HeaderValue, StatusCode, header};

use super::Answer;
use crate::http::{HttpError, ResponseHead};
use crate::snapshot::Snapshot;
use crate::template::RenderError;
use crate::token::TokenError;
use crate::upstream::{Body, UpstreamError};

/// Everything that can go wrong on the data plane. Messages never carry a token, a secret, or a
/// rendered path or query.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("Invalid request body: {0}")]
    BadInvokeBody(String),
    #[error("Request body is larger than {limit} bytes")]
    InvokeBodyTooLarge { limit: usize },
    #[error("Malformed request: {0}")]
    BadFraming(String),
    #[error("The request body did not arrive within the request's timeout")]
    BodyTimeout,
    #[error("Not implemented: {0}")]
    NotImplemented(String),
    #[error("Request headers are larger than {limit} bytes or more than {count}")]
    HeadersTooLarge { limit: usize, count: usize },
    #[error("Rendering the request template failed: {0}")]
    Render(RenderError),
    #[error("{0}")]
    BadAppHeader(String),
    #[error("Integration {integration} has agent tokens: the request must name the agent in x-bearerd-account")]
    MissingAccount { integration: String },
    #[error("No token for integration {integration} (account {account}): authorize it first")]
    NoToken { integration: String, account: String, authorize: String },
    #[error("The token for integration {integration} (account {account}) can no longer be refreshed: authorize again")]
    Reauthorize { integration: String, account: String, authorize: String },
    /// Displayed (and so logged) without the path, which may hold secrets; the answer to the
    /// application, which sent it, names it.
    #[error("No request template matches {method} {host}")]
    NoMatch { method: http::Method, host: String, path: String },
    #[error("Request template not found: {0}")]
    TemplateNotFound(String),
    #[error(transparent)]
    Upstream(UpstreamError),
    #[error("Token endpoint for integration {integration} failed: {reason}")]
    TokenEndpoint { integration: String, reason: String },
    #[error("Token endpoint for integration {integration} did not answer in time")]
    TokenEndpointTimeout { integration: String },
    #[error("Token store failed: {0}")]
    Store(String),
    /// A request inside an intercepted tunnel for another host than the CONNECT's.
    #[error("Misdirected request: this tunnel is for {tunnel}, the request is for {host}")]
    Misdirected { host: String, tunnel: String },
    #[error("Bad CONNECT: {0}")]
    BadConnect(String),
    /// A CONNECT to a host bearerd neither intercepts nor tunnels (`app`: the app it named).
    #[error("CONNECT to {host} refused: {}", match app {
        Some(app) => format!("no template of app {app} covers it"),
        None => "no request template covers it, and it is not in tunnel_hosts".into(),
    })]
    ConnectRefused { host: String, app: Option<String> },
    #[error("CONNECT to {0} refused: bearerd intercepts host names that templates name, never IP addresses")]
    ConnectToAddress(String),
    /// No credential, or one no caller accepts (SPEC 2.2): 401 for `/invoke`, else 407.
    #[error("{failure}")]
    Unauthenticated { failure: crate::caller::Failure, invoke: bool },
    #[error("Caller {caller} may not use app {app}")]
    CallerForbidden { caller: String, app: String },
    #[error("Caller {caller} may not use account {account}")]
    AccountForbidden { caller: String, account: String },
    /// An app that still lacks required values (`run --app` before `/custom_configs`).
    #[error("App {app} is not configured yet: {missing} have no value; enter them at {page}")]
    NotConfigured { app: String, missing: String, page: String },
    /// A CONNECT that bearerd would intercept, without an intercept CA to do it with.
    #[error("HTTPS interception is unavailable: {0}")]
    InterceptUnavailable(String),
}

/// Who is at fault, in FDK's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorSource {
    App,
    Platform,
}

impl ErrorSource {
    fn as_str(self) -> &'static str {
        match self {
            ErrorSource::App => "APP",
            ErrorSource::Platform => "PLATFORM",
        }
    }
}

impl ProxyError {
    /// The status and error source of each error. Exhaustive: a new variant must be placed.
    pub(crate) fn classify(&self) -> (StatusCode, ErrorSource) {
        use ErrorSource::*;
        match self {
            ProxyError::BadInvokeBody(_)
            | ProxyError::BadFraming(_)
            | ProxyError::Render(RenderError::Host(_))
            | ProxyError::Render(RenderError::InvalidHost)
            | ProxyError::Render(RenderError::Header { .. })
            | ProxyError::Render(RenderError::HeaderInvalid(_))
            | ProxyError::Render(RenderError::Path(_))
            | ProxyError::Render(RenderError::TooLong(_))
            | ProxyError::BadAppHeader(_)
            | ProxyError::MissingAccount { .. } => (StatusCode::BAD_REQUEST, App),
            ProxyError::InvokeBodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, App),
            ProxyError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, App),
            ProxyError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, App),
            ProxyError::HeadersTooLarge { .. } => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, App),
            ProxyError::NoToken { .. } | ProxyError::Reauthorize { .. } => (StatusCode::UNAUTHORIZED, Platform),
            ProxyError::NoMatch { .. }
            | ProxyError::Render(RenderError::HostNotAllowed(_))
            | ProxyError::Upstream(UpstreamError::AddressNotAllowed(_)) => (StatusCode::FORBIDDEN, App),
            ProxyError::TemplateNotFound(_) => (StatusCode::NOT_FOUND, App),
            ProxyError::Misdirected { .. } => (StatusCode::MISDIRECTED_REQUEST, App),
            ProxyError::BadConnect(_) => (StatusCode::BAD_REQUEST, App),
            ProxyError::ConnectRefused { .. } | ProxyError::ConnectToAddress(_) => (StatusCode::FORBIDDEN, App),
            ProxyError::Unauthenticated { invoke: true, .. } => (StatusCode::UNAUTHORIZED, App),
            ProxyError::Unauthenticated { invoke: false, .. } => (StatusCode::PROXY_AUTHENTICATION_REQUIRED, App),
            ProxyError::CallerForbidden { .. } | ProxyError::AccountForbidden { .. } => (StatusCode::FORBIDDEN, App),
            ProxyError::InterceptUnavailable(_) | ProxyError::NotConfigured { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, Platform)
            }
            ProxyError::Upstream(UpstreamError::RequestBody(_)) => (StatusCode::BAD_REQUEST, App),
            ProxyError::Upstream(
                UpstreamError::Connect { .. }
                | UpstreamError::Tls { .. }
                | UpstreamError::Protocol { .. }
                | UpstreamError::Closed { .. },
            )
            | ProxyError::TokenEndpoint { .. }
            | ProxyError::Store(_) => (StatusCode::BAD_GATEWAY, Platform),
            ProxyError::Upstream(UpstreamError::Timeout { .. }) | ProxyError::TokenEndpointTimeout { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, Platform)
            }
        }
    }

    /// The `reason` label of `caller_auth_failures_total`, for errors that refuse a caller.
    pub(crate) fn auth_reason(&self) -> Option<&'static str> {
        match self {
            ProxyError::Unauthenticated { failure, .. } => Some(failure.reason()),
            ProxyError::CallerForbidden { .. } | ProxyError::AccountForbidden { .. } => Some("forbidden"),
            _ => None,
        }
    }

    /// The reason phrase of a refused CONNECT: clients that fail a CONNECT print it alone
    /// (Python, Go, wget, curl), so it says why.
    pub(crate) fn connect_reason(&self) -> String {
        let text = match self {
            ProxyError::ConnectRefused { host, app: None } => format!("No template covers {host}"),
            ProxyError::ConnectRefused { host, app: Some(app) } => format!("No template of app {app} covers {host}"),
            e => e.to_string(),
        };
        // Visible characters only (RFC 9112 4: a reason phrase has no CR or LF), and short.
        text.chars().take(200).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
    }

    /// The kind label of `upstream_errors_total`, for errors that are the upstream's.
    pub(crate) fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ProxyError::Upstream(e) => e.kind(),
            _ => None,
        }
    }

    /// The data-plane error for a token that could not be had; `snap` gives the URL where a
    /// person authorizes.
    pub(crate) fn from_token(e: TokenError, snap: &Snapshot) -> ProxyError {
        match e {
            TokenError::Missing(key) => ProxyError::NoToken {
                integration: key.integration.to_string(),
                account: key.account.to_string(),
                authorize: snap.authorize_url(&key.app, &key.integration, &key.account),
            },
            TokenError::Reauthorize(key) => ProxyError::Reauthorize {
                integration: key.integration.to_string(),
                account: key.account.to_string(),
                authorize: snap.authorize_url(&key.app, &key.integration, &key.account),
            },
            TokenError::Endpoint { integration, reason } => ProxyError::TokenEndpoint { integration, reason },
            TokenError::EndpointTimeout { integration } => ProxyError::TokenEndpointTimeout { integration },
            TokenError::Store(reason) => ProxyError::Store(reason),
        }
    }

    /// Whether the client connection must be closed after the answer.
    fn closes(&self) -> bool {
        matches!(
            self,
            ProxyError::BadFraming(_)
                | ProxyError::BodyTimeout
                | ProxyError::NotImplemented(_)
                | ProxyError::HeadersTooLarge { .. }
                | ProxyError::Upstream(UpstreamError::RequestBody(_))
        )
    }

    /// The FDK-shaped answer: its head written into `head`, its body returned.
    pub(crate) fn into_answer(self, head: &mut ResponseHead) -> Body {
        let (status, source) = self.classify();
        let message = match &self {
            ProxyError::NoMatch { method, host, path } => {
                format!(
                    "No request template matches {method} {host}{path}: no template of the app has this method, host and path"
                )
            }
            e => e.to_string(),
        };
        let mut body = serde_json::json!({
            "status": status.as_u16(),
            "message": message,
            "errorSource": source.as_str(),
        });
        if let ProxyError::NoToken { authorize, .. } | ProxyError::Reauthorize { authorize, .. } = &self {
            body["authorize"] = serde_json::Value::String(authorize.clone());
        }
        *head = ResponseHead::new(status);
        if let ProxyError::ConnectRefused { .. } = &self {
            head.reason = Some(self.connect_reason().into());
        }
        let h = &mut head.headers;
        match &self {
            // The challenge that says how to authenticate (RFC 9110 11.6, 11.7).
            ProxyError::Unauthenticated { invoke: true, .. } => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ProxyError::Unauthenticated { invoke: false, .. } => {
                h.insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"bearerd\""));
            }
            _ => {}
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-bearerd-error", HeaderValue::from_static("1"));
        if self.closes() {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Body::full(body.to_string())
    }

    /// The FDK-shaped answer, whole.
    pub(crate) fn answer(self) -> Answer {
        let mut head = ResponseHead::new(StatusCode::OK);
        let body = self.into_answer(&mut head);
        Answer { head, body }
    }
}

impl From<HttpError> for ProxyError {
    fn from(e: HttpError) -> ProxyError {
        match e {
            HttpError::Malformed(m) => ProxyError::BadFraming(m),
            HttpError::TooLarge { limit, count } => ProxyError::HeadersTooLarge { limit, count },
            HttpError::Unsupported(m) => ProxyError::NotImplemented(m),
        }
    }
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> ProxyError {
        ProxyError::Upstream(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::Failure;
    use crate::template::escape::Refused;
    use http_body_util::BodyExt as _;

    async fn body_of(e: ProxyError) -> (StatusCode, serde_json::Value, bool) {
        let r = e.answer();
        let status = r.head.status;
        assert_eq!(r.head.headers["x-bearerd-error"], "1");
        let close = r.head.headers.get("connection").is_some();
        let bytes = r.body.collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap(), close)
    }

    #[tokio::test]
    async fn every_variant_has_its_status_and_source() {
        let h = || "api.x.com".to_string();
        let cases: Vec<(ProxyError, u16, &str)> = vec![
            (ProxyError::BadInvokeBody("x".into()), 400, "APP"),
            (ProxyError::InvokeBodyTooLarge { limit: 1 }, 413, "APP"),
            (ProxyError::BadFraming("x".into()), 400, "APP"),
            (ProxyError::NotImplemented("x".into()), 501, "APP"),
            (ProxyError::HeadersTooLarge { limit: 1, count: 1 }, 431, "APP"),
            (ProxyError::Render(RenderError::Host(Refused::Host)), 400, "APP"),
            (ProxyError::Render(RenderError::InvalidHost), 400, "APP"),
            (
                ProxyError::Render(RenderError::Header { name: http::header::ACCEPT, reason: Refused::HeaderControl }),
                400,
                "APP",
            ),
            (ProxyError::Render(RenderError::HeaderInvalid(http::header::ACCEPT)), 400, "APP"),
            (ProxyError::Render(RenderError::HostNotAllowed(h())), 403, "APP"),
            (ProxyError::Render(RenderError::Path(Refused::PathTraversal)), 400, "APP"),
            (ProxyError::BadAppHeader("x".into()), 400, "APP"),
            (ProxyError::MissingAccount { integration: "i".into() }, 400, "APP"),
            (
                ProxyError::NoToken { integration: "i".into(), account: "a".into(), authorize: "u".into() },
                401,
                "PLATFORM",
            ),
            (
                ProxyError::Reauthorize { integration: "i".into(), account: "a".into(), authorize: "u".into() },
                401,
                "PLATFORM",
            ),
            (ProxyError::NoMatch { method: http::Method::GET, host: h(), path: "/p".into() }, 403, "APP"),
            (ProxyError::Upstream(UpstreamError::AddressNotAllowed(h())), 403, "APP"),
            (ProxyError::TemplateNotFound("t".into()), 404, "APP"),
            (ProxyError::Upstream(UpstreamError::RequestBody("r".into())), 400, "APP"),
            (ProxyError::Upstream(UpstreamError::Connect { host: h(), reason: "r".into() }), 502, "PLATFORM"),
            (ProxyError::Upstream(UpstreamError::Tls { host: h(), reason: "r".into() }), 502, "PLATFORM"),
            (ProxyError::Upstream(UpstreamError::Protocol { host: h(), reason: "r".into() }), 502, "PLATFORM"),
            (ProxyError::Upstream(UpstreamError::Closed { host: h() }), 502, "PLATFORM"),
            (ProxyError::Upstream(UpstreamError::Timeout { host: h(), secs: 1 }), 504, "PLATFORM"),
            (ProxyError::TokenEndpoint { integration: "i".into(), reason: "r".into() }, 502, "PLATFORM"),
            (ProxyError::TokenEndpointTimeout { integration: "i".into() }, 504, "PLATFORM"),
            (ProxyError::Store("s".into()), 502, "PLATFORM"),
            (ProxyError::Misdirected { host: h(), tunnel: h() }, 421, "APP"),
            (ProxyError::BadConnect("c".into()), 400, "APP"),
            (ProxyError::ConnectRefused { host: h(), app: None }, 403, "APP"),
            (ProxyError::ConnectRefused { host: h(), app: Some("demo".into()) }, 403, "APP"),
            (ProxyError::ConnectToAddress(h()), 403, "APP"),
            (ProxyError::Unauthenticated { failure: Failure::Missing("m"), invoke: true }, 401, "APP"),
            (ProxyError::Unauthenticated { failure: Failure::Unknown("u"), invoke: false }, 407, "APP"),
            (ProxyError::CallerForbidden { caller: "c".into(), app: "a".into() }, 403, "APP"),
            (ProxyError::AccountForbidden { caller: "c".into(), account: "a".into() }, 403, "APP"),
            (ProxyError::InterceptUnavailable("u".into()), 503, "PLATFORM"),
            (ProxyError::NotConfigured { app: "a".into(), missing: "m".into(), page: "p".into() }, 503, "PLATFORM"),
        ];
        for (e, status, source) in cases {
            let framing = matches!(
                e,
                ProxyError::BadFraming(_)
                    | ProxyError::NotImplemented(_)
                    | ProxyError::HeadersTooLarge { .. }
                    | ProxyError::Upstream(UpstreamError::RequestBody(_))
            );
            let authorize = matches!(e, ProxyError::NoToken { .. } | ProxyError::Reauthorize { .. });
            let (s, body, close) = body_of(e).await;
            assert_eq!(s.as_u16(), status);
            assert_eq!(body["status"], status);
            assert_eq!(body["errorSource"], source);
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert_eq!(close, framing);
            assert_eq!(body.get("authorize").is_some(), authorize);
        }
    }
}
