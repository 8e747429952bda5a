//! The one body type of the data path, in both directions: empty, a buffered body (replayable),
//! a body streamed by hyper (HTTP/2 in either direction), a request body read from the
//! application's HTTP/1.1 connection, an answer body read from a pooled upstream connection, or
//! any of the streamed ones after a prefix that was already read.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::h1::{Upgraded, UpstreamBody};
use crate::http::BoxError;
use crate::http::server::ClientBody;

/// A body on its way through bearerd.
#[derive(Debug, Default)]
pub(crate) enum Body {
    #[default]
    Empty,
    Full(Option<Bytes>),
    Hyper(Incoming),
    /// A request body from an HTTP/2 client: read to its end (and dropped) after an early
    /// answer ([`Lingering`]).
    H2Request(Lingering),
    Client(ClientBody),
    Upstream(UpstreamBody),
    /// A streamed body whose first bytes were read already (to see whether it fits the replay
    /// buffer).
    Prefixed(Option<Bytes>, Box<Body>),
    /// No body: the upstream connection after `101 Switching Protocols`, for the client's
    /// connection to relay.
    Upgraded(Upgraded),
}

impl Body {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() { Body::Empty } else { Body::Full(Some(b)) }
    }

    /// A copy for a replay, when the body is buffered.
    pub(crate) fn try_clone(&self) -> Option<Body> {
        match self {
            Body::Empty => Some(Body::Empty),
            Body::Full(b) => Some(Body::Full(b.clone())),
            _ => None,
        }
    }
}

/// A request body from an HTTP/2 client. Dropped before its end (a request refused before its
/// body was read: no template, no token, too large), what is left is read and dropped by a task
/// of its own for at most [`LINGER_TIME`] and [`LINGER_BYTES`], so that the client, which may
/// send its whole body before it reads, sees the answer instead of a reset stream (RFC 9113
/// 8.1); the HTTP/1.1 server lingers on its connection for the same reason.
#[derive(Debug)]
pub(crate) struct Lingering(pub(crate) Option<Incoming>);

/// How long, and how much, an abandoned HTTP/2 request body is still read.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);
const LINGER_BYTES: u64 = 64 << 20;

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut body) = self.0.take() else { return };
        if body.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > LINGER_BYTES {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty | Body::Upgraded(_) => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::H2Request(Lingering(Some(b))) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::H2Request(Lingering(None)) => Poll::Ready(None),
            Body::Client(b) => Pin::new(b).poll_frame(cx),
            Body::Upstream(b) => Pin::new(b).poll_frame(cx),
            Body::Prefixed(prefix, rest) => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                Pin::new(rest.as_mut()).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty | Body::Upgraded(_) => true,
            Body::Full(b) => b.is_none(),
            Body::Hyper(b) => b.is_end_stream(),
            Body::H2Request(Lingering(b)) => b.as_ref().is_none_or(|b| b.is_end_stream()),
            Body::Client(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Prefixed(prefix, rest) => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty | Body::Upgraded(_) => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Hyper(b) => b.size_hint(),
            Body::H2Request(Lingering(b)) => b.as_ref().map_or(SizeHint::with_exact(0), |b| b.size_hint()),
            Body::Client(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Prefixed(prefix, rest) => {
                let p = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let h = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + p);
                if let Some(u) = h.upper() {
                    out.set_upper(u + p);
                }
                out
            }
        }
    }
}
