//! HTTP/1.1 to an upstream, driven by the request's own task.
//!
//! The request is written, the answer head read and the body streamed by whoever polls it:
//! there is no connection task, no channel and no wake-up between the request and its
//! connection. A connection whose answer was read to its end, and that may be kept alive, goes
//! back to the [`Pool`]; one dropped in the middle of a body is closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::Method;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Call;
use super::body::Body;
use super::pool::Pool;
use crate::http::client::{Parsed, parse_response, put_request_head};
use crate::http::framing::{self, BodyState};
use crate::http::write::{Delimit, WriteError, write_body};
use crate::http::{BoxError, Framing, HttpError, ResponseHead};

/// Read buffer growth.
const READ_CHUNK: usize = 16 * 1024;
/// A buffered request body up to this size is written with its head in one write.
const COALESCE: usize = 16 * 1024;

/// A TCP connection, with or without TLS.
pub(crate) enum Io {
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
pub(crate) enum SendError {
    /// The connection ended (EOF, reset, broken pipe) before any byte of an answer: on a reused
    /// connection, the upstream had closed it while it was idle.
    Closed,
    Io(io::Error),
    /// The upstream's answer is not HTTP/1.x as bearerd accepts it.
    Protocol(HttpError),
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

fn io_error(e: io::Error) -> SendError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => SendError::Closed,
        _ => SendError::Io(e),
    }
}

/// One upstream connection speaking HTTP/1.1, with its buffers.
pub(crate) struct UpstreamConn {
    io: Io,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// The pool key: `scheme://authority`.
    pub(super) key: Arc<str>,
    /// The pool generation it was opened in.
    pub(super) generation: u64,
    /// Has carried a request before this one.
    reused: bool,
    /// When it was opened or last checked out: its idle time is counted from there (a little
    /// early, which only ever closes it sooner), so that returning it reads no clock.
    pub(super) used: Instant,
    /// The deadline of the request it carries. One timer for the connection's life, moved later
    /// for each request (which touches no timer wheel), instead of one registered and cancelled
    /// per request.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// How the body of the answer being read ends, and whether the connection carries another
    /// request after it. Kept here, on the heap, so that the body handed around with the answer
    /// is a pointer.
    framing: Framing,
    keep_alive: bool,
}

impl UpstreamConn {
    /// A connection lives on the heap: it moves between the pool, the request and its body.
    pub(crate) fn new(io: Io, key: Arc<str>, generation: u64) -> Box<UpstreamConn> {
        Box::new(UpstreamConn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(512),
            key,
            generation,
            reused: false,
            used: Instant::now(),
            timer: None,
            framing: Framing::Empty,
            keep_alive: false,
        })
    }

    /// False when the connection was closed (or sent something unasked) while it was idle. Costs
    /// no system call unless the socket has had an event since its last read.
    pub(super) fn idle_ok(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut buf), Poll::Pending)
    }

    /// Writes the request and reads the answer head into `head`, which must arrive before the
    /// call's deadline. The answer's body reads from this connection, which goes back to `pool`
    /// at its end. On failure, whether the connection had carried a request before.
    pub(crate) async fn send(
        mut self: Box<Self>,
        pool: &Arc<Pool>,
        call: &Call<'_>,
        body: Body,
        leave_out: fn(&[u8]) -> bool,
        head: &mut ResponseHead,
    ) -> Result<Body, (SendError, bool)> {
        let reused = self.reused;
        let mut timer = match self.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(call.deadline);
                t
            }
            None => Box::pin(tokio::time::sleep_until(call.deadline)),
        };
        let result = {
            let mut exchange = std::pin::pin!(self.exchange(call, body, leave_out, head));
            // The timer is polled only when the exchange waits.
            std::future::poll_fn(|cx| match exchange.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| Err(SendError::Timeout)),
            })
            .await
        };
        self.timer = Some(timer);
        match result {
            // 101 to an upgrade: the connection is the new protocol's.
            Ok(None) => Ok(Body::Upgraded(Upgraded(self))),
            Ok(Some((framing, keep_alive))) => {
                self.reused = true;
                self.framing = framing;
                self.keep_alive = keep_alive;
                let mut body = UpstreamBody { conn: Some(self), pool: pool.clone() };
                if framing == Framing::Empty {
                    // The connection is free now.
                    body.finish();
                }
                Ok(Body::Upstream(body))
            }
            Err(e) => Err((e, reused)),
        }
    }

    async fn exchange(
        &mut self,
        call: &Call<'_>,
        mut body: Body,
        leave_out: fn(&[u8]) -> bool,
        head: &mut ResponseHead,
    ) -> Result<Option<(Framing, bool)>, SendError> {
        let delimit = match body.size_hint().exact() {
            Some(0) if call.upgrade => Delimit::None,
            Some(0) if body.is_end_stream() => match *call.method {
                Method::POST | Method::PUT | Method::PATCH => Delimit::Length(0),
                _ => Delimit::None,
            },
            Some(n) => Delimit::Length(n),
            None => Delimit::Chunked,
        };
        self.wbuf.clear();
        let target = call.target;
        put_request_head(&mut self.wbuf, call.method, target.path_and_query, target.authority, call.headers, delimit);
        write_body(&mut self.io, &mut self.wbuf, &mut body, delimit, COALESCE).await.map_err(|e| match e {
            WriteError::Io(e) => io_error(e),
            WriteError::Body(e) => SendError::Body(e),
        })?;
        // TLS buffers what it encrypts.
        self.io.flush().await.map_err(io_error)?;
        drop(body);

        // Read heads until one that is not 1xx informational.
        let mut seen_any = false;
        loop {
            let parsed = loop {
                if let Some(parsed) = parse_response(&mut self.rbuf, *call.method == Method::HEAD, leave_out, head)
                    .map_err(SendError::Protocol)?
                {
                    break parsed;
                }
                let n = self.fill().await.map_err(|e| if seen_any { SendError::Io(e) } else { io_error(e) })?;
                if n == 0 {
                    return Err(if seen_any || !self.rbuf.is_empty() {
                        SendError::Protocol(HttpError::Malformed("connection closed inside the response head".into()))
                    } else {
                        SendError::Closed
                    });
                }
                seen_any = true;
            };
            match parsed {
                Parsed::Informational => continue,
                Parsed::Final { framing, keep_alive } => return Ok(Some((framing, keep_alive))),
                Parsed::Upgrade if call.upgrade => return Ok(None),
                Parsed::Upgrade => {
                    return Err(SendError::Protocol(HttpError::Malformed("protocol upgrades are not proxied".into())));
                }
            }
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| framing::poll_fill(&mut self.io, &mut self.rbuf, READ_CHUNK, cx)).await
    }
}

/// An upstream connection after `101 Switching Protocols` to an upgrade.
pub(crate) struct Upgraded(Box<UpstreamConn>);

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upgraded")
    }
}

impl Upgraded {
    /// The connection, and what the upstream sent after the 101's head (the new protocol's
    /// first bytes).
    pub(crate) fn into_parts(self) -> (Io, BytesMut) {
        let conn = *self.0;
        (conn.io, conn.rbuf)
    }
}

/// An answer body read from its connection as it is polled (the connection holds the state).
pub(crate) struct UpstreamBody {
    conn: Option<Box<UpstreamConn>>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("framing", &self.conn.as_ref().map(|c| c.framing)).finish()
    }
}

impl UpstreamBody {
    /// The body is over: the connection goes back to the pool when it may be reused.
    fn finish(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && conn.keep_alive
        {
            conn.framing = Framing::Empty;
            self.pool.put(conn);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
        let (frame, state) =
            ready!(framing::poll_frame(&mut conn.framing, &mut conn.rbuf, &mut conn.io, READ_CHUNK, cx));
        match state {
            BodyState::Reading => {}
            // The connection is free before the caller polls again.
            BodyState::Over => this.finish(),
            BodyState::Failed => this.conn = None,
        }
        Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.framing == Framing::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        self.conn.as_ref().map_or(Framing::Empty, |c| c.framing).size_hint()
    }
}
