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
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nstore: {file: state/tokens.json}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    (dir, cfg)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_zero() {
    let (_dir, cfg) = setup();
    let (mut child, admin) = spawn(&cfg);
    let r = send(admin, request("GET", "/readyz", &[("host", "a")], "")).await;
    assert_eq!(r.status, 200);
    let ok = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(ok.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
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
                name != "tokens.json" && !name.contains(".tmp-")
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
