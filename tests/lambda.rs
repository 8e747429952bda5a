//! bearerd as an AWS Lambda extension (SPEC 7), driven by an emulator of the Extensions API as
//! Lambda drives it: the binary started with no arguments under the file name of its layer,
//! registered once its listeners are bound, the function's calls through it at init and on each
//! `INVOKE`, a freeze (SIGSTOP) longer than a token's life, and `SHUTDOWN` with a request still in
//! flight. The function's proxy variables point at a trap that must never be reached.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::lambda::{Lambda, now_ms};
use support::{App, Config, Logged, MockApi, Reply, TempDir, provider::Provider, request, send};

/// A listener that counts the connections made to it: the function's `HTTP_PROXY`.
fn proxy_trap() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            h.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, hits)
}

/// `/opt/extensions/<name>` of a layer: the binary under the name Lambda starts it as.
fn layer_file(dir: &TempDir, name: &str) -> PathBuf {
    let ext = dir.path().join("extensions");
    std::fs::create_dir_all(&ext).unwrap();
    let file = ext.join(name);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bearerd"), &file).unwrap();
    file
}

/// The environment Lambda gives an extension, with the function's proxy variables inherited.
fn as_lambda_starts_it(program: &Path, lambda: &Lambda, cfg: &Path, trap: SocketAddr) -> Command {
    let mut c = Command::new(program);
    c.env("AWS_LAMBDA_RUNTIME_API", lambda.runtime_api()).env("BEARERD_CONFIG", cfg);
    let proxy = format!("http://{trap}");
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        c.env(var, &proxy);
    }
    c.env_remove("NO_PROXY").env_remove("no_proxy");
    c
}

/// The app `demo`: `get` (GET /data with a client-credentials token of `api`) and `slow`
/// (GET /slow, which the API answers after `slow`).
async fn world(slow: Duration) -> (TempDir, Provider, MockApi, PathBuf) {
    let ca = support::test_ca();
    let provider = Provider::start(&ca).await;
    provider.with(|s| s.expires_in = Some(3));
    let valid = provider.api_responder();
    let api = MockApi::start(
        Some(ca.server.clone()),
        Arc::new(move |r, n| if r.path_and_query == "/slow" { Reply::ok("slow-ok").delay(slow) } else { valid(r, n) }),
    )
    .await;
    let dir = TempDir::new();
    let mut oauth = support::oauth_one(&provider.host(), false);
    oauth["integrations"]["api"]["grant_type"] = json!("client_credentials");
    oauth["integrations"]["api"].as_object_mut().unwrap().remove("authorize_url");
    let auth = json!({"Authorization": "Bearer <%= access_token %>"});
    dir.app(
        "demo",
        &json!({
            "get": {"schema": {"method": "GET", "host": api.host(), "path": "/data", "headers": auth}, "options": {"oauth": "api"}},
            "slow": {"schema": {"method": "GET", "host": api.host(), "path": "/slow", "headers": auth}, "options": {"oauth": "api"}},
        }),
        Some(&oauth),
    );
    let cfg = Config::new().ca(&ca).app(App::new("demo")).set("refresh.skew", json!("1s")).write(&dir);
    (dir, provider, api, cfg)
}

/// The function's call through bearerd.
async fn call(data: SocketAddr, template: &str) -> support::Resp {
    let h = [("host", "bearerd"), ("content-type", "application/json")];
    send(data, request("POST", &format!("/invoke/{template}"), &h, "{}")).await
}

fn tokens_sent(api: &MockApi) -> Vec<String> {
    api.requests().iter().filter_map(|r| r.header("authorization").map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_serves_its_function_through_invokes_a_freeze_and_shutdown() {
    let (dir, provider, api, cfg) = world(Duration::from_millis(1200)).await;
    let lambda = Lambda::start().await;
    let (trap, trapped) = proxy_trap();
    let program = layer_file(&dir, "bearerd-layer");
    let ext = Logged::spawn(as_lambda_starts_it(&program, &lambda, &cfg, trap), "info");
    let data = ext.data;

    // Registered under its file name for both events, then waiting: the function's init runs.
    lambda.ready_after(0, Duration::from_secs(10)).await;
    assert_eq!(lambda.registered_as().as_deref(), Some("bearerd-layer"));
    assert_eq!(lambda.events_asked(), ["INVOKE", "SHUTDOWN"]);
    let r = call(data, "get").await;
    assert_eq!(r.status, 200, "a call from the function's init code: {}", r.text());

    // An invocation: the function calls through bearerd; bearerd asks for the next event.
    lambda.invoke("req-1");
    lambda.ready_after(1, Duration::from_secs(5)).await;
    assert_eq!(call(data, "get").await.status, 200);
    assert_eq!(provider.grants("client_credentials"), 1, "one token for the init call and the invocation");
    let before = tokens_sent(&api);
    assert!(before.iter().all(|t| t == &before[0]), "{before:?}");

    // Frozen between invocations for longer than the token lives (3 s): no timer runs.
    ext.signal("-STOP");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    ext.signal("-CONT");
    lambda.invoke("req-2");
    lambda.ready_after(2, Duration::from_secs(5)).await;
    let r = call(data, "get").await;
    assert_eq!(r.status, 200, "after the freeze: {}", r.text());
    assert_eq!(provider.grants("client_credentials"), 2, "the token that expired while frozen is replaced");
    let last = tokens_sent(&api).pop().unwrap();
    assert_ne!(last, before[0], "never the expired token");
    assert!(provider.access_valid(last.trim_start_matches("Bearer ")));

    // SHUTDOWN while a slow request (1.2 s) is in flight, with 2 s to go: it is answered, and
    // bearerd exits 0 before the deadline.
    lambda.invoke("req-3");
    lambda.ready_after(3, Duration::from_secs(5)).await;
    let slow = tokio::spawn(call(data, "slow"));
    support::eventually(Duration::from_secs(5), "the slow request reached the API", async || {
        api.requests().iter().any(|r| r.path_and_query == "/slow")
    })
    .await;
    let deadline = lambda.shutdown("spindown", Duration::from_secs(2));
    let (status, exited_at, log) = tokio::task::spawn_blocking(move || ext.wait_timed()).await.unwrap();
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "the request in flight at SHUTDOWN finished: {}", slow.text());
    assert_eq!(slow.text(), "slow-ok");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(exited_at < deadline, "exited {} ms after the deadline\n{log}", exited_at.saturating_sub(deadline));
    assert!(std::net::TcpStream::connect(data).is_err(), "nothing listens after the exit");

    assert_eq!(trapped.load(Ordering::SeqCst), 0, "the function's HTTP_PROXY was never used");
    assert!(lambda.mistakes().is_empty(), "protocol mistakes: {:?}", lambda.mistakes());
    assert!(lambda.exit_errors().is_empty() && lambda.init_errors().is_empty());
    assert!(!log.contains("at-1") && !log.contains("csecret"), "a token or secret in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_shutdown_deadline_does_not_hold_the_exit() {
    let (dir, _provider, api, cfg) = world(Duration::from_secs(10)).await;
    let lambda = Lambda::start().await;
    let (trap, trapped) = proxy_trap();
    // `bearerd run` in Lambda's environment is the extension too.
    let mut command = as_lambda_starts_it(Path::new(env!("CARGO_BIN_EXE_bearerd")), &lambda, &cfg, trap);
    command.arg("run");
    let ext = Logged::spawn(command, "info");
    lambda.ready_after(0, Duration::from_secs(10)).await;
    assert_eq!(lambda.registered_as().as_deref(), Some("bearerd"));
    let data = ext.data;
    let slow = tokio::spawn(support::raw(
        data,
        b"POST /invoke/slow HTTP/1.1\r\nHost: bearerd\r\nContent-Length: 2\r\n\r\n{}",
        Duration::from_secs(15),
    ));
    support::eventually(Duration::from_secs(5), "the slow request reached the API", async || {
        api.requests().iter().any(|r| r.path_and_query == "/slow")
    })
    .await;
    let deadline = lambda.shutdown("timeout", Duration::from_millis(1500));
    let (status, exited_at, log) = tokio::task::spawn_blocking(move || ext.wait_timed()).await.unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(exited_at < deadline, "exited {} ms after the deadline\n{log}", exited_at.saturating_sub(deadline));
    assert!(exited_at + 1000 > deadline, "it waited for the request while there was time\n{log}");
    let slow = slow.await.unwrap();
    assert!(!slow.contains("slow-ok"), "cut at the deadline: {slow}");
    assert_eq!(trapped.load(Ordering::SeqCst), 0);
    assert!(lambda.mistakes().is_empty(), "protocol mistakes: {:?}", lambda.mistakes());
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_that_does_not_load_fails_the_functions_init_with_its_reason() {
    let dir = TempDir::new();
    // An app folder that is not there, and a store that is both a file and Redis.
    let cfg = Config::new().app(App::new("missing")).set("store.redis", json!("redis://127.0.0.1:1/0")).write(&dir);
    let lambda = Lambda::start().await;
    let (trap, _) = proxy_trap();
    let program = layer_file(&dir, "bearerd");
    let command = as_lambda_starts_it(&program, &lambda, &cfg, trap);
    let t0 = now_ms();
    let (status, log) = tokio::task::spawn_blocking(move || Logged::failing(command, "info")).await.unwrap();
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(now_ms() - t0 < 5000);
    let errors = lambda.init_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (kind, report) = &errors[0];
    assert_eq!(kind, "Extension.ConfigInvalid");
    assert_eq!(report["errorType"], "Extension.ConfigInvalid");
    let message = report["errorMessage"].as_str().unwrap();
    assert!(message.contains(&cfg.display().to_string()), "{message}");
    assert!(message.contains("/store") && message.contains("exclusive"), "{message}");
    assert!(message.contains("missing"), "the app folder is named: {message}");
    assert!(!message.contains("redis://127.0.0.1:1"), "a Redis URL (it may hold a password) is not reported");
    assert!(lambda.mistakes().is_empty(), "protocol mistakes: {:?}", lambda.mistakes());
}

#[test]
fn without_a_command_outside_lambda_it_says_what_is_needed() {
    let out = Command::new(env!("CARGO_BIN_EXE_bearerd")).env_remove("AWS_LAMBDA_RUNTIME_API").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("a command is needed") && text.contains("Lambda"), "{text}");
}
