//! A strict mock OAuth provider: PKCE checked, codes and refresh tokens single use (a replayed
//! refresh token is `invalid_grant` and counted), client authentication checked, switches to slow
//! down or fail the token endpoint, counters of every grant. It also tells a mock API which
//! access tokens are valid.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::TestCa;

#[derive(Default)]
pub struct State {
    pub client_id: String,
    pub client_secret: String,
    /// Expect HTTP Basic client authentication instead of form fields.
    pub basic: bool,
    /// Rotate refresh tokens on every refresh (the old one becomes invalid).
    pub rotate: bool,
    pub expires_in: Option<u64>,
    /// Every token request waits this long.
    pub delay: Duration,
    /// Refresh tokens whose refresh waits `slow_delay`.
    pub slow: HashSet<String>,
    pub slow_delay: Duration,
    /// Answer every token request with this status and no token.
    pub fail_status: Option<u16>,
    /// The API rejects every access token.
    pub reject_all: bool,
    codes: HashMap<String, (String, String)>,
    refresh_valid: HashSet<String>,
    refresh_issued: HashSet<String>,
    access_valid: HashSet<String>,
    next: u64,
    /// Grants that succeeded or failed, by grant type.
    pub grants: HashMap<String, usize>,
    /// Token requests that have arrived and not been answered yet, and the most at once.
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// The access token each refresh token (or code) was exchanged for.
    pub issued_for: HashMap<String, String>,
    /// Refresh tokens presented after they had been used or revoked.
    pub replayed_refresh_tokens: usize,
    pub bad_client_auth: usize,
    /// The last form each grant type sent, and the headers.
    pub last_form: HashMap<String, HashMap<String, String>>,
    pub last_headers: HashMap<String, http::HeaderMap>,
}

impl State {
    /// An access token the API accepts, issued outside any grant.
    pub fn make_access_token(&mut self) -> String {
        self.next += 1;
        let at = format!("at-made-{}", self.next);
        self.access_valid.insert(at.clone());
        at
    }
}

#[derive(Clone)]
pub struct Provider {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl Provider {
    pub async fn start(ca: &TestCa) -> Provider {
        let state = Arc::new(Mutex::new(State {
            client_id: "cid".into(),
            client_secret: "csecret".into(),
            rotate: true,
            expires_in: Some(3600),
            ..Default::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = ca.server.clone();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (st, tls) = (st.clone(), tls.clone());
                tokio::spawn(async move {
                    let Ok(s) = tokio_rustls::TlsAcceptor::from(tls).accept(stream).await else { return };
                    let svc = hyper::service::service_fn(move |req| token_endpoint(st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Provider { addr, state }
    }

    pub fn host(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// The user consented: a code bound to the PKCE challenge and redirect URI.
    pub fn issue_code(&self, challenge: &str, redirect_uri: &str) -> String {
        self.with(|s| {
            s.next += 1;
            let code = format!("code-{}", s.next);
            s.codes.insert(code.clone(), (challenge.to_string(), redirect_uri.to_string()));
            code
        })
    }

    /// A refresh token the provider will accept once, for tests that put tokens by hand.
    pub fn issue_refresh_token(&self) -> String {
        self.with(|s| {
            s.next += 1;
            let rt = format!("rt-seed-{}", s.next);
            s.refresh_valid.insert(rt.clone());
            s.refresh_issued.insert(rt.clone());
            rt
        })
    }

    pub fn grants(&self, grant: &str) -> usize {
        self.with(|s| s.grants.get(grant).copied().unwrap_or(0))
    }

    pub fn access_valid(&self, token: &str) -> bool {
        self.with(|s| !s.reject_all && s.access_valid.contains(token))
    }

    /// A responder for a mock API: 200 with a valid access token, 401 otherwise.
    pub fn api_responder(&self) -> super::Responder {
        let p = self.clone();
        Arc::new(move |r, _| {
            let token = r.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
            if p.access_valid(token) { super::Reply::ok("api-ok") } else { super::Reply::status(401) }
        })
    }
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    r
}

async fn token_endpoint(st: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/authorize" {
        // The person consents at once: a code bound to the PKCE challenge and the redirect URI,
        // sent back to the redirect URI with the state.
        let q: HashMap<String, String> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        let (Some(redirect), Some(state), Some(challenge)) =
            (q.get("redirect_uri"), q.get("state"), q.get("code_challenge"))
        else {
            return Ok(reply(400, json!({"error": "invalid_request"})));
        };
        let code = {
            let mut s = st.lock().unwrap();
            s.next += 1;
            let code = format!("code-{}", s.next);
            s.codes.insert(code.clone(), (challenge.clone(), redirect.clone()));
            code
        };
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::FOUND;
        let state = percent_encoding::utf8_percent_encode(state, percent_encoding::NON_ALPHANUMERIC);
        r.headers_mut().insert("location", format!("{redirect}?code={code}&state={state}").parse().unwrap());
        return Ok(r);
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let form: HashMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    let (delay, slow) = {
        let s = st.lock().unwrap();
        let slow = form.get("refresh_token").is_some_and(|rt| s.slow.contains(rt));
        (s.delay, if slow { s.slow_delay } else { Duration::ZERO })
    };
    {
        let mut s = st.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
    }
    tokio::time::sleep(delay + slow).await;
    let mut s = st.lock().unwrap();
    s.in_flight -= 1;
    *s.grants.entry(grant.clone()).or_default() += 1;
    s.last_form.insert(grant.clone(), form.clone());
    s.last_headers.insert(grant.clone(), parts.headers.clone());
    if parts.uri.path() != "/token" {
        return Ok(reply(404, json!({"error": "not_found"})));
    }
    if let Some(status) = s.fail_status {
        return Ok(reply(status, json!({"error": "server_error"})));
    }
    // Client authentication, in the configured style only.
    let basic = parts
        .headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .map(str::to_string);
    let client_ok = if s.basic {
        let want = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.client_id, s.client_secret));
        basic.as_deref() == Some(want.as_str()) && !form.contains_key("client_secret")
    } else {
        basic.is_none()
            && form.get("client_id") == Some(&s.client_id)
            && form.get("client_secret") == Some(&s.client_secret)
    };
    if !client_ok {
        s.bad_client_auth += 1;
        return Ok(reply(401, json!({"error": "invalid_client"})));
    }
    let invalid = |d: &str| Ok(reply(400, json!({"error": "invalid_grant", "error_description": d})));
    let mut with_refresh = false;
    match grant.as_str() {
        "authorization_code" => {
            let Some((challenge, redirect)) = form.get("code").and_then(|c| s.codes.remove(c)) else {
                return invalid("unknown or used code");
            };
            if form.get("redirect_uri") != Some(&redirect) {
                return invalid("redirect_uri mismatch");
            }
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let d = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
            if base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref()) != challenge {
                return invalid("PKCE verification failed");
            }
            with_refresh = true;
        }
        "refresh_token" => {
            let rt = form.get("refresh_token").cloned().unwrap_or_default();
            if !s.refresh_valid.contains(&rt) {
                if s.refresh_issued.contains(&rt) {
                    s.replayed_refresh_tokens += 1;
                }
                return invalid("refresh token is not valid");
            }
            if s.rotate {
                s.refresh_valid.remove(&rt);
                with_refresh = true;
            }
        }
        "client_credentials" => {}
        _ => return Ok(reply(400, json!({"error": "unsupported_grant_type"}))),
    }
    s.next += 1;
    let n = s.next;
    let at = format!("at-{n}");
    s.access_valid.insert(at.clone());
    if let Some(given) = form.get("refresh_token").or(form.get("code")) {
        s.issued_for.insert(given.clone(), at.clone());
    }
    let mut body = json!({"access_token": at, "token_type": "Bearer", "scope": "read"});
    if let Some(e) = s.expires_in {
        body["expires_in"] = json!(e);
    }
    if with_refresh {
        let rt = format!("rt-{n}");
        s.refresh_valid.insert(rt.clone());
        s.refresh_issued.insert(rt.clone());
        body["refresh_token"] = json!(rt);
    }
    Ok(reply(200, body))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}
