//! Escaping of substituted values for the position they land in.
//!
//! A value from the request (`context.*`) is data, never syntax: in a path it is one segment, in a
//! query it is one value, in a header it is one line, in a host it is one host name.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Characters kept as they are in a path segment: RFC 3986 `pchar` less `%` and `/`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Characters kept as they are in a query key or value: only the unreserved ones.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A value refused by the escaping rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a header value may not contain CR, LF or NUL")]
    HeaderControl,
    #[error("the value is not a valid host name")]
    Host,
    #[error("a path value may not contain a `.` or `..` segment")]
    PathTraversal,
    #[error("a path may not contain `?`, `#`, a space or a control character")]
    PathCharacter,
}

/// Appends `value` as exactly one path segment: `/`, `%`, `?`, `#` are encoded, and a value of
/// `.` or `..` is refused: encoded as `%2E%2E` it would still climb on servers that decode
/// before they resolve dot segments (nginx does).
pub(crate) fn path_segment(value: &str, out: &mut String) -> Result<(), Refused> {
    if matches!(value, "." | "..") {
        return Err(Refused::PathTraversal);
    }
    out.extend(utf8_percent_encode(value, SEGMENT));
    Ok(())
}

/// Refuses a rendered path with a segment that is, or decodes to, `.` or `..`: values glued to
/// template text can make one (`/x/<%= context.a %>.` with an empty value), though neither
/// could alone.
pub(crate) fn no_dot_segments(path: &str) -> Result<(), Refused> {
    let dot = |seg: &str| {
        matches!(seg, "." | "..") || (seg.contains('%') && matches!(decode_segment(seg).as_ref(), "." | ".."))
    };
    if path.split('/').any(dot) { Err(Refused::PathTraversal) } else { Ok(()) }
}

/// Appends `value` as the end of a path: it may hold `/`, each segment is encoded, and a `.` or
/// `..` segment is refused. With `leading`, a missing leading `/` is added.
pub fn path_tail(value: &str, leading: bool, out: &mut String) -> Result<(), Refused> {
    if leading && !value.starts_with('/') {
        out.push('/');
    }
    for (i, seg) in value.split('/').enumerate() {
        if seg == "." || seg == ".." {
            return Err(Refused::PathTraversal);
        }
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(seg, SEGMENT));
    }
    Ok(())
}

/// Appends a path tail as a request's path wrote it (percent-encoded bytes kept, so `%2F` stays
/// within its segment). It must still be a path: no `?`, `#`, space or control character, and no
/// segment that decodes to `.` or `..`.
pub(crate) fn path_as_sent(raw: &str, leading: bool, out: &mut String) -> Result<(), Refused> {
    if raw.bytes().any(|b| b <= b' ' || b == b'?' || b == b'#' || b == 0x7f) {
        return Err(Refused::PathCharacter);
    }
    if raw.split('/').any(|seg| matches!(decode_segment(seg).as_ref(), "." | "..")) {
        return Err(Refused::PathTraversal);
    }
    if leading && !raw.starts_with('/') {
        out.push('/');
    }
    out.push_str(raw);
    Ok(())
}

/// Appends `value` query-encoded: it cannot add a parameter or end the query.
pub(crate) fn query_value(value: &str, out: &mut String) -> Result<(), Refused> {
    out.extend(utf8_percent_encode(value, QUERY));
    Ok(())
}

/// Appends `value` to a header value, refusing CR, LF and NUL (header injection).
pub(crate) fn header_value(value: &str, out: &mut String) -> Result<(), Refused> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Refused::HeaderControl);
    }
    out.push_str(value);
    Ok(())
}

/// Appends `value` to a host, refusing anything but host-name characters.
pub(crate) fn host_value(value: &str, out: &mut String) -> Result<(), Refused> {
    if !value.bytes().all(is_host_byte) {
        return Err(Refused::Host);
    }
    out.push_str(value);
    Ok(())
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
}

/// Checks a complete `host[:port]`: a DNS name or an IP literal, with an optional numeric port.
pub(crate) fn valid_authority(host: &str) -> bool {
    if host.is_empty() || !host.bytes().all(is_host_byte) {
        return false;
    }
    let (name, port) = split_port(host);
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return false;
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && !name.contains([':', '[', ']'])
        && name.split('.').all(|label| !label.is_empty() && label.len() <= 63 && !label.starts_with('-'))
}

/// Splits `host[:port]` (IPv6 in brackets) into the host and the port text.
pub(crate) fn split_port(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) if host[i + 1..].starts_with(':') => (&host[..=i], Some(&host[i + 2..])),
            _ => (host, None),
        };
    }
    match host.rfind(':') {
        Some(i) => (&host[..i], Some(&host[i + 1..])),
        None => (host, None),
    }
}

/// Percent-decodes one path segment for matching and capture. Invalid UTF-8 is replaced.
pub(crate) fn decode_segment(seg: &str) -> std::borrow::Cow<'_, str> {
    if seg.contains('%') { percent_decode_str(seg).decode_utf8_lossy() } else { std::borrow::Cow::Borrowed(seg) }
}

/// A host pattern from `allow_hosts`: `*.example.com` matches one or more labels before
/// `.example.com`; anything else matches exactly. Case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(Box<str>);

impl HostPattern {
    pub fn new(p: &str) -> Self {
        HostPattern(p.to_ascii_lowercase().into())
    }

    /// Whether the pattern names a port (`host:8443`).
    pub fn has_port(&self) -> bool {
        split_port(&self.0).1.is_some()
    }

    pub fn matches(&self, host: &str) -> bool {
        let (name, _) = split_port(host);
        match self.0.strip_prefix("*.") {
            Some(suffix) => {
                name.len() > suffix.len() + 1
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            None => name.eq_ignore_ascii_case(&self.0) || host.eq_ignore_ascii_case(&self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(v: &str) -> String {
        let mut s = String::new();
        path_segment(v, &mut s).unwrap();
        s
    }

    #[test]
    fn path_values_stay_one_segment() {
        assert_eq!(seg("../admin"), "..%2Fadmin");
        assert_eq!(path_segment("..", &mut String::new()), Err(Refused::PathTraversal));
        assert_eq!(path_segment(".", &mut String::new()), Err(Refused::PathTraversal));
        assert_eq!(seg("..."), "...");
        assert_eq!(no_dot_segments("/x/./y"), Err(Refused::PathTraversal));
        assert_eq!(no_dot_segments("/x/%2e%2E"), Err(Refused::PathTraversal));
        assert_eq!(no_dot_segments("/x/.%2E/y"), Err(Refused::PathTraversal));
        assert_eq!(no_dot_segments("/x/a.b/..c/%2E%2E%2E"), Ok(()));
        assert_eq!(seg("a%2Fb"), "a%252Fb");
        assert_eq!(seg("x?y#z"), "x%3Fy%23z");
        assert_eq!(seg("alice@example.com"), "alice@example.com");
        assert_eq!(seg("ü"), "%C3%BC");
        assert_eq!(seg("a\r\nb"), "a%0D%0Ab");
    }

    #[test]
    fn path_tails_keep_slashes_but_never_climb() {
        let tail = |v: &str, leading: bool| {
            let mut s = String::new();
            path_tail(v, leading, &mut s).map(|_| s)
        };
        assert_eq!(tail("/users/alice@example.com", false).unwrap(), "/users/alice@example.com");
        assert_eq!(tail("api/v1/devices", true).unwrap(), "/api/v1/devices");
        assert_eq!(tail("/a/../admin", false), Err(Refused::PathTraversal));
        assert_eq!(tail("..", true), Err(Refused::PathTraversal));
        assert_eq!(tail("/a%2F..?x#y", false).unwrap(), "/a%252F..%3Fx%23y");
    }

    #[test]
    fn tails_as_sent_keep_their_escapes_but_never_climb() {
        let tail = |v: &str| {
            let mut out = String::new();
            path_as_sent(v, true, &mut out).map(|()| out)
        };
        assert_eq!(tail("/projects/group%2Fproject/issues").unwrap(), "/projects/group%2Fproject/issues");
        assert_eq!(tail("a%20b").unwrap(), "/a%20b");
        for bad in ["/a/%2E%2E/b", "/a/%2e/b", "/../x"] {
            assert_eq!(tail(bad), Err(Refused::PathTraversal), "{bad}");
        }
        for bad in ["/a?b", "/a#b", "/a b"] {
            assert_eq!(tail(bad), Err(Refused::PathCharacter), "{bad}");
        }
    }

    #[test]
    fn query_values_cannot_add_parameters() {
        let mut s = String::new();
        query_value("a&admin=1#x y", &mut s).unwrap();
        assert_eq!(s, "a%26admin%3D1%23x%20y");
    }

    #[test]
    fn header_values_refuse_line_breaks() {
        let mut s = String::new();
        assert_eq!(header_value("x\r\nEvil: 1", &mut s), Err(Refused::HeaderControl));
        assert_eq!(header_value("a\0", &mut s), Err(Refused::HeaderControl));
        assert!(header_value("ünïcode", &mut s).is_ok());
    }

    #[test]
    fn hosts() {
        assert!(valid_authority("api.example.com"));
        assert!(valid_authority("localhost:8443"));
        assert!(valid_authority("[::1]:443"));
        assert!(!valid_authority("evil.com/x"));
        assert!(!valid_authority("a@b.com"));
        assert!(!valid_authority("a.com:99999"));
        assert!(!valid_authority(""));
        let mut s = String::new();
        assert_eq!(host_value("evil.com/path", &mut s), Err(Refused::Host));
        let p = HostPattern::new("*.freshdesk.com");
        assert!(p.matches("acme.freshdesk.com"));
        assert!(p.matches("ACME.Freshdesk.com:443"));
        assert!(!p.matches("freshdesk.com"));
        assert!(!p.matches("evilfreshdesk.com"));
        assert!(HostPattern::new("api.x.com").matches("API.x.com"));
    }
}
