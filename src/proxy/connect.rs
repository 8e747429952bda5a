//! `CONNECT` (SPEC 2.1): what a CONNECT may reach, the app a request names without
//! `x-bearerd-app`, and what a request inside an intercepted tunnel carries with it.
//!
//! The decision is the data plane's, from the snapshot: a host a template can match is
//! intercepted (TLS terminated by bearerd, every request inside matched like any other); a host
//! in `tunnel_hosts` is tunnelled blind; anything else is refused. The process
//! ([`crate::server`]) carries it out.

use std::sync::Arc;

use http::header::HeaderMap;

use super::plan::named_app;
use super::{Marks, ProxyError, truncate};
use crate::caller::{Admitted, ClientCert};
use crate::snapshot::Snapshot;
use crate::template::escape::{split_port, valid_authority};
use crate::template::route::HostMatch;

/// What a request that came through an intercepted tunnel carries (a request extension): the
/// CONNECT's host, the app its `Proxy-Authorization` named, and the caller it was admitted as.
#[derive(Debug, Clone)]
pub(crate) struct Tunneled {
    /// The CONNECT host's name, lower case, without its port.
    pub(crate) name: Arc<str>,
    pub(crate) port: u16,
    /// TLS inside (bearerd terminates it), or plain HTTP (a `CONNECT host:80` for `http://`
    /// URLs, as Node's undici sends them).
    pub(crate) tls: bool,
    /// The app the CONNECT named (`Proxy-Authorization` user, or `x-bearerd-app`): by name, so
    /// that it still holds after a reload.
    pub(crate) app: Option<Arc<str>>,
    /// The caller the CONNECT was admitted as (its credential counts for every request inside).
    pub(crate) caller: Option<TunnelCaller>,
}

/// The caller a tunnel was opened by: by name, with its token's expiry and the account its JWT
/// binds.
#[derive(Debug, Clone)]
pub(crate) struct TunnelCaller {
    pub(crate) name: Arc<str>,
    pub(crate) expires: Option<u64>,
    pub(crate) account: Option<Arc<str>>,
}

/// What a CONNECT reaches.
#[derive(Debug)]
pub(crate) enum Connect {
    /// TLS (or plain HTTP) terminated by bearerd for `name`; `app` as the CONNECT named it.
    Intercept { name: String, port: u16, app: Option<Arc<str>>, caller: Option<TunnelCaller> },
    /// A blind tunnel (`tunnel_hosts`), after the address check.
    Tunnel { name: String, port: u16 },
}

/// Decides a `CONNECT authority` (`proxy_auth`: its `Proxy-Authorization`): first its caller
/// (SPEC 2.2: the CONNECT's credential counts
/// for every request inside), then intercepted when a template of the app it names (or of any
/// app its caller may use) can match the host on that port, a blind tunnel when `tunnel_hosts`
/// names it, refused otherwise. An IP literal, a missing port or a malformed authority is
/// refused.
pub(crate) async fn decide(
    snap: &Snapshot,
    authority: Option<&str>,
    headers: &HeaderMap,
    proxy_auth: Option<&[u8]>,
    cert: Option<&Arc<ClientCert>>,
) -> Result<Connect, ProxyError> {
    let marks = Marks::of(headers);
    let caller = super::admit::caller(snap, proxy_auth, headers, false, None, cert).await?;
    let authority = authority.ok_or_else(|| ProxyError::BadConnect("CONNECT needs host:port".into()))?;
    let (name, port) = connect_target(authority)?;
    let app = named_app(snap, headers, marks, proxy_auth, None, caller.as_ref())?;
    reach(snap, name, port, app, caller)
}

/// What a CONNECT to `name:port` reaches, for the app it names (if any) and its caller: what
/// [`decide`] decides once it knows them (and what a dry run shows).
pub(crate) fn reach(
    snap: &Snapshot,
    name: String,
    port: u16,
    app: Option<usize>,
    caller: Option<Admitted>,
) -> Result<Connect, ProxyError> {
    let usable = |i: usize| caller.as_ref().is_none_or(|c| snap.callers.get(c.caller).may_use(i));
    if let (Some(i), Some(c)) = (app, &caller)
        && !usable(i)
    {
        return Err(ProxyError::CallerForbidden {
            caller: snap.callers.get(c.caller).name.to_string(),
            app: snap.apps[i].name.to_string(),
        });
    }
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
        None => (0..snap.apps.len()).any(|i| usable(i) && covered(i)),
    };
    if intercept {
        let caller = caller.map(|c| tunnel_caller(snap, c));
        return Ok(Connect::Intercept { name, port, app: app.map(|i| snap.apps[i].name.clone()), caller });
    }
    let tunnel = snap.config.intercept.tunnel_hosts.iter().any(|p| p.matches(&host) && (p.has_port() || port == 443));
    if tunnel {
        return Ok(Connect::Tunnel { name, port });
    }
    Err(ProxyError::ConnectRefused { host, app: app.map(|i| snap.apps[i].name.to_string()) })
}

fn tunnel_caller(snap: &Snapshot, c: Admitted) -> TunnelCaller {
    TunnelCaller { name: snap.callers.get(c.caller).name.clone(), expires: c.expires, account: c.account }
}

/// A CONNECT's `host:port`: a host name as a template host may be one (lower case) and a port
/// other than 0. An IP literal is refused (403), anything else malformed is 400.
pub(crate) fn connect_target(authority: &str) -> Result<(String, u16), ProxyError> {
    let (name, port) = split_port(authority);
    let port = match port.map(str::parse::<u16>) {
        Some(Ok(p)) if p != 0 => p,
        _ => return Err(ProxyError::BadConnect(format!("CONNECT needs host:port, not {}", truncate(authority, 255)))),
    };
    let name = name.to_ascii_lowercase();
    if name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(ProxyError::ConnectToAddress(truncate(authority, 255)));
    }
    // The same rule as a rendered template host: a CONNECT for any host a template can name
    // gets through this check.
    if !valid_authority(authority) {
        return Err(ProxyError::BadConnect(format!("CONNECT to a malformed host: {}", truncate(authority, 255))));
    }
    Ok((name, port))
}

/// The configured apps' names, for errors.
pub(crate) fn app_names(snap: &Snapshot) -> String {
    snap.apps.iter().map(|a| &*a.name).collect::<Vec<_>>().join(", ")
}

/// Whether `host` (a request's `Host` or `:authority`) is the tunnel's host: the same name and
/// port, the scheme's default (443, or 80 for plain HTTP inside) when it has none.
pub(crate) fn is_tunnel_host(tunnel: &Tunneled, host: &str) -> bool {
    let (name, port) = split_port(host);
    let port = match port {
        None if tunnel.tls => 443,
        None => 80,
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
            assert!(matches!(connect_target(ip), Err(ProxyError::ConnectToAddress(_))), "{ip}");
        }
    }

    #[test]
    fn tunnel_hosts_compare_name_and_port() {
        let t = Tunneled { name: "api.x.com".into(), port: 443, tls: true, app: None, caller: None };
        assert!(is_tunnel_host(&t, "api.x.com"));
        assert!(is_tunnel_host(&t, "API.X.COM:443"));
        assert!(!is_tunnel_host(&t, "api.x.com:8443"));
        assert!(!is_tunnel_host(&t, "other.x.com"));
        assert!(!is_tunnel_host(&t, "api.x.com:x"));
        let plain = Tunneled { name: "api.x.com".into(), port: 80, tls: false, app: None, caller: None };
        assert!(is_tunnel_host(&plain, "api.x.com") && is_tunnel_host(&plain, "api.x.com:80"));
        assert!(!is_tunnel_host(&plain, "api.x.com:443"));
    }
}
