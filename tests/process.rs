//! The `bearerd` binary as a process: SIGTERM drains and exits 0, and a SIGKILL in the middle of
//! token-store writes never leaves a half-written or lost token.

mod support;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

/// Starts the binary and reads the admin address from its log.
fn spawn(cfg: &std::path::Path) -> (Child, SocketAddr) {
    spawn_with(cfg, false)
}

/// `one_cpu`: under `taskset -c 0`, where bearerd runs one single-threaded runtime.
fn spawn_with(cfg: &std::path::Path, one_cpu: bool) -> (Child, SocketAddr) {
    let mut cmd = if one_cpu {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", env!("CARGO_BIN_EXE_bearerd")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_bearerd"))
    };
    let mut child = cmd
        .args(["run", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let admin = loop {
        let line = lines.next().expect("bearerd exited before serving").unwrap();
        if let Some(rest) = line.split("admin_addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, admin)
}

fn setup() -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new();
    dir.app("demo", &json!({}), Some(&oauth_one("auth.example.com", false)));
    let cfg = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nstore: {file: state/tokens.json}\nshutdown: {drain_delay: 0s}\n\
         apps:\n  - {name: demo, path: apps/demo}\n",
    );
    (dir, cfg)
}

/// SIGTERM in a pod (SPEC 4): `/readyz` 503 at once; the data listener keeps serving new
/// connections for the drain delay (the app beside bearerd still makes its last calls); then
/// new connections are refused and an in-flight request finishes within the grace; the admin
/// listener answers until the end; exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_then_exits_zero() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    let ca = test_ca();
    let api = MockApi::start(
        Some(ca.server.clone()),
        Arc::new(|r: &Recorded, _| {
            if r.path_and_query == "/slow" {
                Reply::ok("slow").delay(Duration::from_millis(1500))
            } else {
                Reply::ok("ok")
            }
        }),
    )
    .await;
    let dir = TempDir::new();
    let t = |p: &str| json!({"schema": {"method": "GET", "host": api.host(), "path": p}});
    dir.app("demo", &json!({"get": t("/fast"), "slow": t("/slow")}), None);
    let drain = Duration::from_millis(1500);
    let cfg = Config::new()
        .ca(&ca)
        .app(App::new("demo"))
        .set("shutdown", json!({"drain_delay": "1500ms", "grace": "5s"}))
        // A fixed admin port, which `bearerd healthcheck` reads from the file.
        .set(
            "admin.listen",
            json!(std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()),
        )
        .write(&dir);
    let b = Logged::start(&cfg, "info");
    let (data, admin) = (b.data, b.admin);
    // The application: a request on a new connection every 20 ms, each noting when it began.
    let done = Arc::new(AtomicBool::new(false));
    let app = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let began = Instant::now();
                let ok = match tokio::net::TcpStream::connect(data).await {
                    Err(_) => false,
                    Ok(s) => match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await {
                        Err(_) => false,
                        Ok((mut tx, conn)) => {
                            tokio::spawn(conn);
                            let req = request("POST", "/invoke/get", &[("host", "b")], "{}");
                            matches!(tx.send_request(req).await, Ok(r) if r.status() == 200)
                        }
                    },
                };
                results.push((began, ok));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            results
        })
    };
    // `bearerd healthcheck` (the image's probe), with the configuration from $BEARERD_CONFIG.
    let healthcheck = || {
        let out = Command::new(env!("CARGO_BIN_EXE_bearerd")).arg("healthcheck").env("BEARERD_CONFIG", &cfg).output();
        let out = out.unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(healthcheck(), (Some(0), String::new()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let term = Instant::now();
    b.signal("-TERM");
    // Not ready at once.
    eventually(Duration::from_millis(300), "readyz 503", async || {
        send(admin, request("GET", "/readyz", &[("host", "a")], "")).await.status == 503
    })
    .await;
    let (code, err) = healthcheck();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("503"), "{err}");
    // A slow request that begins inside the drain delay finishes after it, within the grace.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let slow = tokio::spawn(async move { send(data, request("POST", "/invoke/slow", &[("host", "b")], "{}")).await });
    // After the drain delay: new connections are refused while the admin listener answers.
    tokio::time::sleep((term + drain + Duration::from_millis(300)).saturating_duration_since(Instant::now())).await;
    assert!(tokio::net::TcpStream::connect(data).await.is_err(), "a new connection after the drain delay");
    assert_eq!(send(admin, request("GET", "/healthz", &[("host", "a")], "")).await.status, 200);
    let r = slow.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slow"));
    done.store(true, Ordering::Relaxed);
    let results = app.await.unwrap();
    let (status, log) = tokio::task::spawn_blocking(move || b.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    // Every request that began before the drain delay was over was served.
    let cut = term + drain;
    let before: Vec<bool> =
        results.iter().filter(|(began, _)| *began + Duration::from_millis(100) < cut).map(|r| r.1).collect();
    let failed = before.iter().filter(|ok| !**ok).count();
    assert!(before.len() >= 50, "{} requests before the drain delay ended", before.len());
    assert_eq!(failed, 0, "{failed} of {} requests failed before the drain delay ended", before.len());
    let after: Vec<bool> =
        results.iter().filter(|(began, _)| *began > cut + Duration::from_millis(100)).map(|r| r.1).collect();
    assert!(!after.is_empty() && after.iter().all(|ok| !ok), "refused after the drain delay: {after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads() {
    reload_then_stop(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_one_cpu_it_serves_reloads_and_drains() {
    reload_then_stop(true).await;
}

/// SIGHUP reloads (the generation goes to 2), then SIGTERM drains and exits 0.
async fn reload_then_stop(one_cpu: bool) {
    let dir = TempDir::new();
    dir.app("demo", &json!({}), Some(&oauth_one("auth.example.com", false)));
    let cfg = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nstore: {file: t.json}\nreload: {watch: false}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let (mut child, admin) = spawn_with(&cfg, one_cpu);
    dir.app("demo", &json!({"t": {"schema": {"method": "GET", "host": "api.example.com"}}}), None);
    assert!(Command::new("kill").arg("-HUP").arg(child.id().to_string()).status().unwrap().success());
    let mut generation = String::new();
    for _ in 0..100 {
        let m = send(admin, request("GET", "/metrics", &[("host", "a")], "")).await.text();
        generation = m.lines().find(|l| l.starts_with("bearerd_config_generation ")).unwrap_or("").to_string();
        if generation.ends_with(" 2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(generation, "bearerd_config_generation 2");
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_store_writes_leaves_the_old_or_the_new_token() {
    let (dir, cfg) = setup();
    let file = dir.path().join("state/tokens.json");
    let mut last_confirmed: Option<u64> = None;
    for round in 0..12u64 {
        let (mut child, admin) = spawn(&cfg);
        // Write tokens as fast as possible from several tasks, then kill -9 at a varying moment.
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                tokio::spawn(async move {
                    let mut confirmed = None;
                    for i in 0..10_000u64 {
                        let n = round * 1_000_000 + w * 100_000 + i;
                        let body =
                            json!({"access_token": format!("at-{n}"), "refresh_token": format!("rt-{n}")}).to_string();
                        let Ok(s) = tokio::net::TcpStream::connect(admin).await else { break };
                        let Ok((mut tx, conn)) =
                            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await
                        else {
                            break;
                        };
                        tokio::spawn(conn);
                        let req = request("PUT", "/admin/tokens/demo/api", &[("host", "a")], &body);
                        match tx.send_request(req).await {
                            Ok(r) if r.status() == 200 => confirmed = Some(n),
                            _ => break,
                        }
                    }
                    confirmed
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(40 + round * 17)).await;
        child.kill().unwrap();
        let _ = child.wait();
        let mut confirmed = Vec::new();
        for w in writers {
            confirmed.extend(w.await.unwrap());
        }
        // The file parses, and its token is one that was written whole (access and refresh agree).
        let Ok(text) = std::fs::read_to_string(&file) else {
            // Killed before the first write finished: nothing may have been confirmed.
            assert!(confirmed.is_empty() && last_confirmed.is_none(), "round {round}: a confirmed token was lost");
            continue;
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("round {round}: half-written file: {e}"));
        let t = &v["tokens"][0];
        let at = t["access_token"].as_str().unwrap().trim_start_matches("at-").to_string();
        let rt = t["refresh_token"].as_str().unwrap().trim_start_matches("rt-").to_string();
        assert_eq!(at, rt, "round {round}: access and refresh token from different writes");
        let n: u64 = at.parse().unwrap();
        // Nothing confirmed is lost: the stored write is at least as new as one confirmed in this
        // round, or (if none was) the one confirmed before.
        if confirmed.is_empty() {
            if let Some(prev) = last_confirmed {
                assert!(n >= prev, "round {round}: an older token came back");
            }
        } else {
            assert!(n >= round * 1_000_000, "round {round}: a confirmed write was lost");
            last_confirmed = Some(n);
        }
        assert!(
            !std::fs::read_dir(dir.path().join("state")).unwrap().any(|e| {
                let name = e.unwrap().file_name();
                let name = name.to_string_lossy().into_owned();
                // The intercept CA is kept beside the token file (SPEC 1.1).
                !["tokens.json", "ca.pem", "ca-key.pem"].contains(&name.as_str()) && !name.contains(".tmp-")
            }),
            "no stray files"
        );
    }
}

#[test]
fn log_settings_that_would_hide_the_logs_are_not_taken_silently() {
    let (_dir, cfg) = setup();
    let check = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bearerd"));
        cmd.args(["check", "--config"]).arg(&cfg).env_remove("RUST_LOG").env_remove("BEARERD_LOG_FORMAT");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check(&[("BEARERD_LOG_FORMAT", "xml")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("BEARERD_LOG_FORMAT=xml: the log format is text or json"), "{err}");
    assert_eq!(check(&[("BEARERD_LOG_FORMAT", "json")]).0, Some(0));
    let (code, err) = check(&[("RUST_LOG", "verbose")]);
    assert_eq!(code, Some(0));
    assert!(err.contains("`verbose` is a log target, not a level"), "{err}");
    for fine in ["debug", "bearerd=debug,hyper=warn", "info,bearerd::access=off"] {
        let (_, err) = check(&[("RUST_LOG", fine)]);
        assert!(!err.contains("warning: RUST_LOG"), "{fine}: {err}");
    }
}
