//! Clients of tunnels and websockets, as the tests drive them: `CONNECT` on a raw connection,
//! a TLS handshake inside it (trusting bearerd's CA), HTTP/1.1 requests over the tunnel, and a
//! websocket upstream with its handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Resp, TestCa};

/// Sends `CONNECT authority` with `headers`; the answer's head (read to its blank line) and the
/// connection.
pub async fn connect(data: SocketAddr, authority: &str, headers: &[(&str, &str)]) -> (String, TcpStream) {
    let mut s = TcpStream::connect(data).await.unwrap();
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    (read_head(&mut s).await, s)
}

/// Reads an answer's head, up to its blank line (or whatever came within 5 s).
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A TLS client trusting `ca_pem` alone, offering `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_config_with(ca_pem, None, alpn)
}

/// [`client_config`] with a client certificate and its key (PEM), when given.
pub fn client_config_with(ca_pem: &str, cert: Option<(String, String)>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes()).map(Result::unwrap).collect();
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub async fn handshake(s: TcpStream, ca_pem: &str, sni: &str, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(client_config(ca_pem, alpn)).connect(name, s).await
}

/// A CONNECT to `authority` and a TLS handshake inside it naming its host.
pub async fn tunnel(data: SocketAddr, authority: &str, ca_pem: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let (head, s) = connect(data, authority, &[]).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let host = authority.rsplit_once(':').unwrap().0;
    handshake(s, ca_pem, host, alpn).await.unwrap()
}

/// Sends requests over an HTTP/1.1 connection inside a tunnel; the answers.
pub async fn h1_requests(tls: TlsStream<TcpStream>, reqs: Vec<http::Request<Full<Bytes>>>) -> Vec<Resp> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut out = Vec::new();
    for req in reqs {
        // The previous answer is read: the connection may still be finishing it.
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        out.push(Resp { status: parts.status.as_u16(), headers: parts.headers, body });
    }
    out
}

/// A TLS server of the test CA on 127.0.0.1:0 that runs `each` on every connection it accepts
/// (with what `each` records, `seen`); its port.
pub async fn tls_server<T, F, Fut>(ca: &TestCa, seen: Arc<std::sync::Mutex<Vec<T>>>, each: F) -> u16
where
    T: Send + 'static,
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>, Arc<std::sync::Mutex<Vec<T>>>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = tokio_rustls::TlsAcceptor::from(ca.server.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            let (seen, tls, each) = (seen.clone(), tls.clone(), each.clone());
            tokio::spawn(async move {
                if let Ok(s) = tls.accept(s).await {
                    each(s, seen).await;
                }
            });
        }
    });
    port
}

/// A websocket upstream (TLS, the test CA): records each request head, answers a handshake with
/// `101` and then echoes what it reads; anything else gets 400.
pub async fn ws_upstream(ca: &TestCa) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let port = tls_server(ca, heads.clone(), |mut s, seen| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        seen.lock().unwrap().push(head.clone());
        if !head.contains("upgrade: websocket") {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: accept-1\r\n\r\nhello")
            .await;
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    (port, heads)
}

/// App `demo` in `dir` with template `ws` (GET /ws on `host`, with integration `api`'s token):
/// for the websocket upstream.
pub fn ws_app(dir: &super::TempDir, host: &str) {
    dir.app(
        "demo",
        &serde_json::json!({"ws": {"schema": {"method": "GET", "host": host, "path": "/ws",
            "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}}),
        Some(&super::oauth_one("tokens.invalid", false)),
    );
}

/// Writes a websocket handshake for `path` on `host` and reads the answer's head.
pub async fn handshake_ws<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
    path: &str,
    upgrade: &str,
) -> String {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    read_head(s).await
}

/// Reads exactly `n` bytes.
pub async fn read_n<S: tokio::io::AsyncRead + Unpin>(s: &mut S, n: usize) -> String {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
    String::from_utf8(buf).unwrap()
}
