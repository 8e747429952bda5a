//! Live reconfiguration: file changes, rename-on-save, Kubernetes symlink swaps, failures that
//! keep the old configuration, and reloads under load without a failed request.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::*;

fn template(host: &str, path: &str) -> serde_json::Value {
    json!({"schema": {"method": "GET", "host": host, "path": path}})
}

async fn setup() -> (TempDir, MockApi, Bearerd) {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    dir.app("demo", &json!({"first": template(&api.host(), "/first")}), None);
    let cfg = config(&dir, Some(&ca), "demo");
    let b = start(&cfg).await;
    (dir, api, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_template_is_served_within_two_seconds() {
    let (dir, api, b) = setup().await;
    assert_eq!(b.invoke("second", json!({})).await.status, 404);
    dir.app(
        "demo",
        &json!({"first": template(&api.host(), "/first"), "second": template(&api.host(), "/second")}),
        None,
    );
    let took = eventually(Duration::from_secs(2), "the new template served", async || {
        b.invoke("second", json!({})).await.status == 200
    })
    .await;
    let m = b.admin("GET", "/metrics", "").await.text();
    assert!(m.contains("bearerd_config_generation 2"), "{m}");
    assert!(m.contains("bearerd_config_reloads_total{result=\"ok\"} 1"));
    println!("new template served after {took:?}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_on_save_is_seen() {
    let (dir, api, b) = setup().await;
    let requests = json!({"first": template(&api.host(), "/first"), "renamed": template(&api.host(), "/r")});
    let tmp = dir.write("apps/demo/config/.requests.json.swp", &requests.to_string());
    std::fs::rename(&tmp, dir.path().join("apps/demo/config/requests.json")).unwrap();
    // The manifest must declare it too: an editor saving the manifest by rename as well.
    let manifest =
        json!({"platform-version": "3.0", "modules": {"common": {"requests": {"first": {}, "renamed": {}}}}});
    let tmp = dir.write("apps/demo/manifest.json.new", &manifest.to_string());
    std::fs::rename(&tmp, dir.path().join("apps/demo/manifest.json")).unwrap();
    eventually(Duration::from_secs(3), "the renamed file seen", async || {
        b.invoke("renamed", json!({})).await.status == 200
    })
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_configmap_symlink_swap_is_seen() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    // A ConfigMap volume: files are symlinks through `..data`, which is swapped atomically.
    let app = dir.path().join("apps/demo");
    let write_version = |v: &str, names: &[&str]| {
        let reqs: serde_json::Map<String, serde_json::Value> =
            names.iter().map(|n| (n.to_string(), template(&api.host(), &format!("/{n}")))).collect();
        let decl: serde_json::Map<String, serde_json::Value> =
            names.iter().map(|n| (n.to_string(), json!({}))).collect();
        dir.write(&format!("apps/demo/{v}/config/requests.json"), &serde_json::Value::Object(reqs).to_string());
        dir.write(
            &format!("apps/demo/{v}/manifest.json"),
            &json!({"platform-version": "3.0", "modules": {"common": {"requests": decl}}}).to_string(),
        );
    };
    write_version("..v1", &["first"]);
    std::os::unix::fs::symlink("..v1", app.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/manifest.json", app.join("manifest.json")).unwrap();
    std::os::unix::fs::symlink("..data/config", app.join("config")).unwrap();
    let cfg = config(&dir, Some(&ca), "demo");
    let b = start(&cfg).await;
    assert_eq!(b.invoke("first", json!({})).await.status, 200);
    write_version("..v2", &["first", "swapped"]);
    std::os::unix::fs::symlink("..v2", app.join("..data_tmp")).unwrap();
    std::fs::rename(app.join("..data_tmp"), app.join("..data")).unwrap();
    eventually(Duration::from_secs(3), "the symlink swap seen", async || {
        b.invoke("swapped", json!({})).await.status == 200
    })
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_keeps_the_old_configuration_serving() {
    let (dir, api, b) = setup().await;
    dir.write("apps/demo/config/requests.json", "{ \"first\": {\"schema\": {\"method\": \"FETCH\"");
    eventually(Duration::from_secs(3), "the failed reload counted", async || {
        b.admin("GET", "/metrics", "").await.text().contains("bearerd_config_reloads_total{result=\"error\"} 1")
    })
    .await;
    assert_eq!(b.invoke("first", json!({})).await.status, 200, "the old configuration keeps serving");
    assert_eq!(b.admin("GET", "/readyz", "").await.status, 200);
    let r = b.admin("POST", "/admin/reload", "").await;
    assert_eq!(r.status, 422);
    let errors = r.json()["errors"].clone();
    assert!(errors[0].as_str().unwrap().contains("config/requests.json: not valid JSON"), "{errors}");
    // Fixed: the next reload applies, and an explicit reload of unchanged files changes nothing.
    dir.app("demo", &json!({"first": template(&api.host(), "/first")}), None);
    eventually(Duration::from_secs(3), "the fixed file reloaded", async || {
        let r = b.admin("POST", "/admin/reload", "").await;
        r.status == 200 && r.json()["changed"] == json!(false)
    })
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_only_settings_are_reported_and_tokens_follow_their_integration() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    let t = json!({"get": {"schema": {"method": "GET", "host": api.host(), "path": "/x", "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}});
    dir.app("demo", &t, Some(&oauth_one(&api.host(), false)));
    let config = Config::new().ca(&ca).app(App::new("demo")).watch(false);
    let b = start(&config.clone().write(&dir)).await;
    b.put_token("demo", "api", "", json!({"access_token": "tok"})).await;
    // A template change: the token survives.
    dir.app("demo", &json!({"get": t["get"], "also": t["get"]}), Some(&oauth_one(&api.host(), false)));
    let r = b.admin("POST", "/admin/reload", "").await;
    assert_eq!((r.status, r.json()["generation"].clone()), (200, json!(2)));
    assert_eq!(b.invoke("also", json!({})).await.status, 200);
    // listen changes are not half-applied.
    config.listen("127.0.0.1:1").write(&dir);
    let r = b.admin("POST", "/admin/reload", "").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["notes"][0].as_str().unwrap().contains("listen changed to 127.0.0.1:1: restart bearerd"));
    assert_eq!(b.invoke("get", json!({})).await.status, 200, "still serving where it was");
    // A new client_id: the stored token is no longer used.
    let mut o = oauth_one(&api.host(), false);
    o["integrations"]["api"]["client_id"] = json!("another-client");
    dir.write("apps/demo/config/oauth_config.json", &o.to_string());
    let r = b.admin("POST", "/admin/reload", "").await;
    assert!(r.json()["notes"].to_string().contains("token_url or client_id changed"), "{}", r.text());
    let r = b.invoke("get", json!({})).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["authorize"].is_string());
    assert_eq!(b.admin("GET", "/admin/tokens", "").await.json()[0]["state"], "reauthorize");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_reloads_under_load_lose_no_request() {
    let (dir, api, b) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let data = b.data;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                // One keep-alive connection per client, reused across reloads.
                let s = tokio::net::TcpStream::connect(data).await.unwrap();
                let (mut tx, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
                tokio::spawn(conn);
                while !stop.load(Ordering::Relaxed) {
                    let r = tx.send_request(request("POST", "/invoke/first", &[("host", "b")], "{}")).await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for i in 0..20 {
        let names: Vec<String> = (0..=i).map(|n| format!("extra{n}")).collect();
        let mut reqs = serde_json::Map::new();
        reqs.insert("first".into(), template(&api.host(), "/first"));
        for n in &names {
            reqs.insert(n.clone(), template(&api.host(), "/extra"));
        }
        dir.app("demo", &serde_json::Value::Object(reqs), None);
        let r = b.admin("POST", "/admin/reload", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        // Every reload lands under load: the clients get 16 more answers before the next one.
        let before = ok.load(Ordering::Relaxed);
        eventually(Duration::from_secs(5), "requests between reloads", async || {
            ok.load(Ordering::Relaxed) >= before + 16 || failed.load(Ordering::Relaxed) > 0
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let generation: u64 = b
        .admin("GET", "/metrics", "")
        .await
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("bearerd_config_generation ").map(|v| v.parse().unwrap()))
        .unwrap();
    println!("reload under load: 8 clients, {ok} requests ok, {failed} failed, generation {generation}");
    assert_eq!(failed, 0);
    assert!(ok > 100, "{ok}");
    assert!(generation >= 21, "twenty reloads were applied (the watcher may add its own)");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_exposition_parses() {
    let (_dir, _api, b) = setup().await;
    for _ in 0..3 {
        b.invoke("first", json!({})).await;
    }
    b.invoke("missing", json!({})).await;
    let text = b.admin("GET", "/metrics", "").await.text();
    let samples = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let get = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.2)
    };
    assert_eq!(get("bearerd_requests_total", &[("app", "demo"), ("template", "first"), ("code", "200")]), Some(3.0));
    assert_eq!(get("bearerd_requests_total", &[("template", ""), ("code", "404")]), Some(1.0));
    assert_eq!(get("bearerd_request_duration_seconds_bucket", &[("template", "first"), ("le", "+Inf")]), Some(3.0));
    assert!(get("bearerd_request_duration_seconds_bucket", &[("template", "first"), ("le", "0.001")]).is_some());
    assert_eq!(get("bearerd_request_duration_seconds_bucket", &[("template", "first"), ("le", "30")]), Some(3.0));
    assert_eq!(get("bearerd_config_generation", &[]), Some(1.0));
    assert_eq!(get("bearerd_inflight_requests", &[]), Some(0.0));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_keep_changing_beside_the_configuration_do_not_postpone_a_reload() {
    let (dir, api, b) = setup().await;
    // A log written beside bearerd.yaml and a cache file the app keeps rewriting in its folder.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, writes, root) = (stop.clone(), writes.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = writes.fetch_add(1, Ordering::Relaxed);
                std::fs::write(root.join("bearerd.log"), format!("line {n}\n")).unwrap();
                std::fs::write(root.join("apps/demo/config/cache.tmp"), n.to_string()).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    eventually(Duration::from_secs(5), "the other files are changing", async || writes.load(Ordering::Relaxed) >= 20)
        .await;
    dir.app(
        "demo",
        &json!({"first": template(&api.host(), "/first"), "second": template(&api.host(), "/second")}),
        None,
    );
    let before = writes.load(Ordering::Relaxed);
    let took = eventually(Duration::from_secs(3), "the new template served while other files change", async || {
        b.invoke("second", json!({})).await.status == 200
    })
    .await;
    let during = writes.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    println!("new template served after {took:?}, while {during} other writes went on");
    assert!(during > 0, "the other files kept changing while the reload was awaited");
    b.shutdown().await;
}
