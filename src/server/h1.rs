//! The data listener's HTTP/1.1, and the hand-over of HTTP/2 (prior knowledge) to hyper.
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
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use super::{HEADER_READ_TIMEOUT, MAX_HEADER_BYTES, MAX_HEADERS};
use crate::http1::{BodyState, Framing, LAST_CHUNK, put_chunk_size, put_header, put_length};
use crate::proxy::body::BoxError;
use crate::proxy::{ProxyBody, ProxyError};

/// What a client speaking HTTP/2 without upgrade sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Read buffer growth: most heads fit, and idle connections stay small.
const READ_CHUNK: usize = 4096;
/// Body bytes up to this size are copied behind the head and written with it.
const COALESCE: usize = 16 * 1024;

/// The read side of a client connection and what has been read from it.
#[derive(Debug)]
pub struct Reader {
    io: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        crate::http1::poll_fill(&mut self.io, &mut self.buf, READ_CHUNK, cx)
    }
}

/// A request body read from the application's connection as it is polled. At its end the read
/// side goes back to the connection for the next request; a body dropped before its end takes
/// the read side with it, and the connection closes after the answer.
pub struct ClientBody {
    reader: Option<Reader>,
    framing: Framing,
    back: Option<oneshot::Sender<Reader>>,
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBody").field("framing", &self.framing).finish_non_exhaustive()
    }
}

impl ClientBody {
    fn give_back(&mut self) {
        if let (Some(reader), Some(back)) = (self.reader.take(), self.back.take()) {
            let _ = back.send(reader);
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(r) = this.reader.as_mut() else { return Poll::Ready(None) };
        let (frame, state) = ready!(crate::http1::poll_frame(&mut this.framing, &mut r.buf, &mut r.io, READ_CHUNK, cx));
        match state {
            BodyState::Reading => {}
            BodyState::Over => this.give_back(),
            BodyState::Failed => {
                this.reader = None;
                this.back = None;
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Empty
    }

    fn size_hint(&self) -> SizeHint {
        self.framing.size_hint()
    }
}

/// A request head taken off the read buffer.
struct Head {
    req: Request<()>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

/// The answer to a head over [`MAX_HEADER_BYTES`] or with more than [`MAX_HEADERS`] headers.
fn too_large() -> ProxyError {
    ProxyError::HeadersTooLarge { limit: MAX_HEADER_BYTES, count: MAX_HEADERS }
}

/// Takes a complete request head off the front of `buf`, if one is there. The header values
/// share the head's bytes.
fn take_head(buf: &mut BytesMut) -> Result<Option<Head>, ProxyError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    // (name start, name end, value start, value end) within the head.
    let mut ranges = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let bad = |m: &str| ProxyError::BadFraming(m.to_string());
    let (len, method, target, version, count, mut keep_alive, mut expect_continue, mut framed);
    {
        let mut req = httparse::Request::new(&mut []);
        len = match req.parse_with_uninit_headers(buf, &mut raw) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEADER_BYTES => n,
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEADER_BYTES => return Ok(None),
            Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
            Err(e) => return Err(bad(&format!("bad request head ({e})"))),
        };
        method = Method::from_bytes(req.method.unwrap_or_default().as_bytes()).map_err(|_| bad("bad method"))?;
        version = if req.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        keep_alive = version == Version::HTTP_11;
        expect_continue = false;
        framed = false;
        count = req.headers.len();
        let base = buf.as_ptr() as usize;
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let path = req.path.unwrap_or_default().as_bytes();
        target = (offset(path), offset(path) + path.len() as u32);
        for (h, r) in req.headers.iter().zip(ranges.iter_mut()) {
            if h.name.eq_ignore_ascii_case("connection") {
                let c = crate::http1::connection_tokens(h.value);
                keep_alive = !c.close && (keep_alive || (c.keep_alive && version == Version::HTTP_10));
            } else if h.name.eq_ignore_ascii_case("expect") {
                expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
            } else if h.name.eq_ignore_ascii_case("content-length") || h.name.eq_ignore_ascii_case("transfer-encoding")
            {
                framed = true;
            }
            let (n, v) = (offset(h.name.as_bytes()), offset(h.value));
            *r = (n, n + h.name.len() as u32, v, v + h.value.len() as u32);
        }
    }
    let bytes = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(bytes.slice(target.0 as usize..target.1 as usize))
        .map_err(|_| bad("bad request target"))?;
    // Room for what the template adds, so the map is not grown on the way upstream.
    let mut headers = crate::reuse::take::<http::HeaderMap>(count + 4);
    for &(ns, ne, vs, ve) in &ranges[..count] {
        let name = HeaderName::from_bytes(&bytes[ns as usize..ne as usize]).map_err(|_| bad("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(vs as usize..ve as usize))
            .map_err(|_| bad("bad header value"))?;
        headers.append(name, value);
    }
    // A request without either framing header (most) has no body: no map lookups for them.
    let framing = match framed {
        true => crate::http1::declared(&headers, false).map_err(bad)?.unwrap_or(Framing::Empty),
        false => Framing::Empty,
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(Head { req, framing, keep_alive, expect_continue }))
}

/// One client connection's write side and buffer.
struct Conn {
    reader: Option<Reader>,
    wr: OwnedWriteHalf,
    wbuf: Vec<u8>,
}

/// Serves one data-plane connection until the client closes it, it idles for
/// [`HEADER_READ_TIMEOUT`] (checked every half of it, so after 10-15 s; a request head arriving
/// too slowly counts as idle), or `stop` asks it to finish (the answer in progress is completed
/// first).
pub(super) async fn serve<F, Fut>(stream: TcpStream, handler: F, mut stop: oneshot::Receiver<()>)
where
    F: Fn(Request<ProxyBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let (rd, wr) = stream.into_split();
    let mut conn = Conn { reader: Some(Reader { io: rd, buf: BytesMut::new() }), wr, wbuf: Vec::new() };
    let tick = HEADER_READ_TIMEOUT / 2;
    let mut watchdog = std::pin::pin!(tokio::time::sleep(tick));
    let (mut served, mut seen, mut quiet) = (0u64, 0u64, 0u32);
    loop {
        let Some(reader) = conn.reader.as_mut() else { return };
        let head = loop {
            let buf = &reader.buf[..];
            if served == 0 && !buf.is_empty() && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
                if buf.len() >= H2_PREFACE.len() {
                    // Boxed: hyper's connection is large, and rare here.
                    return Box::pin(serve_h2(conn, handler, stop)).await;
                }
            } else {
                match take_head(&mut reader.buf) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(e) => {
                        let _ = conn.write_response(e.into_response(), false, false, false).await;
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
        let Head { req, framing, mut keep_alive, expect_continue } = head;
        let bodiless = *req.method() == Method::HEAD;
        let http10 = req.version() == Version::HTTP_10;
        let (body, lent) = match framing {
            Framing::Empty => (ProxyBody::Empty, None),
            Framing::Length(n) if reader.buf.len() as u64 >= n => {
                (ProxyBody::full(reader.buf.split_to(n as usize).freeze()), None)
            }
            framing => {
                if expect_continue
                    && reader.buf.is_empty()
                    && !http10
                    && conn.wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
                {
                    return;
                }
                let (back, lent) = oneshot::channel();
                (ProxyBody::Client(ClientBody { reader: conn.reader.take(), framing, back: Some(back) }), Some(lent))
            }
        };
        // Boxed so that an idle connection's task is small: the request's future is large.
        let Ok(resp) = boxed(&handler, req.map(|()| body)).await;
        if let Some(mut lent) = lent {
            match lent.try_recv() {
                Ok(reader) => conn.reader = Some(reader),
                // The body was not read to its end: the next request cannot be found.
                Err(_) => keep_alive = false,
            }
        }
        if !matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            keep_alive = false;
        }
        match conn.write_response(resp, keep_alive, bodiless, http10).await {
            Ok(true) => {}
            Ok(false) => return conn.close().await,
            Err(_) => return,
        }
    }
}

/// The handler's future for `req`, on the heap: written there directly, not built on the stack
/// and copied (it is several KiB, and only its arguments are set before it first runs).
fn boxed<F, Fut>(handler: &F, req: Request<ProxyBody>) -> Pin<Box<Fut>>
where
    F: Fn(Request<ProxyBody>) -> Fut,
{
    Box::into_pin(Box::write(Box::new_uninit(), handler(req)))
}

impl Conn {
    /// Writes an answer; `Ok(false)` when the connection must close after it.
    async fn write_response(
        &mut self,
        resp: Response<ProxyBody>,
        mut keep_alive: bool,
        head_request: bool,
        http10: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let bodiless = head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(b"HTTP/1.1 ");
        w.extend_from_slice(status.as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        w.extend_from_slice(b"\r\n");
        // An HTTP/1.1 upstream's header lines, passed on as they came.
        let mut dated = false;
        if let ProxyBody::Upstream(upstream) = &mut body
            && let Some(raw) = upstream.take_raw()
        {
            raw.put_lines(w);
            dated = raw.dated();
        }
        for (name, value) in &parts.headers {
            if name == header::CONNECTION {
                keep_alive &= !crate::http1::connection_tokens(value.as_bytes()).close;
                continue;
            }
            if !bodiless && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING) {
                continue;
            }
            dated |= name == header::DATE;
            put_header(w, name.as_str().as_bytes(), value.as_bytes());
        }
        if !dated {
            put_header(w, b"date", &crate::http1::date_now());
        }
        let length = if bodiless { Some(0) } else { body.size_hint().exact() };
        let chunked = length.is_none() && !http10;
        if !bodiless {
            match length {
                Some(n) => put_length(w, Some(n)),
                None if chunked => put_length(w, None),
                // HTTP/1.0 has no chunks: the body ends with the connection.
                None => keep_alive = false,
            }
        }
        if !keep_alive {
            w.extend_from_slice(b"connection: close\r\n");
        } else if http10 {
            w.extend_from_slice(b"connection: keep-alive\r\n");
        }
        w.extend_from_slice(b"\r\n");
        if bodiless {
            drop(body);
            self.wr.write_all(&self.wbuf).await?;
            return Ok(keep_alive);
        }
        let mut sent = 0u64;
        loop {
            // What the body has ready now joins the head; when it has nothing, what is
            // buffered goes out before waiting.
            let frame = match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if !self.wbuf.is_empty() {
                        self.wr.write_all(&self.wbuf).await?;
                        self.wbuf.clear();
                    }
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
                // Nothing can be said in the middle of a body: the connection closes.
                Some(Err(e)) => return Err(io::Error::other(e)),
            };
            sent += data.len() as u64;
            if length.is_some_and(|n| sent > n) {
                return Err(io::Error::other("the answer body is longer than its content-length"));
            }
            if chunked {
                put_chunk_size(&mut self.wbuf, data.len());
            }
            if self.wbuf.len() + data.len() <= COALESCE {
                self.wbuf.extend_from_slice(&data);
            } else {
                if !self.wbuf.is_empty() {
                    self.wr.write_all(&self.wbuf).await?;
                    self.wbuf.clear();
                }
                self.wr.write_all(&data).await?;
            }
            if chunked {
                self.wbuf.extend_from_slice(b"\r\n");
            }
        }
        if length.is_some_and(|n| sent != n) {
            return Err(io::Error::other("the answer body is shorter than its content-length"));
        }
        if chunked {
            self.wbuf.extend_from_slice(LAST_CHUNK);
        }
        if !self.wbuf.is_empty() {
            self.wr.write_all(&self.wbuf).await?;
        }
        Ok(keep_alive)
    }

    /// Closes after a last answer: the write side first, then what the client still sends is
    /// read and dropped for a moment, so that the close does not reset the connection and take
    /// the answer with it.
    async fn close(mut self) {
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
                if total > 1 << 20 {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
}

/// Hands a connection that opened with the HTTP/2 preface to hyper, with what was read of it.
async fn serve_h2<F, Fut>(mut conn: Conn, handler: F, stop: oneshot::Receiver<()>)
where
    F: Fn(Request<ProxyBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let Some(reader) = conn.reader.take() else { return };
    let Ok(stream) = reader.io.reunite(conn.wr) else { return };
    let io = Rewind { prefix: reader.buf.freeze(), inner: stream };
    let activity = Arc::new(super::Activity::default());
    let service = super::counted(activity.clone(), move |req: Request<Incoming>| {
        let answer = handler(req.map(ProxyBody::Hyper));
        async move {
            let Ok(mut resp) = answer.await;
            // hyper writes the head from the map: raw header lines go into it.
            if let ProxyBody::Upstream(upstream) = resp.body_mut()
                && let Some(raw) = upstream.take_raw()
            {
                let extra = std::mem::take(resp.headers_mut());
                let headers = resp.headers_mut();
                *headers = raw.to_map();
                headers.extend(extra);
            }
            Ok(resp)
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    super::drive(conn, activity, stop).await;
}

/// A stream that first gives back bytes already read from it.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
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

impl AsyncWrite for Rewind {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn take(raw: &[u8]) -> (Result<Option<Head>, ProxyError>, usize) {
        let mut buf = BytesMut::from(raw);
        let head = take_head(&mut buf);
        (head, buf.len())
    }

    #[test]
    fn heads_framing_and_keep_alive() {
        let (head, rest) = take(b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET");
        let head = head.unwrap().unwrap();
        assert_eq!(
            (head.req.method(), head.req.uri().path(), head.req.uri().query()),
            (&Method::POST, "/a", Some("b=1"))
        );
        assert_eq!((head.framing, head.keep_alive, rest), (Framing::Length(3), true, 6));
        assert_eq!(head.req.headers()["host"], "x");
        let ka = |raw: &[u8]| take(raw).0.unwrap().unwrap().keep_alive;
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: te, Close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        let head =
            take(b"PUT http://api.x.com/p HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
        let head = head.0.unwrap().unwrap();
        assert_eq!(head.req.uri().authority().map(|a| a.as_str()), Some("api.x.com"));
        assert!(head.expect_continue && matches!(head.framing, Framing::Chunked(_)));
        assert!(take(b"GET / HTTP/1.1\r\nHost: x\r\n").0.unwrap().is_none(), "partial");
    }

    #[test]
    fn bad_and_oversized_heads_are_refused() {
        let status = |raw: &[u8]| take(raw).0.err().map(|e| e.classify().0.as_u16());
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), Some(400));
        assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/3.0\r\n\r\n"), Some(400));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(status(many.as_bytes()), Some(431));
        let long = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEADER_BYTES));
        assert_eq!(status(long.as_bytes()), Some(431), "partial, but already too long");
    }
}
