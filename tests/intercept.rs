//! HTTPS through CONNECT (SPEC 2.1) and the other ways in (SPEC 2): CONNECT decided per host,
//! TLS terminated with a certificate from the intercept CA, requests inside matched like any
//! other, blind tunnels, bad input; `/invoke` from anywhere; the app chosen without headers.
//! Each test starts bearerd and a TLS mock API on 127.0.0.1:0 and asserts on what the mock API
//! received.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One app `demo`: `get` (GET /data with the integration's token) and `post` (POST /items) on a
/// TLS mock API, a token stored for it; plus whatever `extra` sets.
async fn world(extra: impl FnOnce(Config) -> Config) -> (TempDir, MockApi, Bearerd, String) {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    dir.app(
        "demo",
        &json!({
            "get": {"schema": {"method": "GET", "host": api.host(), "path": "/data",
                "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}},
            "post": {"schema": {"method": "POST", "host": api.host(), "path": "/items",
                "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}},
        }),
        Some(&oauth_one("tokens.invalid", false)),
    );
    let cfg = extra(Config::new().ca(&ca).app(App::new("demo"))).write(&dir);
    let b = start(&cfg).await;
    b.put_token("demo", "api", "", json!({"access_token": "tok-demo", "expires_in": 3600})).await;
    let ca_pem = b.admin("GET", "/ca.pem", "").await.text();
    (dir, api, b, ca_pem)
}

/// The sum of a metric's samples whose labels include `label` (any when `None`).
fn metric(text: &str, name: &str) -> f64 {
    labelled(text, name, None)
}

fn labelled(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let samples = parse_prometheus(text).unwrap();
    let wanted = |s: &&Sample| s.0 == name && label.is_none_or(|(k, v)| s.1.get(k).map(String::as_str) == Some(v));
    samples.iter().filter(wanted).map(|s| s.2).sum()
}

#[tokio::test]
async fn requests_inside_an_intercepted_tunnel_get_the_token() {
    let (_dir, api, b, ca_pem) = world(|c| c).await;
    let host = api.host();
    // Keep-alive inside the tunnel: three requests, one TLS connection.
    let tls = tunnel(b.data, &host, &ca_pem, &[b"http/1.1"]).await;
    let reqs = vec![
        request("GET", "/data?q=1", &[("host", &host), ("authorization", "Bearer app-made-up")], ""),
        request("POST", "/items", &[("host", &host), ("content-type", "application/json")], r#"{"a":1}"#),
        request("GET", "/data", &[("host", &host), ("x-bearerd-account", "default")], ""),
    ];
    let answers = h1_requests(tls, reqs).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
    }
    assert_eq!(answers[0].header("x-bearerd-template"), Some("get"));
    assert_eq!(answers[1].header("x-bearerd-template"), Some("post"));
    let seen = api.requests();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        assert_eq!(r.header("authorization"), Some("Bearer tok-demo"), "the template's token, never the app's own");
        assert_eq!(r.authority, host);
    }
    assert_eq!(seen[0].path_and_query, "/data?q=1");
    assert_eq!(&seen[1].body[..], br#"{"a":1}"#);

    // HTTP/2 by ALPN inside the tunnel.
    let tls = tunnel(b.data, &host, &ca_pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder().uri(format!("https://{host}/data")).body(Full::new(Bytes::new())).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(api.requests()[3].header("authorization"), Some("Bearer tok-demo"));

    // One certificate for the host, however many tunnels; the metrics say what happened.
    let m = b.admin("GET", "/metrics", "").await.text();
    assert_eq!(metric(&m, "bearerd_certificates_issued_total"), 1.0, "{m}");
    let intercepted = labelled(&m, "bearerd_intercepted_connections_total", Some(("result", "intercepted")));
    assert_eq!(intercepted, 2.0);
    assert!(!m.contains("PRIVATE"), "no key in the metrics");
    b.shutdown().await;
}

/// A client that does not wait for the `200` (an optimistic CONNECT): its ClientHello arrives in
/// the same write as the CONNECT, so bearerd reads it with the request head and must hand it to
/// the TLS server first.
#[tokio::test]
async fn a_client_hello_sent_with_the_connect_is_not_lost() {
    let (_dir, api, b, ca_pem) = world(|c| c).await;
    let host = api.host();
    let data = b.data;
    let config = client_config(&ca_pem, &[b"http/1.1"]);
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(config, name).unwrap();
        let mut first = format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        tls.write_tls(&mut first).unwrap();
        let mut sock = std::net::TcpStream::connect(data).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.write_all(&first).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && sock.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&head));
        let mut stream = rustls::Stream::new(&mut tls, &mut sock);
        let req = format!("GET /data HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let seen = api.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some("Bearer tok-demo"));
    b.shutdown().await;
}

#[tokio::test]
async fn connects_that_bearerd_does_not_intercept_are_refused_plainly() {
    let (_dir, api, b, ca_pem) = world(|c| c).await;
    let port = api.addr.port();
    // A host no template covers: 403, the reason phrase and the body name it.
    let (head, _) = connect(b.data, "other.example:443", &[]).await;
    assert!(head.starts_with("HTTP/1.1 403 No template covers other.example:443\r\n"), "{head}");
    let r =
        raw(b.data, b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n", Duration::from_secs(5))
            .await;
    let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["status"], 403);
    assert!(body["message"].as_str().unwrap().contains("other.example"), "{body}");
    // A port no template uses, an IP literal, no port, a malformed host: 4xx, nothing minted.
    for (authority, status) in [
        (format!("localhost:{}", port + 1), "403"),
        (format!("127.0.0.1:{port}"), "403"),
        ("[::1]:443".to_string(), "403"),
        ("localhost".to_string(), "400"),
        ("-localhost:443".to_string(), "400"),
        ("localhost:0".to_string(), "400"),
    ] {
        let (head, _) = connect(b.data, &authority, &[]).await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "CONNECT {authority}: {head}");
        assert!(head.contains("x-bearerd-error: 1"), "{head}");
    }
    // Naming an app that is not configured: the reason phrase says so (clients print it alone).
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("nope:"));
    let (head, _) = connect(b.data, &api.host(), &[("Proxy-Authorization", &basic)]).await;
    assert!(head.starts_with("HTTP/1.1 400 the Proxy-Authorization user names no app: nope (apps: demo)"), "{head}");
    // A host another app's template would cover, for the app named: that app is named.
    let (head, _) = connect(b.data, "other.example:443", &[("x-bearerd-app", "demo")]).await;
    assert!(head.starts_with("HTTP/1.1 403 No template of app demo covers other.example:443\r\n"), "{head}");

    // A second CONNECT inside a tunnel: 400, nothing forwarded.
    let tls = tunnel(b.data, &api.host(), &ca_pem, &[b"http/1.1"]).await;
    let inner = http::Request::builder()
        .method("CONNECT")
        .uri(format!("localhost:{port}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = h1_requests(tls, vec![inner]).await;
    assert_eq!(a[0].status, 400, "{}", a[0].text());
    // A request inside the tunnel for another host: 421.
    let tls = tunnel(b.data, &api.host(), &ca_pem, &[b"http/1.1"]).await;
    let a = h1_requests(tls, vec![request("GET", "/data", &[("host", "other.example")], "")]).await;
    assert_eq!(a[0].status, 421, "{}", a[0].text());
    // A path no template has, inside the tunnel: 403 like any other request.
    let tls = tunnel(b.data, &api.host(), &ca_pem, &[b"http/1.1"]).await;
    let a = h1_requests(tls, vec![request("GET", "/admin", &[("host", &api.host())], "")]).await;
    assert_eq!(a[0].status, 403, "{}", a[0].text());

    assert_eq!(api.count(), 0, "nothing reached the API");
    let m = b.admin("GET", "/metrics", "").await.text();
    assert_eq!(metric(&m, "bearerd_certificates_issued_total"), 1.0, "minted for the templated host only");
    b.shutdown().await;
}

#[tokio::test]
async fn the_handshake_is_for_the_connect_host_only() {
    let (_dir, api, b, ca_pem) = world(|c| c).await;
    // SNI naming another host: the handshake is refused with an unrecognized_name alert.
    let (head, s) = connect(b.data, &api.host(), &[]).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let e = handshake(s, &ca_pem, "evil.example", &[b"http/1.1"]).await.unwrap_err();
    assert!(e.to_string().contains("UnrecognisedName"), "{e}");
    // A client that does not trust the CA fails its handshake.
    let other = test_ca();
    let (_, s) = connect(b.data, &api.host(), &[]).await;
    assert!(handshake(s, &other.ca_pem, "localhost", &[b"http/1.1"]).await.is_err());
    // A ClientHello that never comes, and one that trickles: closed within the header timeout.
    let (_, mut silent) = connect(b.data, &api.host(), &[]).await;
    let (_, mut slow) = connect(b.data, &api.host(), &[]).await;
    let t0 = std::time::Instant::now();
    let trickle = async {
        // A TLS record header, then a byte a second.
        let _ = slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if slow.write_all(&[0x01]).await.is_err() {
                break;
            }
        }
    };
    let mut buf = [0u8; 16];
    let (closed, _) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buf)),
        tokio::time::timeout(Duration::from_secs(15), trickle)
    );
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the silent client is closed: {closed:?}");
    assert!(t0.elapsed() < Duration::from_secs(14), "{:?}", t0.elapsed());
    assert_eq!(api.count(), 0);
    let m = b.admin("GET", "/metrics", "").await.text();
    let failed = labelled(&m, "bearerd_intercepted_connections_total", Some(("result", "handshake_failed")));
    assert_eq!(failed, 4.0, "{m}");
    b.shutdown().await;
}

#[tokio::test]
async fn tunnel_hosts_are_relayed_blind_without_a_token() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    // The tunnel host is a second mock API, which no template names.
    let other = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    dir.app("demo", &json!({"get": {"schema": {"method": "GET", "host": api.host(), "path": "/data"}}}), None);
    let cfg =
        Config::new().ca(&ca).app(App::new("demo")).set("intercept.tunnel_hosts", json!([other.host()])).write(&dir);
    let b = start(&cfg).await;
    let (head, s) = connect(b.data, &other.host(), &[]).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    // The client's TLS is with the API itself (the test CA), not with bearerd.
    let tls = handshake(s, &ca.ca_pem, "localhost", &[b"http/1.1"]).await.unwrap();
    let a = h1_requests(tls, vec![request("GET", "/anything", &[("host", &other.host())], "")]).await;
    assert_eq!(a[0].status, 200);
    let seen = other.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), None, "a blind tunnel carries no token");
    assert_eq!(seen[0].path_and_query, "/anything");
    // tunnel_hosts without a port reach 443 only.
    let (head, _) = connect(b.data, "localhost:1", &[]).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    b.shutdown().await;
}

#[tokio::test]
async fn invoke_arrives_in_any_form_and_the_app_is_found_without_headers() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    let get = |path: &str| json!({"schema": {"method": "GET", "host": api.host(), "path": path}});
    dir.app("alpha", &json!({"a_only": get("/a"), "shared": get("/shared")}), None);
    dir.app("beta", &json!({"b_only": get("/b"), "shared": get("/shared")}), None);
    let cfg = Config::new().ca(&ca).app(App::new("alpha")).app(App::new("beta")).write(&dir);
    let b = start(&cfg).await;
    let host = api.host();
    let abs = |path: &str| format!("http://{host}{path}");

    // Only one app has a template that matches: it is the app.
    let r = send(b.data, request("GET", &abs("/b"), &[], "")).await;
    assert_eq!((r.status, r.header("x-bearerd-template")), (200, Some("b_only")), "{}", r.text());
    // Both match: 400 naming them; the proxy user name chooses.
    let r = send(b.data, request("GET", &abs("/shared"), &[], "")).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("alpha, beta"), "{}", r.text());
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("beta:"));
    let r = send(b.data, request("GET", &abs("/shared"), &[("proxy-authorization", &basic)], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // http://host:443 matches a template without a port... on the templates' own host only.
    let r = send(b.data, request("GET", "http://nowhere.example:443/a", &[], "")).await;
    assert_eq!(r.status, 403);

    // /invoke by name: origin form, absolute form to bearerd's own address, HTTP/2.
    let own = format!("http://127.0.0.1:{}/invoke/a_only", b.data.port());
    for uri in ["/invoke/a_only".to_string(), own.clone()] {
        let r = send(b.data, request("POST", &uri, &[("host", "bearerd")], "{}")).await;
        assert_eq!(r.status, 200, "{uri}: {}", r.text());
        assert_eq!(r.header("x-bearerd-template"), Some("a_only"));
    }
    let stream = TcpStream::connect(b.data).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder().method("POST").uri(&own).body(Full::new(Bytes::from("{}"))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-bearerd-template"], "a_only");
    // A name only one app declares needs no header; one both declare does.
    let r = send(b.data, request("POST", "/invoke/shared", &[("host", "bearerd")], "{}")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(api.requests().iter().filter(|r| r.path_and_query == "/a").count(), 3);
    b.shutdown().await;
}

#[tokio::test]
async fn a_websocket_goes_through_a_template_with_the_token() {
    let ca = test_ca();
    let (port, heads) = ws_upstream(&ca).await;
    let host = format!("localhost:{port}");
    let dir = TempDir::new();
    ws_app(&dir, &host);
    let b = start(&Config::new().ca(&ca).app(App::new("demo")).write(&dir)).await;
    b.put_token("demo", "api", "", json!({"access_token": "tok-ws", "expires_in": 3600})).await;
    let ca_pem = b.admin("GET", "/ca.pem", "").await.text();

    // ws:// through the data listener: 101, then bytes both ways (the upstream's first ones
    // came with its 101).
    let mut s = TcpStream::connect(b.data).await.unwrap();
    let head = handshake_ws(&mut s, &host, "/ws", "websocket").await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let lower = head.to_ascii_lowercase();
    for line in
        ["connection: upgrade", "upgrade: websocket", "sec-websocket-accept: accept-1", "x-bearerd-template: ws"]
    {
        assert!(lower.contains(line), "{line} in {head}");
    }
    assert_eq!(read_n(&mut s, 5).await, "hello");
    s.write_all(b"frame-1").await.unwrap();
    assert_eq!(read_n(&mut s, 7).await, "frame-1");
    // wss:// through an intercepted tunnel.
    let mut tls = tunnel(b.data, &host, &ca_pem, &[b"http/1.1"]).await;
    let head = handshake_ws(&mut tls, &host, "/ws", "websocket").await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(read_n(&mut tls, 5).await, "hello");
    tls.write_all(b"frame-2").await.unwrap();
    assert_eq!(read_n(&mut tls, 7).await, "frame-2");
    // The client closes: the relay ends (and lets shutdown finish at once).
    drop((s, tls));
    {
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 2);
        for h in heads.iter() {
            for line in
                ["authorization: bearer tok-ws", "upgrade: websocket", "connection: upgrade", "sec-websocket-key: "]
            {
                assert!(h.contains(line), "{line} in {h}");
            }
        }
    }

    // An upgrade that matches no template: 403, nothing sent.
    let mut s = TcpStream::connect(b.data).await.unwrap();
    let head = handshake_ws(&mut s, "other.example", "/ws", "websocket").await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert_eq!(heads.lock().unwrap().len(), 2, "nothing sent for it");
    b.shutdown().await;
}

#[tokio::test]
async fn another_upgrade_is_dropped_and_the_request_sent_as_it_is() {
    // curl --http2 http://... asks for `Upgrade: h2c`: hop-by-hop, ignored (RFC 9110 7.8).
    let (_dir, api, b, _) = world(|c| c).await;
    let host = api.host();
    let headers = [
        ("host", host.as_str()),
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
    ];
    let r = send(b.data, request("GET", "/data", &headers, "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = api.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("upgrade"), None);
    assert_eq!(seen[0].header("http2-settings"), None);
    assert_eq!(seen[0].header("authorization"), Some("Bearer tok-demo"));
    b.shutdown().await;
}

#[tokio::test]
async fn the_ca_is_served_printed_and_kept() {
    let (dir, _api, b, ca_pem) = world(|c| c).await;
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"), "{ca_pem}");
    // Kept beside the token file, the key its owner's alone.
    let kept = std::fs::read_to_string(dir.path().join("state/ca.pem")).unwrap();
    assert_eq!(kept, ca_pem);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("state/ca-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    b.shutdown().await;
    // `bearerd ca` prints the same certificate.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bearerd"))
        .args(["ca", "--config"])
        .arg(dir.path().join("bearerd.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), ca_pem);
    // A configured CA must be given whole.
    let cfg = Config::new().app(App::new("demo")).set("intercept.ca_cert", json!("state/ca.pem")).write(&dir);
    let e = bearerd::config::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("/intercept") && e.contains("both or neither"), "{e}");
    // A configured CA is used as it is.
    let cfg = Config::new()
        .app(App::new("demo"))
        .set("intercept.ca_cert", json!("state/ca.pem"))
        .set("intercept.ca_key", json!("state/ca-key.pem"))
        .set("store.file", json!("elsewhere/tokens.json"))
        .write(&dir);
    let b = start(&cfg).await;
    assert_eq!(b.admin("GET", "/ca.pem", "").await.text(), ca_pem);
    assert!(!dir.path().join("elsewhere/ca.pem").exists());
    // A reload cannot swap the CA: it says so, and the CA read at start keeps signing.
    Config::new().app(App::new("demo")).set("store.file", json!("elsewhere/tokens.json")).write(&dir);
    let r = b.admin("POST", "/admin/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("intercept.ca_cert/ca_key changed: restart"), "{}", r.text());
    assert_eq!(b.admin("GET", "/ca.pem", "").await.text(), ca_pem);
    b.shutdown().await;

    // A CA near its end: warned about in /readyz, which stays 200.
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_after = (std::time::SystemTime::now() + Duration::from_secs(5 * 86_400)).into();
    dir.write("short/ca.pem", &params.self_signed(&key).unwrap().pem());
    dir.write("short/ca-key.pem", &key.serialize_pem());
    let cfg = Config::new()
        .app(App::new("demo"))
        .set("intercept.ca_cert", json!("short/ca.pem"))
        .set("intercept.ca_key", json!("short/ca-key.pem"))
        .write(&dir);
    let b = start(&cfg).await;
    let r = b.admin("GET", "/readyz", "").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    let days = text.split("warning: the intercept CA expires in ").nth(1).and_then(|t| t.split(' ').next());
    assert!(matches!(days, Some("4" | "5")), "{text}");
    b.shutdown().await;
}

#[tokio::test]
async fn plain_http_inside_a_connect_is_served_as_a_request_to_its_host() {
    // Node's undici tunnels http:// URLs through CONNECT host:port, then speaks plain HTTP.
    let (_dir, api, b, _) = world(|c| c).await;
    let (head, mut s) = connect(b.data, &api.host(), &[]).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let host = api.host();
    for path in ["/data", "/data"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
            .unwrap();
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
    }
    // Another host inside it: 421, as inside TLS.
    s.write_all(b"GET /data HTTP/1.1\r\nHost: other.example\r\n\r\n").await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 421 "));
    let seen = api.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.header("authorization") == Some("Bearer tok-demo")), "{seen:?}");
    b.shutdown().await;
}

#[tokio::test]
async fn te_trailers_goes_on_to_an_http2_upstream() {
    // gRPC servers look for `te: trailers` to tell a proxy that keeps trailers.
    let (_dir, api, b, _) = world(|c| c).await;
    let r = send(b.data, request("GET", &format!("http://{}/data", api.host()), &[("te", "trailers")], "")).await;
    assert_eq!(r.status, 200);
    let seen = api.requests();
    assert_eq!(seen[0].version, http::Version::HTTP_2, "the mock API offers h2");
    assert_eq!(seen[0].header("te"), Some("trailers"));
    b.shutdown().await;
}

/// An HTTP/2 upstream (TLS, ALPN h2) that speaks the frames itself: it records each request's
/// header block as sent (HPACK, undecoded) and answers `200` without a body.
async fn raw_h2_upstream(ca: &TestCa) -> (u16, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let blocks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = tls_server(ca, blocks.clone(), |mut s, seen| async move {
        let mut preface = [0u8; 24];
        if s.read_exact(&mut preface).await.is_err() {
            return;
        }
        // An empty SETTINGS frame.
        let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
        loop {
            let mut h = [0u8; 9];
            if s.read_exact(&mut h).await.is_err() {
                return;
            }
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (kind, flags, stream) = (h[3], h[4], u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff);
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                return;
            }
            match kind {
                // SETTINGS, not an ACK: acknowledge it.
                4 if flags & 1 == 0 => {
                    let _ = s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
                }
                // HEADERS: keep the block; answer `:status 200` (HPACK index 8), ending the stream.
                1 => {
                    let mut block = &payload[..];
                    if flags & 0x8 != 0 {
                        let pad = usize::from(block[0]);
                        block = &block[1..block.len() - pad];
                    }
                    if flags & 0x20 != 0 {
                        block = &block[5..];
                    }
                    seen.lock().unwrap().push(block.to_vec());
                    let sid = stream.to_be_bytes();
                    let _ = s.write_all(&[0, 0, 1, 1, 0x5, sid[0], sid[1], sid[2], sid[3], 0x88]).await;
                }
                _ => {}
            }
        }
    })
    .await;
    (port, blocks)
}

#[tokio::test]
async fn a_token_in_a_header_is_never_indexed_by_hpack() {
    let ca = test_ca();
    let (port, blocks) = raw_h2_upstream(&ca).await;
    let dir = TempDir::new();
    dir.app(
        "demo",
        &json!({"get": {"schema": {"method": "GET", "host": format!("localhost:{port}"), "path": "/data",
            "headers": {"Authorization": "Bearer <%= access_token %>", "Accept": "application/json"}}, "options": {"oauth": "api"}}}),
        Some(&oauth_one("tokens.invalid", false)),
    );
    let b = start(&Config::new().ca(&ca).app(App::new("demo")).write(&dir)).await;
    b.put_token("demo", "api", "", json!({"access_token": "tok-never-indexed", "expires_in": 3600})).await;
    for _ in 0..2 {
        let r = send(b.data, request("GET", &format!("http://localhost:{port}/data"), &[], "")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let blocks = blocks.lock().unwrap().clone();
    assert_eq!(blocks.len(), 2, "both requests on the one h2 connection");
    // `authorization` is static entry 23: "never indexed" with that name is 0x1f 0x08 (RFC 7541
    // 6.2.3), in every request's block (an indexed one would be a one-byte reference the second time).
    for block in &blocks {
        assert!(block.windows(2).any(|w| w == [0x1f, 0x08]), "authorization is not never-indexed: {block:02x?}");
    }
    // A literal template header stays indexable: `accept` (static 19) with incremental indexing
    // (0x53) the first time.
    assert!(blocks[0].contains(&0x53), "{:02x?}", blocks[0]);
    b.shutdown().await;
}
