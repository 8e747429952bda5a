//! The server side of an HTTP/1.1 connection: request heads taken off the read buffer, request
//! bodies read as they are polled ([`ClientBody`]), and answer heads written.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, SizeHint};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::answer::ResponseHead;
use super::framing::{self, BodyState, Framing};
use super::io::ReadSide;
use super::write::{Delimit, put_delimit, put_header};
use super::{BoxError, HttpError, MAX_HEADERS, Ranges, connection_tokens, fill_map, keeps_alive};

/// A request head taken off the read buffer.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) req: Request<()>,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    /// The (first) `Proxy-Authorization` value, set aside rather than put in the headers: a
    /// proxy's credentials are its own, never forwarded (RFC 9110 11.7.1), and the map does not
    /// pay for a header only to drop it. Its bytes are as httparse read them (no control
    /// characters); the head's buffer is shared, not copied.
    pub(crate) proxy_authorization: Option<bytes::Bytes>,
}

/// Takes a complete request head off the front of `buf`, if one is there. A head over
/// `max_bytes` or with more than [`MAX_HEADERS`] lines is [`HttpError::TooLarge`], also while it
/// is still arriving. The header values share the head's bytes; the map comes from `new_map`,
/// given the number of lines.
pub(crate) fn parse_request(
    buf: &mut BytesMut,
    max_bytes: usize,
    new_map: impl FnOnce(usize) -> HeaderMap,
) -> Result<Option<RequestHead>, HttpError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let too_large = || HttpError::TooLarge { limit: max_bytes, count: MAX_HEADERS };
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut ranges: Ranges = [(0, 0, 0, 0); MAX_HEADERS];
    let (len, method, target, version, tokens, mut expect_continue, mut framed);
    let (mut hosts, mut count) = (0, 0);
    let mut proxy_auth: Option<(u32, u32)> = None;
    {
        let mut req = httparse::Request::new(&mut []);
        len = match req.parse_with_uninit_headers(buf, &mut raw) {
            Ok(httparse::Status::Complete(n)) if n <= max_bytes => n,
            Ok(httparse::Status::Partial) if buf.len() <= max_bytes => return Ok(None),
            Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
            Err(e) => return Err(HttpError::malformed(format!("bad request head ({e})"))),
        };
        method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
            .map_err(|_| HttpError::malformed("bad method"))?;
        version = if req.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        expect_continue = false;
        framed = false;
        let base = buf.as_ptr() as usize;
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let path = req.path.unwrap_or_default().as_bytes();
        target = (offset(path), offset(path) + path.len() as u32);
        let mut t = super::ConnectionTokens::default();
        for h in req.headers.iter() {
            let v = offset(h.value);
            if h.name.len() == 19 && proxy_auth.is_none() && h.name.eq_ignore_ascii_case("proxy-authorization") {
                proxy_auth = Some((v, v + h.value.len() as u32));
                continue;
            }
            if h.name.eq_ignore_ascii_case("connection") {
                let c = connection_tokens(h.value);
                t.close |= c.close;
                t.keep_alive |= c.keep_alive;
            } else if h.name.eq_ignore_ascii_case("expect") {
                expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
            } else if h.name.eq_ignore_ascii_case("content-length") || h.name.eq_ignore_ascii_case("transfer-encoding")
            {
                framed = true;
            } else if h.name.eq_ignore_ascii_case("host") {
                hosts += 1;
                if !valid_host(h.value) {
                    return Err(HttpError::malformed("an invalid Host header"));
                }
            }
            let n = offset(h.name.as_bytes());
            ranges[count] = (n, n + h.name.len() as u32, v, v + h.value.len() as u32);
            count += 1;
        }
        tokens = t;
    }
    let bytes = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(bytes.slice(target.0 as usize..target.1 as usize))
        .map_err(|_| HttpError::malformed("bad request target"))?;
    let mut headers = new_map(count);
    fill_map(&mut headers, &bytes, &ranges[..count], |_| false)?;
    // A request without either framing header (most) has no body: no map lookups for them.
    let framing = if framed { request_framing(&headers, version)? } else { Framing::Empty };
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11 && uri.authority().is_none()) {
        return Err(HttpError::malformed("a request needs exactly one Host header"));
    }
    let proxy_authorization = proxy_auth.map(|(s, e)| bytes.slice(s as usize..e as usize));
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(RequestHead {
        req,
        framing,
        keep_alive: keeps_alive(version, tokens),
        expect_continue,
        proxy_authorization,
    }))
}

/// A request's framing (RFC 9112 6): `Transfer-Encoding` must be `chunked` alone, once, and
/// never in an HTTP/1.0 request or beside `Content-Length` (400); another coding is not
/// implemented (501); else `Content-Length`, all of whose values must agree.
fn request_framing(headers: &HeaderMap, version: Version) -> Result<Framing, HttpError> {
    let lengths = || headers.get_all(header::CONTENT_LENGTH).iter().map(|v| v.as_bytes());
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_none() {
        let declared = framing::declared_by(None, lengths(), false).map_err(HttpError::malformed)?;
        return Ok(declared.unwrap_or(Framing::Empty));
    }
    if version == Version::HTTP_10 {
        return Err(HttpError::malformed("transfer-encoding in an HTTP/1.0 request"));
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err(HttpError::malformed("both transfer-encoding and content-length"));
    }
    let mut chunked = framing::Codings::default();
    for value in codings {
        match chunked.add(value.as_bytes()) {
            Ok(()) => {}
            Err(framing::CodingError::Other(coding)) => {
                let coding = String::from_utf8_lossy(coding);
                return Err(HttpError::Unsupported(format!("transfer coding {coding} is not implemented")));
            }
            Err(framing::CodingError::EmptyElement) => return Err(HttpError::malformed(framing::EMPTY_ELEMENT)),
        }
    }
    chunked.finish().map_err(HttpError::malformed)?;
    Ok(Framing::Chunked(framing::Chunk::Size))
}

/// A `Host` value: a host name, an IPv4 or bracketed IPv6 address, an optional port (or empty,
/// as RFC 9110 allows); never a path, user information or whitespace.
fn valid_host(value: &[u8]) -> bool {
    /// Which bytes a Host value may hold (RFC 3986 reg-name, IP literals, port).
    const ALLOWED: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric();
            b += 1;
        }
        let extra = b"-._~:[]%!$&'()*+,;=";
        let mut i = 0;
        while i < extra.len() {
            t[extra[i] as usize] = true;
            i += 1;
        }
        t
    };
    value.iter().all(|&b| ALLOWED[b as usize])
}

/// The read side of a client connection and what has been read from it.
#[derive(Debug)]
pub(crate) struct Reader {
    io: ReadSide,
    pub(crate) buf: BytesMut,
    chunk: usize,
}

impl Reader {
    /// Reads with a buffer that grows by `chunk`.
    pub(crate) fn new(io: ReadSide, chunk: usize) -> Reader {
        Reader { io, buf: BytesMut::new(), chunk }
    }

    /// Reads what is available into the buffer; `Ok(0)` at the end of the connection.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        framing::poll_fill(&mut self.io, &mut self.buf, self.chunk, cx)
    }

    /// The read side, for putting the connection back together.
    pub(crate) fn into_parts(self) -> (ReadSide, BytesMut) {
        (self.io, self.buf)
    }
}

/// The read side a [`ClientBody`] gives back, and whether the body was read to its end (the
/// next request follows it) or not.
#[derive(Debug)]
pub(crate) struct Lent {
    pub(crate) reader: Reader,
    pub(crate) finished: bool,
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.give_back(false);
    }
}

/// The interim answer a client that sent `Expect: 100-continue` waits for.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request body read from the application's connection as it is polled. At its end the read
/// side goes back to the connection for the next request; a body dropped before its end gives it
/// back marked unfinished (the connection then closes after the answer, reading and dropping
/// the rest first); a body that failed takes it with it.
///
/// A client that asked `Expect: 100-continue` gets `100 Continue` when the body is first polled,
/// so a request refused before its body is needed (no template, no token, too large) gets its
/// final status at once and its body is never sent. A body that makes no progress for the stall
/// timeout fails, and the connection closes.
pub(crate) struct ClientBody {
    reader: Option<Reader>,
    framing: Framing,
    back: Option<oneshot::Sender<Lent>>,
    /// Bytes of [`CONTINUE`] written so far; all of it when none is owed.
    continued: usize,
    stall: Duration,
    /// Armed while the body waits for bytes.
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBody").field("framing", &self.framing).finish_non_exhaustive()
    }
}

impl ClientBody {
    /// The body framed as `framing` that `reader` delivers; the reader comes back through the
    /// receiver when the body has been read to its end. `expect_continue`: the client waits for
    /// `100 Continue` before it sends the body. `stall`: how long the body may make no progress.
    pub(crate) fn new(
        reader: Reader,
        framing: Framing,
        expect_continue: bool,
        stall: Duration,
    ) -> (ClientBody, oneshot::Receiver<Lent>) {
        let (back, lent) = oneshot::channel();
        let continued = if expect_continue { 0 } else { CONTINUE.len() };
        (ClientBody { reader: Some(reader), framing, back: Some(back), continued, stall, timer: None }, lent)
    }

    /// Writes what is owed of `100 Continue` (a few bytes on a socket with nothing else in
    /// flight: at once, but waited for like any write).
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(r) = self.reader.as_mut() else { return Poll::Ready(Ok(())) };
        while self.continued < CONTINUE.len() {
            self.continued += ready!(r.io.poll_write_interim(cx, &CONTINUE[self.continued..]))?;
        }
        Poll::Ready(Ok(()))
    }

    fn fail(&mut self) {
        self.reader = None;
        self.back = None;
    }

    fn give_back(&mut self, finished: bool) {
        if let (Some(reader), Some(back)) = (self.reader.take(), self.back.take()) {
            let _ = back.send(Lent { reader, finished });
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Err(e) = ready!(this.poll_continue(cx)) {
            this.fail();
            return Poll::Ready(Some(Err(e.into())));
        }
        let Some(r) = this.reader.as_mut() else { return Poll::Ready(None) };
        let polled = framing::poll_frame(&mut this.framing, &mut r.buf, &mut r.io, r.chunk, cx);
        let Poll::Ready((frame, state)) = polled else {
            // No bytes: the stall timer runs until some come.
            let stall = this.stall;
            let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
            ready!(timer.as_mut().poll(cx));
            this.fail();
            let e = format!("the request body made no progress for {} s", stall.as_secs());
            return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::TimedOut, e).into())));
        };
        if let Some(timer) = this.timer.as_mut() {
            timer.as_mut().reset(tokio::time::Instant::now() + this.stall);
        }
        match state {
            BodyState::Reading => {}
            BodyState::Over => this.give_back(true),
            BodyState::Failed => this.fail(),
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

/// How an answer goes out after [`put_answer_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sending {
    /// The body's delimitation (none for a bodiless answer).
    pub(crate) delimit: Delimit,
    /// Whether the connection stays open after it.
    pub(crate) keep_alive: bool,
}

/// Writes an answer's head into `w`: its raw header lines, then its map (less `Connection` and,
/// unless bodiless, the framing headers), `Date` when it has none, its framing and `Connection`.
/// `size` is the body's exact length when known; `head_request` and `http10` describe the
/// request; `keep_alive` whether the connection may stay open (a `close` in the map closes it);
/// `date` gives the date, only asked for when the head has none.
pub(crate) fn put_answer_head<D: AsRef<[u8]>>(
    w: &mut Vec<u8>,
    head: &ResponseHead,
    size: Option<u64>,
    head_request: bool,
    http10: bool,
    mut keep_alive: bool,
    date: impl FnOnce() -> D,
) -> Sending {
    let status = head.status;
    // 1xx and 204 never carry framing (RFC 9110 8.6); 304 and HEAD answers keep their length.
    let unframed = status.is_informational() || status == StatusCode::NO_CONTENT;
    let bodiless = head_request || unframed || status == StatusCode::NOT_MODIFIED;
    w.extend_from_slice(b"HTTP/1.1 ");
    w.extend_from_slice(status.as_str().as_bytes());
    w.push(b' ');
    match head.reason.as_deref() {
        // RFC 9112 4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ); ours keep to VCHAR and SP.
        Some(r) if r.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) => w.extend_from_slice(r.as_bytes()),
        _ => w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    w.extend_from_slice(b"\r\n");
    let mut dated = false;
    if let Some(raw) = &head.raw {
        raw.put_lines(w);
        dated = raw.dated();
    }
    for (name, value) in &head.headers {
        if name == header::CONNECTION {
            keep_alive &= !connection_tokens(value.as_bytes()).close;
            continue;
        }
        if (!bodiless || unframed) && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING) {
            continue;
        }
        dated |= name == header::DATE;
        put_header(w, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        put_header(w, b"date", date().as_ref());
    }
    let delimit = match (bodiless, size) {
        (true, _) => Delimit::None,
        (false, Some(n)) => Delimit::Length(n),
        (false, None) if !http10 => Delimit::Chunked,
        // HTTP/1.0 has no chunks: the body ends with the connection.
        (false, None) => {
            keep_alive = false;
            Delimit::Close
        }
    };
    put_delimit(w, delimit);
    if !keep_alive {
        w.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        w.extend_from_slice(b"connection: keep-alive\r\n");
    }
    w.extend_from_slice(b"\r\n");
    Sending { delimit, keep_alive }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;

    fn take(raw: &[u8]) -> (Result<Option<RequestHead>, HttpError>, usize) {
        let mut buf = BytesMut::from(raw);
        let head = parse_request(&mut buf, MAX, HeaderMap::with_capacity);
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
        assert!(!ka(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: te, Close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n"));
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
    fn a_proxy_credential_is_set_aside_not_put_in_the_headers() {
        let raw = b"GET http://x/ HTTP/1.1\r\nHost: x\r\nPROXY-Authorization: Basic YTpi\r\nProxy-Authorization: Bearer t\r\nX-A: 1\r\n\r\n";
        let head = take(raw).0.unwrap().unwrap();
        assert_eq!(head.proxy_authorization.as_ref().unwrap(), "Basic YTpi", "the first one");
        let h = head.req.headers();
        assert_eq!(
            h.get_all("proxy-authorization").iter().collect::<Vec<_>>(),
            ["Bearer t"],
            "a second stays, to be dropped"
        );
        assert_eq!((h.len(), h["x-a"].to_str().unwrap()), (3, "1"));
        assert!(take(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").0.unwrap().unwrap().proxy_authorization.is_none());
    }

    #[test]
    fn bad_and_oversized_heads_are_refused() {
        let err = |raw: &[u8]| take(raw).0.err();
        let malformed = |raw: &[u8]| matches!(err(raw), Some(HttpError::Malformed(_)));
        let too_large = |raw: &[u8]| matches!(err(raw), Some(HttpError::TooLarge { .. }));
        assert!(malformed(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(malformed(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"));
        let unsupported = |raw: &[u8]| matches!(err(raw), Some(HttpError::Unsupported(_)));
        assert!(unsupported(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"));
        assert!(unsupported(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"));
        assert!(unsupported(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: cow, chunked\r\n\r\n"));
        assert!(unsupported(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"
        ));
        assert!(malformed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"));
        assert!(malformed(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(malformed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n"));
        assert!(malformed(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), "TE in HTTP/1.0");
        // Host: exactly one, valid, on an HTTP/1.1 origin-form request.
        assert!(malformed(b"GET / HTTP/1.1\r\n\r\n"), "no Host");
        assert!(malformed(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), "two Hosts");
        assert!(malformed(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"));
        assert!(malformed(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"));
        assert!(malformed(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"));
        let ok = |raw: &[u8]| matches!(take(raw).0, Ok(Some(_)));
        assert!(ok(b"GET / HTTP/1.1\r\nHost: api.example.com:8443\r\n\r\n"));
        assert!(ok(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"));
        assert!(ok(b"GET http://a.example/x HTTP/1.1\r\n\r\n"), "absolute form carries its authority");
        assert!(ok(b"GET / HTTP/1.0\r\n\r\n"), "HTTP/1.0 needs no Host");
        assert!(ok(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"));
        assert!(malformed(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"));
        assert!(malformed(b"GET / HTTP/3.0\r\n\r\n"));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert!(too_large(many.as_bytes()));
        let long = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(MAX));
        assert!(too_large(long.as_bytes()), "partial, but already too long");
    }

    #[test]
    fn answer_heads() {
        let mut head = ResponseHead::new(StatusCode::OK);
        head.headers.insert("x-a", "1".parse().unwrap());
        head.headers.insert("content-length", "9".parse().unwrap());
        let write = |head: &ResponseHead, size, head_request, http10, keep_alive| {
            let mut w = Vec::new();
            let s = put_answer_head(&mut w, head, size, head_request, http10, keep_alive, || b"D");
            (String::from_utf8(w).unwrap(), s)
        };
        let (w, s) = write(&head, Some(2), false, false, true);
        assert_eq!(w, "HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: D\r\ncontent-length: 2\r\n\r\n");
        assert_eq!(s, Sending { delimit: Delimit::Length(2), keep_alive: true });
        let (w, s) = write(&head, None, false, true, true);
        assert!(w.ends_with("date: D\r\nconnection: close\r\n\r\n"), "{w}");
        assert_eq!(s, Sending { delimit: Delimit::Close, keep_alive: false });
        let (w, s) = write(&head, None, true, false, true);
        assert!(w.contains("content-length: 9\r\n"), "a HEAD answer keeps its length: {w}");
        assert_eq!(s.delimit, Delimit::None);
        head.headers.insert("connection", "close".parse().unwrap());
        assert!(!write(&head, Some(0), false, false, true).1.keep_alive);
    }
}
