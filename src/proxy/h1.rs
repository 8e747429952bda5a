//! HTTP/1.1 to an upstream, driven by the request's own task.
//!
//! The request is written, the response head read and the body streamed by whoever polls it:
//! there is no connection task, no channel and no wake-up between the request and its
//! connection. A connection whose response was read to its end, and that may be kept alive, goes
//! back to the [`Pool`]; one dropped in the middle of a body is closed.

use crate::fasthash::FastMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::{BoxError, ProxyBody};
use crate::http1::{BodyState, Framing, put_chunk_size, put_header, put_length};

/// The largest response head accepted from an upstream (offsets into it fit in a u16).
pub const MAX_HEAD: usize = 64 * 1024 - 1;
/// The most response headers accepted from an upstream.
const MAX_HEADERS: usize = 100;
/// Read buffer growth.
const READ_CHUNK: usize = 16 * 1024;
/// A buffered request body up to this size is written with its head in one write.
const COALESCE: usize = 16 * 1024;

/// A TCP connection, with or without TLS.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a request on a connection failed.
#[derive(Debug)]
pub enum SendError {
    /// The connection ended (EOF, reset, broken pipe) before any byte of an answer: on a reused
    /// connection, the upstream had closed it while it was idle.
    Closed,
    Io(io::Error),
    /// The upstream's answer is not HTTP/1.x as bearerd accepts it.
    Protocol(&'static str),
    /// The request body could not be read from the application.
    Body(BoxError),
    /// The answer's head did not arrive by the deadline.
    Timeout,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection closed before an answer"),
            SendError::Io(e) => write!(f, "{e}"),
            SendError::Protocol(m) => write!(f, "invalid HTTP/1 answer: {m}"),
            SendError::Body(e) => write!(f, "reading the request body failed: {e}"),
            SendError::Timeout => f.write_str("no answer before the deadline"),
        }
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// One upstream connection speaking HTTP/1.1, with its buffers.
pub struct Conn {
    io: Io,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    key: Arc<str>,
    /// Has carried a request before this one.
    pub reused: bool,
    /// When it was opened or last checked out: its idle time is counted from there (a little
    /// early, which only ever closes it sooner), so that returning it reads no clock.
    used: Instant,
    /// The deadline of the request it carries. One timer for the connection's life, moved later
    /// for each request (which touches no timer wheel), instead of one registered and cancelled
    /// per request.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The answer being read: how its body ends, whether the connection carries another request
    /// after it, and its header lines while they wait to be passed on raw. Kept here, on the
    /// heap, so that the body handed around with the answer is a pointer.
    framing: Framing,
    keep_alive: bool,
    raw: Option<RawHead>,
}

/// The response head. Its header lines stay as they came ([`RawHead`]) when they can be passed
/// on as they are; otherwise they are in `headers`.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub raw: Option<RawHead>,
    /// The framing `Transfer-Encoding` and `Content-Length` declare.
    declared: Option<Framing>,
}

/// The most lines a [`RawHead`] leaves out.
const MAX_SKIPPED: usize = 6;

/// The header lines of an upstream answer as they arrived, minus hop-by-hop headers and framing:
/// an HTTP/1.1 client gets them copied in one piece, with no header map built and dropped.
/// Used for answers with a body, CRLF line ends and no `Connection` naming other headers.
#[derive(Clone)]
pub struct RawHead {
    bytes: Bytes,
    /// Where the first header line starts and the last one ends (after its CRLF).
    lines: (u16, u16),
    /// Lines left out (hop-by-hop, `Content-Length`), in order.
    skipped: [(u16, u16); MAX_SKIPPED],
    n_skipped: u8,
    dated: bool,
    /// Header lines added behind the upstream's (CRLF-terminated, well-formed).
    extra: Bytes,
}

impl RawHead {
    /// Appends the header lines that are passed on.
    pub fn put_lines(&self, w: &mut Vec<u8>) {
        let mut at = self.lines.0 as usize;
        for &(start, end) in &self.skipped[..self.n_skipped as usize] {
            w.extend_from_slice(&self.bytes[at..start as usize]);
            at = end as usize;
        }
        w.extend_from_slice(&self.bytes[at..self.lines.1 as usize]);
        w.extend_from_slice(&self.extra);
    }

    /// Adds header lines behind the upstream's: `lines` are `name: value\r\n` lines, valid as
    /// they are.
    pub fn set_extra(&mut self, lines: Bytes) {
        self.extra = lines;
    }

    /// Whether the lines include `Date`.
    pub fn dated(&self) -> bool {
        self.dated
    }

    /// The lines that are passed on, as a header map (for HTTP/2 clients).
    pub fn to_map(&self) -> HeaderMap {
        let start = self.lines.0 as usize;
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        // The lines were parsed before: this cannot fail.
        let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&self.bytes[start..], &mut raw)
        else {
            return HeaderMap::new();
        };
        let mut map = HeaderMap::with_capacity(parsed.len() + 2);
        for h in parsed.iter() {
            if is_left_out(h.name.as_bytes()) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_maybe_shared(self.bytes.slice_ref(h.value)),
            ) {
                map.append(name, value);
            }
        }
        for line in self.extra.split(|&b| b == b'\n').filter_map(|l| l.strip_suffix(b"\r")) {
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let value = line[colon + 1..].trim_ascii();
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_maybe_shared(self.extra.slice_ref(value)))
            {
                map.append(name, value);
            }
        }
        map
    }
}

/// Lines a [`RawHead`] leaves out: hop-by-hop, framing, and the headers bearerd sets on every
/// answer itself (they are added behind the lines, and an upstream's must not come first).
fn is_left_out(name: &[u8]) -> bool {
    crate::http1::is_hop_by_hop(name)
        || name.eq_ignore_ascii_case(b"content-length")
        || crate::proxy::is_answer_header(name)
}

impl Conn {
    /// A connection lives on the heap: it moves between the pool, the request and its body.
    pub fn new(io: Io, key: Arc<str>) -> Box<Conn> {
        Box::new(Conn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(512),
            key,
            reused: false,
            used: Instant::now(),
            timer: None,
            framing: Framing::Empty,
            keep_alive: false,
            raw: None,
        })
    }

    /// False when the connection was closed (or sent something unasked) while it was idle. Costs
    /// no system call unless the socket has had an event since its last read.
    fn idle_ok(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut buf), Poll::Pending)
    }

    /// Writes the request and reads the response head, which must arrive before `deadline`.
    /// `target` is the origin-form path and query; `authority` becomes the Host header. The
    /// answer's body reads from this connection, which goes back to `pool` at its end.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        mut self: Box<Self>,
        pool: &Arc<Pool>,
        method: &Method,
        target: &str,
        authority: &str,
        headers: &HeaderMap,
        body: ProxyBody,
        deadline: Instant,
    ) -> Result<Response<ProxyBody>, (SendError, bool)> {
        let reused = self.reused;
        let mut timer = match self.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let result = {
            let mut exchange = std::pin::pin!(self.exchange(method, target, authority, headers, body));
            // The timer is polled only when the exchange waits.
            std::future::poll_fn(|cx| match exchange.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| Err(SendError::Timeout)),
            })
            .await
        };
        self.timer = Some(timer);
        match result {
            Ok((head, framing, keep_alive)) => {
                let Head { status, version, mut headers, raw, .. } = head;
                self.reused = true;
                self.framing = framing;
                self.keep_alive = keep_alive;
                let empty = framing == Framing::Empty;
                match raw {
                    // Nobody polls an empty body, so nobody would take raw lines from it.
                    Some(raw) if empty => headers = raw.to_map(),
                    raw => self.raw = raw,
                }
                let mut body = UpstreamBody { conn: Some(self), pool: pool.clone() };
                if empty {
                    // The connection is free now.
                    body.finish();
                }
                let mut resp = Response::new(ProxyBody::Upstream(body));
                *resp.status_mut() = status;
                *resp.version_mut() = version;
                *resp.headers_mut() = headers;
                Ok(resp)
            }
            Err(e) => Err((e, reused)),
        }
    }

    async fn exchange(
        &mut self,
        method: &Method,
        target: &str,
        authority: &str,
        headers: &HeaderMap,
        body: ProxyBody,
    ) -> Result<(Head, Framing, bool), SendError> {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(method.as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(target.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        w.extend_from_slice(authority.as_bytes());
        w.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            put_header(w, name.as_str().as_bytes(), value.as_bytes());
        }
        let io_err = |e: io::Error| if is_closed(&e) { SendError::Closed } else { SendError::Io(e) };
        match body {
            ProxyBody::Empty => {
                if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                    put_length(w, Some(0));
                }
                w.extend_from_slice(b"\r\n");
                self.io.write_all(w).await.map_err(io_err)?;
            }
            ProxyBody::Full(b) => {
                let b = b.unwrap_or_default();
                put_length(w, Some(b.len() as u64));
                w.extend_from_slice(b"\r\n");
                if b.len() <= COALESCE {
                    w.extend_from_slice(&b);
                    self.io.write_all(w).await.map_err(io_err)?;
                } else {
                    self.io.write_all(w).await.map_err(io_err)?;
                    self.io.write_all(&b).await.map_err(io_err)?;
                }
            }
            mut stream => {
                let exact = stream.size_hint().exact();
                put_length(w, exact);
                w.extend_from_slice(b"\r\n");
                self.io.write_all(w).await.map_err(io_err)?;
                let mut sent = 0u64;
                while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_frame(cx)).await {
                    let Ok(data) = frame.map_err(SendError::Body)?.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    sent += data.len() as u64;
                    if exact.is_some() {
                        if exact.is_some_and(|n| sent > n) {
                            return Err(SendError::Body("the request body is longer than its content-length".into()));
                        }
                        self.io.write_all(&data).await.map_err(io_err)?;
                    } else {
                        self.wbuf.clear();
                        put_chunk_size(&mut self.wbuf, data.len());
                        self.io.write_all(&self.wbuf).await.map_err(io_err)?;
                        self.io.write_all(&data).await.map_err(io_err)?;
                        self.io.write_all(b"\r\n").await.map_err(io_err)?;
                    }
                }
                match exact {
                    Some(n) if sent != n => {
                        return Err(SendError::Body("the request body is shorter than its content-length".into()));
                    }
                    Some(_) => {}
                    None => self.io.write_all(crate::http1::LAST_CHUNK).await.map_err(io_err)?,
                }
            }
        }
        self.io.flush().await.map_err(io_err)?;

        // Read heads until one that is not 1xx informational.
        let mut seen_any = false;
        loop {
            let head = loop {
                if let Some(head) = take_head(&mut self.rbuf, *method == Method::HEAD)? {
                    break head;
                }
                if self.rbuf.len() >= MAX_HEAD {
                    return Err(SendError::Protocol("response head too large"));
                }
                let n = self.fill().await.map_err(|e| if seen_any { SendError::Io(e) } else { io_err(e) })?;
                if n == 0 {
                    return Err(if seen_any || !self.rbuf.is_empty() {
                        SendError::Protocol("connection closed inside the response head")
                    } else {
                        SendError::Closed
                    });
                }
                seen_any = true;
            };
            let Some((head, keep_alive)) = head else {
                // 1xx informational: the real answer follows.
                continue;
            };
            let framing = framing(method, head.status, head.declared);
            let keep_alive = keep_alive && !matches!(framing, Framing::Close);
            return Ok((head, framing, keep_alive));
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        crate::http1::poll_fill(&mut self.io, &mut self.rbuf, READ_CHUNK, cx)
    }
}

/// Takes a complete response head off the front of `buf`, if one is there: `Some(None)` for a
/// 1xx informational head, else the head and whether it allows keep-alive. The header values
/// share the head's bytes. An answer with a body (`head_request` false) whose lines can be passed
/// on as they are keeps them raw; any other gets a header map, without `Connection` and
/// `Keep-Alive` (unless `Connection` names other headers, which the caller then strips with it).
fn take_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Option<(Head, bool)>>, SendError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let (code, version, mut keep_alive, mut names_others, len, declared, mut raw_ok, lines, mut dated);
    let mut skipped = [(0u16, 0u16); MAX_SKIPPED];
    let mut n_skipped = 0usize;
    {
        let mut resp = httparse::Response::new(&mut []);
        len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut raw) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
            Ok(httparse::Status::Complete(_)) => return Err(SendError::Protocol("response head too large")),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(SendError::Protocol("too many headers")),
            Err(_) => return Err(SendError::Protocol("malformed response head")),
        };
        code = resp.code.unwrap_or(0);
        version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        keep_alive = version == Version::HTTP_11;
        names_others = false;
        dated = false;
        let head = &buf[..len];
        let base = head.as_ptr() as usize;
        let offset = |s: &[u8]| s.as_ptr() as usize - base;
        // Raw lines need CRLF ends: each line ends where the next one starts, the last one
        // before the final CRLF.
        raw_ok = !head_request && head.ends_with(b"\r\n\r\n");
        let starts = resp.headers.iter().map(|h| offset(h.name.as_bytes()));
        let ends = starts.clone().skip(1).chain(std::iter::once(len - 2));
        lines = (resp.headers.first().map_or(len - 2, |h| offset(h.name.as_bytes())), len - 2);
        let (mut te, mut lengths) = (None, [&[][..]; 2]);
        let mut n_lengths = 0;
        for ((h, start), end) in resp.headers.iter().zip(starts).zip(ends) {
            let name = h.name.as_bytes();
            raw_ok &= head[..end].ends_with(b"\r\n");
            if name.eq_ignore_ascii_case(b"connection") {
                let c = crate::http1::connection_tokens(h.value);
                keep_alive = !c.close && (keep_alive || (c.keep_alive && version == Version::HTTP_10));
                names_others |= c.names_others;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te = Some(h.value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                match lengths.get_mut(n_lengths) {
                    Some(slot) => *slot = h.value,
                    // More than two Content-Length lines: whatever they say, refused.
                    None => return Err(SendError::Protocol("bad content-length")),
                }
                n_lengths += 1;
            } else if name.eq_ignore_ascii_case(b"date") {
                dated = true;
            }
            if is_left_out(name) {
                match skipped.get_mut(n_skipped) {
                    Some(slot) => *slot = (start as u16, end as u16),
                    None => raw_ok = false,
                }
                n_skipped += 1;
            }
        }
        declared = match code {
            100..=199 => None,
            _ => crate::http1::declared_by(te, lengths[..n_lengths].iter().copied(), true)
                .map_err(SendError::Protocol)?,
        };
    }
    let bytes = buf.split_to(len).freeze();
    match code {
        101 => return Err(SendError::Protocol("protocol upgrades are not proxied")),
        100..=199 => return Ok(Some(None)),
        _ => {}
    }
    let status = StatusCode::from_u16(code).map_err(|_| SendError::Protocol("bad status"))?;
    // Errors (read for Retry-After), 204 and 304 get a map.
    raw_ok &=
        !names_others && (200..400).contains(&code) && code != 204 && code != 304 && declared != Some(Framing::Empty);
    if raw_ok {
        let raw = RawHead {
            bytes,
            lines: (lines.0 as u16, lines.1 as u16),
            skipped,
            n_skipped: n_skipped as u8,
            dated,
            extra: Bytes::new(),
        };
        let head = Head { status, version, headers: HeaderMap::new(), raw: Some(raw), declared };
        return Ok(Some(Some((head, keep_alive))));
    }
    let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&bytes[lines.0..], &mut parsed) else {
        return Err(SendError::Protocol("malformed response head"));
    };
    // Room for the two x-bearerd-* headers added to every answer.
    let mut headers = HeaderMap::with_capacity(parsed.len() + 2);
    for h in parsed.iter() {
        let name = h.name.as_bytes();
        if !names_others && (name.eq_ignore_ascii_case(b"connection") || name.eq_ignore_ascii_case(b"keep-alive")) {
            continue;
        }
        let name = HeaderName::from_bytes(name).map_err(|_| SendError::Protocol("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(h.value))
            .map_err(|_| SendError::Protocol("bad header value"))?;
        headers.append(name, value);
    }
    Ok(Some(Some((Head { status, version, headers, raw: None, declared }, keep_alive))))
}

/// RFC 9112 6.3: how the body of this response is delimited.
fn framing(method: &Method, status: StatusCode, declared: Option<Framing>) -> Framing {
    if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Framing::Empty;
    }
    declared.unwrap_or(Framing::Close)
}

/// A response body read from its connection as it is polled (the connection holds the state).
pub struct UpstreamBody {
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("framing", &self.conn.as_ref().map(|c| c.framing)).finish()
    }
}

impl UpstreamBody {
    /// The answer's raw header lines, for whoever writes the answer's head (once, before the
    /// body is read).
    pub fn take_raw(&mut self) -> Option<RawHead> {
        self.conn.as_mut()?.raw.take()
    }

    /// The answer's raw header lines, when it has them.
    pub fn raw_mut(&mut self) -> Option<&mut RawHead> {
        self.conn.as_mut()?.raw.as_mut()
    }

    /// The body is over: the connection goes back to the pool when it may be reused.
    fn finish(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && conn.keep_alive
        {
            conn.framing = Framing::Empty;
            conn.raw = None;
            self.pool.put(conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.framing == Framing::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        self.conn.as_ref().map_or(Framing::Empty, |c| c.framing).size_hint()
    }
}

impl UpstreamBody {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
        let (frame, state) =
            ready!(crate::http1::poll_frame(&mut conn.framing, &mut conn.rbuf, &mut conn.io, READ_CHUNK, cx));
        match state {
            BodyState::Reading => {}
            // The connection is free before the caller polls again.
            BodyState::Over => self.finish(),
            BodyState::Failed => self.conn = None,
        }
        Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
    }
}

/// One origin's idle connections, and the connections being opened to it.
#[derive(Default)]
struct Origin {
    /// Boxed as they are everywhere else: a checkout moves a pointer, not the connection.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Conn>>,
    connecting: usize,
    waiting: usize,
    /// Wakes a waiting request when a connection comes back or a connect slot frees up.
    ready: Arc<tokio::sync::Notify>,
}

/// Idle keep-alive connections by `scheme://authority`, and at most `max_connecting` connections
/// being opened to one origin at a time: requests released together (a burst, or thousands that
/// waited for one token refresh) take connections as they come back or open them a few at a
/// time, instead of flooding the upstream's accept queue.
pub struct Pool {
    origins: Mutex<FastMap<Arc<str>, Origin>>,
    timeout: Duration,
    max_per_host: usize,
    max_connecting: usize,
}

/// What a request gets from [`Pool::checkout`].
pub enum Checkout {
    /// A live pooled connection.
    Idle(Box<Conn>),
    /// Permission to open a connection (given back when dropped).
    Connect(ConnectPermit),
    /// Wait for [`WaitTicket::ready`], then check out again.
    Wait(WaitTicket),
}

/// A request waiting for a connection to an origin; counted as waiting until dropped.
pub struct WaitTicket {
    pool: Arc<Pool>,
    key: Arc<str>,
    ready: Arc<tokio::sync::Notify>,
}

impl WaitTicket {
    /// Resolves when a connection came back or a connect slot freed up, or after a short while
    /// in any case (a safety net: the caller checks out again either way).
    pub async fn ready(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(100), self.ready.notified()).await;
    }

    /// Passes the wake-up on to the next waiter: this one found an HTTP/2 connection, which
    /// every waiter can share.
    pub fn pass_on(&self) {
        self.ready.notify_one();
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        if let Some(o) = self.pool.lock().get_mut(&self.key) {
            o.waiting -= 1;
        }
    }
}

/// One of an origin's connect slots; dropping it frees the slot.
pub struct ConnectPermit {
    pool: Arc<Pool>,
    key: Arc<str>,
}

impl Drop for ConnectPermit {
    fn drop(&mut self) {
        let mut map = self.pool.lock();
        if let Some(o) = map.get_mut(&self.key) {
            o.connecting -= 1;
            if o.waiting > 0 {
                o.ready.notify_one();
            }
        }
    }
}

impl Pool {
    pub fn new(timeout: Duration, max_per_host: usize, max_connecting: usize) -> Pool {
        Pool { origins: Mutex::new(FastMap::default()), timeout, max_per_host, max_connecting }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<Arc<str>, Origin>> {
        self.origins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used live connection to `key`; else a connect slot; else a wait.
    pub fn checkout(self: &Arc<Self>, key: &str) -> Checkout {
        let now = Instant::now();
        let mut map = self.lock();
        let origin = match map.get_mut(key) {
            Some(o) => o,
            None => map.entry(Arc::from(key)).or_default(),
        };
        while let Some(mut conn) = origin.idle.pop() {
            if now.duration_since(conn.used) >= self.timeout {
                // Those below came back earlier: closed too (at worst a little early).
                origin.idle.clear();
                break;
            }
            if conn.idle_ok() {
                conn.used = now;
                return Checkout::Idle(conn);
            }
        }
        let take = origin.connecting < self.max_connecting;
        if take {
            origin.connecting += 1;
        } else {
            origin.waiting += 1;
        }
        let ready = origin.ready.clone();
        let key = map.get_key_value(key).map(|(k, _)| k.clone()).unwrap_or_else(|| Arc::from(key));
        drop(map);
        let pool = self.clone();
        if take {
            Checkout::Connect(ConnectPermit { pool, key })
        } else {
            Checkout::Wait(WaitTicket { pool, key, ready })
        }
    }

    fn put(&self, conn: Box<Conn>) {
        let mut map = self.lock();
        let origin = match map.get_mut(&*conn.key) {
            Some(o) => o,
            None => map.entry(conn.key.clone()).or_default(),
        };
        if origin.idle.len() < self.max_per_host {
            origin.idle.push(conn);
            if origin.waiting > 0 {
                origin.ready.notify_one();
            }
        }
    }

    /// Closes connections idle for longer than the timeout.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, o| {
            o.idle.retain(|c| now.duration_since(c.used) < self.timeout);
            !o.idle.is_empty() || o.connecting > 0 || o.waiting > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = StatusCode::OK;
        assert_eq!(framing(&Method::HEAD, ok, Some(Framing::Length(5))), Framing::Empty);
        assert_eq!(framing(&Method::GET, StatusCode::NO_CONTENT, None), Framing::Empty);
        assert_eq!(framing(&Method::GET, ok, Some(Framing::Length(5))), Framing::Length(5));
        assert_eq!(framing(&Method::GET, ok, None), Framing::Close);
        let declared = |raw: &[u8]| take_head(&mut BytesMut::from(raw), false).map(|h| h.unwrap().unwrap().0.declared);
        assert!(declared(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n").is_err());
        assert!(declared(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert_eq!(declared(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap(), Some(Framing::Close));
    }

    #[tokio::test]
    async fn connects_to_one_origin_are_paced() {
        let pool = Arc::new(Pool::new(Duration::from_secs(60), 16, 2));
        let (a, b) = (pool.checkout("http://o"), pool.checkout("http://o"));
        assert!(matches!((&a, &b), (Checkout::Connect(_), Checkout::Connect(_))));
        let Checkout::Wait(ticket) = pool.checkout("http://o") else { panic!("a third connect at once") };
        assert!(matches!(pool.checkout("http://other"), Checkout::Connect(_)), "per origin");
        let waiting = || pool.lock().get("http://o").map(|o| (o.connecting, o.waiting));
        assert_eq!(waiting(), Some((2, 1)));
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), ticket.ready()).await.expect("woken by the freed slot");
        drop(ticket);
        assert_eq!(waiting(), Some((1, 0)));
        assert!(matches!(pool.checkout("http://o"), Checkout::Connect(_)));
        drop(b);
    }

    #[test]
    fn heads_and_keep_alive() {
        let take = |raw: &[u8]| {
            let mut buf = BytesMut::from(raw);
            take_head(&mut buf, false).map(|h| (h, buf.len()))
        };
        let (head, rest) = take(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok").unwrap();
        let (head, ka) = head.unwrap().unwrap();
        assert_eq!((head.status.as_u16(), rest, ka), (200, 2, true));
        let ka = |raw: &[u8]| take(raw).unwrap().0.unwrap().unwrap().1;
        assert!(!ka(b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\n\r\n"));
        assert!(!ka(b"HTTP/1.0 200 OK\r\n\r\n"));
        assert!(ka(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n"));
        let (head, _) = take(b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nx-hop: 1\r\n\r\n").unwrap();
        assert!(head.unwrap().unwrap().0.headers.contains_key("connection"), "kept for the caller to strip x-hop");
        let (head, rest) = take(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert!(matches!(head, Some(None)) && rest == 19);
        assert!(take(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap().0.is_none());
        assert!(take(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(take(b"HTTP/1.1 101 Switching\r\n\r\n").is_err());
    }

    #[test]
    fn raw_lines_leave_out_hop_by_hop_and_framing() {
        let head = |raw: &[u8], head_request: bool| {
            take_head(&mut BytesMut::from(raw), head_request).unwrap().unwrap().unwrap().0
        };
        let ok = b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nDate: d\r\n\r\nok";
        let raw = head(ok, false).raw.expect("raw");
        let mut w = Vec::new();
        raw.put_lines(&mut w);
        assert_eq!(w, b"Server: x\r\nX-A: 1\r\nDate: d\r\n");
        assert!(raw.dated());
        let map = raw.to_map();
        assert_eq!((map.len(), map["x-a"].as_bytes(), map["server"].as_bytes()), (3, &b"1"[..], &b"x"[..]));
        // No raw lines: a HEAD answer, an error, 204/304, bare LF, Connection naming a header.
        let with_map = |raw: &[u8], head_request: bool| head(raw, head_request).raw.is_none();
        assert!(with_map(ok, true));
        assert!(with_map(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 1\r\n\r\n", false));
        assert!(with_map(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", false));
        assert!(with_map(b"HTTP/1.1 200 OK\nContent-Length: 2\n\n", false));
        assert!(with_map(b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nx-hop: 1\r\nContent-Length: 2\r\n\r\n", false));
        let mapped =
            head(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false);
        assert_eq!((mapped.headers.len(), mapped.headers["retry-after"].as_bytes()), (2, &b"1"[..]));
    }
}
