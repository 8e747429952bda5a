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
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    dir.app(
        "demo",
        &json!({"get": {"schema": {"method": "GET", "host": api.host(), "path": "/data",
            "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}}),
        Some(&oauth_one("tokens.invalid", false)),
    );
    let cfg = Config::new().ca(&ca).app(App::new("demo")).write(&dir);
    let b = start(&cfg).await;
    b.put_token("demo", "api", "", json!({"access_token": "tok-sdk", "expires_in": 3600})).await;
    let pem = b.admin("GET", "/ca.pem", "").await.text();
    let ca_file = dir.write("trust/bearerd-ca.pem", &pem);
    (dir, api, b, ca_file)
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
async fn python_urllib_and_requests_through_https_proxy_with_the_ca() {
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
    // A host no template covers: Python prints the reason phrase, which names it.
    let refused = "import urllib.request; urllib.request.urlopen('https://other.example/')";
    let o = run(python(), &["-c", refused], &proxy, &[("SSL_CERT_FILE", &ca)]).await;
    assert!(stderr(&o).contains("403 No template covers other.example:443"), "{}", stderr(&o));
    let seen = api.requests();
    assert_eq!(seen.len(), 2);
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
