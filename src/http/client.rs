//! The client side of an HTTP/1.1 connection: request heads written, answer heads taken off the
//! read buffer, and how an answer's body is delimited.

use bytes::{Bytes, BytesMut};
use http::header::HeaderMap;
use http::{Method, StatusCode, Version};

use super::answer::{MAX_SKIPPED, RawLines, ResponseHead};
use super::framing::{self, Framing};
use super::write::{Delimit, put_delimit, put_header};
use super::{HttpError, MAX_HEADERS, Ranges, connection_tokens, fill_map, is_hop_by_hop, keeps_alive};

/// The largest answer head accepted (offsets into it fit in a u16).
pub(crate) const MAX_ANSWER_HEAD: usize = 64 * 1024 - 1;

/// Writes a request head into `w`: `method target HTTP/1.1`, `host: authority`, `headers`, and
/// the framing `delimit` declares.
pub(crate) fn put_request_head(
    w: &mut Vec<u8>,
    method: &Method,
    target: &str,
    authority: &str,
    headers: &HeaderMap,
    delimit: Delimit,
) {
    w.extend_from_slice(method.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(target.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    w.extend_from_slice(authority.as_bytes());
    w.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        put_header(w, name.as_str().as_bytes(), value.as_bytes());
    }
    put_delimit(w, delimit);
    w.extend_from_slice(b"\r\n");
}

/// What [`parse_response`] took off the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A 1xx informational head: the real answer follows.
    Informational,
    /// `101 Switching Protocols` (its headers in the head's map, less `Connection` and
    /// `Keep-Alive`): the connection is the new protocol's from here on. Only a caller that asked
    /// for an upgrade takes it.
    Upgrade,
    /// The answer's head (written into the caller's), how its body is delimited, and whether the
    /// connection may carry another request after it.
    Final { framing: Framing, keep_alive: bool },
}

/// Takes a complete answer head off the front of `buf`, if one is there, into `head` (written in
/// place: an answer head is large, and is not moved from call to call). The header values share
/// the head's bytes. An answer with a body (`head_request` false, 2xx or 3xx, not 204 or 304)
/// whose lines can be passed on as they are keeps them raw, less hop-by-hop lines,
/// `Content-Length` and the lines `leave_out` names; any other gets a header map, without
/// `Connection` and `Keep-Alive` (unless `Connection` names other headers, which the caller then
/// strips with it). A 101 is [`Parsed::Upgrade`], for the caller to refuse unless it asked for it.
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
    leave_out: impl Fn(&[u8]) -> bool,
    head: &mut ResponseHead,
) -> Result<Option<Parsed>, HttpError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let bad = HttpError::malformed;
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut ranges: Ranges = [(0, 0, 0, 0); MAX_HEADERS];
    let (code, version, mut tokens, len, declared, mut raw_ok, lines, mut dated, count);
    let mut skipped = [(0u16, 0u16); MAX_SKIPPED];
    let mut n_skipped = 0usize;
    {
        let mut resp = httparse::Response::new(&mut []);
        len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut raw) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_ANSWER_HEAD => n,
            Ok(httparse::Status::Complete(_)) => return Err(bad("response head too large")),
            Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER_HEAD => return Ok(None),
            Ok(httparse::Status::Partial) => return Err(bad("response head too large")),
            Err(httparse::Error::TooManyHeaders) => return Err(bad("too many headers")),
            Err(_) => return Err(bad("malformed response head")),
        };
        code = resp.code.unwrap_or(0);
        version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        tokens = super::ConnectionTokens::default();
        dated = false;
        count = resp.headers.len();
        let bytes = &buf[..len];
        let base = bytes.as_ptr() as usize;
        let offset = |s: &[u8]| s.as_ptr() as usize - base;
        // Raw lines need CRLF ends: each line ends where the next one starts, the last one
        // before the final CRLF.
        raw_ok = !head_request && bytes.ends_with(b"\r\n\r\n");
        let starts = resp.headers.iter().map(|h| offset(h.name.as_bytes()));
        let ends = starts.clone().skip(1).chain(std::iter::once(len - 2));
        lines = (resp.headers.first().map_or(len - 2, |h| offset(h.name.as_bytes())), len - 2);
        let (mut te, mut lengths) = (None, [&[][..]; 2]);
        let mut codings = framing::Codings::default();
        let mut n_lengths = 0;
        for (((h, start), end), r) in resp.headers.iter().zip(starts).zip(ends).zip(ranges.iter_mut()) {
            let name = h.name.as_bytes();
            let v = offset(h.value);
            *r = (start as u32, (start + name.len()) as u32, v as u32, (v + h.value.len()) as u32);
            raw_ok &= bytes[..end].ends_with(b"\r\n");
            if name.eq_ignore_ascii_case(b"connection") {
                let c = connection_tokens(h.value);
                tokens.close |= c.close;
                tokens.keep_alive |= c.keep_alive;
                tokens.names_others |= c.names_others;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Only one `chunked` is passed on (re-framed). Any other coding would reach
                // the client without its label, so the answer is refused.
                match codings.add(h.value) {
                    Ok(()) => te = Some(&b"chunked"[..]),
                    Err(framing::CodingError::Other(_)) => {
                        return Err(bad("the upstream used a transfer coding other than chunked"));
                    }
                    Err(framing::CodingError::EmptyElement) => return Err(bad(framing::EMPTY_ELEMENT)),
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                match lengths.get_mut(n_lengths) {
                    Some(slot) => *slot = h.value,
                    // More than two Content-Length lines: whatever they say, refused.
                    None => return Err(bad("bad content-length")),
                }
                n_lengths += 1;
            } else if name.eq_ignore_ascii_case(b"date") {
                dated = true;
            }
            if is_hop_by_hop(name) || name.eq_ignore_ascii_case(b"content-length") || leave_out(name) {
                match skipped.get_mut(n_skipped) {
                    Some(slot) => *slot = (start as u16, end as u16),
                    None => raw_ok = false,
                }
                n_skipped += 1;
            }
        }
        if te.is_some() {
            codings.finish().map_err(bad)?;
        }
        if te.is_some() && version == Version::HTTP_10 {
            // RFC 9112 6.1: faulty framing in an HTTP/1.0 message.
            return Err(bad("transfer-encoding in an HTTP/1.0 answer"));
        }
        declared = match code {
            100..=199 => None,
            _ => framing::declared_by(te, lengths[..n_lengths].iter().copied(), true).map_err(bad)?,
        };
    }
    let bytes = buf.split_to(len).freeze();
    match code {
        101 => {
            head.status = StatusCode::SWITCHING_PROTOCOLS;
            head.version = version;
            head.raw = None;
            head.headers.clear();
            fill_map(&mut head.headers, &bytes, &ranges[..count], |name| {
                name.eq_ignore_ascii_case(b"connection") || name.eq_ignore_ascii_case(b"keep-alive") || leave_out(name)
            })?;
            return Ok(Some(Parsed::Upgrade));
        }
        // `100 Continue` answers an expectation bearerd handles itself; others are kept to be
        // passed on, without hop-by-hop lines or what the caller sets itself.
        100 => return Ok(Some(Parsed::Informational)),
        102..=199 => {
            if version == Version::HTTP_11 && head.informational.len() < super::answer::MAX_INFORMATIONAL {
                let mut w = Vec::with_capacity(bytes.len());
                w.extend_from_slice(b"HTTP/1.1 ");
                w.extend_from_slice(code.to_string().as_bytes());
                w.push(b' ');
                let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
                w.extend_from_slice(reason.as_bytes());
                w.extend_from_slice(b"\r\n");
                let lines = &ranges[..count];
                let line = |r: (u32, u32)| &bytes[r.0 as usize..r.1 as usize];
                // Headers a `Connection` line names are hop-by-hop too.
                let named = |name: &[u8]| {
                    lines.iter().any(|&(n0, n1, v0, v1)| {
                        line((n0, n1)).eq_ignore_ascii_case(b"connection") && super::lists(line((v0, v1)), name)
                    })
                };
                for &(n0, n1, v0, v1) in lines {
                    let name = line((n0, n1));
                    if is_hop_by_hop(name)
                        || name.eq_ignore_ascii_case(b"content-length")
                        || leave_out(name)
                        || named(name)
                    {
                        continue;
                    }
                    super::write::put_header(&mut w, name, line((v0, v1)));
                }
                w.extend_from_slice(b"\r\n");
                head.informational.push(Bytes::from(w));
            }
            return Ok(Some(Parsed::Informational));
        }
        _ => {}
    }
    let status = StatusCode::from_u16(code).map_err(|_| bad("bad status"))?;
    let framing = answer_framing(head_request, status, declared);
    let keep_alive = keeps_alive(version, tokens) && framing != Framing::Close;
    // Errors (read for Retry-After), 204, 304 and empty bodies get a map.
    raw_ok &= !tokens.names_others
        && (200..400).contains(&code)
        && code != 204
        && code != 304
        && declared != Some(Framing::Empty);
    head.status = status;
    head.version = version;
    head.headers.clear();
    if raw_ok {
        head.raw = Some(RawLines {
            bytes,
            lines: (lines.0 as u16, lines.1 as u16),
            skipped,
            n_skipped: n_skipped as u8,
            dated,
            extra: Bytes::new(),
        });
    } else {
        head.raw = None;
        // Room for the lines the caller adds to every answer.
        head.headers.reserve(count + 2);
        let names_others = tokens.names_others;
        fill_map(&mut head.headers, &bytes, &ranges[..count], |name| {
            !names_others && (name.eq_ignore_ascii_case(b"connection") || name.eq_ignore_ascii_case(b"keep-alive"))
        })?;
    }
    Ok(Some(Parsed::Final { framing, keep_alive }))
}

/// RFC 9112 6.3: how the body of an answer is delimited.
fn answer_framing(head_request: bool, status: StatusCode, declared: Option<Framing>) -> Framing {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Framing::Empty;
    }
    declared.unwrap_or(Framing::Close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_into(raw: &[u8], head_request: bool, head: &mut ResponseHead) -> Result<Option<Parsed>, HttpError> {
        parse_response(&mut BytesMut::from(raw), head_request, |n| n.eq_ignore_ascii_case(b"x-own"), head)
    }

    fn parse(raw: &[u8], head_request: bool) -> Result<Option<Parsed>, HttpError> {
        parse_into(raw, head_request, &mut ResponseHead::new(StatusCode::OK))
    }

    fn head(raw: &[u8], head_request: bool) -> (ResponseHead, Framing, bool) {
        let mut head = ResponseHead::new(StatusCode::OK);
        match parse_into(raw, head_request, &mut head).unwrap().unwrap() {
            Parsed::Final { framing, keep_alive } => (head, framing, keep_alive),
            Parsed::Informational | Parsed::Upgrade => panic!("not a final answer"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = StatusCode::OK;
        assert_eq!(answer_framing(true, ok, Some(Framing::Length(5))), Framing::Empty);
        assert_eq!(answer_framing(false, StatusCode::NO_CONTENT, None), Framing::Empty);
        assert_eq!(answer_framing(false, ok, Some(Framing::Length(5))), Framing::Length(5));
        assert_eq!(answer_framing(false, ok, None), Framing::Close);
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n", false).is_err());
        // Codings other than chunked, or chunked twice: refused, never passed on unlabelled.
        for te in ["gzip", "gzip, chunked", "chunked\r\ntransfer-encoding: chunked", "chunked, chunked", " "] {
            let head = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: {te}\r\n\r\n");
            assert!(parse(head.as_bytes(), false).is_err(), "{te}");
        }
    }

    #[test]
    fn heads_and_keep_alive() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok"[..]);
        let mut h = ResponseHead::new(StatusCode::IM_A_TEAPOT);
        let Some(Parsed::Final { keep_alive, .. }) = parse_response(&mut buf, false, |_| false, &mut h).unwrap() else {
            panic!("a final head")
        };
        assert_eq!((h.status.as_u16(), buf.len(), keep_alive), (200, 2, true));
        let ka = |raw: &[u8]| head(raw, false).2;
        assert!(!ka(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x, Close\r\n\r\n"));
        assert!(!ka(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(ka(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nconnection: keep-alive\r\n\r\n"));
        assert!(!ka(b"HTTP/1.1 200 OK\r\n\r\n"), "a body that ends with the connection");
        let (h, ..) = head(b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nx-hop: 1\r\n\r\n", false);
        assert!(h.headers.contains_key("connection"), "kept for the caller to strip x-hop");
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"[..]);
        let informational = parse_response(&mut buf, false, |_| false, &mut ResponseHead::new(StatusCode::OK));
        assert!(matches!(informational, Ok(Some(Parsed::Informational))));
        assert_eq!(buf.len(), 19);
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-le", false).unwrap().is_none());
        assert!(parse(b"HTTP/1.1 2000 OK\r\n\r\n", false).is_err());
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nframe"[..]);
        let mut h = ResponseHead::new(StatusCode::OK);
        assert_eq!(parse_response(&mut buf, false, |_| false, &mut h).unwrap(), Some(Parsed::Upgrade));
        assert_eq!(h.status.as_u16(), 101);
        assert_eq!(h.headers["upgrade"], "websocket");
        assert_eq!(h.headers.get("connection"), None);
        assert_eq!(&buf[..], b"frame", "what follows the head is the new protocol's");
    }

    #[test]
    fn raw_lines_leave_out_hop_by_hop_framing_and_what_the_caller_names() {
        let ok = b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nContent-Length: 2\r\nX-Own: 9\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nDate: d\r\n\r\nok";
        let raw = head(ok, false).0.raw.expect("raw");
        let mut w = Vec::new();
        raw.put_lines(&mut w);
        assert_eq!(w, b"Server: x\r\nX-A: 1\r\nDate: d\r\n");
        assert!(raw.dated());
        let map = raw.to_map();
        assert_eq!((map.len(), map["x-a"].as_bytes(), map["server"].as_bytes()), (3, &b"1"[..], &b"x"[..]));
        // No raw lines: a HEAD answer, an error, 204/304, bare LF, Connection naming a header.
        let with_map = |raw: &[u8], head_request: bool| head(raw, head_request).0.raw.is_none();
        assert!(with_map(ok, true));
        assert!(with_map(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 1\r\n\r\n", false));
        assert!(with_map(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", false));
        assert!(with_map(b"HTTP/1.1 200 OK\nContent-Length: 2\n\n", false));
        assert!(with_map(b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nx-hop: 1\r\nContent-Length: 2\r\n\r\n", false));
        let (mapped, ..) =
            head(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false);
        assert_eq!((mapped.headers.len(), mapped.headers["retry-after"].as_bytes()), (2, &b"1"[..]));
    }

    #[test]
    fn a_head_parsed_into_again_keeps_nothing_of_the_last_answer() {
        let mut head = ResponseHead::new(StatusCode::OK);
        let busy = b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 1\r\n\r\n";
        let ok = b"HTTP/1.0 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n";
        parse_into(busy, false, &mut head).unwrap();
        assert!(head.raw.is_none() && head.headers.contains_key("retry-after"));
        parse_into(ok, false, &mut head).unwrap();
        assert_eq!((head.status, head.version, head.headers.len()), (StatusCode::OK, Version::HTTP_10, 0));
        assert!(head.raw.is_some());
        parse_into(busy, false, &mut head).unwrap();
        assert_eq!((head.status.as_u16(), head.headers.len(), head.raw.is_none()), (503, 2, true));
    }

    #[test]
    fn request_heads() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer t".parse().unwrap());
        let mut w = Vec::new();
        put_request_head(&mut w, &Method::POST, "/a?b", "api.x", &h, Delimit::Length(0));
        assert_eq!(w, b"POST /a?b HTTP/1.1\r\nhost: api.x\r\nauthorization: Bearer t\r\ncontent-length: 0\r\n\r\n");
    }
}
