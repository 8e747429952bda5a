//! The data plane end to end: bearerd, a TLS mock API with a test CA, real sockets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::*;

/// One app `demo` with templates against the mock API and an `api` integration.
async fn setup(requests: serde_json::Value, agent: bool) -> (TempDir, TestCa, MockApi, Bearerd) {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let (dir, b) = setup_with(&ca, &api, requests, agent, &[]).await;
    (dir, ca, api, b)
}

async fn setup_with(
    ca: &TestCa,
    api: &MockApi,
    requests: serde_json::Value,
    agent: bool,
    allow_hosts: &[&str],
) -> (TempDir, Bearerd) {
    let dir = TempDir::new();
    let text = requests.to_string().replace("API_HOST", &api.host());
    let requests: serde_json::Value = serde_json::from_str(&text).unwrap();
    dir.app("demo", &requests, Some(&oauth_one(&api.host(), agent)));
    let app = App::new("demo").iparam("api_key", "k3y").iparam("tenant", "acme");
    let cfg = Config::new().ca(ca).app(allow_hosts.iter().fold(app, |a, h| a.allow_host(h))).write(&dir);
    let b = start(&cfg).await;
    (dir, b)
}

fn tpl(method: &str, path: &str, headers: serde_json::Value, oauth: bool) -> serde_json::Value {
    let mut t = json!({"schema": {"method": method, "host": "API_HOST", "path": path, "headers": headers}});
    if oauth {
        t["options"] = json!({"oauth": "api"});
    }
    t
}

/// What a hand-written HTTP/1.1 upstream writes for one request: pieces written with a short
/// pause between them, and whether the connection stays open after them.
type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = (Vec<Vec<u8>>, bool)> + Send>>;

/// A plain HTTP/1.1 upstream written by hand on 127.0.0.1:0, answering each request head by its
/// path. Returns its port and the number of connections it accepted.
async fn h1_upstream(
    answer: impl Fn(String) -> Answer + Send + Sync + 'static,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (conns, answer) = (connections.clone(), Arc::new(answer));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let path = String::from_utf8_lossy(&seen[..end]).split(' ').nth(1).unwrap_or("").to_string();
                    seen.drain(..end + 4);
                    let (pieces, keep) = answer(path).await;
                    for p in pieces {
                        if s.write_all(&p).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    if !keep {
                        return;
                    }
                }
            });
        }
    });
    (port, connections)
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_injects_the_token_over_tls_and_sends_only_template_headers() {
    let (_d, _ca, api, b) = setup(
        json!({
            "getThing": tpl("POST", "/v1/things/<%= context.id %>", json!({"Authorization": "Bearer <%= access_token %>", "X-Tenant": "<%= iparam.tenant %>"}), true),
        }),
        false,
    )
    .await;
    b.put_token("demo", "api", "", json!({"access_token": "tok-123", "expires_in": 3600})).await;
    let r = b
        .invoke_with("getThing", json!({"context": {"id": "42"}, "body": {"name": "x"}}), &[("x-custom", "leak")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-bearerd-template"), Some("getThing"));
    assert_eq!(r.header("x-bearerd-attempts"), Some("1"));
    assert_eq!(r.json(), json!({"ok": true}));
    let got = api.requests();
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.method, "POST");
    assert_eq!(g.path_and_query, "/v1/things/42");
    assert_eq!(g.header("authorization"), Some("Bearer tok-123"));
    assert_eq!(g.header("x-tenant"), Some("acme"));
    assert_eq!(g.header("content-type"), Some("application/json"));
    assert_eq!(g.header("x-custom"), None, "invoke headers are not forwarded");
    assert_eq!(g.authority, api.host());
    assert_eq!(g.version, http::Version::HTTP_2, "ALPN negotiates h2 with the mock API");
    assert_eq!(g.header("host"), None, "HTTP/2 carries the host in :authority only");
    assert_eq!(g.body.as_ref(), br#"{"name":"x"}"#);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transparent_absolute_and_origin_form_match_and_forward_query_and_body() {
    let (_d, _ca, api, b) = setup(
        json!({
            "listItems": tpl("GET", "/v1/items/<%= context.kind %>", json!({"Authorization": "Bearer <%= access_token %>"}), true),
            "create": {"schema": {"method": "POST", "host": "API_HOST", "path": "/v1/items?src=bearerd", "query": {"fixed": 7},
                       "headers": {"Authorization": "token <%= access_token %>"}}, "options": {"oauth": "api"}},
        }),
        false,
    )
    .await;
    b.put_token("demo", "api", "", json!({"access_token": "T"})).await;
    let host = api.host();
    // Absolute form, as an HTTP_PROXY client sends it; the app's own Authorization is replaced.
    let r = send(
        b.data,
        request(
            "GET",
            &format!("http://{host}/v1/items/books?page=2"),
            &[
                ("host", &host),
                ("authorization", "Bearer wrong"),
                ("x-bearerd-account", "default"),
                ("x-keep", "1"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "secret"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-bearerd-template"), Some("listItems"));
    // Origin form with Host, with a body.
    let r = send(
        b.data,
        request("POST", "/v1/items", &[("host", &host.to_uppercase()), ("content-type", "text/plain")], "hello"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = api.requests();
    assert_eq!(got[0].path_and_query, "/v1/items/books?page=2");
    assert_eq!(got[0].header("authorization"), Some("Bearer T"));
    assert_eq!(got[0].header("x-keep"), Some("1"));
    assert_eq!(got[0].header("x-hop"), None, "headers named in Connection are hop-by-hop");
    assert_eq!(got[0].header("x-bearerd-account"), None);
    assert_eq!(got[1].path_and_query, "/v1/items?src=bearerd&fixed=7");
    assert_eq!(got[1].header("authorization"), Some("token T"));
    assert_eq!(got[1].body.as_ref(), b"hello");
    assert_eq!(got[1].header("content-type"), Some("text/plain"));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn never_an_open_proxy_and_errors_have_the_fdk_shape() {
    let (_d, _ca, api, b) =
        setup(json!({"get": tpl("GET", "/v1/x", json!({"Authorization": "Bearer <%= access_token %>"}), true)}), false)
            .await;
    for (method, uri, host) in [
        ("GET", "http://evil.example/v1/x".to_string(), "evil.example".to_string()),
        ("GET", "/v1/y".to_string(), api.host()),
        ("DELETE", "/v1/x".to_string(), api.host()),
        ("GET", "/v1/x".to_string(), "127.0.0.1:1".to_string()),
    ] {
        let r = send(b.data, request(method, &uri, &[("host", &host)], "")).await;
        assert_eq!(r.status, 403, "{method} {uri}");
        assert_eq!(r.header("x-bearerd-error"), Some("1"));
        assert_eq!(r.json()["errorSource"], "APP");
        // The 403 names the method, host and path that no template covers.
        let message = r.json()["message"].as_str().unwrap().to_string();
        let path = if uri.starts_with("http://") { "/v1/x" } else { uri.as_str() };
        assert!(message.starts_with(&format!("No request template matches {method} {host}{path}")), "{message}");
    }
    let r = b.invoke("nope", json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"status": 404, "message": "Request template not found: nope", "errorSource": "APP"}));
    // No token yet: 401 PLATFORM with the URL that starts authorization.
    let r = b.invoke("get", json!({})).await;
    assert_eq!(r.status, 401);
    let j = r.json();
    assert_eq!(j["errorSource"], "PLATFORM");
    assert_eq!(j["authorize"], "http://bearerd.test:10001/auth/authorize/demo/api");
    // The admin API is not on the data plane.
    let r = send(b.data, request("GET", "/admin/tokens", &[("host", "bearerd")], "")).await;
    assert_eq!(r.status, 403);
    assert_eq!(api.count(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_invoke_bodies() {
    let (_d, _ca, api, b) = setup(json!({"get": tpl("GET", "/v1/x", json!({}), false)}), false).await;
    for body in ["[1]", "{\"context\": 5}", "not json", "{\"context\": {\"a\": {\"b\": 1}}}"] {
        let r = send(b.data, request("POST", "/invoke/get", &[("host", "b")], body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["errorSource"], "APP");
    }
    let big = format!("{{\"body\": \"{}\"}}", "a".repeat(1 << 20));
    let r = send(b.data, request("POST", "/invoke/get", &[("host", "b")], &big)).await;
    assert_eq!(r.status, 413);
    // Both fields are optional.
    let r = send(b.data, request("POST", "/invoke/get", &[("host", "b")], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.count(), 1);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_cannot_escape_their_position() {
    let (_d, _ca, api, b) = setup(
        json!({
            "seg": {"schema": {"method": "GET", "host": "API_HOST", "path": "/v1/users/<%= context.id %>/profile",
                    "query": {"q": "<%= context.q %>"}, "headers": {"X-Name": "<%= context.name %>"}}},
        }),
        false,
    )
    .await;
    let cases = [
        ("../../admin", "/v1/users/..%2F..%2Fadmin/profile"),
        ("a%2Fb", "/v1/users/a%252Fb/profile"),
        ("x?y=1#z", "/v1/users/x%3Fy=1%23z/profile"),
        ("ünï", "/v1/users/%C3%BCn%C3%AF/profile"),
    ];
    for (id, _) in cases {
        let r = b.invoke("seg", json!({"context": {"id": id, "q": "a&admin=1", "name": "ok ünï"}})).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
    }
    let got = api.requests();
    for (i, (_, want)) in cases.iter().enumerate() {
        assert_eq!(got[i].path_and_query, format!("{want}?q=a%26admin%3D1"));
        assert_eq!(got[i].headers["x-name"].as_bytes(), "ok ünï".as_bytes());
    }
    // A value that is a dot segment is refused: `%2E%2E` climbs on servers that decode first.
    // So is one that makes the target longer than 32 KiB (found by the template fuzz target).
    let long = "x".repeat(40 * 1024);
    for id in ["..", ".", long.as_str()] {
        let r = b.invoke("seg", json!({"context": {"id": id}})).await;
        assert_eq!(r.status, 400, "{}: {}", id.len(), r.text());
    }
    for name in ["a\r\nX-Evil: 1", "a\nb", "a\0b"] {
        let r = b.invoke("seg", json!({"context": {"id": "1", "name": name}})).await;
        assert_eq!(r.status, 400, "{name:?}");
        assert!(r.json()["message"].as_str().unwrap().contains("CR, LF or NUL"));
    }
    assert_eq!(api.count(), cases.len());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn context_in_host_only_against_allow_hosts() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let requests = json!({"dyn": {"schema": {"method": "GET", "host": "<%= context.domain %>", "path": "/ping"}}});
    let (_d, b) = setup_with(&ca, &api, requests, false, &["localhost:*", "*.allowed.test"]).await;
    let r = b.invoke("dyn", json!({"context": {"domain": "evil.test"}})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = b.invoke("dyn", json!({"context": {"domain": "evil.test/x"}})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = b.invoke("dyn", json!({"context": {"domain": "x.allowed.test@evil.test"}})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(api.count(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn private_addresses_and_tls_failures() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    dir.app("demo", &json!({"get": {"schema": {"method": "GET", "host": api.host(), "path": "/"}}}), None);
    // Loopback refused by default.
    dir.write("ca.pem", &ca.ca_pem);
    let cfg = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nstore: {file: t.json}\nupstream: {ca_file: ca.pem}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let b = start(&cfg).await;
    let r = b.invoke("get", json!({})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("not allowed"));
    b.shutdown().await;
    // A CA bearerd does not trust: 502 with the TLS reason.
    let other = test_ca();
    let dir2 = TempDir::new();
    dir2.app("demo", &json!({"get": {"schema": {"method": "GET", "host": api.host(), "path": "/"}}}), None);
    let cfg = config(&dir2, Some(&other), "demo");
    let b = start(&cfg).await;
    let r = b.invoke("get", json!({})).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("TLS") && msg.contains("certificate"), "{msg}");
    assert_eq!(api.count(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_errors_timeouts_and_retries() {
    let ca = test_ca();
    // 503 twice, then 200: maxAttempts 3 retries it.
    let api = MockApi::start(
        Some(ca.server.clone()),
        Arc::new(|r, n| {
            if r.path_and_query.starts_with("/slow") {
                Reply::ok("late").delay(Duration::from_secs(3))
            } else if r.path_and_query.starts_with("/limited") {
                Reply::status(429).header("retry-after", "0")
            } else if n < 2 {
                Reply::status(503)
            } else {
                Reply::ok("finally")
            }
        }),
    )
    .await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let requests = json!({
        "flaky": {"schema": {"method": "GET", "host": "API_HOST", "path": "/flaky"}, "options": {"maxAttempts": 3, "retryDelay": 10}},
        "limited": {"schema": {"method": "GET", "host": "API_HOST", "path": "/limited"}, "options": {"maxAttempts": 2}},
        "slow": {"schema": {"method": "GET", "host": "API_HOST", "path": "/slow"}},
        "dead": {"schema": {"method": "GET", "host": format!("localhost:{dead_port}"), "path": "/"}, "options": {"maxAttempts": 2}},
    });
    let (_d, b) = setup_with(&ca, &api, requests, false, &[]).await;
    let r = b.invoke("flaky", json!({})).await;
    assert_eq!((r.status, r.text().as_str()), (200, "finally"));
    assert_eq!(r.header("x-bearerd-attempts"), Some("3"));
    let r = b.invoke("limited", json!({})).await;
    assert_eq!(r.status, 429, "the last answer is returned as it is");
    assert_eq!(r.header("x-bearerd-attempts"), Some("2"));
    assert!(r.header("x-bearerd-error").is_none());
    let r = b.invoke("dead", json!({})).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errorSource"], "PLATFORM");
    b.shutdown().await;

    // Total timeout: 1 s against a 3 s upstream.
    let dir = TempDir::new();
    dir.app("demo", &json!({"slow": {"schema": {"method": "GET", "host": api.host(), "path": "/slow"}}}), None);
    let cfg = Config::new().ca(&ca).app(App::new("demo")).upstream_timeout("1s").write(&dir);
    let b = start(&cfg).await;
    let t0 = std::time::Instant::now();
    let r = b.invoke("slow", json!({})).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t0.elapsed() < Duration::from_millis(2500));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_and_agent_accounts_are_selected_by_header() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    let t = json!({"who": {"schema": {"method": "GET", "host": api.host(), "path": "/who",
                    "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}});
    dir.app("one", &t, Some(&oauth_one(&api.host(), true)));
    dir.app("two", &t, Some(&oauth_one(&api.host(), false)));
    let cfg = Config::new().ca(&ca).app(App::new("one")).app(App::new("two")).write(&dir);
    let b = start(&cfg).await;
    let r = b.invoke("who", json!({})).await;
    assert_eq!(r.status, 400, "several apps need x-bearerd-app");
    let r = b.invoke_with("who", json!({}), &[("x-bearerd-app", "one")]).await;
    assert_eq!(r.status, 400, "agent tokens need x-bearerd-account: {}", r.text());
    let r = b.admin("PUT", "/admin/tokens/one/api", r#"{"access_token": "x"}"#).await;
    assert_eq!(r.status, 400, "agent tokens are put per account");
    b.put_token("one", "api", "?account=agent-7", json!({"access_token": "agent7-token"})).await;
    b.put_token("two", "api", "", json!({"access_token": "two-token"})).await;
    let r = b.invoke_with("who", json!({}), &[("x-bearerd-app", "one"), ("x-bearerd-account", "agent-7")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = b.invoke_with("who", json!({}), &[("x-bearerd-app", "one"), ("x-bearerd-account", "agent-8")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["authorize"], "http://bearerd.test:10001/auth/authorize/one/api?account=agent-8");
    let r = b.invoke_with("who", json!({}), &[("x-bearerd-app", "two")]).await;
    assert_eq!(r.status, 200);
    let got: Vec<_> = api.requests().iter().map(|r| r.header("authorization").unwrap().to_string()).collect();
    assert_eq!(got, vec!["Bearer agent7-token", "Bearer two-token"]);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_framing_is_answered_and_never_forwarded() {
    let (_d, _ca, api, b) = setup(json!({"post": tpl("POST", "/in", json!({}), false)}), false).await;
    let host = api.host();
    let wait = Duration::from_secs(3);
    // Headers over 64 KiB.
    let big = format!("GET /in HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let out = raw(b.data, big.as_bytes(), wait).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    // Two different Content-Length values.
    let two = format!("POST /in HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd");
    let out = raw(b.data, two.as_bytes(), wait).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // A malformed chunk.
    let chunk =
        format!("POST /in HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n");
    let out = raw(b.data, chunk.as_bytes(), wait).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // Content-Length and Transfer-Encoding together: refused (bearerd's choice of SPEC's two).
    let both = format!(
        "POST /in HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    let out = raw(b.data, both.as_bytes(), wait).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(api.count(), 0, "nothing refused reaches the API");
    // Other requests are still served.
    let r = send(b.data, request("POST", "/in", &[("host", &host)], "ok")).await;
    assert_eq!(r.status, 200);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_clients_pipeline_stream_chunks_expect_continue_and_speak_1_0() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_d, _ca, api, b) =
        setup(json!({"post": tpl("POST", "/in", json!({}), false), "get": tpl("GET", "/g", json!({}), false)}), false)
            .await;
    let host = api.host();
    let wait = Duration::from_secs(5);
    // Three pipelined requests in one write, the last closing: three answers, in order.
    let three = format!(
        "GET /g HTTP/1.1\r\nHost: {host}\r\n\r\nPOST /in HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc\
         GET /g HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let t0 = std::time::Instant::now();
    let out = raw(b.data, three.as_bytes(), wait).await;
    assert!(t0.elapsed() < Duration::from_secs(4), "closed after the third: {out}");
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{out}");
    assert_eq!(out.matches("x-bearerd-template: ").collect::<Vec<_>>().len(), 3);
    let order: Vec<&str> = out.split("x-bearerd-template: ").skip(1).map(|r| &r[..r.find('\r').unwrap()]).collect();
    assert_eq!(order, ["get", "post", "get"]);
    // A chunked request body, streamed to the API with its own framing.
    let chunked = format!(
        "POST /in HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nxyz\r\n2;e=1\r\n12\r\n0\r\n\r\n"
    );
    assert!(raw(b.data, chunked.as_bytes(), wait).await.starts_with("HTTP/1.1 200"));
    // Expect: 100-continue: the body is asked for, then answered.
    let mut s = tokio::net::TcpStream::connect(b.data).await.unwrap();
    let head = format!("POST /in HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(wait, s.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"), "{}", String::from_utf8_lossy(&buf[..n]));
    s.write_all(b"hi").await.unwrap();
    let n = tokio::time::timeout(wait, s.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    // HTTP/1.0 without keep-alive: answered with a length and closed.
    let t0 = std::time::Instant::now();
    let out = raw(b.data, format!("GET /g HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes(), wait).await;
    assert!(t0.elapsed() < Duration::from_secs(4) && out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("connection: close\r\n") && out.contains("content-length: "), "{out}");
    let bodies: Vec<_> = api.requests().iter().filter(|r| r.method == "POST").map(|r| r.body.clone()).collect();
    assert_eq!(bodies, [&b"abc"[..], b"xyz12", b"hi"]);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_lose_the_connection() {
    let (_d, _ca, _api, b) = setup(json!({"get": tpl("GET", "/", json!({}), false)}), false).await;
    let t0 = std::time::Instant::now();
    let out = raw(b.data, b"GET / HTTP/1.1\r\nHost: x\r\n", Duration::from_secs(15)).await;
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(14), "{waited:?} {out}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn content_length_with_transfer_encoding_closes_the_connection() {
    let (_d, _ca, api, b) = setup(json!({"post": tpl("POST", "/in", json!({}), false)}), false).await;
    let host = api.host();
    let both = format!(
        "POST /in HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    let t0 = std::time::Instant::now();
    let out = raw(b.data, both.as_bytes(), Duration::from_secs(5)).await;
    assert!(t0.elapsed() < Duration::from_secs(4), "the connection must be closed after the answer: {out}");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    assert_eq!(api.count(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_request_on_a_stale_pooled_connection_is_sent_once_more() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // An upstream that answers the first request of each connection and closes the connection
    // when a second one arrives, as a server whose keep-alive timeout just passed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let conns = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                let mut answered = false;
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    if answered {
                        return; // closes without answering
                    }
                    answered = true;
                    seen.clear();
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                }
            });
        }
    });
    let dir = TempDir::new();
    let t = |m: &str| json!({"schema": {"method": m, "protocol": "http", "host": format!("localhost:{port}"), "path": "/s"}});
    dir.app("demo", &json!({"get": t("GET"), "post": t("POST")}), None);
    let cfg = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nstore: {file: t.json}\n\
         upstream: {allow_http: true, allow_private_ips: true}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let b = start(&cfg).await;
    assert_eq!(b.invoke("get", json!({})).await.status, 200);
    let r = b.invoke("get", json!({})).await;
    assert_eq!(
        r.status,
        200,
        "{} after {} connections",
        r.text(),
        connections.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(r.header("x-bearerd-attempts"), Some("2"), "sent once more on a new connection");
    // A POST may have been acted on: it is not sent again.
    let r = b.invoke("post", json!({})).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("closed the connection before answering"));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_token_is_sent_from_the_next_request_on() {
    // Headers that read no context are cached per token: every replacement must show at once.
    let (_d, _ca, api, b) = setup(
        json!({"get": tpl("GET", "/t", json!({"Authorization": "Bearer <%= access_token %>", "X-Tenant": "<%= iparam.tenant %>"}), true)}),
        false,
    )
    .await;
    let mut expected = Vec::new();
    for tok in ["tok-1", "tok-1", "tok-2", "tok-1", "tok-3"] {
        if expected.last() != Some(&tok) {
            b.put_token("demo", "api", "", json!({"access_token": tok, "expires_in": 3600})).await;
        }
        for _ in 0..2 {
            assert_eq!(b.invoke("get", json!({})).await.status, 200);
            expected.push(tok);
        }
    }
    let got: Vec<String> = api
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.header("x-tenant"), Some("acme"));
            r.header("authorization").unwrap_or("").trim_start_matches("Bearer ").to_string()
        })
        .collect();
    assert_eq!(got, expected);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_upstream_bodies_are_framed_and_connections_reused() {
    // Chunked (with extensions and a trailer), a large content-length body, 204, a 100 Continue
    // before the answer, and a body delimited by close.
    let big = "x".repeat(300_000);
    let big2 = big.clone();
    let (port, connections) = h1_upstream(move |path| {
        let pieces: Vec<Vec<u8>> = match path.as_str() {
            "/chunked" => vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n5;x=1\r\nhel".to_vec(),
                b"lo\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n".to_vec(),
            ],
            "/big" => vec![
                format!(
                    "HTTP/1.1 200 OK\r\nX-Up: kept\r\ncontent-length: {}\r\nKeep-Alive: timeout=5\r\n\r\n{big2}",
                    big2.len()
                )
                .into_bytes(),
            ],
            "/empty" => vec![b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()],
            "/continue" => vec![
                b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
                b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\nx-hop: 1\r\nconnection: x-hop\r\n\r\ndone".to_vec(),
            ],
            _ => vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil close".to_vec()],
        };
        let keep = matches!(path.as_str(), "/chunked" | "/big" | "/empty" | "/continue");
        Box::pin(async move { (pieces, keep) })
    })
    .await;
    let dir = TempDir::new();
    let t = |p: &str| json!({"schema": {"method": "GET", "protocol": "http", "host": format!("localhost:{port}"), "path": p}});
    dir.app(
        "demo",
        &json!({"chunked": t("/chunked"), "big": t("/big"), "empty": t("/empty"), "cont": t("/continue"), "close": t("/close")}),
        None,
    );
    let cfg = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nstore: {file: t.json}\n\
         upstream: {allow_http: true, allow_private_ips: true}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let b = start(&cfg).await;
    let count = || connections.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        let r = b.invoke("chunked", json!({})).await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
        assert!(r.header("transfer-encoding").is_none() || r.header("content-length").is_none());
        let r = b.invoke("big", json!({})).await;
        assert_eq!((r.status, r.header("x-up"), r.header("keep-alive")), (200, Some("kept"), None));
        assert_eq!(r.text(), big);
        let r = b.invoke("empty", json!({})).await;
        assert_eq!((r.status, r.text().as_str()), (204, ""));
        let r = b.invoke("cont", json!({})).await;
        assert_eq!((r.status, r.text().as_str()), (201, "done"));
        assert_eq!(r.header("x-hop"), None, "a header named in Connection is hop-by-hop");
    }
    assert_eq!(count(), 1, "one keep-alive connection carried all twelve");
    // An HTTP/2 client (prior knowledge, transparent) gets the same upstream headers, from a map.
    let stream = tokio::net::TcpStream::connect(b.data).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://localhost:{port}/big"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.version()), (200, http::Version::HTTP_2));
    assert_eq!(
        (resp.headers().get("x-up").map(|v| v.as_bytes()), resp.headers().get("keep-alive")),
        (Some(&b"kept"[..]), None)
    );
    assert_eq!(resp.headers()["x-bearerd-template"], "big");
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    assert_eq!(body.len(), big.len());
    assert_eq!(count(), 1, "still the one upstream connection");
    for _ in 0..2 {
        let r = b.invoke("close", json!({})).await;
        assert_eq!((r.status, r.text().as_str()), (200, "until close"));
    }
    // The first reused the pooled connection; neither went back to the pool after.
    assert_eq!(count(), 2, "a body delimited by close is never reused");
    assert_eq!(b.invoke("chunked", json!({})).await.text(), "hello world");
    assert_eq!(count(), 3);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_upstreams_without_h2_get_http1_with_host() {
    let ca = test_ca();
    let mut server = (*ca.server).clone();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let api = MockApi::start(Some(Arc::new(server)), Arc::new(|_, _| Reply::ok(r#"{"ok":true}"#))).await;
    let requests = json!({"get": tpl("GET", "/v1/<%= context.id %>", json!({"Authorization": "Bearer <%= access_token %>"}), true)});
    let (_d, b) = setup_with(&ca, &api, requests, false, &[]).await;
    b.put_token("demo", "api", "", json!({"access_token": "tok-h1", "expires_in": 3600})).await;
    for id in ["a", "b"] {
        let r = b.invoke("get", json!({"context": {"id": id}})).await;
        assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    }
    for (g, id) in api.requests().iter().zip(["a", "b"]) {
        assert_eq!(g.version, http::Version::HTTP_11);
        assert_eq!(g.header("host"), Some(api.host().as_str()));
        assert_eq!(g.path_and_query, format!("/v1/{id}"));
        assert_eq!(g.header("authorization"), Some("Bearer tok-h1"));
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pooled_http1_connections_keep_the_deadline_and_bearerd_headers() {
    // `/quick` answers at once, `/slow` never in time, `/flaky` with 503 the first time and 200
    // after.
    let flaky = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (port, connections) = h1_upstream(move |path| {
        let first_flaky = path == "/flaky" && flaky.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
        Box::pin(async move {
            let answer: &[u8] = match path.as_str() {
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate"
                }
                "/flaky" if first_flaky => b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
                // A 204 never carries framing; an upstream's x-bearerd-* never reaches the client.
                "/empty" => b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nx-bearerd-error: 1\r\nx-up: 2\r\n\r\n",
                // An upstream's own x-bearerd-attempts is not passed on next to bearerd's, nor its
                // x-bearerd-error (bearerd's errors are told apart by it).
                _ => b"HTTP/1.1 200 OK\r\nx-up: 1\r\nX-Bearerd-Attempts: 9\r\nX-Bearerd-Error: 1\r\ncontent-length: 2\r\n\r\nok",
            };
            (vec![answer.to_vec()], true)
        })
    })
    .await;
    let dir = TempDir::new();
    let t = |p: &str| {
        json!({"schema": {"method": "GET", "protocol": "http", "host": format!("localhost:{port}"), "path": p},
                             "options": {"maxAttempts": 2, "retryDelay": 10}})
    };
    dir.app(
        "demo",
        &json!({"quick": t("/quick"), "slow": t("/slow"), "flaky": t("/flaky"), "empty": t("/empty")}),
        None,
    );
    let cfg = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nstore: {file: t.json}\n\
         upstream: {allow_http: true, allow_private_ips: true, timeout: 1s}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let b = start(&cfg).await;
    let count = || connections.load(std::sync::atomic::Ordering::SeqCst);
    let quick = async || {
        let r = b.invoke("quick", json!({})).await;
        assert_eq!((r.status, r.text().as_str(), r.header("x-up")), (200, "ok", Some("1")));
        assert_eq!((r.header("x-bearerd-template"), r.header("x-bearerd-attempts")), (Some("quick"), Some("1")));
        assert_eq!(r.headers.get_all("x-bearerd-attempts").iter().count(), 1);
        assert_eq!(r.header("x-bearerd-error"), None, "an upstream's x-bearerd-error is not passed on");
    };
    let slow = async || {
        let t0 = std::time::Instant::now();
        let r = b.invoke("slow", json!({})).await;
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(t0.elapsed() < Duration::from_millis(2500), "{:?}", t0.elapsed());
    };
    quick().await;
    // The pooled connection's timer, set by the first request, is moved for the second.
    slow().await;
    assert_eq!(count(), 1, "the slow request went over the pooled connection");
    quick().await;
    assert_eq!(count(), 2, "a timed-out connection is not reused");
    // The new connection's timer fires while it is idle; the next requests set it again.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    quick().await;
    slow().await;
    assert_eq!(count(), 2);
    let r = b.invoke("empty", json!({})).await;
    assert_eq!((r.status, r.header("x-up"), r.header("content-length")), (204, Some("2"), None), "{:?}", r.headers);
    assert_eq!((r.header("x-bearerd-error"), r.header("x-bearerd-template")), (None, Some("empty")));
    // After a retry, bearerd's headers still follow the upstream's own lines.
    let r = b.invoke("flaky", json!({})).await;
    assert_eq!((r.status, r.text().as_str(), r.header("x-up")), (200, "ok", Some("1")));
    assert_eq!((r.header("x-bearerd-template"), r.header("x-bearerd-attempts")), (Some("flaky"), Some("2")));
    b.shutdown().await;
}

/// Writes `head`, then (when given) `body` whole before reading anything, as Python's
/// `http.client` does; the answer read to the end of the connection.
async fn write_all_then_read(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Result<String, std::io::Error> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn early_answers_reach_clients_that_write_their_whole_body_first() {
    let (_d, _ca, api, b) = setup(
        json!({"post": tpl("POST", "/in", json!({}), false), "auth": tpl("POST", "/a", json!({"Authorization": "Bearer <%= access_token %>"}), true)}),
        false,
    )
    .await;
    let big = vec![b'x'; 8 << 20];
    // Too large for /invoke: 413, though the client sends all 8 MiB before reading.
    let head = format!("POST /invoke/post HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\n\r\n", big.len());
    let out = write_all_then_read(b.data, &head, &big).await.expect("no reset: the rest was read and dropped");
    assert!(out.starts_with("HTTP/1.1 413"), "{}", &out[..out.len().min(200)]);
    // No template: 403, same client.
    let head = format!("POST /nowhere HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", api.host(), big.len());
    let out = write_all_then_read(b.data, &head, &big).await.expect("no reset");
    assert!(out.starts_with("HTTP/1.1 403"), "{}", &out[..out.len().min(200)]);
    assert_eq!(api.count(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_continue_gets_the_final_status_at_once_when_it_is_known() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_d, _ca, api, b) = setup(
        json!({"post": tpl("POST", "/in", json!({}), false), "auth": tpl("POST", "/a", json!({"Authorization": "Bearer <%= access_token %>"}), true)}),
        false,
    )
    .await;
    let host = api.host();
    // Each of these is refused before its body is needed: the first thing back is the final
    // status, never `100 Continue`.
    let refused = [
        (
            format!(
                "POST /invoke/post HTTP/1.1\r\nHost: b\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                2 << 20
            ),
            "413",
        ),
        (format!("POST /nowhere HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"), "403"),
        (
            "POST /invoke/auth HTTP/1.1\r\nHost: b\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".to_string(),
            "401",
        ),
        (format!("POST /a HTTP/1.1\r\nHost: {host}\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"), "401"),
    ];
    for (head, status) in refused {
        let mut s = tokio::net::TcpStream::connect(b.data).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.starts_with(&format!("HTTP/1.1 {status}")), "{head:?}: {got}");
    }
    assert_eq!(api.count(), 0, "nothing was forwarded");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_arriving_is_given_up() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // An upstream timeout longer than the stall limit, so that the stall is what gives up
    // (a body that trickles is given up at the request's deadline: tests/hostile.rs).
    let (_d, api, b) = api_app(&[("post", "POST", "/in")], "30s").await;
    let bodies = [
        format!("POST /in HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n0123456789", api.host()),
        format!("POST /in HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", api.host()),
        "POST /invoke/post HTTP/1.1\r\nHost: b\r\nContent-Length: 100\r\n\r\n{\"body\": ".to_string(),
    ];
    let waits: Vec<_> = bodies
        .into_iter()
        .map(|start| {
            let addr = b.data;
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(start.as_bytes()).await.unwrap();
                let t0 = std::time::Instant::now();
                let mut out = Vec::new();
                let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
                (read.is_ok(), t0.elapsed(), String::from_utf8_lossy(&out).into_owned())
            })
        })
        .collect();
    for w in waits {
        let (closed, waited, out) = w.await.unwrap();
        assert!(closed, "the connection was not given up: {out}");
        assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(16), "{waited:?}");
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
    }
    assert_eq!(api.count(), 0, "no stalled body reached the API whole");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_does_not_hold_the_upstream_connection() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // The upstream answers 64 MiB; the client reads the head and stops.
    let (port, _connections) = h1_upstream(move |_| {
        Box::pin(async move {
            let mut pieces = vec![format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 64 << 20).into_bytes()];
            pieces.extend((0..64).map(|_| vec![b'x'; 1 << 20]));
            (pieces, false)
        })
    })
    .await;
    let dir = TempDir::new();
    let t =
        json!({"schema": {"method": "GET", "protocol": "http", "host": format!("localhost:{port}"), "path": "/big"}});
    dir.app("demo", &json!({"big": t}), None);
    let cfg = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nstore: {file: t.json}\n\
         upstream: {allow_http: true, allow_private_ips: true, timeout: 1s}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let b = start(&cfg).await;
    let mut s = tokio::net::TcpStream::connect(b.data).await.unwrap();
    s.write_all(b"POST /invoke/big HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Stop reading. bearerd gives the answer up after the timeout without progress: the
    // connection is closed and what the kernel buffered ends early.
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut total = n;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(k)) => total += k,
            Err(_) => break false,
        }
    };
    assert!(closed, "the connection stayed open after {:?}", t0.elapsed());
    assert!(total < 64 << 20, "the answer was cut short ({total} bytes)");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn informational_answers_are_passed_on_to_http11_clients() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (port, _) = h1_upstream(move |_| {
        let pieces = vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: x-hint\r\nX-Hint: 1\r\n\r\n"
                .to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        ];
        Box::pin(async move { (pieces, true) })
    })
    .await;
    let dir = TempDir::new();
    let t =
        json!({"schema": {"method": "GET", "protocol": "http", "host": format!("localhost:{port}"), "path": "/hints"}});
    dir.app("demo", &json!({"hints": t}), None);
    let b = start(&Config::new().app(App::new("demo")).set("upstream.allow_http", json!(true)).write(&dir)).await;
    let ask = |version: &'static str| {
        let addr = b.data;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req =
                format!("POST /invoke/hints {version}\r\nHost: b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
            String::from_utf8(out).unwrap()
        }
    };
    // The 103 goes first, without its hop-by-hop lines; bearerd's own `100 Continue` business
    // stays its own.
    let out = ask("HTTP/1.1").await;
    assert!(
        out.starts_with("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{out}"
    );
    assert!(!out.contains("X-Hint") && !out.contains("100 Continue"), "{out}");
    // Never to an HTTP/1.0 client (RFC 9110 15.2).
    let out = ask("HTTP/1.0").await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && !out.contains("103"), "{out}");
    b.shutdown().await;
}
