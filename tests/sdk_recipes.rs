//! The README's "Pointing an SDK at bearerd" recipes, run with the real clients: curl, Python's
//! standard library and requests (Debian's /usr/bin/python3), Node with undici's `ProxyAgent`
//! and `NODE_EXTRA_CA_CERTS`. Each sets `HTTPS_PROXY` and trusts bearerd's CA the way the recipe
//! says, calls an `https://` URL of a TLS mock API through bearerd, and the mock API must have
//! received the token. `scripts/test.sh` installs the clients (undici into `target/npm`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use support::*;

/// bearerd with app `demo` (`GET /data` with its integration's token) in front of a TLS mock
/// API; a token stored; the CA bearerd serves, written to `ca.pem` in the test's folder.
async fn world() -> (TempDir, MockApi, Bearerd, PathBuf) {
    let (dir, api, b, ca, _) = world_with(|c, _, _| c).await;
    (dir, api, b, ca)
}

/// [`world`], its configuration as `extra` makes it (it may write files for it), and its test CA.
async fn world_with(
    extra: impl FnOnce(Config, &TempDir, &TestCa) -> Config,
) -> (TempDir, MockApi, Bearerd, PathBuf, TestCa) {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    dir.app(
        "demo",
        &json!({"get": {"schema": {"method": "GET", "host": api.host(), "path": "/data",
            "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}}),
        Some(&oauth_one("tokens.invalid", false)),
    );
    let cfg = extra(Config::new().ca(&ca).app(App::new("demo")), &dir, &ca).write(&dir);
    let b = start(&cfg).await;
    b.put_token("demo", "api", "", json!({"access_token": "tok-sdk", "expires_in": 3600})).await;
    let pem = b.admin("GET", "/ca.pem", "").await.text();
    let ca_file = dir.write("trust/bearerd-ca.pem", &pem);
    (dir, api, b, ca_file, ca)
}

/// Runs a client with `HTTPS_PROXY` (and `https_proxy`) pointing at bearerd, no `NO_PROXY`, and
/// `env`; off the async workers, since bearerd serves it from this process.
async fn run(program: &str, args: &[&str], proxy: &str, env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(program);
    c.args(args).env("HTTPS_PROXY", proxy).env("https_proxy", proxy).env_remove("NO_PROXY").env_remove("no_proxy");
    c.env_remove("HTTP_PROXY").env_remove("http_proxy").env_remove("ALL_PROXY").env_remove("all_proxy");
    for (k, v) in env {
        c.env(k, v);
    }
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        c.output().unwrap_or_else(|e| panic!("{program} cannot run ({e}): scripts/test.sh installs it"))
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Debian's Python, where scripts/test.sh installs python3-requests.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

#[tokio::test]
async fn curl_through_https_proxy_with_the_ca() {
    let (_dir, api, b, ca) = world().await;
    let proxy = format!("http://127.0.0.1:{}", b.data.port());
    let url = format!("https://{}/data", api.host());
    let ca = ca.to_str().unwrap();
    for http in ["--http1.1", "--http2"] {
        let o = run("curl", &["-sS", "--fail-with-body", http, "--cacert", ca, &url], &proxy, &[]).await;
        assert!(o.status.success(), "curl {http}: {}{}", stdout(&o), stderr(&o));
        assert_eq!(stdout(&o), r#"{"ok":true}"#);
    }
    let seen = api.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.header("authorization") == Some("Bearer tok-sdk")), "{seen:?}");
    // Without the CA, curl refuses bearerd's certificate and nothing is sent.
    let o = run("curl", &["-sS", &url], &proxy, &[("CURL_CA_BUNDLE", Path::new("/dev/null"))]).await;
    assert!(!o.status.success());
    // A host no template covers: curl says the tunnel failed with 403.
    let o = run("curl", &["-sS", "--cacert", ca, "https://other.example/"], &proxy, &[]).await;
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));
    assert_eq!(api.count(), 2);
    b.shutdown().await;
}

#[tokio::test]
async fn python_urllib_requests_and_httpx_through_https_proxy_with_the_ca() {
    let (_dir, api, b, ca) = world().await;
    let proxy = format!("http://127.0.0.1:{}", b.data.port());
    let url = format!("https://{}/data", api.host());
    // The standard library: HTTPS_PROXY and SSL_CERT_FILE.
    let urllib = format!("import urllib.request; print(urllib.request.urlopen('{url}').read().decode())");
    let o = run(python(), &["-c", &urllib], &proxy, &[("SSL_CERT_FILE", &ca)]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), r#"{"ok":true}"#);
    // requests: HTTPS_PROXY and REQUESTS_CA_BUNDLE.
    let requests = format!("import requests; r = requests.get('{url}'); print(r.status_code, r.text)");
    let o = run(python(), &["-c", &requests], &proxy, &[("REQUESTS_CA_BUNDLE", &ca)]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), r#"200 {"ok":true}"#);
    // httpx: HTTPS_PROXY and SSL_CERT_FILE (trust_env, its default), HTTP/1.1 through the tunnel.
    let httpx = format!("import httpx; r = httpx.get('{url}'); print(r.status_code, r.text)");
    let o = run(python(), &["-c", &httpx], &proxy, &[("SSL_CERT_FILE", &ca)]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), r#"200 {"ok":true}"#);
    // A host no template covers: Python prints the reason phrase, which names it.
    let refused = "import urllib.request; urllib.request.urlopen('https://other.example/')";
    let o = run(python(), &["-c", refused], &proxy, &[("SSL_CERT_FILE", &ca)]).await;
    assert!(stderr(&o).contains("403 No template covers other.example:443"), "{}", stderr(&o));
    let seen = api.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.header("authorization") == Some("Bearer tok-sdk")), "{seen:?}");
    b.shutdown().await;
}

#[tokio::test]
async fn node_undici_proxy_agent_with_node_extra_ca_certs() {
    let (_dir, api, b, ca) = world().await;
    let proxy = format!("http://127.0.0.1:{}", b.data.port());
    let url = format!("https://{}/data", api.host());
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm/node_modules");
    assert!(modules.join("undici").exists(), "undici is not in {}: scripts/test.sh installs it", modules.display());
    let script = format!(
        "const {{ ProxyAgent, fetch }} = require('undici');
         fetch('{url}', {{ dispatcher: new ProxyAgent(process.env.HTTPS_PROXY) }})
           .then(async r => console.log(r.status, await r.text()))
           .catch(e => {{ console.error(e, e.cause); process.exit(1); }});"
    );
    let o = run("node", &["-e", &script], &proxy, &[("NODE_EXTRA_CA_CERTS", &ca), ("NODE_PATH", &modules)]).await;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).trim(), r#"200 {"ok":true}"#);
    let seen = api.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some("Bearer tok-sdk"));
    b.shutdown().await;
}

const SECRET: &str = "billing-secret-0123456789";
const ISSUER: &str = "https://issuer.test";

/// [`world_with`] with callers (SPEC 2.2): `billing` with a secret, `checkout` with JWTs of
/// `signer`'s key, `web` with a client certificate; the TLS listener, verifying client
/// certificates of the test CA; `tls/ca.pem` trusts that listener's certificate.
async fn callers_world(signer: &support::jwt::Signer) -> (TempDir, MockApi, Bearerd, PathBuf, TestCa) {
    let keys = support::jwt::jwks(&[signer]);
    world_with(move |c, dir, ca| {
        dir.write("tls/cert.pem", &ca.leaf_pem);
        dir.write("tls/key.pem", &ca.leaf_key_pem);
        dir.write("tls/ca.pem", &ca.ca_pem);
        dir.write("jwks.json", &keys.to_string());
        c.set(
            "callers",
            json!([
                {"name": "billing", "secret": SECRET, "apps": ["demo"]},
                {"name": "checkout", "jwt": {"issuer": ISSUER, "audience": "bearerd", "jwks_file": "jwks.json"}, "apps": ["demo"]},
                {"name": "web", "tls_client": {"dns": "web.shop.test"}, "apps": ["demo"]},
            ]),
        )
        .set("listen_tls", json!({"address": "127.0.0.1:0", "cert": "tls/cert.pem", "key": "tls/key.pem", "client_ca": "tls/ca.pem"}))
    })
    .await
}

#[tokio::test]
async fn curl_with_the_callers_secret_in_the_proxy_url() {
    let signer = support::jwt::Signer::es256("e1");
    let (_dir, api, b, ca, _) = callers_world(&signer).await;
    let ca = ca.to_str().unwrap();
    let with_secret = format!("http://demo:{SECRET}@127.0.0.1:{}", b.data.port());
    // http:// (a proxy request) and https:// (CONNECT, then interception).
    for url in [format!("http://{}/data", api.host()), format!("https://{}/data", api.host())] {
        let o = run("curl", &["-sS", "--fail-with-body", "-x", &with_secret, "--cacert", ca, &url], "", &[]).await;
        assert!(o.status.success(), "curl {url}: {}{}", stdout(&o), stderr(&o));
        assert_eq!(stdout(&o), r#"{"ok":true}"#);
    }
    // A wrong secret: curl reports the 407, for the tunnel and for a proxy request.
    let wrong = format!("http://demo:nope@127.0.0.1:{}", b.data.port());
    let o = run("curl", &["-sS", "-x", &wrong, "--cacert", ca, &format!("https://{}/data", api.host())], "", &[]).await;
    assert!(stderr(&o).contains("407"), "{}", stderr(&o));
    let o = run(
        "curl",
        &["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", &wrong, &format!("http://{}/data", api.host())],
        "",
        &[],
    )
    .await;
    assert_eq!(stdout(&o), "407");
    assert_eq!(api.count(), 2);
    assert!(api.requests().iter().all(|r| r.header("proxy-authorization").is_none()));
    b.shutdown().await;
}

#[tokio::test]
async fn curl_to_the_tls_listener_with_a_secret_or_a_client_certificate() {
    let signer = support::jwt::Signer::es256("e1");
    let (dir, api, b, ca, test) = callers_world(&signer).await;
    let tls = b.tls.unwrap();
    let listener_ca = dir.path().join("tls/ca.pem");
    let (listener_ca, ca) = (listener_ca.to_str().unwrap(), ca.to_str().unwrap());
    let url = format!("https://{}/data", api.host());
    // HTTPS_PROXY=https://...: TLS to bearerd, CONNECT inside it, bearerd's TLS inside that.
    let proxy = format!("https://demo:{SECRET}@localhost:{}", tls.port());
    let o = run(
        "curl",
        &["-sS", "--fail-with-body", "--proxy", &proxy, "--proxy-cacert", listener_ca, "--cacert", ca, &url],
        "",
        &[],
    )
    .await;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), r#"{"ok":true}"#);
    // A client certificate is the credential: no password in the proxy URL.
    let (cert, key) = test.issue(&["web.shop.test"], &[]);
    let cert = dir.write("client/web.pem", &cert);
    let key = dir.write("client/web-key.pem", &key);
    let proxy = format!("https://localhost:{}", tls.port());
    let o = run(
        "curl",
        &[
            "-sS",
            "--fail-with-body",
            "--proxy",
            &proxy,
            "--proxy-cacert",
            listener_ca,
            "--proxy-cert",
            cert.to_str().unwrap(),
            "--proxy-key",
            key.to_str().unwrap(),
            "--cacert",
            ca,
            &url,
        ],
        "",
        &[],
    )
    .await;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // Without either: 407.
    let o =
        run("curl", &["-sS", "--proxy", &proxy, "--proxy-cacert", listener_ca, "--cacert", ca, &url], "", &[]).await;
    assert!(stderr(&o).contains("407"), "{}", stderr(&o));
    assert_eq!(api.count(), 2);
    let m = b.admin("GET", "/metrics", "").await.text();
    assert!(m.contains(r#"bearerd_caller_requests_total{app="demo",caller="web"} 1"#), "{m}");
    b.shutdown().await;
}

#[tokio::test]
async fn python_requests_with_credentials_in_the_proxy_url() {
    let signer = support::jwt::Signer::es256("e1");
    let (_dir, api, b, ca, _) = callers_world(&signer).await;
    let proxy = format!("http://demo:{SECRET}@127.0.0.1:{}", b.data.port());
    let script = format!(
        "import requests\n\
         p = {{'http': '{proxy}', 'https': '{proxy}'}}\n\
         for u in ['http://{h}/data', 'https://{h}/data']:\n\
         \x20   r = requests.get(u, proxies=p)\n\
         \x20   print(r.status_code, r.text)",
        h = api.host()
    );
    let o = run(python(), &["-c", &script], "", &[("REQUESTS_CA_BUNDLE", &ca)]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "200 {\"ok\":true}\n200 {\"ok\":true}");
    assert_eq!(api.count(), 2);
    b.shutdown().await;
}

#[tokio::test]
async fn node_undici_with_a_token_and_http_urls_through_connect() {
    let signer = support::jwt::Signer::es256("e1");
    let (_dir, api, b, ca, _) = callers_world(&signer).await;
    let jwt = signer.sign(&json!({"iss": ISSUER, "aud": "bearerd", "exp": support::jwt::now() + 600}));
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm/node_modules");
    let proxy = format!("http://127.0.0.1:{}", b.data.port());
    // ProxyAgent with a token (Proxy-Authorization: Bearer), one agent for the process; an
    // http:// URL is tunnelled through CONNECT host:port too, and bearerd serves the plain HTTP
    // inside it.
    let script = format!(
        "const {{ ProxyAgent, fetch }} = require('undici');
         const agent = new ProxyAgent({{ uri: '{proxy}', token: 'Bearer {jwt}' }});
         (async () => {{
           for (const u of ['https://{h}/data', 'http://{h}/data']) {{
             const r = await fetch(u, {{ dispatcher: agent }});
             console.log(r.status, await r.text());
           }}
         }})().catch(e => {{ console.error(e, e.cause); process.exit(1); }});",
        h = api.host()
    );
    let o = run("node", &["-e", &script], "", &[("NODE_EXTRA_CA_CERTS", &ca), ("NODE_PATH", &modules)]).await;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).trim(), "200 {\"ok\":true}\n200 {\"ok\":true}");
    // EnvHttpProxyAgent with the credential in HTTP_PROXY, for an http:// URL.
    let with_secret = format!("http://demo:{SECRET}@127.0.0.1:{}", b.data.port());
    let script = format!(
        "const {{ EnvHttpProxyAgent, fetch }} = require('undici');
         fetch('http://{h}/data', {{ dispatcher: new EnvHttpProxyAgent() }})
           .then(async r => console.log(r.status, await r.text()))
           .catch(e => {{ console.error(e, e.cause); process.exit(1); }});",
        h = api.host()
    );
    let modules_path: &Path = &modules;
    let mut c = Command::new("node");
    c.args(["-e", &script]).env("HTTP_PROXY", &with_secret).env("NODE_PATH", modules_path).env_remove("NO_PROXY");
    let o = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).trim(), r#"200 {"ok":true}"#);
    assert_eq!(api.count(), 3);
    b.shutdown().await;
}

#[tokio::test]
async fn curl_sees_an_early_refusal_of_a_large_upload_over_http2() {
    let (dir, api, b, ca) = world().await;
    let proxy = format!("http://127.0.0.1:{}", b.data.port());
    let ca = ca.to_str().unwrap();
    let big = dir.write("upload.bin", &"x".repeat(2 << 20));
    let data = format!("@{}", big.display());
    // Inside a tunnel over HTTP/2: a path no template has, with a 2 MiB body sent whole.
    let url = format!("https://{}/nowhere", api.host());
    let o = run(
        "curl",
        &["-sS", "--http2", "--cacert", ca, "-X", "POST", "--data-binary", &data, "-w", "\n%{http_code}", &url],
        &proxy,
        &[],
    )
    .await;
    assert!(o.status.success(), "curl: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).ends_with("\n403"), "{}", stdout(&o));
    assert!(stdout(&o).contains("No request template matches POST"), "{}", stdout(&o));
    // HTTP/2 with prior knowledge on the listener: an /invoke body over 1 MiB is 413.
    let invoke = format!("http://127.0.0.1:{}/invoke/get", b.data.port());
    let o = run(
        "curl",
        &["-sS", "--http2-prior-knowledge", "--noproxy", "*", "--data-binary", &data, "-w", "\n%{http_code}", &invoke],
        "",
        &[],
    )
    .await;
    assert!(o.status.success(), "curl: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).ends_with("\n413"), "{}", stdout(&o));
    assert_eq!(api.count(), 0);
    b.shutdown().await;
}
