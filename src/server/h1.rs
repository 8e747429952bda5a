//! The data listener's connections: HTTP/1.1 (with [`crate::http::server`]) and the hand-over of
//! HTTP/2 (prior knowledge) to hyper.
//!
//! One task per connection reads a request head, runs the handler in that same task and writes
//! the answer: the request's headers are parsed once into the map the handler forwards, the
//! answer's head and its first bytes of body go out in one write, and an idle connection holds
//! no more than its socket, a small read buffer and this task. A request body that is not
//! already buffered is read by whoever polls it ([`ClientBody`]), which then hands the
//! connection's read side back.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Version};
use hyper::body::{Body as _, Incoming};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::oneshot;

use super::{HEADER_READ_TIMEOUT, MAX_HEADER_BYTES};
use crate::caller::ClientCert;
use crate::http::Framing;
use crate::http::io::{ReadSide, WriteSide};
use crate::http::server::{ClientBody, Lent, Reader, RequestHead, parse_request, put_answer_head};
use crate::http::write::{Progress, date_now, write_body};
use crate::proxy::{Answer, ProxyError};
use crate::state::State;
use crate::upstream::Body;

/// What a client speaking HTTP/2 without upgrade sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Read buffer growth: most heads fit, and idle connections stay small.
const READ_CHUNK: usize = 4096;
/// Body bytes up to this size are copied behind the head and written with it.
const COALESCE: usize = 16 * 1024;
/// A request body that makes no progress for this long fails, and its connection closes.
const BODY_STALL: Duration = HEADER_READ_TIMEOUT;
/// After a last answer, what the client still sends is read and dropped for at most this long
/// (and at most [`LINGER_BYTES`]), so that a client that writes its whole body before it reads
/// gets the answer instead of a reset.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 64 << 20;

/// One client connection's write side and buffer.
pub(super) struct ClientConn {
    reader: Option<Reader>,
    /// Fails a write the client does not take for the progress timeout.
    wr: Progress<WriteSide>,
    wbuf: Vec<u8>,
}

/// Serves one data-plane connection until the client closes it, it idles for
/// [`HEADER_READ_TIMEOUT`] (checked every half of it, so after 10-15 s; a request head arriving
/// too slowly counts as idle), or `stop` asks it to finish (the answer in progress is completed
/// first). An answer the client stops reading for `write_timeout` is dropped with the
/// connection (and the upstream connection it streams from).
///
/// `listener`: the connection came from a data listener (plain TCP, or the TLS listener), where a
/// connection that opens with the HTTP/2 preface goes to hyper and a `CONNECT` opens a tunnel;
/// `None` inside a tunnel, where a `CONNECT` is the handler's to refuse.
pub(super) async fn serve<F, Fut>(
    (rd, wr): (ReadSide, WriteSide),
    handler: F,
    stop: oneshot::Receiver<()>,
    write_timeout: Duration,
    listener: Option<Listener>,
) where
    F: Fn(Request<Body>, Option<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let wr = Progress::new(wr, write_timeout);
    let conn = ClientConn { reader: Some(Reader::new(rd, READ_CHUNK)), wr, wbuf: Vec::new() };
    serve_conn(conn, handler, stop, listener).await
}

/// Where a connection came from: the data listeners' state, and the client certificate the TLS
/// listener verified.
pub(super) struct Listener {
    pub(super) state: Arc<State>,
    pub(super) cert: Option<Arc<ClientCert>>,
}

/// [`serve`] on a connection already set up (a tunnel's plain HTTP goes on reading what its
/// CONNECT's connection read).
pub(super) async fn serve_conn<F, Fut>(
    mut conn: ClientConn,
    handler: F,
    mut stop: oneshot::Receiver<()>,
    listener: Option<Listener>,
) where
    F: Fn(Request<Body>, Option<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let tick = HEADER_READ_TIMEOUT / 2;
    let mut watchdog = std::pin::pin!(tokio::time::sleep(tick));
    let (mut served, mut seen, mut quiet) = (0u64, 0u64, 0u32);
    loop {
        let Some(reader) = conn.reader.as_mut() else { return };
        let head = loop {
            let buf = &reader.buf[..];
            if served == 0
                && listener.is_some()
                && !buf.is_empty()
                && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())])
            {
                if buf.len() >= H2_PREFACE.len() {
                    let Some(io) = conn.into_stream() else { return };
                    // Boxed: hyper's connection is large, and rare here.
                    return Box::pin(serve_h2(io, handler, stop)).await;
                }
            } else {
                // Room for what the template adds, so the map is not grown on the way upstream.
                match parse_request(&mut reader.buf, MAX_HEADER_BYTES, |n| crate::reuse::take(n + 4)) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(e) => {
                        let _ = conn.write_answer(ProxyError::from(e).answer(), false, false, false).await;
                        return conn.close().await;
                    }
                }
            }
            tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| reader.poll_fill(cx)) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = &mut stop => return,
                () = &mut watchdog => {
                    // A tick that saw a request begin starts the count again, so the connection
                    // has waited at least 10 s for a head when it is closed.
                    quiet = if served == seen { quiet + 1 } else { 0 };
                    seen = served;
                    if quiet >= 2 {
                        return;
                    }
                    watchdog.as_mut().reset(tokio::time::Instant::now() + tick);
                }
            }
        };
        served += 1;
        if let Some(l) = &listener
            && head.req.method() == Method::CONNECT
        {
            // The connection becomes the tunnel's (boxed: rare, and its future is large).
            let (state, cert) = (l.state.clone(), l.cert.clone());
            let arrived = super::tunnel::Arrived { req: head.req, proxy_auth: head.proxy_authorization, cert };
            return Box::pin(super::tunnel::connect(conn, arrived, state, stop)).await;
        }
        let RequestHead { req, framing, mut keep_alive, expect_continue, proxy_authorization } = head;
        let bodiless = *req.method() == Method::HEAD;
        let http10 = req.version() == Version::HTTP_10;
        let (body, lent) = match framing {
            Framing::Empty => (Body::Empty, None),
            Framing::Length(n) if reader.buf.len() as u64 >= n => {
                (Body::full(reader.buf.split_to(n as usize).freeze()), None)
            }
            framing => {
                // `100 Continue` only for a body that will be read: sent when it is first polled.
                let expect = expect_continue && reader.buf.is_empty() && !http10;
                let Some(reader) = conn.reader.take() else { return };
                let (body, lent) = ClientBody::new(reader, framing, expect, BODY_STALL);
                (Body::Client(body), Some(lent))
            }
        };
        // Boxed so that an idle connection's task is small: the request's future is large.
        let answer = boxed(&handler, req.map(|()| body), proxy_authorization).await;
        if let Some(mut lent) = lent {
            match lent.try_recv() {
                Ok(Lent { reader, finished }) => {
                    conn.reader = Some(reader);
                    // Not read to its end: the next request cannot be found (what is left is
                    // read and dropped before the connection closes).
                    keep_alive &= finished;
                }
                // The body failed, or is still being read (an upstream took it along).
                Err(_) => keep_alive = false,
            }
        }
        if matches!(answer.body, Body::Upgraded(_)) {
            // 101 to a websocket handshake: the connection is the relay's from here on (boxed:
            // rare, and its future would make every connection's task larger).
            return Box::pin(conn.relay(answer)).await;
        }
        if !matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            keep_alive = false;
        }
        match conn.write_answer(answer, keep_alive, bodiless, http10).await {
            Ok(true) => {}
            Ok(false) => return conn.close().await,
            Err(_) => return,
        }
    }
}

/// The handler's future for `req`, on the heap: written there directly, not built on the stack
/// and copied (it is several KiB, and only its arguments are set before it first runs).
fn boxed<F, Fut>(handler: &F, req: Request<Body>, proxy_auth: Option<Bytes>) -> Pin<Box<Fut>>
where
    F: Fn(Request<Body>, Option<Bytes>) -> Fut,
{
    Box::into_pin(Box::write(Box::new_uninit(), handler(req, proxy_auth)))
}

impl ClientConn {
    /// Writes bytes as they are (the answer that opens a tunnel).
    pub(super) async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wr.write_all(bytes).await?;
        self.wr.flush().await
    }

    /// The first byte the client sends (read within `within` when none is buffered yet), left in
    /// the buffer: what tells a tunnel's TLS from plain HTTP.
    pub(super) async fn first_byte(&mut self, within: Duration) -> Option<u8> {
        let reader = self.reader.as_mut()?;
        if reader.buf.is_empty() {
            match tokio::time::timeout(within, std::future::poll_fn(|cx| reader.poll_fill(cx))).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
        reader.buf.first().copied()
    }

    /// The connection whole again, with what was read and not yet used in front (a tunnel's
    /// first bytes may have come with its CONNECT).
    pub(super) fn into_stream(mut self) -> Option<Rewind> {
        let (rd, buf) = self.reader.take()?.into_parts();
        let inner = crate::http::io::reunite(rd, self.wr.into_inner())?;
        Some(Rewind { prefix: buf.freeze(), inner })
    }

    /// After `101 Switching Protocols` from the upstream: writes the 101 (the upstream's lines,
    /// `Connection: upgrade`, `Upgrade: websocket`), then relays bytes both ways, what each side sent early first,
    /// until both sides have closed.
    async fn relay(mut self, answer: Answer) {
        let Answer { head, body } = answer;
        let Body::Upgraded(upgraded) = body else { return };
        self.wbuf.clear();
        self.wbuf.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
        for (name, value) in &head.headers {
            if name != http::header::CONNECTION && name != http::header::UPGRADE {
                crate::http::write::put_header(&mut self.wbuf, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        // Only a websocket handshake is sent upstream as an upgrade.
        self.wbuf.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n");
        if self.wr.write_all(&self.wbuf).await.is_err() || self.wr.flush().await.is_err() {
            return;
        }
        let Some(reader) = self.reader.take() else { return };
        let (rd, early) = reader.into_parts();
        let mut client = Rewind { prefix: early.freeze(), inner: crate::http::io::Both(rd, self.wr.into_inner()) };
        let (io, early) = upgraded.into_parts();
        let mut upstream = Rewind { prefix: early.freeze(), inner: io };
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }

    /// Writes an answer; `Ok(false)` when the connection must close after it.
    pub(super) async fn write_answer(
        &mut self,
        answer: Answer,
        keep_alive: bool,
        head_request: bool,
        http10: bool,
    ) -> io::Result<bool> {
        let Answer { head, mut body } = answer;
        self.wbuf.clear();
        // An upstream's informational answers go first (never to an HTTP/1.0 client).
        if !http10 {
            for interim in &head.informational {
                self.wbuf.extend_from_slice(interim);
            }
        }
        let size = body.size_hint().exact();
        let sending = put_answer_head(&mut self.wbuf, &head, size, head_request, http10, keep_alive, date_now);
        drop(head);
        if sending.delimit == crate::http::write::Delimit::None {
            drop(body);
            self.wr.write_all(&self.wbuf).await?;
        } else {
            write_body(&mut self.wr, &mut self.wbuf, &mut body, sending.delimit, COALESCE).await?;
        }
        // Out of a writer that buffers (TLS); nothing to do on a TCP socket.
        self.wr.flush().await?;
        Ok(sending.keep_alive)
    }

    /// Closes after a last answer: the write side first, then what the client still sends is
    /// read and dropped for a bounded time and amount (lingering close), so that the close does
    /// not reset the connection and take the answer with it.
    pub(super) async fn close(mut self) {
        let _ = self.wr.shutdown().await;
        let Some(mut reader) = self.reader.take() else { return };
        let drain = async {
            let mut total = 0usize;
            loop {
                reader.buf.clear();
                match std::future::poll_fn(|cx| reader.poll_fill(cx)).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => total += n,
                }
                if total > LINGER_BYTES {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    }
}

/// Serves HTTP/2 on `io` with hyper: a listener connection that opened with the preface (what
/// was read of it in front), or an intercepted tunnel whose ALPN chose h2.
pub(super) async fn serve_h2<I, F, Fut>(io: I, handler: F, stop: oneshot::Receiver<()>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<Body>, Option<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let activity = Arc::new(super::Activity::default());
    let service = super::counted(activity.clone(), move |req: Request<Incoming>| {
        let answer = handler(req.map(|b| Body::H2Request(crate::upstream::body::Lingering(Some(b)))), None);
        async move { Ok::<_, Infallible>(into_response(answer.await)) }
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    super::drive(conn, activity, stop).await;
}

/// An answer as hyper writes it (HTTP/2): raw header lines go into the map.
fn into_response(answer: Answer) -> Response<Body> {
    let Answer { head, body } = answer;
    let version = head.version;
    let (status, headers) = head.into_map();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    resp
}

/// A stream that first gives back bytes already read from it.
pub(super) struct Rewind<T = crate::http::io::Stream> {
    pub(super) prefix: Bytes,
    pub(super) inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
