//! `CONNECT` on the data listener (SPEC 2.1), carried out: the data plane decides
//! ([`crate::proxy::connect::decide`]); here a refused CONNECT gets its answer, a blind tunnel
//! is connected and relayed, and an intercepted one gets `200`, then a TLS handshake with a
//! certificate for exactly the CONNECT host (the ClientHello's SNI must name it), then HTTP/1.1
//! (bearerd's own server, [`super::h1`], as on the listener) or HTTP/2 (hyper), as ALPN chose,
//! every request going through [`crate::proxy::handle`] marked with its tunnel ([`Tunneled`]).

use std::sync::Arc;

use http::{Request, Version};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::oneshot;

use super::HEADER_READ_TIMEOUT;
use super::h1::{ClientConn, Rewind};
use crate::caller::ClientCert;
use crate::http::io::{ReadSide, WriteSide, split_shared};
use crate::proxy::ProxyError;
use crate::proxy::connect::{Connect, TunnelCaller, Tunneled, decide};
use crate::state::State;
use crate::upstream::Body;

/// The answer that opens a tunnel (RFC 9110 9.3.6: no framing headers).
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
/// A TLS record holding a fatal `unrecognized_name` alert (RFC 6066 3): the answer to a
/// ClientHello whose SNI is not the CONNECT host, before anything else was sent.
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];
/// What a TLS connection sends first (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// A `CONNECT` as it arrived: its head, the `Proxy-Authorization` the HTTP/1.1 server set aside,
/// and the client certificate the TLS listener verified.
pub(super) struct Arrived {
    pub(super) req: Request<()>,
    pub(super) proxy_auth: Option<bytes::Bytes>,
    pub(super) cert: Option<Arc<ClientCert>>,
}

/// Serves a `CONNECT` that arrived on `conn`; the connection is the tunnel's from here on.
pub(super) async fn connect(mut conn: ClientConn, arrived: Arrived, state: Arc<State>, stop: oneshot::Receiver<()>) {
    let Arrived { req, proxy_auth, cert } = arrived;
    let snap = state.snapshot.load_full();
    let results = &state.metrics.intercepted_connections;
    let authority = req.uri().authority().map(|a| a.as_str());
    let proxy_auth =
        proxy_auth.as_deref().or_else(|| req.headers().get(http::header::PROXY_AUTHORIZATION).map(|v| v.as_bytes()));
    let decided = decide(&snap, authority, req.headers(), proxy_auth, cert.as_ref()).await.and_then(|d| {
        match (&d, &state.intercept) {
            (Connect::Intercept { .. }, Err(why)) => Err(ProxyError::InterceptUnavailable(why.clone())),
            _ => Ok(d),
        }
    });
    let http10 = req.version() == Version::HTTP_10;
    match decided {
        Err(e) => {
            results.with_label_values(&["refused"]).inc();
            if let Some(reason) = e.auth_reason() {
                snap.callers.refused(reason);
            }
            drop(snap);
            // The host is the application's own choice, and no secret: it is logged.
            tracing::info!(target: "bearerd::access", method = "CONNECT", host = authority.unwrap_or(""), error = %e, "CONNECT refused");
            let reason = e.connect_reason();
            let mut answer = e.answer();
            answer.head.reason = Some(reason.into());
            let _ = conn.write_answer(answer, false, false, http10).await;
            conn.close().await;
        }
        // Each boxed: the future of every CONNECTed connection is then only as large as the
        // path it took.
        Ok(Connect::Tunnel { name, port }) => {
            drop(snap);
            Box::pin(blind(conn, &state, &name, port, http10)).await
        }
        Ok(Connect::Intercept { name, port, app, caller }) => {
            drop(snap);
            Box::pin(intercept(conn, state, name, port, app, caller, stop)).await
        }
    }
}

/// An intercepted tunnel: `200`, then what the client sends first tells: a TLS handshake (the
/// ClientHello's SNI must name the CONNECT host), then HTTP/1.1 or HTTP/2 as ALPN chose; or
/// plain HTTP/1.1 (Node's undici tunnels `http://` URLs through `CONNECT host:80`).
async fn intercept(
    mut conn: ClientConn,
    state: Arc<State>,
    name: String,
    port: u16,
    app: Option<Arc<str>>,
    caller: Option<TunnelCaller>,
    stop: oneshot::Receiver<()>,
) {
    let results = state.metrics.intercepted_connections.clone();
    let Ok(certs) = state.intercept.clone() else { return };
    if conn.write_raw(ESTABLISHED).await.is_err() {
        return;
    }
    let write_timeout = state.snapshot.load().config.upstream.timeout;
    // The first byte, and for TLS the whole handshake, within the header timeout: a client that
    // sends nothing, or trickles its ClientHello, is closed.
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    let tls = match conn.first_byte(HEADER_READ_TIMEOUT).await {
        None => {
            results.with_label_values(&["handshake_failed"]).inc();
            return;
        }
        Some(b) => b == TLS_HANDSHAKE,
    };
    // Each request inside carries its tunnel.
    let tunnel = Tunneled { name: name.as_str().into(), port, tls, app, caller };
    let handler = move |mut req: Request<Body>, proxy_auth| {
        req.extensions_mut().insert(tunnel.clone());
        crate::proxy::handle(state.clone(), req, proxy_auth)
    };
    if !tls {
        results.with_label_values(&["intercepted"]).inc();
        return super::h1::serve_conn(conn, handler, stop, None).await;
    }
    let Some(io) = conn.into_stream() else { return };
    // Boxed: its state is freed once it is done, instead of staying in this future for as long
    // as the connection lives.
    let handshake = Box::pin(async {
        let (accepted, mut io) = client_hello(io).await?;
        match accepted.client_hello().server_name() {
            Some(sni) if !sni.eq_ignore_ascii_case(&name) => {
                let _ = io.write_all(&UNRECOGNIZED_NAME).await;
                let _ = io.shutdown().await;
                return Err(format!("the ClientHello names {sni}, the CONNECT {name}"));
            }
            _ => {}
        }
        let config = certs.server_config(&name).await.map_err(|e| e.to_string())?;
        tokio_rustls::StartHandshake::from_parts(accepted, io)
            .into_stream(config)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    });
    // The TLS stream is scoped to this block (and boxed for HTTP/2) so that it takes no room
    // in this future beside the server's, which holds it from here on.
    let io = {
        let handshake = tokio::time::timeout_at(deadline, handshake).await;
        let tls = match handshake.unwrap_or_else(|_| Err("no TLS handshake within the header timeout".into())) {
            Ok(tls) => tls,
            Err(why) => {
                results.with_label_values(&["handshake_failed"]).inc();
                tracing::info!(host = %name, port, %why, "intercepted connection closed");
                return;
            }
        };
        results.with_label_values(&["intercepted"]).inc();
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            Alpn::H2(Box::new(tls))
        } else {
            Alpn::Http11(split_shared(tls))
        }
    };
    // HTTP/1.1 is bearerd's own server, as on the listener, HTTP/2 hyper's, as on the listener.
    match io {
        Alpn::Http11(halves) => super::h1::serve(halves, handler, stop, write_timeout, None).await,
        // Boxed, as on the listener: hyper's connection is large.
        Alpn::H2(tls) => Box::pin(super::h1::serve_h2(*tls, handler, stop)).await,
    }
}

/// Reads a TLS ClientHello from `io`, keeping `io` (so that a refusal can still be written on
/// it). A malformed one is answered with rustls's alert.
async fn client_hello<IO: AsyncRead + AsyncWrite + Unpin>(
    mut io: IO,
) -> Result<(rustls::server::Accepted, IO), String> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await.map_err(|e| format!("no TLS ClientHello: {e}"))?;
        if n == 0 {
            return Err("the client closed before its TLS ClientHello".into());
        }
        let mut rest = &chunk[..n];
        while !rest.is_empty() {
            match acceptor.read_tls(&mut rest) {
                Ok(0) => return Err("the TLS ClientHello is too large".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("no TLS ClientHello: {e}")),
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok((accepted, io)),
            Ok(None) => {}
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write(&mut out);
                let _ = io.write_all(&out).await;
                return Err(format!("no TLS ClientHello: {e}"));
            }
        }
    }
}

/// What a tunnel's ALPN chose, and the connection to serve it on.
enum Alpn {
    Http11((ReadSide, WriteSide)),
    H2(Box<tokio_rustls::server::TlsStream<Rewind>>),
}

/// A blind tunnel to `name:port` (`tunnel_hosts`): connected after the address check, then bytes
/// relayed both ways until either side closes. No token, nothing read.
async fn blind(mut conn: ClientConn, state: &State, name: &str, port: u16, http10: bool) {
    let results = &state.metrics.intercepted_connections;
    let shown = format!("{name}:{port}");
    let mut upstream = match state.upstream.connect_tcp(name, port, &shown, true).await {
        Ok(s) => s,
        Err(e) => {
            results.with_label_values(&["upstream_failed"]).inc();
            tracing::info!(host = %shown, error = %e, "blind tunnel: cannot connect");
            let _ = conn.write_answer(ProxyError::from(e).answer(), false, false, http10).await;
            conn.close().await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if conn.write_raw(ESTABLISHED).await.is_err() {
        return;
    }
    let Some(Rewind { prefix, inner: mut client }) = conn.into_stream() else { return };
    results.with_label_values(&["tunneled"]).inc();
    if !prefix.is_empty() && upstream.write_all(&prefix).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
