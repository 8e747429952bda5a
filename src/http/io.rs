//! The two sides of a client connection the HTTP/1.1 server reads and writes: a TCP socket's
//! own halves, or the halves of any other stream, which share it under a lock (TLS: one
//! session decrypts what is read and encrypts what is written). The lock is taken inside each
//! poll and never held across one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A stream both of whose halves the server uses.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Duplex for T {}

/// The read side of a client connection.
pub(crate) enum ReadSide {
    Tcp(OwnedReadHalf),
    Shared(Shared),
}

/// The write side of a client connection.
pub(crate) enum WriteSide {
    Tcp(OwnedWriteHalf),
    Shared(Shared),
}

/// One half of a stream that both halves hold.
pub(crate) struct Shared(Arc<Mutex<Box<dyn Duplex>>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Box<dyn Duplex>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for ReadSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadSide::Tcp(_) => "ReadSide::Tcp",
            ReadSide::Shared(_) => "ReadSide::Shared",
        })
    }
}

/// A TCP connection's halves.
pub(crate) fn split_tcp(stream: TcpStream) -> (ReadSide, WriteSide) {
    let (rd, wr) = stream.into_split();
    (ReadSide::Tcp(rd), WriteSide::Tcp(wr))
}

/// Any other stream's halves.
pub(crate) fn split_shared(stream: impl Duplex) -> (ReadSide, WriteSide) {
    let shared: Arc<Mutex<Box<dyn Duplex>>> = Arc::new(Mutex::new(Box::new(stream)));
    (ReadSide::Shared(Shared(shared.clone())), WriteSide::Shared(Shared(shared)))
}

/// A client connection whole again (for the hand-over to HTTP/2, or to a tunnel): `None` for
/// halves of different connections.
pub(crate) fn reunite(rd: ReadSide, wr: WriteSide) -> Option<Stream> {
    match (rd, wr) {
        (ReadSide::Tcp(rd), WriteSide::Tcp(wr)) => rd.reunite(wr).ok().map(Stream::Tcp),
        (ReadSide::Shared(rd), WriteSide::Shared(wr)) if Arc::ptr_eq(&rd.0, &wr.0) => {
            drop(wr);
            let inner = Arc::try_unwrap(rd.0).ok()?;
            Some(Stream::Other(inner.into_inner().unwrap_or_else(|p| p.into_inner())))
        }
        _ => None,
    }
}

/// A client connection as one stream: a TCP socket (the data listener), or another stream (the
/// TLS listener's, or a tunnel's inside it).
pub(crate) enum Stream {
    Tcp(TcpStream),
    Other(Box<dyn Duplex>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Other(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Other(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Other(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Other(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Other(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Other(s) => s.is_write_vectored(),
        }
    }
}

impl ReadSide {
    /// Writes an interim answer (`100 Continue`) from the read side, which the request body
    /// holds while the connection's write side waits for the answer: all of `buf`, flushed.
    pub(crate) fn poll_write_interim(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            ReadSide::Tcp(rd) => {
                let tcp: &TcpStream = rd.as_ref();
                loop {
                    ready!(tcp.poll_write_ready(cx))?;
                    match tcp.try_write(buf) {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => return Poll::Ready(Ok(n)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
            ReadSide::Shared(s) => {
                let mut io = s.lock();
                let n = ready!(Pin::new(&mut **io).poll_write(cx, buf))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                ready!(Pin::new(&mut **io).poll_flush(cx))?;
                Poll::Ready(Ok(n))
            }
        }
    }
}

impl AsyncRead for ReadSide {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Tcp(rd) => Pin::new(rd).poll_read(cx, buf),
            ReadSide::Shared(s) => Pin::new(&mut **s.lock()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Tcp(wr) => Pin::new(wr).poll_write(cx, buf),
            WriteSide::Shared(s) => Pin::new(&mut **s.lock()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(wr) => Pin::new(wr).poll_flush(cx),
            WriteSide::Shared(s) => Pin::new(&mut **s.lock()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(wr) => Pin::new(wr).poll_shutdown(cx),
            WriteSide::Shared(s) => Pin::new(&mut **s.lock()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Tcp(wr) => Pin::new(wr).poll_write_vectored(cx, bufs),
            WriteSide::Shared(s) => Pin::new(&mut **s.lock()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteSide::Tcp(wr) => wr.is_write_vectored(),
            WriteSide::Shared(_) => false,
        }
    }
}

/// A connection's two halves as one stream again (a relay after an upgrade).
pub(crate) struct Both(pub(crate) ReadSide, pub(crate) WriteSide);

impl AsyncRead for Both {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Both {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().1).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().1).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().1).poll_shutdown(cx)
    }
}
