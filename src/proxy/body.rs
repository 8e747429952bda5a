//! The one body type used in both directions: empty, a buffered body (replayable), a body
//! streamed by hyper (HTTP/2 in either direction), a request body read from the application's
//! HTTP/1.1 connection, an HTTP/1 upstream body read from its pooled connection, or any of the
//! streamed ones after a prefix that was already read.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::h1::{RawHead, UpstreamBody};
use crate::server::h1::ClientBody;

/// The error type of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Default)]
pub enum ProxyBody {
    #[default]
    Empty,
    Full(Option<Bytes>),
    Hyper(Incoming),
    Client(ClientBody),
    Upstream(UpstreamBody),
    /// A streamed body whose first bytes were read already (to see whether it fits the replay
    /// buffer).
    Prefixed(Option<Bytes>, Box<ProxyBody>),
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() { ProxyBody::Empty } else { ProxyBody::Full(Some(b)) }
    }

    /// The raw header lines of the upstream answer this body belongs to, when it has them.
    pub fn raw_head_mut(&mut self) -> Option<&mut RawHead> {
        match self {
            ProxyBody::Upstream(b) => b.raw_mut(),
            _ => None,
        }
    }

    /// A copy for a replay, when the body is buffered.
    pub fn try_clone(&self) -> Option<ProxyBody> {
        match self {
            ProxyBody::Empty => Some(ProxyBody::Empty),
            ProxyBody::Full(b) => Some(ProxyBody::Full(b.clone())),
            _ => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Client(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Prefixed(prefix, rest) => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                Pin::new(rest.as_mut()).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Hyper(b) => b.is_end_stream(),
            ProxyBody::Client(b) => b.is_end_stream(),
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Prefixed(prefix, rest) => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Hyper(b) => b.size_hint(),
            ProxyBody::Client(b) => b.size_hint(),
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Prefixed(prefix, rest) => {
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
