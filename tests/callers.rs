//! Callers (SPEC 2.2): only a caller the configuration names can spend a token. Each test starts
//! bearerd with callers, a TLS mock API and, where JWTs are verified, keys signed in the test
//! (a JWKS file, or a JWKS server that counts its fetches), and asserts on the answers and on
//! what the mock API received: a credential on every way in, forged and expired tokens refused
//! with their reason, apps and accounts per caller, the TLS listener, and no credential in any
//! answer or upstream request.

mod support;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::jwt::{JwksServer, Signer, forged, hs256, jwks, now};
use support::*;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const BILLING: &str = "billing-secret-0123456789";
const OPS: &str = "ops-secret-abcdefghijklmn";
const ISSUER: &str = "https://issuer.test";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a test runs against: app `demo` (`get`: GET /data with integration `api`'s token;
/// `hello`: GET /hello, no integration) and app `other` (`ping`: GET /ping), both on one TLS mock
/// API; a token stored for demo/api; the callers given.
struct World {
    dir: TempDir,
    ca: TestCa,
    api: MockApi,
    b: Bearerd,
}

impl World {
    async fn start(callers: Value, extra: impl FnOnce(Config, &TempDir, &TestCa) -> Config) -> World {
        World::with_ca(test_ca(), callers, extra).await
    }

    /// [`World::start`] with `ca` as the test CA (a JWKS server of the test signs with it too).
    async fn with_ca(ca: TestCa, callers: Value, extra: impl FnOnce(Config, &TempDir, &TestCa) -> Config) -> World {
        let api = MockApi::tls(&ca).await;
        let dir = TempDir::new();
        dir.app(
            "demo",
            &json!({
                "get": {"schema": {"method": "GET", "host": api.host(), "path": "/data",
                    "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}},
                "hello": {"schema": {"method": "GET", "host": api.host(), "path": "/hello"}},
            }),
            Some(&oauth_one("tokens.invalid", false)),
        );
        dir.app("other", &json!({"ping": {"schema": {"method": "GET", "host": api.host(), "path": "/ping"}}}), None);
        let config = Config::new().ca(&ca).app(App::new("demo")).app(App::new("other")).set("callers", callers);
        let cfg = extra(config, &dir, &ca).write(&dir);
        let b = start(&cfg).await;
        b.put_token("demo", "api", "", json!({"access_token": "tok-demo", "expires_in": 3600})).await;
        World { dir, ca, api, b }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api.host())
    }

    /// A proxy request for `path` with `headers`.
    async fn proxy(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(self.b.data, request("GET", &self.url(path), headers, "")).await
    }

    async fn invoke(&self, template: &str, headers: &[(&str, &str)]) -> Resp {
        self.b.invoke_with(template, json!({}), headers).await
    }

    async fn metrics(&self) -> String {
        self.b.admin("GET", "/metrics", "").await.text()
    }

    /// No answer and no upstream request carried a credential.
    fn assert_no_credential_upstream(&self, secrets: &[&str]) {
        for r in self.api.requests() {
            assert!(r.header("proxy-authorization").is_none(), "{r:?}");
            let all = format!("{:?} {}", r.headers, r.path_and_query);
            for s in secrets {
                assert!(!all.contains(s), "a credential reached the upstream: {all}");
            }
        }
    }
}

fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let samples = parse_prometheus(text).unwrap();
    samples
        .iter()
        .find(|s| s.0 == name && labels.iter().all(|(k, v)| s.1.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.2)
}

fn refused_for(r: &Resp, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("x-bearerd-error"), Some("1"));
    let body = r.json();
    assert_eq!(body["errorSource"], "APP", "{body}");
    assert!(body["message"].as_str().unwrap().contains(reason), "{reason} in {body}");
    match status {
        401 => assert_eq!(r.header("www-authenticate"), Some("Bearer")),
        407 => assert_eq!(r.header("proxy-authenticate"), Some("Basic realm=\"bearerd\"")),
        _ => {}
    }
}

fn secret_callers() -> Value {
    json!([
        {"name": "billing", "secret": BILLING, "apps": ["demo"]},
        {"name": "ops", "secret_sha256": sha256_hex(OPS), "apps": ["*"]},
    ])
}

#[test]
fn a_data_plane_off_loopback_needs_callers() {
    let dir = TempDir::new();
    dir.app("demo", &json!({"get": {"schema": {"method": "GET", "host": "api.example.com", "path": "/x"}}}), None);
    let load = |c: Config| bearerd::config::load(&c.write(&dir)).map(|_| ()).map_err(|e| e.to_string());
    let base = || Config::new().app(App::new("demo"));
    let e = load(base().listen("0.0.0.0:0")).unwrap_err();
    assert!(e.contains("/callers: listen 0.0.0.0:0 is not a loopback address: callers are required"), "{e}");
    let ca = test_ca();
    dir.write("tls/cert.pem", &ca.leaf_pem);
    dir.write("tls/key.pem", &ca.leaf_key_pem);
    let tls = json!({"address": "0.0.0.0:0", "cert": "tls/cert.pem", "key": "tls/key.pem"});
    let e = load(base().set("listen_tls", tls.clone())).unwrap_err();
    assert!(e.contains("listen_tls.address 0.0.0.0:0 is not a loopback address: callers are required"), "{e}");
    let callers = json!([{"name": "a", "secret": BILLING, "apps": ["*"]}]);
    load(base().listen("0.0.0.0:0").set("listen_tls", tls).set("callers", callers)).unwrap();
    load(base()).unwrap();
    // Every problem of the callers, each at its place.
    let bad = json!([
        {"name": "Bad Name", "secret": BILLING, "apps": ["demo"]},
        {"name": "two", "secret": BILLING, "secret_sha256": sha256_hex(OPS), "apps": ["demo"]},
        {"name": "hex", "secret_sha256": "abc", "apps": ["demo"]},
        {"name": "noapp", "secret": BILLING, "apps": ["nope"]},
        {"name": "cert", "tls_client": {"uri": "spiffe://x"}, "apps": ["demo"]},
        {"name": "claim", "secret": BILLING, "apps": ["demo"], "accounts": {"claim": "email"}},
        {"name": "url", "jwt": {"issuer": ISSUER, "audience": "b", "jwks_url": "http://keys.test/jwks"}, "apps": ["demo"]},
        {"name": "noapps", "secret": BILLING},
        {"name": "billing", "secret": BILLING, "apps": ["demo"]},
        {"name": "billing", "secret": BILLING, "apps": ["demo"]},
    ]);
    let e = load(base().set("callers", bad)).unwrap_err();
    for expected in [
        "/callers/0/name: caller name `Bad Name` must match [a-z0-9_-]+",
        "/callers/1: a caller needs exactly one of secret, secret_sha256, jwt, tls_client",
        "/callers/2/secret_sha256: must be 64 hex digits",
        "/callers/3/apps/0: no app named `nope`",
        "/callers/4/tls_client: a tls_client caller needs listen_tls.client_ca",
        "/callers/5/accounts: {claim: ...} binds the account to a claim of a JWT: only for a jwt caller",
        "/callers/6/jwt/jwks_url: `http://keys.test/jwks` is not an https:// URL",
        "/callers/7/apps: the apps this caller may use are required",
        "/callers/9/name: caller name `billing` is already used by /callers/8",
    ] {
        assert!(e.contains(expected), "{expected}\nin\n{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_caller_on_every_way_in() {
    let w = World::start(secret_callers(), |c, _, _| c).await;
    // Plain proxying: the proxy URL's password (every proxy-aware client sends it), or Bearer.
    let r = w.proxy("/data", &[("proxy-authorization", &basic("demo", BILLING))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w.proxy("/data", &[("proxy-authorization", &format!("Bearer {BILLING}")), ("x-bearerd-app", "demo")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The only app the caller may use is its app, though two are configured.
    let r = w.proxy("/data", &[("proxy-authorization", &basic("", BILLING))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-bearerd-template"), Some("get"));
    // /invoke: Authorization: Bearer.
    let r = w.invoke("get", &[("authorization", &format!("Bearer {BILLING}"))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A secret given as its SHA-256, for all apps.
    let r = w.proxy("/ping", &[("proxy-authorization", &basic("other", OPS))]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = w.api.requests();
    assert_eq!(seen.len(), 5);
    assert!(seen[..4].iter().all(|r| r.header("authorization") == Some("Bearer tok-demo")), "{seen:?}");
    w.assert_no_credential_upstream(&[BILLING, OPS]);

    // Refusals: 407 for proxy requests, 401 for /invoke, each saying why, nothing sent.
    refused_for(&w.proxy("/data", &[]).await, 407, "no caller credential");
    refused_for(&w.invoke("get", &[]).await, 401, "no caller credential");
    refused_for(&w.proxy("/data", &[("proxy-authorization", &basic("demo", "wrong"))]).await, 407, "unknown");
    refused_for(&w.invoke("get", &[("authorization", "Bearer wrong")]).await, 401, "unknown");
    let r = w
        .proxy(
            "/data",
            &[("proxy-authorization", &format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("demo")))],
        )
        .await;
    refused_for(&r, 407, "the proxy URL has no password");
    refused_for(&w.proxy("/data", &[("proxy-authorization", "Digest x")]).await, 407, "malformed");
    // The application's own Authorization is never its credential on a proxy request.
    refused_for(
        &w.proxy("/data", &[("authorization", &format!("Bearer {BILLING}"))]).await,
        407,
        "no caller credential",
    );
    // An app the caller may not use: 403 naming both.
    let r = w.proxy("/ping", &[("proxy-authorization", &basic("other", BILLING))]).await;
    refused_for(&r, 403, "Caller billing may not use app other");
    let r =
        w.proxy("/ping", &[("proxy-authorization", &format!("Bearer {BILLING}")), ("x-bearerd-app", "other")]).await;
    refused_for(&r, 403, "Caller billing may not use app other");
    assert_eq!(w.api.count(), 5, "no refused request was sent");
    let r = w.proxy("/data", &[("proxy-authorization", &basic("demo", "wrong"))]).await;
    assert!(!r.text().contains("wrong") && !r.text().contains(BILLING), "{}", r.text());

    // HTTP/2 with prior knowledge: /invoke with its credential.
    let stream = TcpStream::connect(w.b.data).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (auth, status) in [(Some(format!("Bearer {OPS}")), 200), (None, 401)] {
        let mut req = http::Request::builder().method("POST").uri(format!("http://{}/invoke/get", w.b.data));
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let resp = h2.send_request(req.body(Full::new(Bytes::from("{}"))).unwrap()).await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
    }

    let m = w.metrics().await;
    assert_eq!(sample(&m, "bearerd_caller_requests_total", &[("caller", "billing"), ("app", "demo")]), Some(4.0));
    assert_eq!(sample(&m, "bearerd_caller_requests_total", &[("caller", "ops"), ("app", "other")]), Some(1.0));
    assert_eq!(sample(&m, "bearerd_caller_requests_total", &[("caller", "ops"), ("app", "demo")]), Some(1.0));
    assert_eq!(sample(&m, "bearerd_caller_requests_total", &[("caller", "billing"), ("app", "other")]), None);
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "missing")]), Some(5.0));
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "unknown")]), Some(3.0));
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "malformed")]), Some(1.0));
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "forbidden")]), Some(2.0));
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "expired")]), Some(0.0));
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "claims")]), Some(0.0));
    w.b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connects_credential_counts_for_every_request_inside() {
    let w = World::start(secret_callers(), |c, _, _| c).await;
    let ca_pem = w.b.admin("GET", "/ca.pem", "").await.text();
    let authority = w.api.host();
    let (head, s) = connect(w.b.data, &authority, &[("Proxy-Authorization", &basic("demo", BILLING))]).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let tls = handshake(s, &ca_pem, "localhost", &[b"http/1.1"]).await.unwrap();
    let get = || http::Request::get("/data").header("host", &authority).body(Full::new(Bytes::new())).unwrap();
    let answers = h1_requests(tls, vec![get(), get()]).await;
    assert!(answers.iter().all(|r| r.status == 200), "{answers:?}");
    // Without a credential, or with a wrong one: 407 and its challenge, before anything else.
    for headers in [vec![], vec![("Proxy-Authorization", basic("demo", "wrong"))]] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (head, _) = connect(w.b.data, &authority, &h).await;
        assert!(head.starts_with("HTTP/1.1 407 "), "{head}");
        assert!(head.to_ascii_lowercase().contains("proxy-authenticate: basic realm=\"bearerd\""), "{head}");
    }
    // A CONNECT naming an app the caller may not use.
    let (head, _) = connect(w.b.data, &authority, &[("Proxy-Authorization", &basic("other", BILLING))]).await;
    assert!(head.starts_with("HTTP/1.1 403 Caller billing may not use app other"), "{head}");
    assert_eq!(w.api.count(), 2);
    w.assert_no_credential_upstream(&[BILLING]);
    w.b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_needs_its_callers_credential() {
    let ca = test_ca();
    let (port, heads) = ws_upstream(&ca).await;
    let host = format!("localhost:{port}");
    let dir = TempDir::new();
    ws_app(&dir, &host);
    let cfg = Config::new().ca(&ca).app(App::new("demo")).set("callers", secret_callers()).write(&dir);
    let b = start(&cfg).await;
    b.put_token("demo", "api", "", json!({"access_token": "tok-ws", "expires_in": 3600})).await;
    let ws = |auth: Option<String>| {
        let host = host.clone();
        async move {
            let mut s = TcpStream::connect(b.data).await.unwrap();
            let auth = auth.map(|a| format!("Proxy-Authorization: {a}\r\n")).unwrap_or_default();
            let req = format!(
                "GET http://{host}/ws HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            read_head(&mut s).await
        }
    };
    let head = ws(Some(basic("demo", BILLING))).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let head = ws(None).await;
    assert!(head.starts_with("HTTP/1.1 407 "), "{head}");
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "the refused handshake never reached the upstream");
    assert!(
        heads[0].contains("authorization: bearer tok-ws") && !heads[0].contains("proxy-authorization"),
        "{heads:?}"
    );
    b.shutdown().await;
}

/// The claims of a token the `checkout` caller accepts.
fn checkout_claims() -> Value {
    json!({"iss": ISSUER, "aud": "bearerd", "sub": "system:serviceaccount:shop:checkout", "exp": now() + 600, "iat": now()})
}

fn with(claims: &Value, key: &str, value: Value) -> Value {
    let mut c = claims.clone();
    if value.is_null() {
        c.as_object_mut().unwrap().remove(key);
    } else {
        c[key] = value;
    }
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_callers_accept_what_their_issuer_signed_and_nothing_else() {
    let rs = Signer::rsa("a", "r1", "RS256");
    let ps = Signer::rsa("a", "r1", "PS256");
    let es = Signer::es256("e1");
    let ed = Signer::ed25519("d1");
    let other_rsa = Signer::rsa("b", "r1", "RS256");
    let keys = jwks(&[&rs, &es, &ed]);
    let callers = json!([{"name": "checkout", "jwt": {"issuer": ISSUER, "audience": "bearerd", "jwks_file": "jwks.json",
        "claims": {"sub": "system:serviceaccount:shop:checkout"}}, "apps": ["demo"]}]);
    let w = World::start(callers, |c, dir, _| {
        dir.write("jwks.json", &keys.to_string());
        c
    })
    .await;
    let claims = checkout_claims();
    // Every algorithm SPEC 2.2 allows, in every place a credential goes.
    for signer in [&rs, &ps, &es, &ed] {
        let t = signer.sign(&claims);
        let r = w.proxy("/data", &[("proxy-authorization", &format!("Bearer {t}")), ("x-bearerd-app", "demo")]).await;
        assert_eq!(r.status, 200, "{}: {}", signer.alg, r.text());
        let r = w.proxy("/data", &[("proxy-authorization", &basic("demo", &t))]).await;
        assert_eq!(r.status, 200, "{} as the proxy password: {}", signer.alg, r.text());
        let r = w.invoke("get", &[("authorization", &format!("Bearer {t}"))]).await;
        assert_eq!(r.status, 200, "{} on /invoke: {}", signer.alg, r.text());
    }
    let sent = w.api.count();
    // Forgeries and mistakes, each refused with its reason and nothing sent.
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", forged(&json!({"alg": "none", "kid": "r1"}), &claims, b""), "alg none is never accepted"),
        (
            "HS256 keyed with the RSA public key",
            hs256(&claims, "r1", &rs.public_bytes()),
            "HMAC algorithms are never accepted",
        ),
        ("a known kid signed by another key", other_rsa.sign(&claims), "signed by no key its issuer publishes"),
        ("an unknown kid", Signer::es256("e9").sign(&claims), "signed by no key its issuer publishes"),
        (
            "expired",
            es.sign(&with(&claims, "exp", json!(now() - 120))),
            "expired caller credential: the token has expired",
        ),
        ("not yet valid", es.sign(&with(&claims, "nbf", json!(now() + 600))), "not valid yet"),
        ("issued in the future", es.sign(&with(&claims, "iat", json!(now() + 600))), "issued in the future"),
        ("no exp", es.sign(&with(&claims, "exp", Value::Null)), "the token has no exp claim"),
        ("wrong audience", es.sign(&with(&claims, "aud", json!("someone-else"))), "wrong audience"),
        ("wrong issuer", es.sign(&with(&claims, "iss", json!("https://evil.test"))), "wrong issuer"),
        (
            "wrong subject",
            es.sign(&with(&claims, "sub", json!("system:serviceaccount:shop:web"))),
            "its sub claim is not the caller's",
        ),
        (
            "a tampered payload",
            {
                let t = es.sign(&claims);
                let mut parts: Vec<String> = t.split('.').map(String::from).collect();
                parts[1] = support::jwt::b64(with(&claims, "sub", json!("x")).to_string().as_bytes());
                parts.join(".")
            },
            "signed by no key",
        ),
        ("crit", es.sign_with(&json!({"alg": "ES256", "kid": "e1", "crit": ["exp"]}), &claims), "crit"),
    ];
    for (what, token, reason) in &cases {
        let r =
            w.proxy("/data", &[("proxy-authorization", &format!("Bearer {token}")), ("x-bearerd-app", "demo")]).await;
        assert_eq!(r.status, 407, "{what}: {}", r.text());
        assert!(r.text().contains(reason), "{what}: `{reason}` in {}", r.text());
        assert!(!r.text().contains(token.as_str()), "{what}: the token was echoed");
    }
    assert_eq!(w.api.count(), sent, "no forged token spent a token");
    let m = w.metrics().await;
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "malformed")]), Some(4.0));
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "unknown")]), Some(3.0));
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "expired")]), Some(3.0));
    assert_eq!(sample(&m, "bearerd_caller_auth_failures_total", &[("reason", "claims")]), Some(3.0));
    assert_eq!(sample(&m, "bearerd_caller_requests_total", &[("caller", "checkout"), ("app", "demo")]), Some(12.0));
    w.assert_no_credential_upstream(&[&es.sign(&claims)[..40]]);
    w.b.shutdown().await;
}

/// A `jwt` caller with `jwks_url` served by a JWKS server of the test (its CA the World's).
async fn jwks_world(keys: Value) -> (World, JwksServer) {
    let ca = test_ca();
    let server = JwksServer::start(&ca, keys, 3600).await;
    let callers = json!([{"name": "checkout", "jwt": {"issuer": ISSUER, "audience": "bearerd", "jwks_url": server.url()},
        "apps": ["demo"]}]);
    let w = World::with_ca(ca, callers, |c, _, _| c).await;
    eventually(Duration::from_secs(5), "the first JWKS fetch at start", async || server.api.count() >= 1).await;
    (w, server)
}

impl World {
    /// A proxy request for /data with `token` as its caller's credential: the status.
    async fn with_token(&self, token: &str) -> u16 {
        self.proxy("/data", &[("proxy-authorization", &format!("Bearer {token}")), ("x-bearerd-app", "demo")])
            .await
            .status
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_url_is_fetched_sparingly_and_its_last_good_keys_kept() {
    let good = Signer::es256("e1");
    let (w, jwks_server) = jwks_world(jwks(&[&good])).await;
    let claims = checkout_claims();
    assert_eq!(w.with_token(&good.sign(&claims)).await, 200);
    assert_eq!(jwks_server.api.count(), 1, "the cached keys served");
    // A flood of tokens with kids nobody published, within 30 s of the last fetch: no fetch.
    let forger = Signer::es256("x");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let t = forger.sign_with(&json!({"alg": "ES256", "kid": format!("forged-{i}")}), &claims);
            let (data, url) = (w.b.data, w.url("/data"));
            tokio::spawn(async move {
                let auth = format!("Bearer {t}");
                send(data, request("GET", &url, &[("proxy-authorization", &auth), ("x-bearerd-app", "demo")], ""))
                    .await
                    .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 407);
    }
    assert_eq!(jwks_server.api.count(), 1, "200 unknown kids fetched nothing");
    // The issuer goes down. Once 30 s have passed an unknown kid fetches again, once, and the
    // failed fetch keeps the last good keys.
    jwks_server.down.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(31)).await;
    for i in 0..20 {
        let t = forger.sign_with(&json!({"alg": "ES256", "kid": format!("later-{i}")}), &claims);
        assert_eq!(w.with_token(&t).await, 407);
    }
    assert_eq!(jwks_server.api.count(), 2, "one fetch for 20 unknown kids");
    assert_eq!(w.with_token(&good.sign(&with(&claims, "jti", json!("new")))).await, 200, "the last good keys");
    let m = w.metrics().await;
    assert_eq!(sample(&m, "bearerd_jwks_fetches_total", &[("caller", "checkout"), ("result", "ok")]), Some(1.0));
    assert_eq!(sample(&m, "bearerd_jwks_fetches_total", &[("caller", "checkout"), ("result", "error")]), Some(1.0));
    w.b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_fetched_when_its_kid_first_arrives() {
    let (old, new) = (Signer::rsa("a", "r1", "RS256"), Signer::rsa("b", "r2", "PS256"));
    let (w, jwks_server) = jwks_world(jwks(&[&old])).await;
    let claims = checkout_claims();
    *jwks_server.keys.lock().unwrap() = jwks(&[&old, &new]);
    // Within 30 s of the fetch at start the issuer is not asked again.
    assert_eq!(w.with_token(&new.sign(&claims)).await, 407);
    assert_eq!(jwks_server.api.count(), 1);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(w.with_token(&new.sign(&claims)).await, 200);
    assert_eq!(w.with_token(&old.sign(&claims)).await, 200);
    assert_eq!(jwks_server.api.count(), 2);
    w.b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_names_only_the_accounts_it_may() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    dir.app(
        "agents",
        &json!({"me": {"schema": {"method": "GET", "host": api.host(), "path": "/me",
            "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}}),
        Some(&oauth_one("tokens.invalid", true)),
    );
    let es = Signer::es256("e1");
    dir.write("jwks.json", &jwks(&[&es]).to_string());
    let secret = |n: &str| format!("{n}-secret-0123456789abcdef");
    let callers = json!([
        {"name": "alice", "secret": secret("alice"), "apps": ["agents"], "accounts": ["u1"]},
        {"name": "any", "secret": secret("any"), "apps": ["*"], "accounts": ["*"]},
        {"name": "none", "secret": secret("none"), "apps": ["agents"]},
        {"name": "bound", "jwt": {"issuer": ISSUER, "audience": "bearerd", "jwks_file": "jwks.json"},
            "apps": ["agents"], "accounts": {"claim": "email"}},
    ]);
    let cfg = Config::new().ca(&ca).app(App::new("agents")).set("callers", callers).write(&dir);
    let b = start(&cfg).await;
    for account in ["u1", "u2", "alice@x.test"] {
        let query = format!("?account={account}");
        b.put_token("agents", "api", &query, json!({"access_token": format!("tok-{account}"), "expires_in": 3600}))
            .await;
    }
    let url = format!("http://{}/me", api.host());
    let me = async |credential: &str, account: Option<&str>| {
        let auth = format!("Bearer {credential}");
        let mut h = vec![("proxy-authorization", auth.as_str())];
        if let Some(a) = account {
            h.push(("x-bearerd-account", a));
        }
        let r = send(b.data, request("GET", &url, &h, "")).await;
        (r.status, r.text())
    };
    let last_token = || api.requests().last().and_then(|r| r.header("authorization").map(String::from));
    assert_eq!(me(&secret("alice"), Some("u1")).await.0, 200);
    assert_eq!(last_token().as_deref(), Some("Bearer tok-u1"));
    let (status, text) = me(&secret("alice"), Some("u2")).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("Caller alice may not use account u2"), "{text}");
    assert_eq!(me(&secret("alice"), None).await.0, 400, "an agent integration needs an account");
    assert_eq!(me(&secret("any"), Some("u2")).await.0, 200);
    assert_eq!(me(&secret("none"), Some("u1")).await.0, 403);
    // A JWT that binds the account: the claim is the account; another one named is refused.
    let claims = json!({"iss": ISSUER, "aud": "bearerd", "exp": now() + 600, "email": "alice@x.test"});
    let alice = es.sign(&claims);
    assert_eq!(me(&alice, None).await.0, 200);
    assert_eq!(last_token().as_deref(), Some("Bearer tok-alice@x.test"));
    assert_eq!(me(&alice, Some("alice@x.test")).await.0, 200);
    let (status, text) = me(&alice, Some("u1")).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("Caller bound may not use account u1"), "{text}");
    let no_claim = es.sign(&with(&claims, "email", Value::Null));
    assert_eq!(me(&no_claim, Some("u1")).await.0, 403);
    assert_eq!(me(&no_claim, None).await.0, 400);
    assert_eq!(api.count(), 4, "no refused request was sent");

    // explain takes the caller and says what it would get.
    let explain = async |body: Value| b.admin("POST", "/admin/explain", &body.to_string()).await.json();
    let e = explain(
        json!({"method": "GET", "url": format!("https://{}/me", api.host()), "caller": "alice", "account": "u2"}),
    )
    .await;
    assert_eq!((e["matched"].clone(), e["admitted"].clone()), (json!(true), json!(false)), "{e}");
    assert_eq!(e["refused"]["status"], 403, "{e}");
    assert!(e["via"].as_str().unwrap().contains("intercepted"), "{e}");
    let e = explain(
        json!({"method": "GET", "url": format!("http://{}/me", api.host()), "caller": "alice", "account": "u1"}),
    )
    .await;
    assert_eq!(
        (e["admitted"].clone(), e["account"].clone(), e["token"]["state"].clone()),
        (json!(true), json!("u1"), json!("valid")),
        "{e}"
    );
    let e = explain(json!({"method": "GET", "url": format!("http://{}/me", api.host()), "caller": "bound", "account": "alice@x.test"})).await;
    assert_eq!(e["admitted"], true, "{e}");
    let e = explain(json!({"method": "GET", "url": format!("http://{}/me", api.host()), "account": "u1"})).await;
    assert!(e["note"].as_str().unwrap().contains("callers are configured"), "{e}");
    let e = explain(json!({"method": "GET", "url": format!("http://{}/me", api.host()), "caller": "nobody"})).await;
    assert_eq!(e["error"], "no caller named `nobody`");
    b.shutdown().await;
}

/// A TLS client of bearerd's TLS listener, trusting `ca`, with a client certificate when given.
fn tls_client(ca: &TestCa, cert: Option<(String, String)>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(client_config_with(&ca.ca_pem, cert, alpn))
}

async fn tls_to(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let s = TcpStream::connect(addr).await.unwrap();
    connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), s).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tls_listener_serves_what_the_plain_one_does() {
    let callers = json!([
        {"name": "billing", "secret": BILLING, "apps": ["demo"]},
        {"name": "web", "tls_client": {"uri": "spiffe://cluster.local/ns/shop/sa/web"}, "apps": ["*"]},
    ]);
    let w = World::start(callers, |c, dir, ca| {
        dir.write("tls/cert.pem", &ca.leaf_pem);
        dir.write("tls/key.pem", &ca.leaf_key_pem);
        dir.write("tls/client-ca.pem", &ca.ca_pem);
        c.set(
            "listen_tls",
            json!({"address": "127.0.0.1:0", "cert": "tls/cert.pem", "key": "tls/key.pem", "client_ca": "tls/client-ca.pem"}),
        )
    })
    .await;
    let addr = w.b.tls.expect("the TLS listener is up");
    let h1 = tls_client(&w.ca, None, &[b"http/1.1"]);
    // A proxy request over TLS (HTTPS_PROXY=https://...), with its caller's credential.
    let tls = tls_to(addr, &h1).await.unwrap();
    let auth = basic("demo", BILLING);
    let get = |auth: Option<&str>| {
        let mut r = http::Request::get(w.url("/data")).header("host", w.api.host());
        if let Some(a) = auth {
            r = r.header("proxy-authorization", a);
        }
        r.body(Full::new(Bytes::new())).unwrap()
    };
    let answers = h1_requests(tls, vec![get(Some(&auth)), get(None)]).await;
    assert_eq!((answers[0].status, answers[1].status), (200, 407), "{answers:?}");
    // HTTP/2 by ALPN: /invoke with Authorization.
    let h2 = tls_client(&w.ca, None, &[b"h2"]);
    let tls = tls_to(addr, &h2).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    for (credential, status) in [(Some(format!("Bearer {BILLING}")), 200), (None, 401)] {
        let mut req = http::Request::post(format!("https://localhost:{}/invoke/get", addr.port()));
        if let Some(c) = &credential {
            req = req.header("authorization", c);
        }
        let resp = sender.send_request(req.body(Full::new(Bytes::from("{}"))).unwrap()).await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
    }
    // CONNECT inside TLS, and interception inside that: TLS in TLS.
    let mut outer = tls_to(addr, &h1).await.unwrap();
    let connect = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nProxy-Authorization: {auth}\r\n\r\n", w.api.host());
    outer.write_all(connect.as_bytes()).await.unwrap();
    let head = read_head(&mut outer).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let intercept_ca = w.b.admin("GET", "/ca.pem", "").await.text();
    let inner = tokio_rustls::TlsConnector::from(client_config(&intercept_ca, &[b"http/1.1"]))
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), outer)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(inner)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(http::Request::get("/data").header("host", w.api.host()).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A client certificate with the caller's SAN is its credential; one of another CA is not.
    let web = tls_client(&w.ca, Some(w.ca.issue(&[], &["spiffe://cluster.local/ns/shop/sa/web"])), &[b"http/1.1"]);
    let answers = h1_requests(tls_to(addr, &web).await.unwrap(), vec![get(None)]).await;
    assert_eq!(answers[0].status, 200, "{answers:?}");
    let stranger =
        tls_client(&w.ca, Some(w.ca.issue(&[], &["spiffe://cluster.local/ns/shop/sa/other"])), &[b"http/1.1"]);
    let answers = h1_requests(tls_to(addr, &stranger).await.unwrap(), vec![get(None)]).await;
    assert_eq!(answers[0].status, 407, "a SAN no caller has");
    let elsewhere = test_ca();
    let forged =
        tls_client(&w.ca, Some(elsewhere.issue(&[], &["spiffe://cluster.local/ns/shop/sa/web"])), &[b"http/1.1"]);
    let refused = match tls_to(addr, &forged).await {
        Err(_) => true,
        Ok(s) => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(get(None)).await.is_err()
        }
    };
    assert!(refused, "a certificate of another CA is refused at the handshake");
    let m = w.metrics().await;
    assert_eq!(sample(&m, "bearerd_caller_requests_total", &[("caller", "web"), ("app", "demo")]), Some(1.0));
    assert_eq!(sample(&m, "bearerd_caller_requests_total", &[("caller", "billing"), ("app", "demo")]), Some(3.0));
    // A reload re-reads the certificate: new connections get the new one.
    let (cert, key) = w.ca.issue(&["localhost", "127.0.0.1"], &[]);
    w.dir.write("tls/cert.pem", &cert);
    w.dir.write("tls/key.pem", &key);
    assert_eq!(w.b.admin("POST", "/admin/reload", "").await.status, 200);
    let tls = tls_to(addr, &h1).await.unwrap();
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    use rustls_pki_types::pem::PemObject as _;
    assert_eq!(served, rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap());
    assert_eq!(w.api.count(), 4);
    w.assert_no_credential_upstream(&[BILLING]);
    w.b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_credential_reaches_a_log_line_or_an_answer() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    token_app(&dir, &api.host(), "tokens.invalid");
    let es = Signer::es256("e1");
    dir.write("jwks.json", &jwks(&[&es]).to_string());
    let callers = json!([
        {"name": "billing", "secret": BILLING, "apps": ["demo"]},
        {"name": "checkout", "jwt": {"issuer": ISSUER, "audience": "bearerd", "jwks_file": "jwks.json"}, "apps": ["demo"]},
    ]);
    let cfg = Config::new().ca(&ca).app(App::new("demo")).set("callers", callers).write(&dir);
    let b = Logged::start(&cfg, "debug");
    let put = request(
        "PUT",
        "/admin/tokens/demo/api",
        &[("host", "a")],
        r#"{"access_token": "AT-SECRET-0001", "expires_in": 3600}"#,
    );
    assert_eq!(send(b.admin, put).await.status, 200);
    let jwt = es.sign(&json!({"iss": ISSUER, "aud": "bearerd", "exp": now() + 600}));
    let expired = es.sign(&json!({"iss": ISSUER, "aud": "bearerd", "exp": now() - 600}));
    let url = format!("http://{}/data", api.host());
    let mut bodies = String::new();
    for (credential, status) in [
        (basic("demo", BILLING), 200),
        (basic("demo", "WRONG-SECRET-42"), 407),
        (format!("Bearer {jwt}"), 200),
        (format!("Bearer {expired}"), 407),
        (format!("Bearer {}x", &jwt[..jwt.len() - 2]), 407),
    ] {
        let r = send(b.data, request("GET", &url, &[("proxy-authorization", &credential)], "")).await;
        assert_eq!(r.status, status, "{}", r.text());
        bodies.push_str(&r.text());
    }
    let r = send(
        b.data,
        request("POST", "/invoke/get", &[("host", "b"), ("authorization", &format!("Bearer {BILLING}"))], "{}"),
    )
    .await;
    assert_eq!(r.status, 200);
    let log = b.stop();
    assert!(log.contains("DEBUG"), "the log is at debug level:\n{log}");
    // The access log names the caller; its duration is rounded.
    assert!(log.contains("caller=\"billing\"") || log.contains("caller=billing"), "{log}");
    assert!(log.contains("caller=checkout") || log.contains("caller=\"checkout\""), "{log}");
    for line in log.lines().filter(|l| l.contains("bearerd::access") && l.contains(" ms=")) {
        let ms = line.split(" ms=").nth(1).unwrap().split_whitespace().next().unwrap();
        assert!(ms.split('.').nth(1).is_none_or(|d| d.len() <= 3), "unrounded: {line}");
    }
    let signature = jwt.rsplit('.').next().unwrap();
    for secret in [BILLING, "WRONG-SECRET-42", &jwt, signature, &expired, "AT-SECRET-0001"] {
        assert!(!log.contains(secret), "`{secret}` reached the log:\n{log}");
        assert!(!bodies.contains(secret), "`{secret}` reached an answer: {bodies}");
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("demo:{BILLING}"));
    assert!(!log.contains(&b64), "the Basic credential reached the log");
}
