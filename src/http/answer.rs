//! An answer's head, beside its body: status, version, and header lines either in a map or, for
//! an HTTP/1.1 upstream's answer, as they arrived ([`RawLines`]), which an HTTP/1.1 client gets
//! copied in one piece with no map built and dropped.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use super::MAX_HEADERS;

/// An answer's head.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    /// Header lines in a map: all of them, or those added to [`ResponseHead::raw`].
    pub(crate) headers: HeaderMap,
    /// Header lines as they arrived, when they are passed on as they are.
    pub(crate) raw: Option<RawLines>,
    /// Informational (1xx) answers that came before this one, other than `100 Continue`, each
    /// a whole head to write before the final one to an HTTP/1.1 client (RFC 9110 15.2: a
    /// proxy forwards them). At most [`MAX_INFORMATIONAL`].
    pub(crate) informational: Vec<Bytes>,
    /// A reason phrase other than the status's own (HTTP/1.1 only; visible characters and
    /// spaces, which the writer enforces).
    pub(crate) reason: Option<Box<str>>,
}

/// The most informational answers kept before a final one; later ones are dropped.
pub(crate) const MAX_INFORMATIONAL: usize = 8;

impl ResponseHead {
    pub(crate) fn new(status: StatusCode) -> ResponseHead {
        ResponseHead {
            status,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            raw: None,
            informational: Vec::new(),
            reason: None,
        }
    }

    /// Every header line in one map (raw lines first, then the map's), for a writer that only
    /// takes maps (HTTP/2).
    pub(crate) fn into_map(self) -> (StatusCode, HeaderMap) {
        match self.raw {
            None => (self.status, self.headers),
            Some(raw) => {
                let mut map = raw.to_map();
                map.extend(self.headers);
                (self.status, map)
            }
        }
    }
}

/// The most lines [`RawLines`] leaves out.
pub(crate) const MAX_SKIPPED: usize = 6;

/// The header lines of an answer as they arrived, minus those left out (hop-by-hop, framing and
/// what the caller asked for), plus lines added behind them. Only for heads with CRLF line ends.
#[derive(Clone)]
pub(crate) struct RawLines {
    pub(super) bytes: Bytes,
    /// Where the first header line starts and the last one ends (after its CRLF).
    pub(super) lines: (u16, u16),
    /// Lines left out, in order.
    pub(super) skipped: [(u16, u16); MAX_SKIPPED],
    pub(super) n_skipped: u8,
    pub(super) dated: bool,
    /// Header lines added behind the upstream's (CRLF-terminated, well-formed).
    pub(super) extra: Bytes,
}

impl std::fmt::Debug for RawLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLines").field("lines", &self.lines).field("n_skipped", &self.n_skipped).finish()
    }
}

impl RawLines {
    /// Appends the header lines that are passed on, and the added ones.
    pub(crate) fn put_lines(&self, w: &mut Vec<u8>) {
        let mut at = self.lines.0 as usize;
        for &(start, end) in &self.skipped[..self.n_skipped as usize] {
            w.extend_from_slice(&self.bytes[at..start as usize]);
            at = end as usize;
        }
        w.extend_from_slice(&self.bytes[at..self.lines.1 as usize]);
        w.extend_from_slice(&self.extra);
    }

    /// Adds header lines behind the others: `lines` are `name: value\r\n` lines, valid as they
    /// are.
    pub(crate) fn set_extra(&mut self, lines: Bytes) {
        self.extra = lines;
    }

    /// Whether the lines include `Date`.
    pub(crate) fn dated(&self) -> bool {
        self.dated
    }

    /// The lines that are passed on, and the added ones, as a header map.
    pub(crate) fn to_map(&self) -> HeaderMap {
        let start = self.lines.0 as usize;
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        // The lines were parsed before: this cannot fail.
        let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&self.bytes[start..], &mut raw)
        else {
            return HeaderMap::new();
        };
        let base = self.bytes.as_ptr() as usize;
        let skipped = &self.skipped[..self.n_skipped as usize];
        let mut map = HeaderMap::with_capacity(parsed.len() + 2);
        for h in parsed.iter() {
            let at = (h.name.as_ptr() as usize - base) as u16;
            if skipped.iter().any(|&(s, _)| s == at) {
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
