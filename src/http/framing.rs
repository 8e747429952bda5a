//! How an HTTP/1.1 message body is delimited (RFC 9112 6) and read as its bytes arrive: the
//! framing a message declares, the chunked decoder, and one body reader for both sides.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::AsyncRead;

/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// The largest trailer section accepted (its lines are read and dropped).
const MAX_TRAILERS: u32 = 16 * 1024;

/// How a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body, or all of it has been read.
    Empty,
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// The body ends when the connection does (responses only).
    Close,
}

impl Framing {
    /// What is known of the remaining length.
    pub(crate) fn size_hint(self) -> hyper::body::SizeHint {
        match self {
            Framing::Empty => hyper::body::SizeHint::with_exact(0),
            Framing::Length(n) => hyper::body::SizeHint::with_exact(n),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    /// In the trailer section, this many bytes and field lines into it.
    Trailer {
        bytes: u32,
        lines: u32,
    },
}

/// The framing a message's `Transfer-Encoding` and `Content-Length` declare (RFC 9112 6.1-6.3),
/// or `None` when it has neither. Both together, a transfer coding that does not end in
/// `chunked` (`close_delimited` false: a request) and conflicting or malformed lengths are
/// refused.
/// From the raw values of `Transfer-Encoding` and of every `Content-Length`. (A request's
/// transfer codings are checked further by [`super::server`].)
pub(crate) fn declared_by<'a>(
    te: Option<&[u8]>,
    lengths: impl Iterator<Item = &'a [u8]>,
    close_delimited: bool,
) -> Result<Option<Framing>, &'static str> {
    let mut lengths = lengths.peekable();
    if let Some(te) = te {
        if lengths.peek().is_some() {
            return Err("both transfer-encoding and content-length");
        }
        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
        return match last.eq_ignore_ascii_case(b"chunked") {
            true => Ok(Some(Framing::Chunked(Chunk::Size))),
            false if close_delimited => Ok(Some(Framing::Close)),
            false => Err("a transfer-encoding that does not end in chunked"),
        };
    }
    // One decimal number per line (repeated lines must agree). A list in one line (`5, 5`),
    // which RFC 9110 8.6 lets a recipient either refuse or fold, is refused: hyper refuses it,
    // and a parser that folds it could disagree with one that does not.
    let mut length = None;
    for v in lengths {
        let v = v.trim_ascii();
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Err("bad content-length");
        }
        // 1*DIGIT: leading zeros are allowed; a value past u64 is refused.
        let n = v
            .iter()
            .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .ok_or("bad content-length")?;
        if length.is_some_and(|l| l != n) {
            return Err("conflicting content-length");
        }
        length = Some(n);
    }
    Ok(length.map(|n| if n == 0 { Framing::Empty } else { Framing::Length(n) }))
}

/// The transfer codings of a message (RFC 9112 6.1), read alike on both sides: `chunked`
/// exactly once and alone. An empty list element (`chunked,`) is refused, though RFC 9110 5.6.1
/// lets a recipient skip it: parsers disagree on it (hyper reads `chunked,` as not chunked).
#[derive(Debug, Default)]
pub(crate) struct Codings {
    chunked: u32,
}

/// Why a `Transfer-Encoding` line was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CodingError<'a> {
    /// A coding other than `chunked`: the body would need decoding.
    Other(&'a [u8]),
    /// An empty list element.
    EmptyElement,
}

impl Codings {
    /// Adds one `Transfer-Encoding` line.
    pub(crate) fn add<'a>(&mut self, line: &'a [u8]) -> Result<(), CodingError<'a>> {
        for coding in line.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if coding.is_empty() {
                return Err(CodingError::EmptyElement);
            }
            if !coding.eq_ignore_ascii_case(b"chunked") {
                return Err(CodingError::Other(coding));
            }
            self.chunked += 1;
        }
        Ok(())
    }

    /// Whether the lines said `chunked` exactly once.
    pub(crate) fn finish(self) -> Result<(), &'static str> {
        match self.chunked {
            1 => Ok(()),
            0 => Err("an empty transfer-encoding"),
            _ => Err("chunked applied more than once"),
        }
    }
}

/// The message of [`CodingError::EmptyElement`].
pub(crate) const EMPTY_ELEMENT: &str = "an empty element in transfer-encoding";

/// What [`decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The body is over (`framing` is now [`Framing::Empty`]).
    End,
    /// More bytes are needed; at the end of the connection a [`Framing::Close`] body is over and
    /// any other is cut short.
    More,
}

/// Takes the next piece of a body framed as `framing` off the front of `buf`, sharing its bytes.
pub(crate) fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
    loop {
        match *framing {
            Framing::Empty => return Ok(Decoded::End),
            Framing::Length(rem) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = buf.len().min(usize::try_from(rem).unwrap_or(usize::MAX));
                let rem = rem - n as u64;
                *framing = if rem == 0 { Framing::Empty } else { Framing::Length(rem) };
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                return Ok(Decoded::Data(buf.split().freeze()));
            }
            Framing::Chunked(state) => match chunk_step(buf, state)? {
                Step::Data(data, next) => {
                    *framing = Framing::Chunked(next);
                    return Ok(Decoded::Data(data));
                }
                Step::Next(next) => *framing = Framing::Chunked(next),
                Step::Done => {
                    *framing = Framing::Empty;
                    return Ok(Decoded::End);
                }
                Step::More => return Ok(Decoded::More),
            },
        }
    }
}

enum Step {
    Data(Bytes, Chunk),
    Next(Chunk),
    Done,
    More,
}

/// A byte of a token (RFC 9110 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One step of the chunked decoder over the bytes buffered so far.
fn chunk_step(buf: &mut BytesMut, state: Chunk) -> Result<Step, &'static str> {
    // RFC 9112 7.1: lines end in CRLF; a bare LF or a CR elsewhere is refused, as are control
    // characters, so that no other parser can read the framing differently.
    let line = |buf: &mut BytesMut| -> Result<Option<BytesMut>, &'static str> {
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let mut l = buf.split_to(i + 1);
                l.truncate(i);
                if l.last() != Some(&b'\r') {
                    return Err("a chunk line not ended by CRLF");
                }
                l.truncate(i - 1);
                if l.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                    return Err("a control character in a chunk line");
                }
                Ok(Some(l))
            }
            None if buf.len() > MAX_LINE => Err("chunk line too long"),
            None => Ok(None),
        }
    };
    match state {
        Chunk::Size => {
            let Some(l) = line(buf)? else { return Ok(Step::More) };
            // chunk-size [ BWS ";" chunk-ext ]: hex digits first, then nothing or extensions.
            let end = l.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(l.len());
            let (digits, rest) = l.split_at(end);
            let rest = rest.trim_ascii_start();
            if digits.is_empty() || digits.len() > 15 || !(rest.is_empty() || rest.starts_with(b";")) {
                return Err("bad chunk size");
            }
            let n = digits.iter().fold(0u64, |n, &d| n * 16 + u64::from((d as char).to_digit(16).unwrap_or(0)));
            Ok(Step::Next(if n == 0 { Chunk::Trailer { bytes: 0, lines: 0 } } else { Chunk::Data(n) }))
        }
        Chunk::Data(rem) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let n = buf.len().min(usize::try_from(rem).unwrap_or(usize::MAX));
            let data = buf.split_to(n).freeze();
            let rem = rem - n as u64;
            Ok(Step::Data(data, if rem == 0 { Chunk::DataEnd } else { Chunk::Data(rem) }))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err("chunk data not followed by CRLF");
            }
            buf.advance(2);
            Ok(Step::Next(Chunk::Size))
        }
        Chunk::Trailer { bytes, lines } => {
            let Some(l) = line(buf)? else { return Ok(Step::More) };
            let bytes = bytes.saturating_add(l.len() as u32 + 2);
            // At most as many trailer lines as header lines, and 16 KiB of them.
            let lines = lines + u32::from(!l.is_empty());
            if bytes > MAX_TRAILERS || lines as usize > super::MAX_HEADERS {
                return Err("trailer section too large");
            }
            // A trailer line is a field line (RFC 9112 7.1.2): `token ":" value`.
            let name = l.iter().position(|&b| b == b':').map(|colon| &l[..colon]);
            if !l.is_empty() && !name.is_some_and(|n| !n.is_empty() && n.iter().all(|&b| is_tchar(b))) {
                return Err("a trailer line that is not a field");
            }
            Ok(if l.is_empty() { Step::Done } else { Step::Next(Chunk::Trailer { bytes, lines }) })
        }
    }
}

/// The next piece of a body framed as `framing`: from `buf`, read from `io` (growing `buf` by
/// `chunk`) when `buf` holds too little. `Ok(None)` at the end of the body (then `framing` is
/// [`Framing::Empty`]); a malformed body, or a connection that ends before the body does, is an
/// error.
pub(crate) fn poll_body<R: AsyncRead + Unpin>(
    framing: &mut Framing,
    buf: &mut BytesMut,
    io: &mut R,
    chunk: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<Bytes>>> {
    loop {
        match decode(framing, buf) {
            Ok(Decoded::Data(data)) => return Poll::Ready(Ok(Some(data))),
            Ok(Decoded::End) => return Poll::Ready(Ok(None)),
            Ok(Decoded::More) => {}
            Err(e) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
        if std::task::ready!(poll_fill(io, buf, chunk, cx))? == 0 {
            if *framing == Framing::Close {
                *framing = Framing::Empty;
                return Poll::Ready(Ok(None));
            }
            let e = "the connection closed before the end of the body";
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, e)));
        }
    }
}

/// Where a body read with [`poll_frame`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyState {
    Reading,
    /// Its last bytes are out: the connection can be handed on before the caller polls again.
    Over,
    /// It failed: the connection is of no further use.
    Failed,
}

/// [`poll_body`] as a body frame (what `http_body::Body::poll_frame` returns), and where the body
/// is after it.
#[allow(clippy::type_complexity)]
pub(crate) fn poll_frame<R: AsyncRead + Unpin>(
    framing: &mut Framing,
    buf: &mut BytesMut,
    io: &mut R,
    chunk: usize,
    cx: &mut Context<'_>,
) -> Poll<(Option<io::Result<hyper::body::Frame<Bytes>>>, BodyState)> {
    Poll::Ready(match std::task::ready!(poll_body(framing, buf, io, chunk, cx)) {
        Ok(Some(data)) => {
            let state = if *framing == Framing::Empty { BodyState::Over } else { BodyState::Reading };
            (Some(Ok(hyper::body::Frame::data(data))), state)
        }
        Ok(None) => (None, BodyState::Over),
        Err(e) => (Some(Err(e)), BodyState::Failed),
    })
}

/// Reads what is available into `buf`, growing it by `chunk` when less than a quarter of that is
/// free. An empty buffer is first rewound to its start once nothing refers to what was read
/// before, so each exchange reuses the same few cache lines.
pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    chunk: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.is_empty() {
        let _ = buf.try_reclaim(chunk);
    }
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    fn decode_all(mut input: &[u8], step: usize) -> Result<Vec<u8>, &'static str> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut framing = Framing::Chunked(Chunk::Size);
        loop {
            match decode(&mut framing, &mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok(out),
                Decoded::More => {
                    if input.is_empty() {
                        return Err("incomplete");
                    }
                    let n = step.min(input.len());
                    buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_decoding_in_any_split() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nA ; e\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(decode_all(body, step).unwrap(), b"hello 0123456789", "step {step}");
        }
        assert!(decode_all(b"zz\r\n", 100).is_err());
        assert!(decode_all(b"5\r\nhelloXX", 100).is_err());
        assert!(decode_all(b"5\r\nhel", 100).is_err());
        assert!(decode_all(b"ffffffffffffffff\r\n", 100).is_err());
        // Leniencies another parser could read differently: refused.
        for bad in [
            &b" 5\r\nhello\r\n0\r\n\r\n"[..],
            b"\t5\r\nhello\r\n0\r\n\r\n",
            b"5\x0c\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5;a\0\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
        ] {
            assert!(decode_all(bad, 100).is_err(), "{}", String::from_utf8_lossy(bad).escape_debug());
        }
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..1000 {
            trailers.extend_from_slice(b"x-trailer: 0123456789012345678901234567890123456789\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(decode_all(&trailers, 4096), Err("trailer section too large"));
    }

    #[test]
    fn lengths_are_taken_exactly() {
        let mut buf = BytesMut::from(&b"abcdeNEXT"[..]);
        let mut framing = Framing::Length(5);
        assert_eq!(decode(&mut framing, &mut buf), Ok(Decoded::Data(Bytes::from_static(b"abcde"))));
        assert_eq!((framing, &buf[..]), (Framing::Empty, &b"NEXT"[..]));
        assert_eq!(decode(&mut framing, &mut buf), Ok(Decoded::End));
    }

    #[test]
    fn declared_framing_follows_rfc_9112() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let declared = |headers: &HeaderMap, close_delimited| {
            let te = headers.get(http::header::TRANSFER_ENCODING).map(|v| v.as_bytes());
            declared_by(te, headers.get_all(http::header::CONTENT_LENGTH).iter().map(|v| v.as_bytes()), close_delimited)
        };
        assert_eq!(declared(&h(&[]), true), Ok(None));
        assert_eq!(declared(&h(&[("content-length", "0")]), false), Ok(Some(Framing::Empty)));
        assert_eq!(declared(&h(&[("content-length", "5")]), false), Ok(Some(Framing::Length(5))));
        assert_eq!(declared(&h(&[("content-length", "5, 5")]), false), Err("bad content-length"));
        assert_eq!(
            declared(&h(&[("content-length", "5"), ("content-length", "5")]), false),
            Ok(Some(Framing::Length(5)))
        );
        assert!(declared(&h(&[("content-length", "5"), ("content-length", "6")]), false).is_err());
        assert!(declared(&h(&[("content-length", "-1")]), false).is_err());
        assert!(declared(&h(&[("content-length", "99999999999999999999")]), false).is_err());
        assert!(declared(&h(&[("content-length", "5"), ("transfer-encoding", "chunked")]), true).is_err());
        let chunked = Some(Framing::Chunked(Chunk::Size));
        assert_eq!(declared(&h(&[("transfer-encoding", "gzip, chunked")]), false), Ok(chunked));
        assert_eq!(declared(&h(&[("transfer-encoding", "gzip")]), true), Ok(Some(Framing::Close)));
        assert!(declared(&h(&[("transfer-encoding", "gzip")]), false).is_err());
    }
}
