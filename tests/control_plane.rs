//! The admin listener: health, readiness, metrics, the token API and its protection.

mod support;

use serde_json::json;
use support::*;

async fn setup() -> (TempDir, MockApi, Bearerd) {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    dir.app(
        "demo",
        &json!({"get": {"schema": {"method": "GET", "host": api.host(), "path": "/x",
            "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}}),
        Some(&oauth_one(&api.host(), false)),
    );
    let cfg = config(&dir, Some(&ca), "demo");
    let b = start(&cfg).await;
    (dir, api, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_token_api() {
    let (dir, api, b) = setup().await;
    assert_eq!(b.admin("GET", "/healthz", "").await.status, 200);
    assert_eq!(b.admin("GET", "/readyz", "").await.status, 200);
    let r = b.admin("GET", "/admin/tokens", "").await;
    assert_eq!(
        r.json(),
        json!([{"app": "demo", "integration": "api", "account": "default", "state": "missing", "expires_at": null, "scope": null,
            "authorize": "http://bearerd.test:10001/auth/authorize/demo/api"}])
    );
    let r = b
        .admin(
            "PUT",
            "/admin/tokens/demo/api",
            r#"{"access_token": "sekrit-at", "refresh_token": "sekrit-rt", "expires_in": 3600, "scope": "read"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = b.admin("GET", "/admin/tokens", "").await;
    let j = r.json();
    assert_eq!(j[0]["state"], "valid");
    assert_eq!(j[0]["scope"], "read");
    assert!(j[0]["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(!r.text().contains("sekrit"), "never a token in the listing");
    // The file store holds it, mode 0600.
    let file = dir.path().join("state/tokens.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&file).unwrap().contains("sekrit-rt"));
    // Expired.
    b.admin("PUT", "/admin/tokens/demo/api", r#"{"access_token": "old", "expires_in": 0}"#).await;
    assert_eq!(b.admin("GET", "/admin/tokens", "").await.json()[0]["state"], "expired");
    // Unknown app, integration, bad body.
    assert_eq!(b.admin("PUT", "/admin/tokens/nope/api", r#"{"access_token": "x"}"#).await.status, 404);
    assert_eq!(b.admin("PUT", "/admin/tokens/demo/nope", r#"{"access_token": "x"}"#).await.status, 404);
    assert_eq!(b.admin("PUT", "/admin/tokens/demo/api", r#"{"token": "x"}"#).await.status, 400);
    assert_eq!(b.admin("PUT", "/admin/tokens/demo/api", r#"{"access_token": ""}"#).await.status, 400);
    // Delete: the data plane answers 401 again.
    assert_eq!(b.admin("DELETE", "/admin/tokens/demo/api", "").await.status, 200);
    assert_eq!(b.admin("DELETE", "/admin/tokens/demo/api", "").await.status, 404);
    assert_eq!(b.invoke("get", json!({})).await.status, 401);
    assert_eq!(api.count(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_token_protects_admin_endpoints_only() {
    let (_dir, _api, b) = setup().await;
    b.shutdown().await;
    let dir = TempDir::new();
    dir.app("demo", &json!({}), Some(&oauth_one("auth.example.com", false)));
    let cfg = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0, token: adm1n-t0ken}\nstore: {file: t.json}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let b = start(&cfg).await;
    let get = |auth: Option<&'static str>, path: &'static str| {
        let mut h = vec![("host", "admin")];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        send(b.admin, request("GET", path, &h, ""))
    };
    assert_eq!(get(None, "/admin/tokens").await.status, 401);
    assert_eq!(get(Some("Bearer wrong"), "/admin/tokens").await.status, 401);
    assert_eq!(get(Some("Bearer adm1n-t0ken"), "/admin/tokens").await.status, 200);
    // A browser gives it as the password of HTTP Basic, after the 401 asks for it.
    let r = get(None, "/auth/authorize/demo/api").await;
    assert_eq!(r.status, 401, "starting an authorization needs the token");
    let asks: Vec<_> = r.headers.get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert!(asks.contains(&"Basic realm=\"bearerd\"".to_string()), "{asks:?}");
    // base64("admin:adm1n-t0ken") and base64("admin:wrong")
    assert_eq!(get(Some("Basic YWRtaW46YWRtMW4tdDBrZW4="), "/auth/authorize/demo/api").await.status, 302);
    assert_eq!(get(Some("Basic YWRtaW46d3Jvbmc="), "/admin/tokens").await.status, 401);
    assert_eq!(get(Some("Basic YWRtaW46YWRtMW4tdDBrZW4="), "/admin/tokens").await.status, 200);
    // The callback is protected by its single-use state; probes and metrics are open.
    assert_eq!(get(None, "/auth/callback?code=c&state=forged").await.status, 400);
    assert_eq!(get(None, "/healthz").await.status, 200);
    assert_eq!(get(None, "/metrics").await.status, 200);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_known_traffic() {
    let (_dir, _api, b) = setup().await;
    b.put_token("demo", "api", "", json!({"access_token": "t"})).await;
    for _ in 0..3 {
        assert_eq!(b.invoke("get", json!({})).await.status, 200);
    }
    assert_eq!(b.invoke("nope", json!({})).await.status, 404);
    assert_eq!(send(b.data, request("GET", "/zzz", &[("host", "nowhere.test")], "")).await.status, 403);
    let m = b.admin("GET", "/metrics", "").await.text();
    for line in [
        "bearerd_requests_total{app=\"demo\",code=\"200\",template=\"get\"} 3",
        "bearerd_requests_total{app=\"demo\",code=\"404\",template=\"\"} 1",
        "bearerd_requests_total{app=\"demo\",code=\"403\",template=\"\"} 1",
        "bearerd_request_duration_seconds_count{app=\"demo\",template=\"get\"} 3",
        "bearerd_config_generation 1",
        "bearerd_inflight_requests 0",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    assert!(!m.contains("\"t\""));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_finishes_in_flight_requests() {
    use std::sync::Arc;
    use std::time::Duration;
    let ca = test_ca();
    let api =
        MockApi::start(Some(ca.server.clone()), Arc::new(|_, _| Reply::ok("done").delay(Duration::from_millis(800))))
            .await;
    let dir = TempDir::new();
    dir.app("demo", &json!({"slow": {"schema": {"method": "GET", "host": api.host(), "path": "/"}}}), None);
    let cfg = config(&dir, Some(&ca), "demo");
    let b = start(&cfg).await;
    let data = b.data;
    let inflight =
        tokio::spawn(async move { send(data, request("POST", "/invoke/slow", &[("host", "b")], "{}")).await });
    eventually(Duration::from_secs(5), "the request reached the API", || async { api.count() > 0 }).await;
    let admin = b.running.as_ref().unwrap().admin.clone();
    let stop = tokio::spawn(b.shutdown());
    eventually(Duration::from_secs(2), "not ready while draining", || async { !admin.is_ready() }).await;
    eventually(Duration::from_secs(2), "no new connections while draining", || async {
        tokio::net::TcpStream::connect(data).await.is_err()
    })
    .await;
    let r = inflight.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    stop.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn operational_metrics_exist_from_the_start_and_follow_the_tokens() {
    let (dir, _api, b) = setup().await;
    let metrics = async || {
        let text = b.admin("GET", "/metrics", "").await.text();
        let n = parse_with_prometheus_client(&text).unwrap_or_else(|e| panic!("prometheus_client: {e}\n{text}"));
        assert!(n > 20, "{n} samples");
        parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    };
    let get = |samples: &[Sample], name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.2)
    };
    let api = [("app", "demo"), ("integration", "api")];
    let with = |extra: (&'static str, &'static str)| [api[0], api[1], extra];
    let m = metrics().await;
    // Every series a dashboard or an alert needs exists at 0 before its first event.
    assert_eq!(get(&m, "bearerd_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    assert_eq!(get(&m, "bearerd_config_last_reload_successful", &[]), Some(1.0));
    assert_eq!(get(&m, "bearerd_config_reloads_total", &[("result", "error")]), Some(0.0));
    for result in ["ok", "invalid_grant", "error", "timeout"] {
        assert_eq!(get(&m, "bearerd_token_refreshes_total", &with(("result", result))), Some(0.0), "{result}");
    }
    assert_eq!(get(&m, "bearerd_authorizations_total", &with(("result", "denied"))), Some(0.0));
    assert_eq!(get(&m, "bearerd_tokens", &with(("state", "missing"))), Some(1.0));
    assert_eq!(get(&m, "bearerd_tokens", &with(("state", "reauthorize"))), Some(0.0));
    // A person must act: /admin/tokens says where.
    let list = b.admin("GET", "/admin/tokens", "").await.json();
    assert_eq!(list[0]["state"], "missing");
    assert_eq!(list[0]["authorize"], "http://bearerd.test:10001/auth/authorize/demo/api", "{list}");
    b.put_token("demo", "api", "", json!({"access_token": "t", "expires_in": 3600})).await;
    let m = metrics().await;
    assert_eq!(get(&m, "bearerd_tokens", &with(("state", "valid"))), Some(1.0));
    assert_eq!(get(&m, "bearerd_tokens", &with(("state", "missing"))), Some(0.0));
    assert!(b.admin("GET", "/admin/tokens", "").await.json()[0].get("authorize").is_none());
    // A failed reload is visible until one succeeds.
    let yaml = std::fs::read_to_string(dir.path().join("bearerd.yaml")).unwrap();
    dir.write("bearerd.yaml", "apps: [");
    assert_eq!(b.admin("POST", "/admin/reload", "").await.status, 422);
    assert_eq!(get(&metrics().await, "bearerd_config_last_reload_successful", &[]), Some(0.0));
    dir.write("bearerd.yaml", &yaml);
    assert_eq!(b.admin("POST", "/admin/reload", "").await.status, 200);
    assert_eq!(get(&metrics().await, "bearerd_config_last_reload_successful", &[]), Some(1.0));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_is_a_dry_run_that_says_why() {
    let (_dir, api, b) = setup().await;
    let h = api.host();
    let explain = async |body: serde_json::Value| {
        let r = b.admin("POST", "/admin/explain", &body.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().contains("csecret"), "a secret in the explanation: {}", r.text());
        r.json()
    };
    // A match: the upstream request as it would go, secrets redacted, and the token's state.
    let e = explain(json!({"method": "GET", "url": format!("https://{h}/x?y=1")})).await;
    assert_eq!(
        (e["matched"].clone(), e["app"].clone(), e["template"].clone()),
        (json!(true), json!("demo"), json!("get"))
    );
    assert_eq!(e["upstream"]["url"], format!("https://{h}/x?y=1"));
    assert_eq!(e["upstream"]["headers"]["authorization"], "[redacted]");
    assert_eq!(e["integration"], "api");
    assert_eq!(e["token"]["state"], "missing");
    assert_eq!(e["token"]["authorize"], "http://bearerd.test:10001/auth/authorize/demo/api");
    b.put_token("demo", "api", "", json!({"access_token": "AT-NEVER-SHOWN", "expires_in": 0})).await;
    let e = explain(json!({"method": "get", "url": format!("https://{h}/x")})).await;
    assert_eq!((e["token"]["state"].clone(), e["token"]["refresh_first"].clone()), (json!("expired"), json!(true)));
    assert!(!e.to_string().contains("AT-NEVER-SHOWN"));
    // No match: why, and the nearest template.
    let e = explain(json!({"method": "POST", "url": format!("https://{h}/x")})).await;
    assert_eq!(e["matched"], false);
    assert_eq!(e["nearest"][0]["template"], "get");
    assert!(e["nearest"][0]["differs"].as_str().unwrap().starts_with("method"), "{e}");
    let e = explain(json!({"method": "GET", "url": format!("https://{h}/y")})).await;
    assert_eq!(e["nearest"][0]["differs"], "path segment 1 (`y`): the template has `x`", "{e}");
    let e = explain(json!({"method": "GET", "url": "https://elsewhere.example/x"})).await;
    assert!(e["nearest"][0]["differs"].as_str().unwrap().starts_with("host"), "{e}");
    // Bad input is 400; nothing was sent anywhere.
    assert_eq!(b.admin("POST", "/admin/explain", "{\"url\": 1}").await.status, 400);
    assert_eq!(api.count(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_writes_are_refused_on_every_state_changing_endpoint() {
    let (_dir, _api, b) = setup().await;
    let host = format!("127.0.0.1:{}", b.admin.port());
    let with = async |method: &str, path: &str, headers: &[(&str, &str)], body: &str| {
        let mut h = vec![("host", host.as_str())];
        h.extend_from_slice(headers);
        send(b.admin, request(method, path, &h, body)).await
    };
    let token = r#"{"access_token": "t", "expires_in": 60}"#;
    // What a page elsewhere can make a browser send: a form post, with the browser's headers.
    for headers in [
        vec![("origin", "http://evil.example"), ("content-type", "application/x-www-form-urlencoded")],
        vec![("sec-fetch-site", "cross-site"), ("content-type", "text/plain")],
        vec![("origin", "null")],
    ] {
        for (method, path, body) in [
            ("POST", "/admin/reload", ""),
            ("PUT", "/admin/tokens/demo/api", token),
            ("DELETE", "/admin/tokens/demo/api", ""),
            ("POST", "/admin/explain", r#"{"method": "GET", "url": "https://x/"}"#),
        ] {
            let r = with(method, path, &headers, body).await;
            assert_eq!(r.status, 403, "{method} {path} with {headers:?}: {}", r.text());
        }
    }
    // DNS rebinding: the Host is the attacker's name, so Origin and Host agree; still refused.
    let rebound = send(
        b.admin,
        request(
            "POST",
            "/admin/reload",
            &[("host", "rebound.example:10001"), ("origin", "http://rebound.example:10001")],
            "",
        ),
    )
    .await;
    assert_eq!(rebound.status, 403);
    // Scripts (no Origin), the listener's own origin, and reads are served.
    assert_eq!(with("POST", "/admin/reload", &[], "").await.status, 200);
    let own = format!("http://{host}");
    assert_eq!(with("PUT", "/admin/tokens/demo/api", &[("origin", &own)], token).await.status, 200);
    assert_eq!(with("GET", "/admin/tokens", &[("sec-fetch-site", "cross-site")], "").await.status, 200);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_stored_under_the_account_requests_read() {
    let dir = TempDir::new();
    let mut oauth = oauth_one("tokens.invalid", false);
    oauth["integrations"]["api"]["grant_type"] = json!("client_credentials");
    dir.app(
        "demo",
        &json!({"get": {"schema": {"method": "GET", "host": "api.example.com", "path": "/x",
            "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}}),
        Some(&oauth),
    );
    let b = start(&Config::new().app(App::new("demo")).write(&dir)).await;
    let token = r#"{"access_token": "t", "expires_in": 60}"#;
    // A client-credentials integration has one token: an account is refused, not stored unread.
    let r = b.admin("PUT", "/admin/tokens/demo/api?account=someone", token).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("uses client credentials: it has one token"), "{}", r.text());
    assert_eq!(b.admin("PUT", "/admin/tokens/demo/api", token).await.status, 200);
    assert_eq!(b.admin("PUT", "/admin/tokens/demo/api?account=default", token).await.status, 200);
    let list = b.admin("GET", "/admin/tokens", "").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(b.admin("PUT", "/admin/tokens/demo/api?account=%0a", token).await.status, 400);
    b.shutdown().await;
}
