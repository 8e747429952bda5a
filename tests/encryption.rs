//! Tokens encrypted at rest in both stores; a wrong or missing key is a clear startup error.

mod support;

use base64::Engine as _;
use serde_json::json;
use support::redis::Redis;
use support::*;

fn key(b: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([b; 32])
}

fn config(dir: &TempDir, store: &str, key_line: &str) -> std::path::PathBuf {
    dir.app("demo", &json!({}), Some(&oauth_one("auth.example.com", false)));
    dir.write(
        "bearerd.yaml",
        &format!("listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nstore:\n  {store}\n{key_line}apps:\n  - {{name: demo, path: apps/demo}}\n"),
    )
}

async fn start_err(cfg: &std::path::Path) -> String {
    let c = bearerd::config::load(cfg).unwrap();
    match bearerd::server::start(c).await {
        Ok(_) => panic!("started with the wrong key"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn file_store_encrypts_and_refuses_the_wrong_key() {
    let dir = TempDir::new();
    let with = |k: &str| format!("  encryption_key: \"{k}\"\n");
    let cfg = config(&dir, "file: t.json", &with(&key(1)));
    let b = start(&cfg).await;
    b.put_token("demo", "api", "", json!({"access_token": "AT-PLAIN-1", "refresh_token": "RT-PLAIN-1"})).await;
    b.shutdown().await;
    let text = std::fs::read_to_string(dir.path().join("t.json")).unwrap();
    assert!(!text.contains("PLAIN"), "{text}");
    assert!(text.contains("enc:v1:"));
    // The same key reads it back.
    let b = start(&cfg).await;
    assert_eq!(b.admin("GET", "/admin/tokens", "").await.json()[0]["state"], "valid");
    b.shutdown().await;
    // Another key, or none: refused at start, the file untouched.
    let e = start_err(&config(&dir, "file: t.json", &with(&key(2)))).await;
    assert!(e.contains("does not open the stored tokens"), "{e}");
    let e = start_err(&config(&dir, "file: t.json", "")).await;
    assert!(e.contains("set store.encryption_key"), "{e}");
    assert_eq!(std::fs::read_to_string(dir.path().join("t.json")).unwrap(), text);
    // A malformed key is a configuration error.
    let cfg = config(&dir, "file: t.json", "  encryption_key: c2hvcnQ=\n");
    let e = bearerd::config::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("/store/encryption_key: store.encryption_key must be 32 bytes"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_store_encrypts_too() {
    let redis = Redis::start();
    let dir = TempDir::new();
    dir.write("key.b64", &key(3));
    let store = format!("redis: redis://127.0.0.1:{}/0", redis.port);
    let cfg = config(&dir, &store, "  encryption_key_file: key.b64\n");
    let b = start(&cfg).await;
    b.put_token("demo", "api", "", json!({"access_token": "AT-PLAIN-2"})).await;
    let raw = redis.cli(&["HGET", r#"bearerd:token:["demo","api","default"]"#, "token"]);
    assert!(raw.contains("enc:v1:") && !raw.contains("PLAIN"), "{raw}");
    b.shutdown().await;
    let e = start_err(&config(&dir, &store, &format!("  encryption_key: \"{}\"\n", key(4)))).await;
    assert!(e.contains("does not open the stored tokens"), "{e}");
}
