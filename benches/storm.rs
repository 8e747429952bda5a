//! The refresh storm: `BENCH_STORM` (default 10,000) requests all waiting on one expired token.
//! A token endpoint (answering after `BENCH_GRANT_MS`, default 300 ms), an upstream and bearerd
//! run in this process on 127.0.0.1; the requests go over h2c (50 connections) so that all of
//! them can be in flight at once. Prints the number of token-endpoint calls (the claim: one),
//! how many requests were waiting when it answered, and the latency the requests saw over the
//! token endpoint's own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

mod common;

/// Serves `answer` for every request on 127.0.0.1:0, after `delay`, counting requests.
async fn serve(
    delay: Duration,
    answer: impl Fn(&Request<hyper::body::Incoming>) -> (u16, &'static str) + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    // A deep accept queue: 10,000 requests released at once open thousands of connections.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16384).unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (c, answer) = (count.clone(), Arc::new(answer));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let (c, answer) = (c.clone(), answer.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    c.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = answer(&req);
                    async move {
                        tokio::time::sleep(delay).await;
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

struct Fired {
    ok: usize,
    failed: usize,
    all_sent: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Sends `n` requests at once over the h2c connections; waits for all the answers.
async fn fire(senders: &[hyper::client::conn::http2::SendRequest<Full<Bytes>>], host: &str, n: usize) -> Fired {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut tx = senders[i % senders.len()].clone();
            let host = host.to_string();
            tokio::spawn(async move {
                let start = Instant::now();
                let req = Request::builder()
                    .uri(format!("http://{host}/"))
                    .header("host", &host)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let ok = match tx.ready().await {
                    Ok(()) => match tx.send_request(req).await {
                        Ok(r) => {
                            let ok = r.status() == 200;
                            let _ = r.into_body().collect().await;
                            ok
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                (start, start.elapsed(), ok)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(n);
    let mut failed = 0;
    let mut last_start = t0;
    for t in tasks {
        let (start, d, ok) = t.await.unwrap();
        last_start = last_start.max(start);
        if ok {
            lat.push(d);
        } else {
            failed += 1;
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    Fired {
        ok: lat.len(),
        failed,
        all_sent: last_start - t0,
        p50: pct(0.5),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or_default(),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("BENCH_STORM").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let grant_ms: u64 = std::env::var("BENCH_GRANT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let conns = 50;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let grant = Duration::from_millis(grant_ms);
        let (token_ep, grants) =
            serve(grant, |_| (200, r#"{"access_token": "fresh", "token_type": "Bearer", "expires_in": 3600}"#)).await;
        let (up, _) = serve(Duration::ZERO, |req| {
            if req.headers().get("authorization").is_some_and(|v| v == "Bearer fresh") { (200, "ok") } else { (401, "no") }
        })
        .await;
        let integration = format!(
            r#""grant_type": "client_credentials", "authorize_url": "http://{token_ep}/a", "token_url": "http://{token_ep}/token""#
        );
        let (dir, cfg) = common::bench_config("storm", up, &integration, ", timeout: 60s");
        let host = up.to_string();
        // Each run on its own bearerd, so both start with no pooled upstream connection: first
        // with a fresh token (what the requests cost without a refresh), then with an expired one.
        let key = bearerd::token::TokenKey::new("bench", "up", "default");
        let mut runs = Vec::new();
        for expires_at in [bearerd::token::unix_now() + 3600, bearerd::token::unix_now() - 60] {
            let running = bearerd::server::start(bearerd::config::load(&cfg).unwrap()).await.unwrap();
            let token = bearerd::token::Token {
                expires_at: Some(expires_at),
                ..bearerd::token::Token::new(bearerd::secret::Secret::new("fresh"))
            };
            running.state.tokens.put(&key, token).await.unwrap();
            let mut senders = Vec::new();
            for _ in 0..conns {
                let s = TcpStream::connect(running.data_addr).await.unwrap();
                let (tx, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.unwrap();
                tokio::spawn(conn);
                senders.push(tx);
            }
            runs.push(fire(&senders, &host, n).await);
            drop(senders);
            running.shutdown().await;
        }
        let (fresh, storm) = (&runs[0], &runs[1]);
        let grant_calls = grants.load(Ordering::SeqCst);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("refresh storm: {n} requests on one expired token, token endpoint answers after {grant_ms} ms");
        println!(
            "token endpoint calls: {grant_calls}   served 200: {}   failed: {}   all sent within {:.0} ms",
            storm.ok,
            storm.failed,
            ms(storm.all_sent)
        );
        for (name, r) in [("storm", storm), ("fresh token", fresh)] {
            println!(
                "{name:<12} latency ms: p50 {:7.1}  p99 {:7.1}  max {:7.1}",
                ms(r.p50),
                ms(r.p99),
                ms(r.max)
            );
        }
        let grant = Duration::from_millis(grant_ms);
        let added = |a: Duration, b: Duration| ms(a) - ms(b) - ms(grant);
        println!(
            "added by waiting on the refresh, over the token endpoint's own {grant_ms} ms and the fresh-token run: \
             p50 {:+.1} ms  p99 {:+.1} ms  max {:+.1} ms",
            added(storm.p50, fresh.p50),
            added(storm.p99, fresh.p99),
            added(storm.max, fresh.max)
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
