//! A self-contained load bench: an upstream, bearerd (transparent mode, one template, token
//! injected, metrics on) and a closed-loop load client, all in this process on 127.0.0.1.
//! Prints requests/s and p50/p99/p99.9 for direct vs through bearerd, and their ratio.
//! `BENCH_SECS` (default 5) and `BENCH_CONNS` (default 32) set the run. For the comparison with
//! nginx on pinned CPUs, use `benches/compare.sh`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

mod common;

async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let ok = req.headers().get("authorization").is_some_and(|v| v == "Bearer t0k");
                    let mut r = hyper::Response::new(Full::new(Bytes::from_static(if ok { b"ok" } else { b"no" })));
                    if !ok {
                        *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                    }
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

struct Run {
    rps: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    errors: usize,
}

async fn load(target: SocketAddr, host: String, auth: Option<&'static str>, conns: usize, secs: u64) -> Run {
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                let s = TcpStream::connect(target).await.unwrap();
                let _ = s.set_nodelay(true);
                let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
                tokio::spawn(conn);
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0;
                while Instant::now() < until {
                    let mut b = Request::builder().uri("/").header("host", &host);
                    if let Some(a) = auth {
                        b = b.header("authorization", a);
                    }
                    let t0 = Instant::now();
                    match tx.send_request(b.body(Full::new(Bytes::new())).unwrap()).await {
                        Ok(r) => {
                            let ok = r.status() == 200;
                            let _ = r.into_body().collect().await;
                            if ok {
                                lat.push(t0.elapsed().as_micros() as u64);
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    Run { rps: all.len() as f64 / secs as f64, p50: pct(0.5), p99: pct(0.99), p999: pct(0.999), errors }
}

fn main() {
    // `cargo test --benches` runs bench binaries with no arguments; `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let conns: usize = std::env::var("BENCH_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let up = upstream().await;
        let (dir, cfg) = common::bench_config(
            "load",
            up,
            r#""authorize_url": "http://127.0.0.1:1/a", "token_url": "http://127.0.0.1:1/t""#,
            "",
        );
        let running = bearerd::server::start(bearerd::config::load(&cfg).unwrap()).await.unwrap();
        let token = bearerd::token::Token::new(bearerd::secret::Secret::new("t0k"));
        running.state.tokens.put(&bearerd::token::TokenKey::new("bench", "up", "default"), token).await.unwrap();
        let host = up.to_string();
        let _ = load(up, host.clone(), Some("Bearer t0k"), conns, 1).await; // warm-up
        let _ = load(running.data_addr, host.clone(), None, conns, 1).await;
        let direct = load(up, host.clone(), Some("Bearer t0k"), conns, secs).await;
        let proxied = load(running.data_addr, host, None, conns, secs).await;
        println!("load bench: {conns} connections, {secs} s each, client, bearerd and upstream in one process");
        println!("{:<10} {:>10} {:>8} {:>8} {:>9} {:>7}", "target", "req/s", "p50us", "p99us", "p99.9us", "errors");
        for (name, r) in [("direct", &direct), ("bearerd", &proxied)] {
            println!("{name:<10} {:>10.0} {:>8} {:>8} {:>9} {:>7}", r.rps, r.p50, r.p99, r.p999, r.errors);
        }
        println!(
            "ratio bearerd/direct: req/s {:.3}, p50 {:.2}, p99 {:.2}",
            proxied.rps / direct.rps,
            proxied.p50 as f64 / direct.p50.max(1) as f64,
            proxied.p99 as f64 / direct.p99.max(1) as f64
        );
        running.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
