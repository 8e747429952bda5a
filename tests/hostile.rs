//! Hostile and odd clients against real sockets: connection caps, request smuggling shapes
//! against a strictly parsing upstream, and the admin listener's body rules.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// Reads metrics over one kept-alive admin connection, so that reading them opens none.
struct Scraper(hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>);

impl Scraper {
    async fn new(admin: std::net::SocketAddr) -> Scraper {
        let io = hyper_util::rt::TokioIo::new(TcpStream::connect(admin).await.unwrap());
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Scraper(sender)
    }

    /// The value of the metric line that starts with `prefix`.
    async fn metric(&mut self, prefix: &str) -> Option<f64> {
        use http_body_util::BodyExt as _;
        self.0.ready().await.unwrap();
        let answer = self.0.send_request(request("GET", "/metrics", &[("host", "a")], "")).await.unwrap();
        let text = answer.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

/// Whether the server closes `s` (EOF or reset) within `within`, having written nothing.
async fn closed_at_once(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(within, s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_listener_keeps_at_most_its_max_connections() {
    let dir = TempDir::new();
    dir.app("demo", &json!({}), None);
    let cfg = Config::new()
        .app(App::new("demo"))
        .set("max_connections", json!(3))
        .set("admin.max_connections", json!(3))
        .write(&dir);
    let b = start(&cfg).await;
    let mut m = Scraper::new(b.admin).await;
    assert_eq!(m.metric("bearerd_connections_refused_total{listener=\"data\"}").await, Some(0.0));

    // Three idle clients fill the data listener; a fourth is closed at once, and counted.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(b.data).await.unwrap());
    }
    eventually(Duration::from_secs(5), "three open data connections", async || {
        m.metric("bearerd_open_connections{listener=\"data\"}").await == Some(3.0)
    })
    .await;
    let mut fourth = TcpStream::connect(b.data).await.unwrap();
    assert!(closed_at_once(&mut fourth, Duration::from_secs(2)).await, "a fourth connection was kept");
    assert_eq!(m.metric("bearerd_connections_refused_total{listener=\"data\"}").await, Some(1.0));

    // The admin listener has its own cap (the scraper's connection and two more), and answers
    // while the data listener is full.
    let admin_held = [TcpStream::connect(b.admin).await.unwrap(), TcpStream::connect(b.admin).await.unwrap()];
    let mut fourth = TcpStream::connect(b.admin).await.unwrap();
    assert!(closed_at_once(&mut fourth, Duration::from_secs(2)).await, "a fourth admin connection was kept");
    assert_eq!(m.metric("bearerd_connections_refused_total{listener=\"admin\"}").await, Some(1.0));
    drop(admin_held);

    // A client that goes frees its place.
    held.pop();
    eventually(Duration::from_secs(5), "a freed data connection", async || {
        m.metric("bearerd_open_connections{listener=\"data\"}").await == Some(2.0)
    })
    .await;
    let r = send(b.data, request("POST", "/invoke/nothing", &[("host", "b")], "{}")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_trickles_is_given_up_at_the_request_deadline() {
    use tokio::io::AsyncWriteExt as _;
    let (_d, api, b) = api_app(&[("post", "POST", "/in")], "2s").await;
    let heads = [
        format!("POST /in HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n", api.host()),
        "POST /invoke/post HTTP/1.1\r\nHost: b\r\nContent-Length: 1000\r\n\r\n".to_string(),
    ];
    for head in heads {
        let mut s = TcpStream::connect(b.data).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let chunked = head.contains("chunked");
        let t0 = std::time::Instant::now();
        // One byte every 300 ms: never a 10 s stall, never a whole body.
        let (mut rd, mut wr) = s.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                let piece: &[u8] = if chunked { b"1\r\nx\r\n" } else { b" " };
                if wr.write_all(piece).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out)).await;
        trickle.abort();
        let out = String::from_utf8_lossy(&out);
        assert!(read.is_ok(), "still open after 10 s: {out}");
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    }
    assert_eq!(api.count(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_bodies_are_read_whole_before_anything_is_done() {
    use tokio::io::AsyncWriteExt as _;
    let dir = TempDir::new();
    dir.app("demo", &json!({}), Some(&oauth_one("provider.test", false)));
    let b = start(&Config::new().app(App::new("demo")).write(&dir)).await;
    let mut m = Scraper::new(b.admin).await;
    // A malformed chunk: 400, the connection closed, and the reload never ran.
    let out = raw(
        b.admin,
        b"POST /admin/reload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(m.metric("bearerd_config_generation").await, Some(1.0), "the reload ran");
    // Too large: 413.
    let big = format!("PUT /admin/tokens/demo/api HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", 65 * 1024);
    let mut s = TcpStream::connect(b.admin).await.unwrap();
    s.write_all(big.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; 65 * 1024]).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&out));
    // A body that stops arriving: 408 after 10 s, and nothing stored.
    let t0 = std::time::Instant::now();
    let out = raw(
        b.admin,
        b"PUT /admin/tokens/demo/api HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{\"access_token\"",
        Duration::from_secs(15),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(t0.elapsed() >= Duration::from_secs(9), "{:?}", t0.elapsed());
    let list = b.admin("GET", "/admin/tokens", "").await.json();
    assert_eq!(list[0]["state"], "missing", "{list}");
    b.shutdown().await;
}

/// A strict plain HTTP/1.1 upstream on 127.0.0.1:0 that records every request (head and body,
/// framed by Content-Length or chunked only, as RFC 9112 reads them) and answers 200 `ok`.
async fn strict_upstream() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>) {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // Reads more into `buf`; false at the end of the connection.
                async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
                    let mut b = [0u8; 4096];
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => false,
                        Ok(n) => {
                            buf.extend_from_slice(&b[..n]);
                            true
                        }
                    }
                }
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if !more(&mut s, &mut buf).await {
                            return;
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let lower = head.to_ascii_lowercase();
                    let length = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse::<usize>().unwrap());
                    let chunked = lower.lines().any(|l| l.starts_with("transfer-encoding:"));
                    assert!(!(chunked && length.is_some()), "bearerd sent both framings: {head}");
                    let mut body = Vec::new();
                    if let Some(n) = length {
                        while buf.len() < n {
                            if !more(&mut s, &mut buf).await {
                                return;
                            }
                        }
                        body = buf.drain(..n).collect();
                    } else if chunked {
                        loop {
                            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                                if !more(&mut s, &mut buf).await {
                                    return;
                                }
                                continue;
                            };
                            let size = usize::from_str_radix(std::str::from_utf8(&buf[..eol]).unwrap(), 16).unwrap();
                            while buf.len() < eol + 2 + size + 2 {
                                if !more(&mut s, &mut buf).await {
                                    return;
                                }
                            }
                            body.extend_from_slice(&buf[eol + 2..eol + 2 + size]);
                            buf.drain(..eol + 2 + size + 2);
                            if size == 0 {
                                break;
                            }
                        }
                    }
                    log.lock().unwrap().push((head, body));
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// One app whose templates go to a plain HTTP upstream on `port`.
async fn http_app(port: u16, templates: &[(&str, &str, &str)]) -> (TempDir, Bearerd) {
    let dir = TempDir::new();
    let mut requests = serde_json::Map::new();
    for (name, method, path) in templates {
        requests.insert(
            name.to_string(),
            json!({"schema": {"method": method, "protocol": "http", "host": format!("localhost:{port}"), "path": path}}),
        );
    }
    dir.app("demo", &requests.into(), None);
    let cfg = Config::new().app(App::new("demo")).set("upstream.allow_http", json!(true)).write(&dir);
    let b = start(&cfg).await;
    (dir, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_request_headers_never_reach_an_http1_upstream() {
    let (port, seen) = strict_upstream().await;
    let (_d, b) = http_app(port, &[("get", "GET", "/hop")]).await;
    let out = raw(
        b.data,
        format!(
            "GET http://localhost:{port}/hop HTTP/1.1\r\nHost: localhost:{port}\r\n\
             Connection: x-private, keep-alive\r\nX-Private: named-by-connection\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Authorization: Basic ZGVtbzpzZWNyZXQ=\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
             Trailer: X-T\r\nX-Bearerd-App: demo\r\nX-Keep: 1\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let (head, _) = seen.lock().unwrap()[0].clone();
    let lower = head.to_ascii_lowercase();
    for gone in
        ["x-private", "keep-alive", "proxy-authorization", "proxy-connection", "\nte:", "trailer:", "x-bearerd-app"]
    {
        assert!(!lower.contains(gone), "{gone} reached the upstream:\n{head}");
    }
    assert!(lower.contains("\r\nx-keep: 1"), "{head}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_shapes_never_reach_a_strict_upstream() {
    let (port, seen) = strict_upstream().await;
    let (_d, b) = http_app(port, &[("in", "POST", "/in"), ("second", "GET", "/second")]).await;
    let host = format!("localhost:{port}");
    // What a smuggled request would look like, and where each shape hides it.
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let te_lines = [
        "Transfer-Encoding: chunked",
        "Transfer-Encoding : chunked",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding:\tchunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: x",
        "Transfer-Encoding: x\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding:\r\n chunked",
        "X: y\nTransfer-Encoding: chunked",
        "transfer-encoding: CHUNKED",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: \"chunked\"",
        "Transfer-Encoding: chunk",
        "Transfer-Encoding: chunked,",
        "Transfer_Encoding: chunked",
        "Transfer-Encoding: chunked\r",
        " Transfer-Encoding: chunked",
    ];
    let mut cases = Vec::new();
    for te in te_lines {
        // CL.TE: a front end that reads Content-Length forwards the smuggled request as body.
        let body = format!("0\r\n\r\n{smuggled}");
        cases
            .push(format!("POST /in HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n{te}\r\n\r\n{body}", body.len()));
        // TE.CL: the chunk holds the smuggled request; Content-Length stops before it.
        let chunk = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
        cases.push(format!("POST /in HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\n{te}\r\n\r\n{chunk}"));
        // TE alone (TE.TE when the line is mangled).
        cases.push(format!("POST /in HTTP/1.1\r\nHost: {host}\r\n{te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"));
    }
    // Content-Length mangled.
    for cl in
        ["Content-Length: 5, 6", "Content-Length: +5", "Content-Length: 5\r\nContent-Length: 6", "Content-Length: 0x5"]
    {
        cases.push(format!("POST /in HTTP/1.1\r\nHost: {host}\r\n{cl}\r\n\r\nhello{smuggled}"));
    }
    let second = format!("GET /second HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let runs: Vec<_> = cases
        .iter()
        .map(|attack| {
            let (addr, bytes) = (b.data, format!("{attack}{second}"));
            tokio::spawn(async move { raw(addr, bytes.as_bytes(), Duration::from_secs(3)).await })
        })
        .collect();
    let mut accepted = 0;
    for (attack, run) in cases.iter().zip(runs) {
        let out = run.await.unwrap();
        let statuses: Vec<&str> = out.match_indices("HTTP/1.1 ").map(|(i, _)| &out[i + 9..i + 12]).collect();
        match statuses.first() {
            Some(&"200") => accepted += 1,
            Some(&("400" | "501")) => assert_eq!(statuses.len(), 1, "an answer after a refusal: {attack:?}\n{out}"),
            other => panic!("{other:?} for {attack:?}:\n{out}"),
        }
    }
    let seen = seen.lock().unwrap().clone();
    // The strict upstream parsed exactly the requests bearerd framed: never the smuggled one
    // (a body may hold its text, where only Content-Length framed the request).
    for (head, _) in &seen {
        let path = head.split(' ').nth(1).unwrap_or("");
        assert!(path == "/in" || path == "/second", "the upstream received {head}");
    }
    let forwarded = seen.iter().filter(|(h, _)| h.starts_with("POST /in")).count();
    assert_eq!(forwarded, accepted, "every accepted attack was forwarded once, nothing else");
    assert!(accepted > 0, "the plain chunked case is accepted");
    b.shutdown().await;
}
