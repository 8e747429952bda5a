//! HTTP/1.1 for both sides of bearerd, once: the server side of an application's connection
//! ([`server`]: request heads, request bodies, answer heads) and the client side of an upstream
//! connection ([`client`]: request heads, answer heads with their header lines kept raw), with
//! the framing both share ([`framing`]) and the writers of heads and bodies ([`write`]).
//!
//! This module knows nothing of bearerd: no templates, tokens or `x-bearerd-*` headers. What a
//! caller wants left out of raw header lines it says with a predicate.

pub(crate) mod answer;
pub(crate) mod client;
pub(crate) mod framing;
pub(crate) mod io;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod oracle;
pub(crate) mod server;
pub(crate) mod write;

use http::Version;

pub(crate) use answer::ResponseHead;
pub(crate) use framing::Framing;

/// The error type of bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most header lines a head may have, on either side.
pub(crate) const MAX_HEADERS: usize = 100;

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HttpError {
    /// Malformed: a bad head, framing that cannot be trusted, a bad chunk.
    #[error("{0}")]
    Malformed(String),
    /// The head is larger than the limit, or has more than [`MAX_HEADERS`] lines.
    #[error("headers larger than {limit} bytes or more than {count}")]
    TooLarge { limit: usize, count: usize },
    /// A request transfer coding bearerd does not implement (RFC 9112 6.1: 501).
    #[error("{0}")]
    Unsupported(String),
}

impl HttpError {
    fn malformed(m: impl Into<String>) -> HttpError {
        HttpError::Malformed(m.into())
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1), and the non-standard ones that act like them, in any
/// case.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// What a `Connection` header value says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionTokens {
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    /// It names other headers, which are then hop-by-hop too.
    pub(crate) names_others: bool,
}

/// Reads the comma-separated tokens of a `Connection` value (case-insensitive). A value with
/// bytes that are not visible ASCII (obs-text, controls) is no list of tokens: it neither closes
/// nor keeps alive, as hyper reads it (found by the request_framing fuzz target: `keep-alive,`
/// followed by obs-text kept an HTTP/1.0 connection open that hyper closed).
pub(crate) fn connection_tokens(value: &[u8]) -> ConnectionTokens {
    let mut c = ConnectionTokens::default();
    if value.iter().any(|&b| !(b == b'\t' || (b' '..=b'~').contains(&b))) {
        c.names_others = true;
        return c;
    }
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            c.close = true;
        } else if token.eq_ignore_ascii_case(b"keep-alive") {
            c.keep_alive = true;
        } else if !token.is_empty() {
            c.names_others = true;
        }
    }
    c
}

/// Whether a comma-separated header value (`Connection`, ...) holds `token`
/// (case-insensitive).
pub(crate) fn lists(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether a connection stays open after a message of `version` whose `Connection` lines said
/// `tokens` (RFC 9112 9.3): HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive`; `close`
/// wins over `keep-alive`.
pub(crate) fn keeps_alive(version: Version, tokens: ConnectionTokens) -> bool {
    !tokens.close && (version == Version::HTTP_11 || tokens.keep_alive)
}

/// Where each header line of a head parsed by httparse lies in the head's bytes: name start and
/// end, value start and end.
type Ranges = [(u32, u32, u32, u32); MAX_HEADERS];

/// Fills `map` from the header lines at `ranges` in `bytes`; the values share `bytes`. Lines for
/// which `skip` is true are left out.
fn fill_map(
    map: &mut http::HeaderMap,
    bytes: &bytes::Bytes,
    ranges: &[(u32, u32, u32, u32)],
    skip: impl Fn(&[u8]) -> bool,
) -> Result<(), HttpError> {
    for &(ns, ne, vs, ve) in ranges {
        let name = &bytes[ns as usize..ne as usize];
        if skip(name) {
            continue;
        }
        let name = http::HeaderName::from_bytes(name).map_err(|_| HttpError::malformed("bad header name"))?;
        let value = http::HeaderValue::from_maybe_shared(bytes.slice(vs as usize..ve as usize))
            .map_err(|_| HttpError::malformed("bad header value"))?;
        map.append(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_are_read_case_insensitively_and_name_other_headers() {
        let c = connection_tokens(b" Keep-Alive , X-Hop,,CLOSE");
        assert_eq!(c, ConnectionTokens { close: true, keep_alive: true, names_others: true });
        assert_eq!(connection_tokens(b"keep-alive"), ConnectionTokens { keep_alive: true, ..Default::default() });
        assert_eq!(connection_tokens(b""), ConnectionTokens::default());
    }

    #[test]
    fn keep_alive_follows_the_version_and_close_wins() {
        let t = connection_tokens;
        assert!(keeps_alive(Version::HTTP_11, t(b"")));
        assert!(!keeps_alive(Version::HTTP_11, t(b"te, Close")));
        assert!(!keeps_alive(Version::HTTP_10, t(b"")));
        assert!(keeps_alive(Version::HTTP_10, t(b"keep-alive")));
        assert!(!keeps_alive(Version::HTTP_10, t(b"close, keep-alive")));
    }

    #[test]
    fn hop_by_hop_names_in_any_case() {
        for n in ["TE", "Trailer", "upgrade", "Connection", "keep-alive", "Proxy-Connection", "transfer-encoding"] {
            assert!(is_hop_by_hop(n.as_bytes()), "{n}");
        }
        for n in ["proxy-authenticate", "Proxy-Authorization"] {
            assert!(is_hop_by_hop(n.as_bytes()), "{n}");
        }
        for n in ["host", "content-length", "authorization", "tee"] {
            assert!(!is_hop_by_hop(n.as_bytes()), "{n}");
        }
    }
}
