//! Writing HTTP/1.1: header lines, lengths and chunks, the date, and one body writer for both
//! sides (a request body to an upstream, an answer body to an application).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::time::Sleep;

use super::BoxError;

/// A writer that fails when a write makes no progress for `limit` (a peer that stopped
/// reading). The timer is armed only while a write waits: a write that goes through at once
/// touches no timer.
pub(crate) struct Progress<W> {
    inner: W,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<W> Progress<W> {
    pub(crate) fn new(inner: W, limit: Duration) -> Progress<W> {
        Progress { inner, limit, timer: None, armed: false }
    }

    pub(crate) fn into_inner(self) -> W {
        self.inner
    }

    /// After a write that did not go through: fails once the limit has passed since progress.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = tokio::time::Instant::now() + self.limit;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        ready!(timer.as_mut().poll(cx));
        let secs = self.limit.as_secs();
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, format!("the peer read nothing for {secs} s")))
    }
}

impl<W> Progress<W> {
    /// What an inner write gave: done (progress: the timer is disarmed) or waiting (the timer
    /// runs, and fails the write when it fires).
    fn track<T>(&mut self, polled: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_stalled(cx).map(Err),
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Progress<W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.track(polled, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.track(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.track(polled, cx)
    }
}

/// How a message body is delimited on the wire, as its head declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delimit {
    /// No body and no framing header.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body ends when the connection does (an HTTP/1.0 answer of unknown length).
    Close,
}

/// Why writing a body failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The connection failed.
    Io(io::Error),
    /// The body being sent failed (its own source broke, or it was not the declared length).
    Body(BoxError),
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        match e {
            WriteError::Io(e) => e,
            WriteError::Body(e) => io::Error::other(e),
        }
    }
}

/// Writes what `wbuf` holds (a head), then `body`, delimited as `delimit` says (a writer that
/// buffers, such as TLS, is flushed while the body has nothing ready, and by the caller at the
/// end). What the body has ready at once joins the buffered head, up to `coalesce` bytes in all, so a
/// small message goes out in one write; when the body has nothing ready, what is buffered goes
/// out before waiting for it.
pub(crate) async fn write_body<W, B>(
    io: &mut W,
    wbuf: &mut Vec<u8>,
    body: &mut B,
    delimit: Delimit,
    coalesce: usize,
) -> Result<(), WriteError>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let chunked = delimit == Delimit::Chunked;
    let declared = match delimit {
        Delimit::Length(n) => Some(n),
        Delimit::None => Some(0),
        _ => None,
    };
    let mut sent = 0u64;
    loop {
        let frame = match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !wbuf.is_empty() {
                    io.write_all(wbuf).await.map_err(WriteError::Io)?;
                    wbuf.clear();
                }
                // What a buffering writer (TLS) holds goes out before the wait, too.
                io.flush().await.map_err(WriteError::Io)?;
                std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
            Some(Err(e)) => return Err(WriteError::Body(e.into())),
        };
        sent += data.len() as u64;
        if declared.is_some_and(|n| sent > n) {
            return Err(WriteError::Body("the body is longer than its content-length".into()));
        }
        if chunked {
            put_chunk_size(wbuf, data.len());
        }
        if wbuf.len() + data.len() <= coalesce {
            wbuf.extend_from_slice(&data);
        } else {
            if !wbuf.is_empty() {
                io.write_all(wbuf).await.map_err(WriteError::Io)?;
                wbuf.clear();
            }
            io.write_all(&data).await.map_err(WriteError::Io)?;
        }
        if chunked {
            wbuf.extend_from_slice(b"\r\n");
        }
    }
    if declared.is_some_and(|n| sent != n) {
        return Err(WriteError::Body("the body is shorter than its content-length".into()));
    }
    if chunked {
        wbuf.extend_from_slice(LAST_CHUNK);
    }
    if !wbuf.is_empty() {
        io.write_all(wbuf).await.map_err(WriteError::Io)?;
        wbuf.clear();
    }
    Ok(())
}

/// Appends the framing header `delimit` needs, if any.
pub(crate) fn put_delimit(w: &mut Vec<u8>, delimit: Delimit) {
    match delimit {
        Delimit::Length(n) => put_length(w, Some(n)),
        Delimit::Chunked => put_length(w, None),
        Delimit::None | Delimit::Close => {}
    }
}

/// Appends one header line.
pub(crate) fn put_header(w: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    w.extend_from_slice(name);
    w.extend_from_slice(b": ");
    w.extend_from_slice(value);
    w.extend_from_slice(b"\r\n");
}

/// Appends `content-length: n` or `transfer-encoding: chunked` (when `n` is unknown).
pub(crate) fn put_length(w: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => put_header(w, b"content-length", itoa(n, &mut [0u8; 20])),
        None => w.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
}

/// Appends a chunk's size line.
pub(crate) fn put_chunk_size(w: &mut Vec<u8>, len: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = len;
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    w.extend_from_slice(&buf[i..]);
    w.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The current time as an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`), formatted once a second
/// per thread.
pub(crate) fn date_now() -> [u8; 29] {
    thread_local!(static CACHE: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((0, [0; 29])) });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let (at, date) = c.get();
        if at == now {
            return date;
        }
        let date = http_date(now);
        c.set((now, date));
        date
    })
}

/// `secs` since the Unix epoch as an HTTP-date (RFC 9110 5.6.7).
pub(crate) fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_date(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[((days + 4) % 7) as usize]);
    let two = |out: &mut [u8; 29], at: usize, n: u64| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    two(&mut out, 5, day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut out, 12, year / 100);
    two(&mut out, 14, year % 100);
    two(&mut out, 17, rem / 3600);
    two(&mut out, 20, rem / 60 % 60);
    two(&mut out, 23, rem % 60);
    out
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's civil-from-days). Also used for the RFC 3339 times of the admin API.
pub(crate) fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of [`civil_date`]).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = if month <= 2 { year.checked_sub(1)? } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// An HTTP-date (RFC 9110 5.6.7) as seconds since the Unix epoch: the IMF-fixdate form
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) and the two obsolete ones recipients must accept
/// (`Sunday, 06-Nov-94 08:49:37 GMT`, `Sun Nov  6 08:49:37 1994`).
pub(crate) fn parse_http_date(value: &[u8]) -> Option<u64> {
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let text = std::str::from_utf8(value).ok()?.trim();
    let num = |s: &str| -> Option<u64> { s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten() };
    let month = |s: &str| MONTHS.iter().position(|m| m.as_slice() == s.as_bytes()).map(|i| i as u64 + 1);
    let parts: Vec<&str> = text.split_ascii_whitespace().collect();
    let (day, mon, year, time) = match parts.as_slice() {
        // IMF-fixdate: day-name, DD Mon YYYY HH:MM:SS GMT
        [wd, d, m, y, t, "GMT"] if wd.ends_with(',') && d.len() == 2 && y.len() == 4 => {
            (num(d)?, month(m)?, num(y)?, *t)
        }
        // RFC 850: Weekday, DD-Mon-YY HH:MM:SS GMT (two-digit years in 1970-2069)
        [wd, date, t, "GMT"] if wd.ends_with(',') => {
            let mut it = date.split('-');
            let (d, m, y) = (num(it.next()?)?, month(it.next()?)?, it.next()?);
            let y = num(y).filter(|_| y.len() == 2)?;
            (d, m, if y < 70 { 2000 + y } else { 1900 + y }, *t)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_, m, d, t, y] if y.len() == 4 => (num(d)?, month(m)?, num(y)?, *t),
        _ => return None,
    };
    let mut hms = time.split(':').map(|p| num(p).filter(|_| p.len() == 2));
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, mon, day)? * 86_400 + h * 3600 + mi * 60 + sec)
}

pub(crate) fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&http_date(1_795_996_799), b"Sun, 29 Nov 2026 23:59:59 GMT");
        assert_eq!(date_now().len(), 29);
    }

    #[test]
    fn http_dates_are_read_in_all_three_forms() {
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(parse_http_date(b"Tue, 29 Feb 2000 00:00:00 GMT"), Some(951_782_400));
        for secs in [0, 951_782_400, 1_795_996_799, 4_102_444_800] {
            assert_eq!(parse_http_date(&http_date(secs)), Some(secs), "round trip {secs}");
        }
        for bad in [
            "",
            "120",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
        ] {
            assert_eq!(parse_http_date(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn numbers() {
        let mut w = Vec::new();
        put_chunk_size(&mut w, 0x1a2f);
        put_length(&mut w, Some(1234));
        put_length(&mut w, None);
        assert_eq!(w, b"1a2f\r\ncontent-length: 1234\r\ntransfer-encoding: chunked\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_fails_after_the_limit_and_a_slow_one_does_not() {
        use tokio::io::AsyncReadExt as _;
        let limit = Duration::from_secs(15);
        // Nobody reads: the write waits for the limit, then fails.
        let (a, _held) = tokio::io::duplex(16);
        let mut w = Progress::new(a, limit);
        let t0 = tokio::time::Instant::now();
        let err = w.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!((err.kind(), t0.elapsed()), (io::ErrorKind::TimedOut, limit));
        // A reader that takes 8 bytes every 10 s: 40 s in all, but never 15 s without progress.
        let (a, mut b) = tokio::io::duplex(8);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let mut n = 0;
            while n < 64 {
                tokio::time::sleep(Duration::from_secs(10)).await;
                n += b.read(&mut buf).await.unwrap();
            }
        });
        let mut w = Progress::new(a, limit);
        let t0 = tokio::time::Instant::now();
        w.write_all(&[0u8; 64]).await.unwrap();
        assert!(t0.elapsed() >= Duration::from_secs(60));
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn bodies_are_delimited_as_declared() {
        let write = |delimit, parts: &'static [&'static [u8]]| async move {
            let mut out = Vec::new();
            let mut wbuf = b"HEAD\r\n\r\n".to_vec();
            let frames = parts
                .iter()
                .map(|p| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(p))));
            let mut body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            write_body(&mut out, &mut wbuf, &mut body, delimit, 16 * 1024).await.map(|()| out)
        };
        assert_eq!(write(Delimit::Length(5), &[b"he", b"llo"]).await.unwrap(), b"HEAD\r\n\r\nhello");
        assert_eq!(
            write(Delimit::Chunked, &[b"he", b"llo"]).await.unwrap(),
            b"HEAD\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"
        );
        assert_eq!(write(Delimit::Close, &[b"x"]).await.unwrap(), b"HEAD\r\n\r\nx");
        assert!(matches!(write(Delimit::Length(4), &[b"hello"]).await, Err(WriteError::Body(_))), "longer");
        assert!(matches!(write(Delimit::Length(6), &[b"hello"]).await, Err(WriteError::Body(_))), "shorter");
        assert!(matches!(write(Delimit::None, &[b"x"]).await, Err(WriteError::Body(_))), "no body declared");
    }
}
