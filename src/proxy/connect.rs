//! `CONNECT` (SPEC 2.1): what a CONNECT may reach, the app a request names without
//! `x-bearerd-app`, and what a request inside an intercepted tunnel carries with it.
//!
//! The decision is the data plane's, from the snapshot: a host a template can match is
//! intercepted (TLS terminated by bearerd, every request inside matched like any other); a host
//! in `tunnel_hosts` is tunnelled blind; anything else is refused. The process
//! ([`crate::server`]) carries it out.

use std::sync::Arc;

use base64::Engine as _;
use http::header::{self, HeaderMap};

use super::{ProxyError, X_APP, truncate};
use crate::snapshot::Snapshot;
use crate::template::escape::{split_port, valid_authority};
use crate::template::route::HostMatch;

/// What a request that came through an intercepted tunnel carries (a request extension): the
/// CONNECT's host, and the app its `Proxy-Authorization` named.
#[derive(Debug, Clone)]
pub(crate) struct Tunneled {
    /// The CONNECT host's name, lower case, without its port.
    pub(crate) name: Arc<str>,
    pub(crate) port: u16,
    /// The app the CONNECT named (`Proxy-Authorization` user, or `x-bearerd-app`): by name, so
    /// that it still holds after a reload.
    pub(crate) app: Option<Arc<str>>,
}

/// What a CONNECT reaches.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Connect {
    /// TLS terminated by bearerd with a certificate for `name`; `app` as the CONNECT named it.
    Intercept { name: String, port: u16, app: Option<Arc<str>> },
    /// A blind tunnel (`tunnel_hosts`), after the address check.
    Tunnel { name: String, port: u16 },
}

/// Decides a `CONNECT authority`: intercepted when a template of the app it names (or of any
/// app) can match the host on that port, a blind tunnel when `tunnel_hosts` names it, refused
/// otherwise. An IP literal, a missing port or a malformed authority is refused.
pub(crate) fn decide(snap: &Snapshot, authority: Option<&str>, headers: &HeaderMap) -> Result<Connect, ProxyError> {
    let authority = authority.ok_or_else(|| ProxyError::BadConnect("CONNECT needs host:port".into()))?;
    let (name, port) = connect_target(authority)?;
    let app = named_app(snap, headers, None, super::Marks::of(headers))?;
    let host = format!("{name}:{port}");
    let covered = |i: usize| {
        let a = &snap.apps[i];
        match a.router.covers(&host) {
            Some(HostMatch::Literal) => true,
            Some(HostMatch::Captured) => a.config.allow_hosts.iter().any(|p| p.matches(&host)),
            None => false,
        }
    };
    let intercept = match app {
        Some(i) => covered(i),
        None => (0..snap.apps.len()).any(covered),
    };
    if intercept {
        return Ok(Connect::Intercept { name, port, app: app.map(|i| snap.apps[i].name.clone()) });
    }
    let tunnel = snap.config.intercept.tunnel_hosts.iter().any(|p| p.matches(&host) && (p.has_port() || port == 443));
    if tunnel {
        return Ok(Connect::Tunnel { name, port });
    }
    Err(ProxyError::ConnectRefused { host, why: "no request template covers it, and it is not in tunnel_hosts" })
}

/// A CONNECT's `host:port`: a host name as a template host may be one (lower case) and a port
/// other than 0. An IP literal is refused (403), anything else malformed is 400.
fn connect_target(authority: &str) -> Result<(String, u16), ProxyError> {
    let (name, port) = split_port(authority);
    let port = match port.map(str::parse::<u16>) {
        Some(Ok(p)) if p != 0 => p,
        _ => return Err(ProxyError::BadConnect(format!("CONNECT needs host:port, not {}", truncate(authority, 255)))),
    };
    let name = name.to_ascii_lowercase();
    if name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(ProxyError::ConnectRefused {
            host: truncate(authority, 255),
            why: "bearerd intercepts host names that templates name, never IP addresses",
        });
    }
    // The same rule as a rendered template host: a CONNECT for any host a template can name
    // gets through this check.
    if !valid_authority(authority) {
        return Err(ProxyError::BadConnect(format!("CONNECT to a malformed host: {}", truncate(authority, 255))));
    }
    Ok((name, port))
}

/// The app a request names, if it names one: `x-bearerd-app`, else the user name of a
/// `Proxy-Authorization: Basic` credential (`HTTP_PROXY=http://<app>@host:port`), else the one
/// its tunnel's CONNECT named. `marks` say which headers are there to look for.
pub(crate) fn named_app(
    snap: &Snapshot,
    headers: &HeaderMap,
    tunnel: Option<&Tunneled>,
    marks: super::Marks,
) -> Result<Option<usize>, ProxyError> {
    let unknown = |how: &str, name: &str| {
        ProxyError::BadAppHeader(format!("{how} names no app: {} (apps: {})", truncate(name, 100), app_names(snap)))
    };
    if marks.ours
        && let Some(v) = headers.get(X_APP)
    {
        let name = v.to_str().unwrap_or("");
        return snap.app_index(name).map(Some).ok_or_else(|| unknown("x-bearerd-app", name));
    }
    if marks.hop_by_hop
        && let Some(v) = headers.get(header::PROXY_AUTHORIZATION)
    {
        let user = proxy_user(v.as_bytes()).ok_or_else(|| {
            ProxyError::BadAppHeader("Proxy-Authorization must be Basic, naming an app as its user".into())
        })?;
        return snap.app_index(&user).map(Some).ok_or_else(|| unknown("the Proxy-Authorization user", &user));
    }
    match tunnel.and_then(|t| t.app.as_deref()) {
        Some(name) => snap.app_index(name).map(Some).ok_or_else(|| unknown("the tunnel's CONNECT", name)),
        None => Ok(None),
    }
}

/// The user name of a `Basic` credential.
fn proxy_user(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
    // A user name in a proxy URL arrives percent-encoded by some clients.
    Some(percent_encoding::percent_decode_str(user).decode_utf8_lossy().into_owned())
}

/// The configured apps' names, for errors.
pub(crate) fn app_names(snap: &Snapshot) -> String {
    snap.apps.iter().map(|a| &*a.name).collect::<Vec<_>>().join(", ")
}

/// Whether `host` (a request's `Host` or `:authority`) is the tunnel's host: the same name and
/// port, 443 when it has none.
pub(crate) fn is_tunnel_host(tunnel: &Tunneled, host: &str) -> bool {
    let (name, port) = split_port(host);
    let port = match port {
        None => 443,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return false,
        },
    };
    port == tunnel.port && name.eq_ignore_ascii_case(&tunnel.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_user_names_the_app() {
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert_eq!(proxy_user(basic("asana:").as_bytes()).as_deref(), Some("asana"));
        assert_eq!(proxy_user(basic("asana:secret").as_bytes()).as_deref(), Some("asana"));
        assert_eq!(proxy_user(basic("asana").as_bytes()).as_deref(), Some("asana"));
        assert_eq!(proxy_user(basic("my%2Dapp:").as_bytes()).as_deref(), Some("my-app"));
        assert_eq!(proxy_user(b"Bearer abc"), None);
        assert_eq!(proxy_user(b"Basic !!!"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, failure_persistence: None, ..Default::default() })]

        /// Oracle: the `http` crate's reading of the same authority (what hyper's server does with
        /// a CONNECT target). Whatever bearerd accepts, it reads as `http` does; it accepts no
        /// authority `http` refuses.
        #[test]
        fn connect_targets_read_as_the_http_crate_reads_them(
            authority in "[a-zA-Z0-9.\\-_:\\[\\]@%]{0,12}(:[0-9]{0,6})?"
        ) {
            if let Ok((name, port)) = connect_target(&authority) {
                let theirs: http::uri::Authority = authority.parse().expect("http accepts what bearerd accepts");
                proptest::prop_assert_eq!(name, theirs.host().to_ascii_lowercase());
                proptest::prop_assert_eq!(Some(port), theirs.port_u16());
            }
        }
    }

    #[test]
    fn connect_targets() {
        assert_eq!(connect_target("API.x.com:443").unwrap(), ("api.x.com".to_string(), 443));
        // A name a template host may have (`_` included) is read as one.
        assert_eq!(connect_target("a_b.com:443").unwrap(), ("a_b.com".to_string(), 443));
        for bad in ["api.x.com", "api.x.com:", "api.x.com:0", "api.x.com:99999", "u@a.com:443", ":443", "-a.com:443"] {
            assert!(matches!(connect_target(bad), Err(ProxyError::BadConnect(_))), "{bad}");
        }
        for ip in ["127.0.0.1:443", "[::1]:443"] {
            assert!(matches!(connect_target(ip), Err(ProxyError::ConnectRefused { .. })), "{ip}");
        }
    }

    #[test]
    fn tunnel_hosts_compare_name_and_port() {
        let t = Tunneled { name: "api.x.com".into(), port: 443, app: None };
        assert!(is_tunnel_host(&t, "api.x.com"));
        assert!(is_tunnel_host(&t, "API.X.COM:443"));
        assert!(!is_tunnel_host(&t, "api.x.com:8443"));
        assert!(!is_tunnel_host(&t, "other.x.com"));
        assert!(!is_tunnel_host(&t, "api.x.com:x"));
    }
}
