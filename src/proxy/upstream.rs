//! The upstream client: hyper over rustls (webpki roots + system roots + `upstream.ca_file`),
//! SNI, ALPN h2/http1.1, pooled connections, connect and total timeouts, and the address check
//! that keeps bearerd from reaching loopback, private or link-local addresses.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::time::Instant;

use super::body::ProxyBody;
use super::error::ProxyError;
use crate::config::UpstreamConfig;
use crate::template::escape::split_port;

/// A pooled HTTPS client with bearerd's policies.
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector<Resolver>>, ProxyBody>,
    config: UpstreamConfig,
}

/// Marks an address refused by policy inside the connector's error chain.
#[derive(Debug, thiserror::Error)]
#[error("address not allowed")]
struct AddressRefused;

/// DNS resolution that drops addresses the policy refuses.
#[derive(Clone)]
struct Resolver {
    allow_private: bool,
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all.iter().copied().filter(|a| allow_private || is_public(a.ip())).collect();
            if allowed.is_empty() && !all.is_empty() {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, AddressRefused));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// False for loopback, private, link-local, unspecified, shared and multicast addresses.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Builds the rustls client configuration: webpki roots, system roots, and `ca_file`.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("upstream.ca_file {}: no PEM certificates in it", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, String> {
        let tls = tls_config(config.ca_file.as_deref())?;
        let mut http = HttpConnector::new_with_resolver(Resolver { allow_private: config.allow_private_ips });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Upstream { client, config: config.clone() })
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// Refuses an IP-literal host that the policy does not allow (names are checked when they
    /// are resolved).
    pub fn check_literal(&self, authority: &str) -> Result<(), ProxyError> {
        if self.config.allow_private_ips {
            return Ok(());
        }
        let (host, _) = split_port(authority);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) if !is_public(ip) => Err(ProxyError::AddressNotAllowed(authority.to_string())),
            _ => Ok(()),
        }
    }

    /// Sends one request; the response head must arrive before `deadline`. Idempotent requests
    /// refused by a stale pooled connection are retried by the pool.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
        host: &str,
        deadline: Instant,
    ) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout { host: host.to_string(), secs: self.config.timeout.as_secs() }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e, host, self.config.connect_timeout)),
        }
    }
}

/// Turns a client error into the data-plane error that explains it.
fn classify(e: &hyper_util::client::legacy::Error, host: &str, connect_timeout: Duration) -> ProxyError {
    let host = host.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<AddressRefused>() {
            return ProxyError::AddressNotAllowed(host);
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return ProxyError::UpstreamTls { host, reason: tls.to_string() };
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            // A pooled connection the upstream had closed (keep-alive timeout, restart).
            return ProxyError::UpstreamClosed { host };
        }
        let io = err.downcast_ref::<io::Error>();
        if io.is_some_and(|io| io.kind() == io::ErrorKind::TimedOut) {
            return ProxyError::UpstreamTimeout { host, secs: connect_timeout.as_secs() };
        }
        // io::Error::source skips the error it wraps: step into it instead.
        cur = match io.and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    let reason = chain(e);
    if e.is_connect() { ProxyError::UpstreamConnect { host, reason } } else { ProxyError::Upstream { host, reason } }
}

/// The error and its causes, joined.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_policy() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }
}
