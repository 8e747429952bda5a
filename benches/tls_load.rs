//! A closed-loop HTTPS load client for `benches/intercept.sh`: wrk cannot go through `CONNECT`,
//! so this one does, the way an SDK with `HTTPS_PROXY` does: `CONNECT host:port` to the proxy,
//! a TLS handshake inside the tunnel (SNI = host), then HTTP/1.1 requests with keep-alive. With
//! no proxy it speaks TLS to the target directly (nginx's `ssl` listener). One thread: pin it
//! to its own CPU.
//!
//! ```text
//! cargo bench --bench tls_load -- --target 127.0.0.1:18443 --host localhost:18080 --ca ca.pem \
//!     [--proxy 127.0.0.1:18092] [--conns 32] [--secs 10] [--handshakes] [--idle N]
//! ```
//! `--handshakes`: a new connection (and tunnel, and handshake) per request, for handshakes per
//! second. `--idle N`: open N connections (tunnels with TLS done), hold them idle until stdin
//! closes, and print nothing else (for memory per idle connection). `--gate`: for counting a
//! proxy's instructions per request in the steady state only: open every connection and make one
//! request on each, print `ready`, wait for a line on stdin, count for `--secs`, let every
//! connection finish its request in flight, print the result and hold the connections until
//! stdin closes (so that no handshake and no close falls inside the counted window).
//! Prints one line: `requests=N secs=S rps=R non2xx=N errors=N`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Args {
    target: SocketAddr,
    proxy: Option<SocketAddr>,
    /// `host:port`: the CONNECT authority, the `Host` header; its host is the SNI.
    host: String,
    ca: String,
    conns: usize,
    secs: u64,
    handshakes: bool,
    idle: usize,
    gate: bool,
    path: String,
}

fn args() -> Args {
    let mut a = Args {
        target: "127.0.0.1:18443".parse().unwrap(),
        proxy: None,
        host: "localhost:18080".into(),
        ca: String::new(),
        conns: 32,
        secs: 10,
        handshakes: false,
        idle: 0,
        gate: false,
        path: "/".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--target" => a.target = v().parse().expect("--target ip:port"),
            "--proxy" => a.proxy = Some(v().parse().expect("--proxy ip:port")),
            "--host" => a.host = v(),
            "--ca" => a.ca = v(),
            "--conns" => a.conns = v().parse().unwrap(),
            "--secs" => a.secs = v().parse().unwrap(),
            "--path" => a.path = v(),
            "--idle" => a.idle = v().parse().unwrap(),
            "--handshakes" => a.handshakes = true,
            "--gate" => a.gate = true,
            // cargo bench passes --bench.
            _ => {}
        }
    }
    a
}

fn tls_config(ca: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for path in ca.split(',').filter(|p| !p.is_empty()) {
        for c in rustls_pki_types::CertificateDer::pem_file_iter(path).expect("--ca PEM files") {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A connection: through a CONNECT tunnel when there is a proxy, then TLS.
async fn open(a: &Args, tls: &tokio_rustls::TlsConnector) -> std::io::Result<Tls> {
    let mut s = TcpStream::connect(a.proxy.unwrap_or(a.target)).await?;
    s.set_nodelay(true)?;
    if a.proxy.is_some() {
        s.write_all(format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", a.host).as_bytes()).await?;
        let mut head = Vec::with_capacity(128);
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other(String::from_utf8_lossy(&head).into_owned()));
        }
    }
    let sni = a.host.rsplit_once(':').map_or(a.host.as_str(), |(h, _)| h).to_string();
    tls.connect(rustls_pki_types::ServerName::try_from(sni).unwrap(), s).await
}

/// Reads one answer off `conn` (`buf` keeps what follows it); its status.
async fn answer(conn: &mut Tls, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(buf).map_err(std::io::Error::other)? {
            let status = resp.code.unwrap_or(0);
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            while buf.len() < n + len {
                read_more(conn, buf).await?;
            }
            buf.drain(..n + len);
            return Ok(status);
        }
        read_more(conn, buf).await?;
    }
}

async fn read_more(conn: &mut Tls, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = conn.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    non2xx: AtomicU64,
    errors: AtomicU64,
}

/// `--gate`'s meeting points: workers count themselves in `ready` after their first request, wait
/// for `go`, and count themselves in `parked` once they stop, holding their connection.
#[derive(Default)]
struct Gate {
    ready: AtomicU64,
    go: tokio::sync::Notify,
    gone: AtomicBool,
    parked: AtomicU64,
    hold: tokio::sync::Notify,
}

async fn worker(
    a: Arc<Args>,
    tls: tokio_rustls::TlsConnector,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
) {
    let close = if a.handshakes { "Connection: close\r\n" } else { "" };
    let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\n{close}\r\n", a.path, a.host);
    let mut buf = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let mut conn = match open(&a, &tls).await {
            Ok(c) => c,
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        buf.clear();
        while !stop.load(Ordering::Relaxed) {
            let sent = conn.write_all(req.as_bytes()).await;
            match sent {
                Ok(()) => match answer(&mut conn, &mut buf).await {
                    Ok(status) => {
                        counts.requests.fetch_add(1, Ordering::Relaxed);
                        if !(200..300).contains(&status) {
                            counts.non2xx.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                },
                Err(_) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            if a.handshakes {
                break;
            }
            if a.gate && !gate.gone.load(Ordering::Relaxed) {
                let go = gate.go.notified();
                gate.ready.fetch_add(1, Ordering::Relaxed);
                if !gate.gone.load(Ordering::Relaxed) {
                    go.await;
                }
            }
        }
        if a.gate {
            let hold = gate.hold.notified();
            gate.parked.fetch_add(1, Ordering::Relaxed);
            hold.await;
        }
    }
}

/// Reads one line (or the end) of stdin without blocking the runtime.
async fn stdin_line() {
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
}

fn main() {
    let a = Arc::new(args());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let tls = tokio_rustls::TlsConnector::from(tls_config(&a.ca));
        if a.idle > 0 {
            let mut held = Vec::with_capacity(a.idle);
            for _ in 0..a.idle {
                held.push(open(&a, &tls).await.expect("an idle connection"));
            }
            println!("idle={}", held.len());
            let _ = tokio::task::spawn_blocking(|| std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new()))
                .await;
            return;
        }
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Gate::default());
        let tasks: Vec<_> = (0..a.conns)
            .map(|_| tokio::spawn(worker(a.clone(), tls.clone(), counts.clone(), stop.clone(), gate.clone())))
            .collect();
        if a.gate {
            while gate.ready.load(Ordering::Relaxed) < a.conns as u64 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!("ready");
            stdin_line().await;
            counts.requests.store(0, Ordering::Relaxed);
            gate.gone.store(true, Ordering::Relaxed);
            gate.go.notify_waiters();
        }
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(a.secs)).await;
        stop.store(true, Ordering::Relaxed);
        if a.gate {
            while gate.parked.load(Ordering::Relaxed) < a.conns as u64 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let requests = counts.requests.load(Ordering::Relaxed);
        println!(
            "requests={requests} secs={secs:.2} rps={:.0} non2xx={} errors={}",
            requests as f64 / secs,
            counts.non2xx.load(Ordering::Relaxed),
            counts.errors.load(Ordering::Relaxed)
        );
        if a.gate {
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            stdin_line().await;
        }
        for t in tasks {
            t.abort();
        }
    });
}
