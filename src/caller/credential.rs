//! The one place that reads what a request offers as its caller's credential (SPEC 2.2): the
//! `Proxy-Authorization` header (`Basic`: its password; `Bearer`: the token), on `/invoke` also
//! `Authorization: Bearer`, and a client certificate verified by the TLS listener. Every way in
//! (proxying, `/invoke`, `CONNECT`, websockets, both listeners, HTTP/2) comes through here.

use std::borrow::Cow;

use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use rustls_pki_types::CertificateDer;

use super::Failure;

/// A credential offered in a header, not yet checked: the header's whole value (what the
/// verification cache is keyed by) and its scheme.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offered<'h> {
    pub(crate) raw: &'h [u8],
    basic: bool,
}

/// The credential a request offers: its `Proxy-Authorization` (which the data plane takes out of
/// the headers before anything else, since it is never forwarded), else, for `/invoke`,
/// `Authorization`. `None` when neither is there.
pub(crate) fn offered<'h>(
    proxy_auth: Option<&'h [u8]>,
    headers: &'h HeaderMap,
    invoke: bool,
) -> Result<Option<Offered<'h>>, Failure> {
    let (raw, header) = match proxy_auth {
        Some(v) => (v, "Proxy-Authorization"),
        None => match invoke.then(|| headers.get(AUTHORIZATION)).flatten() {
            Some(v) => (v.as_bytes(), "Authorization"),
            None => return Ok(None),
        },
    };
    let scheme = |s: &[u8]| raw.len() > s.len() && raw[..s.len()].eq_ignore_ascii_case(s);
    let basic = scheme(b"basic ");
    if !basic && !scheme(b"bearer ") {
        return Err(Failure::Malformed(format!("{header} must be Basic (a proxy URL's user and password) or Bearer")));
    }
    if header == "Authorization" && basic {
        return Err(Failure::Malformed("on /invoke the credential is Authorization: Bearer <token>".into()));
    }
    Ok(Some(Offered { raw, basic }))
}

impl Offered<'_> {
    /// The user name (`Basic`: it names the app, or nothing when empty) and the secret or token.
    pub(crate) fn decode(&self) -> Result<(Option<String>, Cow<'_, str>), Failure> {
        let text =
            std::str::from_utf8(self.raw).map_err(|_| Failure::Malformed("the credential is not text".into()))?;
        let rest = text[text.find(' ').unwrap_or(0)..].trim();
        if !self.basic {
            if rest.is_empty() {
                return Err(Failure::Missing("the Bearer credential is empty"));
            }
            return Ok((None, Cow::Borrowed(rest)));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| Failure::Malformed("the Basic credential is not base64 of user:password".into()))?;
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        // A user name or password in a proxy URL arrives percent-encoded from some clients.
        let user = user_name(user);
        if password.is_empty() {
            return Err(Failure::Missing(
                "the proxy URL has no password: the caller's secret or token is the password (http://<app>:<secret>@host:port)",
            ));
        }
        let password = percent_encoding::percent_decode_str(password).decode_utf8_lossy().into_owned();
        Ok((user, Cow::Owned(password)))
    }
}

/// The user of a `Basic` credential, decoded: the app it names, `None` when empty.
pub(crate) fn user_name(user: &str) -> Option<String> {
    let user = percent_encoding::percent_decode_str(user).decode_utf8_lossy();
    (!user.is_empty()).then(|| user.into_owned())
}

/// The user name of a `Proxy-Authorization: Basic` value (for a data plane without callers,
/// where it only names the app): `f` is given it (`None` when empty); `None` for another scheme
/// or an undecodable value. Decoded on the stack, without allocating (it is read on every request
/// of a client whose proxy URL names its app), unless the user is percent-encoded.
pub(crate) fn basic_user<R>(value: &[u8], f: impl FnOnce(Option<&str>) -> R) -> Option<R> {
    let (scheme, encoded) = value.trim_ascii().split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let mut buf = [0u8; 1024];
    let n = base64::engine::general_purpose::STANDARD.decode_slice(encoded.trim_ascii(), &mut buf).ok()?;
    let decoded = std::str::from_utf8(&buf[..n]).ok()?;
    let user = decoded.split_once(':').map_or(decoded, |(u, _)| u);
    if !user.contains('%') {
        return Some(f((!user.is_empty()).then_some(user)));
    }
    Some(f(user_name(user).as_deref()))
}

/// The names of a client certificate the TLS listener verified: its URI and DNS subject
/// alternative names, what `tls_client` callers match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientCert {
    pub(crate) uris: Vec<String>,
    pub(crate) dns: Vec<String>,
}

impl ClientCert {
    /// The names of the end-entity certificate (the first of the chain).
    pub(crate) fn of(chain: &[CertificateDer<'_>]) -> Option<ClientCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
        let mut out = ClientCert::default();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::URI(u) => out.uris.push((*u).to_string()),
                    x509_parser::extensions::GeneralName::DNSName(d) => out.dns.push(d.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// `offered` as the data plane calls it: `Proxy-Authorization` taken out first.
    fn offered_by(h: &HeaderMap, invoke: bool) -> Result<Option<Offered<'_>>, Failure> {
        offered(h.get("proxy-authorization").map(|v| v.as_bytes()), h, invoke)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic(s: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s))
    }

    #[test]
    fn the_proxy_password_or_a_bearer_token_is_the_credential() {
        let h = headers(&[("proxy-authorization", &basic("demo:s3cret%21"))]);
        let o = offered_by(&h, false).unwrap().unwrap();
        let (user, secret) = o.decode().unwrap();
        assert_eq!((user.as_deref(), &*secret), (Some("demo"), "s3cret!"));
        let h = headers(&[("proxy-authorization", &basic(":tok"))]);
        assert_eq!(offered_by(&h, false).unwrap().unwrap().decode().unwrap().0, None, "an empty user names no app");
        let h = headers(&[("proxy-authorization", "bearer  abc.def ")]);
        assert_eq!(offered_by(&h, false).unwrap().unwrap().decode().unwrap(), (None, Cow::Borrowed("abc.def")));
        // The application's own Authorization is its upstream's, except on /invoke.
        let h = headers(&[("authorization", "Bearer tok")]);
        assert!(offered_by(&h, false).unwrap().is_none());
        assert!(offered_by(&h, true).unwrap().is_some());
        // Proxy-Authorization wins.
        let h = headers(&[("authorization", "Bearer a"), ("proxy-authorization", "Bearer b")]);
        assert_eq!(offered_by(&h, true).unwrap().unwrap().raw, b"Bearer b");
    }

    #[test]
    fn what_is_refused_says_why() {
        let missing = |v: &str| {
            let h = headers(&[("proxy-authorization", v)]);
            matches!(offered_by(&h, false).and_then(|o| o.unwrap().decode().map(|_| ())), Err(Failure::Missing(_)))
        };
        assert!(missing(&basic("demo")), "a user without a password");
        assert!(missing(&basic("demo:")));
        let malformed = |name: &'static str, v: &str, invoke| {
            let h = headers(&[(name, v)]);
            matches!(offered_by(&h, invoke).and_then(|o| o.unwrap().decode().map(|_| ())), Err(Failure::Malformed(_)))
        };
        assert!(malformed("proxy-authorization", "Digest x", false));
        assert!(malformed("proxy-authorization", "Basic !!!", false));
        assert!(malformed("authorization", &basic("a:b"), true));
        assert!(malformed("proxy-authorization", "Basic", false), "a scheme alone");
    }

    #[test]
    fn the_basic_user_alone() {
        let user = |v: &[u8]| basic_user(v, |u| u.map(String::from));
        assert_eq!(user(basic("asana:").as_bytes()), Some(Some("asana".into())));
        assert_eq!(user(basic("asana").as_bytes()), Some(Some("asana".into())));
        assert_eq!(user(basic("my%2Dapp:x").as_bytes()), Some(Some("my-app".into())));
        assert_eq!(user(basic(":x").as_bytes()), Some(None));
        assert_eq!(user(b"Bearer abc"), None);
        assert_eq!(user(b"Basic !!!"), None);
        assert_eq!(user(format!("Basic {}", "QUFB".repeat(400)).as_bytes()), None, "longer than the stack buffer");
    }
}
