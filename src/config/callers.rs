//! `callers` and `listen_tls` of `bearerd.yaml` (SPEC 2.2): who may use the data plane, and the
//! data plane over TLS. The serde types mirror the file; [`callers`] and [`listen_tls`] validate
//! them into the types below, every problem reported with its JSON path. A JWKS file and the
//! TLS listener's certificate are read here, so a reload re-reads them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::Diag;
use crate::jose::Jwks;

/// One entry of `callers:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallerFile {
    pub name: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_sha256: Option<String>,
    #[serde(default)]
    pub jwt: Option<JwtFile>,
    #[serde(default)]
    pub tls_client: Option<TlsClientFile>,
    #[serde(default)]
    pub apps: Option<Vec<String>>,
    /// A list of accounts, `["*"]`, or `{claim: X}`.
    #[serde(default)]
    pub accounts: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtFile {
    pub issuer: String,
    pub audience: String,
    #[serde(default)]
    pub jwks_file: Option<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsClientFile {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub dns: Option<String>,
}

/// `listen_tls:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenTlsFile {
    pub address: String,
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub client_ca: Option<String>,
}

/// A caller: its name (in logs and metrics, never a secret), how it proves who it is, and what
/// it may use.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    pub name: String,
    pub(crate) credential: CallerCredential,
    pub(crate) apps: Allowed,
    pub(crate) accounts: AccountRule,
}

/// How a caller proves who it is.
#[derive(Debug, Clone)]
pub(crate) enum CallerCredential {
    /// A shared secret, kept as its SHA-256 only.
    Secret(Digest),
    Jwt(JwtRule),
    /// A client certificate verified against `listen_tls.client_ca` with this SAN.
    TlsClient(SanRule),
}

/// A SHA-256 digest of a caller's secret. `Debug` never shows it (a digest of a weak secret can
/// be searched for offline).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Digest(pub(crate) [u8; 32]);

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(...)")
    }
}

/// What a `jwt` caller accepts.
#[derive(Debug, Clone)]
pub(crate) struct JwtRule {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) keys: KeysFrom,
    /// Every one must equal the token's claim of that name.
    pub(crate) claims: Vec<(String, serde_json::Value)>,
}

/// Where a `jwt` caller's keys come from.
#[derive(Debug, Clone)]
pub(crate) enum KeysFrom {
    /// Read at load (and at every reload).
    File(Arc<Jwks>),
    /// Fetched over verified TLS and cached.
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SanRule {
    Uri(String),
    Dns(String),
}

/// The apps a caller may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Allowed {
    All,
    Only(Vec<String>),
}

impl Allowed {
    pub(crate) fn allows(&self, name: &str) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Only(list) => list.iter().any(|a| a == name),
        }
    }
}

/// The accounts a caller may name (SPEC 2.2 `accounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccountRule {
    /// None but the default account (the default).
    None,
    All,
    Only(Vec<String>),
    /// The account is the value of this claim of the caller's JWT.
    Claim(String),
}

/// The data plane over TLS: its address and the TLS settings built from its files.
#[derive(Debug, Clone)]
pub struct TlsListen {
    pub address: SocketAddr,
    pub(crate) server: TlsServer,
    /// Client certificates are asked for (and verified against `client_ca`).
    pub(crate) client_ca: bool,
}

/// A TLS server configuration; `Debug` shows nothing of its key.
#[derive(Clone)]
pub(crate) struct TlsServer(pub(crate) Arc<rustls::ServerConfig>);

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer(...)")
    }
}

/// `listen_tls`: the address, the certificate chain and key (PEM), and the client CA when set.
/// The files it read go into `files`.
pub(crate) fn listen_tls(
    d: &mut Diag,
    shown: &str,
    base: &Path,
    file: &ListenTlsFile,
    files: &mut Vec<PathBuf>,
) -> Option<TlsListen> {
    let address = match file.address.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            d.error(shown, "/listen_tls/address", format!("`{}` is not an address (ip:port)", file.address));
            None
        }
    };
    let mut read = |rel: &str, pointer: &str| {
        let path = base.join(rel);
        files.push(path.clone());
        match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                d.error(shown, pointer, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    };
    let cert = read(&file.cert, "/listen_tls/cert");
    let key = read(&file.key, "/listen_tls/key");
    let client_ca = file.client_ca.as_ref().map(|c| (read(c, "/listen_tls/client_ca"), c));
    let (Some(cert), Some(key)) = (cert, key) else { return None };
    let chain: Vec<CertificateDer<'static>> = match CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>()
    {
        Ok(c) if !c.is_empty() => c,
        _ => {
            d.error(shown, "/listen_tls/cert", "holds no PEM certificate");
            return None;
        }
    };
    let Ok(key) = PrivateKeyDer::from_pem_slice(&key) else {
        d.error(shown, "/listen_tls/key", "holds no PEM private key");
        return None;
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        match rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions() {
            Ok(b) => b,
            Err(e) => {
                d.error(shown, "/listen_tls", e.to_string());
                return None;
            }
        };
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some((None, _)) => return None,
        Some((Some(pem), _)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem).flatten() {
                if let Err(e) = roots.add(c) {
                    d.error(shown, "/listen_tls/client_ca", format!("not a CA certificate: {e}"));
                }
            }
            if roots.is_empty() {
                d.error(shown, "/listen_tls/client_ca", "holds no PEM certificate");
                return None;
            }
            // Asked for, not required: callers with a secret or a JWT use the same listener.
            match rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
            {
                Ok(v) => builder.with_client_cert_verifier(v),
                Err(e) => {
                    d.error(shown, "/listen_tls/client_ca", e.to_string());
                    return None;
                }
            }
        }
    };
    let mut server = match builder.with_single_cert(chain, key) {
        Ok(s) => s,
        Err(e) => {
            d.error(shown, "/listen_tls/key", format!("does not go with the certificate: {e}"));
            return None;
        }
    };
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(TlsListen { address: address?, server: TlsServer(Arc::new(server)), client_ca: file.client_ca.is_some() })
}

/// `callers`, validated. `apps` are the configured app names; `client_ca` whether the TLS
/// listener verifies client certificates (a `tls_client` caller needs it).
pub(crate) fn callers(
    d: &mut Diag,
    shown: &str,
    base: &Path,
    list: &[CallerFile],
    apps: &[String],
    client_ca: bool,
    files: &mut Vec<PathBuf>,
) -> Vec<CallerConfig> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in list.iter().enumerate() {
        let p = format!("/callers/{i}");
        if c.name.is_empty()
            || !c.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            d.error(shown, format!("{p}/name"), format!("caller name `{}` must match [a-z0-9_-]+", c.name));
        }
        if let Some(prev) = seen.insert(&c.name, i) {
            d.error(shown, format!("{p}/name"), format!("caller name `{}` is already used by /callers/{prev}", c.name));
        }
        let kinds = [c.secret.is_some(), c.secret_sha256.is_some(), c.jwt.is_some(), c.tls_client.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            d.error(shown, &p, "a caller needs exactly one of secret, secret_sha256, jwt, tls_client");
            continue;
        }
        let credential = if let Some(s) = &c.secret {
            if s.len() < 16 {
                d.warn(shown, format!("{p}/secret"), "a secret shorter than 16 characters can be guessed");
            }
            if s.is_empty() {
                d.error(shown, format!("{p}/secret"), "must not be empty");
            }
            Some(CallerCredential::Secret(Digest(sha256(s.as_bytes()))))
        } else if let Some(h) = &c.secret_sha256 {
            match hex32(h) {
                Some(digest) => Some(CallerCredential::Secret(Digest(digest))),
                None => {
                    d.error(shown, format!("{p}/secret_sha256"), "must be 64 hex digits (sha256sum of the secret)");
                    None
                }
            }
        } else if let Some(j) = &c.jwt {
            jwt(d, shown, &p, base, j, files).map(CallerCredential::Jwt)
        } else if let Some(t) = &c.tls_client {
            if !client_ca {
                d.error(shown, format!("{p}/tls_client"), "a tls_client caller needs listen_tls.client_ca");
            }
            match (&t.uri, &t.dns) {
                (Some(u), None) if !u.is_empty() => Some(CallerCredential::TlsClient(SanRule::Uri(u.clone()))),
                (None, Some(n)) if !n.is_empty() => {
                    Some(CallerCredential::TlsClient(SanRule::Dns(n.to_ascii_lowercase())))
                }
                _ => {
                    d.error(shown, format!("{p}/tls_client"), "give exactly one of uri and dns");
                    None
                }
            }
        } else {
            None
        };
        let allowed = match &c.apps {
            None => {
                d.error(shown, format!("{p}/apps"), "the apps this caller may use are required ([\"*\"] for all)");
                None
            }
            Some(list) if list.iter().any(|a| a == "*") => {
                if list.len() > 1 {
                    d.error(shown, format!("{p}/apps"), "\"*\" stands alone");
                }
                Some(Allowed::All)
            }
            Some(list) if list.is_empty() => {
                d.error(shown, format!("{p}/apps"), "a caller needs at least one app ([\"*\"] for all)");
                None
            }
            Some(list) => {
                for (j, a) in list.iter().enumerate() {
                    if !apps.contains(a) {
                        d.error(
                            shown,
                            format!("{p}/apps/{j}"),
                            format!("no app named `{a}` (apps: {})", apps.join(", ")),
                        );
                    }
                }
                Some(Allowed::Only(list.clone()))
            }
        };
        let is_jwt = c.jwt.is_some();
        let accounts = accounts(d, shown, &p, c.accounts.as_ref(), is_jwt);
        if let (Some(credential), Some(apps), Some(accounts)) = (credential, allowed, accounts) {
            out.push(CallerConfig { name: c.name.clone(), credential, apps, accounts });
        }
    }
    out
}

fn jwt(d: &mut Diag, shown: &str, p: &str, base: &Path, j: &JwtFile, files: &mut Vec<PathBuf>) -> Option<JwtRule> {
    let p = format!("{p}/jwt");
    let mut ok = true;
    if j.issuer.is_empty() {
        d.error(shown, format!("{p}/issuer"), "must not be empty");
        ok = false;
    }
    if j.audience.is_empty() {
        d.error(shown, format!("{p}/audience"), "must not be empty");
        ok = false;
    }
    let keys = match (&j.jwks_file, &j.jwks_url) {
        (Some(f), None) => {
            let path = base.join(f);
            files.push(path.clone());
            match std::fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|b| Jwks::parse(&b).map_err(|e| format!("{}: {e}", path.display())))
            {
                Ok(jwks) if jwks.keys.is_empty() => {
                    d.error(
                        shown,
                        format!("{p}/jwks_file"),
                        "holds no key bearerd can verify with (RSA, EC P-256, Ed25519)",
                    );
                    None
                }
                Ok(jwks) => Some(KeysFrom::File(Arc::new(jwks))),
                Err(e) => {
                    d.error(shown, format!("{p}/jwks_file"), e);
                    None
                }
            }
        }
        (None, Some(u)) => match u.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("https") && uri.authority().is_some() => Some(KeysFrom::Url(u.clone())),
            _ => {
                d.error(
                    shown,
                    format!("{p}/jwks_url"),
                    format!("`{u}` is not an https:// URL (keys come over verified TLS)"),
                );
                None
            }
        },
        _ => {
            d.error(shown, &p, "give exactly one of jwks_file and jwks_url");
            None
        }
    };
    for (k, v) in &j.claims {
        if v.is_object() || v.is_array() || v.is_null() {
            d.error(shown, format!("{p}/claims/{}", super::ptr(k)), "a claim must equal a string, number or boolean");
            ok = false;
        }
    }
    let keys = keys?;
    ok.then(|| JwtRule {
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        keys,
        claims: j.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

fn accounts(d: &mut Diag, shown: &str, p: &str, v: Option<&serde_json::Value>, is_jwt: bool) -> Option<AccountRule> {
    let p = format!("{p}/accounts");
    let wrong = "must be a list of accounts, [\"*\"], or {claim: <a claim of the caller's JWT>}";
    match v {
        None => Some(AccountRule::None),
        Some(serde_json::Value::Array(list)) => {
            let names: Option<Vec<String>> = list.iter().map(|a| a.as_str().map(str::to_string)).collect();
            match names {
                Some(n) if n.iter().any(|a| a == "*") => {
                    if n.len() > 1 {
                        d.error(shown, &p, "\"*\" stands alone");
                    }
                    Some(AccountRule::All)
                }
                Some(n) if n.iter().all(|a| !a.is_empty() && a.len() <= 256) => Some(AccountRule::Only(n)),
                _ => {
                    d.error(shown, &p, wrong);
                    None
                }
            }
        }
        Some(serde_json::Value::Object(m)) => match (m.get("claim").and_then(|c| c.as_str()), m.len()) {
            (Some(claim), 1) if !claim.is_empty() => {
                if !is_jwt {
                    d.error(shown, &p, "{claim: ...} binds the account to a claim of a JWT: only for a jwt caller");
                    return None;
                }
                Some(AccountRule::Claim(claim.to_string()))
            }
            _ => {
                d.error(shown, &p, wrong);
                None
            }
        },
        Some(_) => {
            d.error(shown, &p, wrong);
            None
        }
    }
}

/// SHA-256, as callers' secrets are kept and compared.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_digests_in_hex() {
        let d = sha256(b"test");
        assert_eq!(hex32("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"), Some(d));
        assert_eq!(hex32("9f86"), None);
        assert_eq!(hex32(&"zz".repeat(32)), None);
        assert_eq!(format!("{:?}", Digest(d)), "Digest(...)");
    }
}
