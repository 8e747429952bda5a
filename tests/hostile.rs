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
