//! HTTPS through CONNECT (SPEC 2.1): the intercept CA ([`Authority`]) and the TLS server
//! settings bearerd presents for each CONNECT host ([`Certificates`]): a leaf certificate for
//! exactly that host, minted on a blocking thread (never on the async workers), cached in a
//! bounded map, renewed before it expires and never outliving the CA.
//!
//! The CA's private key lives only in memory and in its file (mode 0600): no `Debug`, error,
//! log line or metric shows it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::OnceCell;

use crate::config::InterceptConfig;

/// How long a leaf certificate is valid (from an hour before it is minted, for clocks that lag).
const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A cached leaf with less than this left is minted again.
const LEAF_RENEW: Duration = Duration::from_secs(12 * 3600);
const BACKDATE: Duration = Duration::from_secs(3600);
/// How long a generated CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A CA with less than this left is warned about (at start and in `/readyz`).
pub(crate) const CA_WARN: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most hosts whose certificates are kept. Hosts are those templates (or `tunnel_hosts`)
/// name, but a template whose host comes from a context value (within `allow_hosts`) can name
/// many: past this, a share of the cache is dropped.
const MAX_CACHED: usize = 1024;
/// ALPN protocols offered to clients inside a tunnel, preferred first.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The CA's files: missing, unreadable or not a CA. The message never holds key material.
    #[error("intercept CA {path}: {message}")]
    Ca { path: String, message: String },
    #[error("cannot mint a certificate for {host}: {message}")]
    Mint { host: String, message: String },
}

/// The intercept CA: its certificate (public) and its key.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's `notAfter`, in seconds since the epoch.
    not_after: i64,
    path: PathBuf,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("path", &self.path)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// The CA of `config`: read from its files, or generated there once when neither exists and
    /// the configuration leaves the location to bearerd.
    pub fn open(config: &InterceptConfig) -> Result<Authority, InterceptError> {
        let (cert, key) = (&config.ca_cert, &config.ca_key);
        match (cert.exists(), key.exists()) {
            (true, true) => {
                let cert_pem =
                    std::fs::read_to_string(cert).map_err(|e| ca_error(cert, format!("cannot read: {e}")))?;
                // The key's read error names the file, never its content.
                let key_pem = std::fs::read_to_string(key).map_err(|e| ca_error(key, format!("cannot read: {e}")))?;
                Authority::from_pem(cert_pem, &key_pem, cert, key)
            }
            (false, false) if config.generate => Authority::generate(cert, key),
            (false, false) => Err(ca_error(cert, "neither the certificate nor its key exists")),
            (true, false) => Err(ca_error(
                key,
                format!("missing beside {}: restore it, or remove both to generate a new CA", cert.display()),
            )),
            (false, true) => Err(ca_error(
                cert,
                format!("missing beside {}: restore it, or remove both to generate a new CA", key.display()),
            )),
        }
    }

    fn from_pem(cert_pem: String, key_pem: &str, cert: &Path, key: &Path) -> Result<Authority, InterceptError> {
        let key_pair = KeyPair::from_pem(key_pem)
            .map_err(|_| ca_error(key, "not a PEM private key (PKCS#8: ECDSA, Ed25519 or RSA)"))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| ca_error(cert, "not a PEM certificate"))?;
        let x509 = pem.parse_x509().map_err(|_| ca_error(cert, "not an X.509 certificate"))?;
        if !x509.is_ca() {
            return Err(ca_error(cert, "not a CA certificate (basicConstraints CA:TRUE is missing)"));
        }
        if x509.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(&key_pair) {
            return Err(ca_error(key, "this key does not belong to the CA certificate beside it"));
        }
        let not_after = x509.validity().not_after.timestamp();
        let der = CertificateDer::from(pem.contents.clone());
        let issuer = Issuer::from_ca_cert_der(&der, key_pair)
            .map_err(|e| ca_error(cert, format!("cannot sign with it: {e}")))?;
        Ok(Authority { cert_pem, issuer, not_after, path: cert.to_path_buf() })
    }

    /// A new CA (ECDSA P-256), written to `cert` and `key` (0600, written first).
    fn generate(cert: &Path, key: &Path) -> Result<Authority, InterceptError> {
        let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| ca_error(key, format!("cannot generate a key: {e}")))?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "bearerd intercept CA");
        name.push(DnType::OrganizationName, "bearerd");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        params.serial_number = Some(serial());
        let cert_der = params.self_signed(&key_pair).map_err(|e| ca_error(cert, format!("cannot sign: {e}")))?;
        let cert_pem = cert_der.pem();
        if let Some(dir) = cert.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ca_error(dir, format!("cannot create the folder: {e}")))?;
        }
        crate::secret::write_atomic(key, key_pair.serialize_pem().as_bytes(), 0o600)
            .map_err(|e| ca_error(key, format!("cannot write: {e}")))?;
        crate::secret::write_atomic(cert, cert_pem.as_bytes(), 0o644)
            .map_err(|e| ca_error(cert, format!("cannot write: {e}")))?;
        tracing::info!(cert = %cert.display(), key = %key.display(), "generated the intercept CA");
        let not_after = unix(now + CA_LIFETIME);
        Ok(Authority { cert_pem, issuer: Issuer::new(params, key_pair), not_after, path: cert.to_path_buf() })
    }

    /// The CA certificate, PEM (public: served at `/ca.pem`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The time left before the CA expires (zero once it has).
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.not_after - unix(SystemTime::now())).unwrap_or(0))
    }

    /// A leaf certificate and key for `host` (a DNS name), valid from an hour ago for
    /// [`LEAF_LIFETIME`] or until the CA expires, whichever is first; and when it ends.
    fn mint(&self, host: &str) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>, SystemTime), String> {
        let now = SystemTime::now();
        let ca_end = UNIX_EPOCH + Duration::from_secs(u64::try_from(self.not_after).unwrap_or(0));
        let not_after = (now + LEAF_LIFETIME).min(ca_end);
        if not_after <= now {
            return Err("the intercept CA has expired".into());
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        params.serial_number = Some(serial());
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), key, not_after))
    }
}

/// A problem with the CA's file at `path` (never its content).
fn ca_error(path: &Path, message: impl Into<String>) -> InterceptError {
    InterceptError::Ca { path: path.display().to_string(), message: message.into() }
}

/// A random positive 16-byte serial number.
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // ring's system random; a failure leaves zeros, which only make serials repeat.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// One host's TLS settings, and when to mint again.
struct Leaf {
    config: Arc<ServerConfig>,
    renew_at: SystemTime,
}

/// The TLS server settings for each intercepted host, each with its own leaf certificate.
pub struct Certificates {
    ca: Arc<Authority>,
    /// Keyed hash: a client chooses the host (among those templates allow).
    cache: Mutex<HashMap<Box<str>, Arc<OnceCell<Leaf>>, foldhash::fast::RandomState>>,
    /// Shared by every host: one bounded session cache and one ticket key for resumption.
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
    tickets: Option<Arc<dyn rustls::server::ProducesTickets>>,
    issued: prometheus::IntCounter,
    /// The most hosts kept ([`MAX_CACHED`]).
    max: usize,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("ca", &self.ca).finish_non_exhaustive()
    }
}

impl Certificates {
    /// `issued` counts each certificate minted (`certificates_issued_total`).
    pub fn new(ca: Arc<Authority>, issued: prometheus::IntCounter) -> Certificates {
        Certificates {
            ca,
            cache: Mutex::default(),
            sessions: rustls::server::ServerSessionMemoryCache::new(4096),
            tickets: rustls::crypto::ring::Ticketer::new().ok(),
            issued,
            max: MAX_CACHED,
        }
    }

    pub fn authority(&self) -> &Arc<Authority> {
        &self.ca
    }

    /// The TLS settings for `host` (lower case, no port): from the cache, or with a certificate
    /// minted now. Concurrent handshakes for one host wait for one mint.
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, InterceptError> {
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let now = SystemTime::now();
            match cache.get(host) {
                Some(cell) if cell.get().is_none_or(|leaf| leaf.renew_at > now) => cell.clone(),
                _ => {
                    if cache.len() >= self.max {
                        // Drop an eighth (an arbitrary one: the map's order is seeded per
                        // process); the hosts in use come back at their next handshake.
                        let drop: Vec<Box<str>> = cache.keys().take(self.max.div_ceil(8)).cloned().collect();
                        for k in drop {
                            cache.remove(&k);
                        }
                    }
                    let cell = Arc::new(OnceCell::new());
                    cache.insert(host.into(), cell.clone());
                    cell
                }
            }
        };
        let leaf = cell.get_or_try_init(|| self.mint(host)).await?;
        Ok(leaf.config.clone())
    }

    async fn mint(&self, host: &str) -> Result<Leaf, InterceptError> {
        let fail = |message: String| InterceptError::Mint { host: host.to_string(), message };
        let (ca, name) = (self.ca.clone(), host.to_string());
        let minted = tokio::task::spawn_blocking(move || ca.mint(&name)).await.map_err(|e| fail(e.to_string()))?;
        let (cert, key, not_after) = minted.map_err(fail)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|e| fail(e.to_string()))?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        config.session_storage = self.sessions.clone();
        if let Some(t) = &self.tickets {
            config.ticketer = t.clone();
        }
        self.issued.inc();
        tracing::debug!(host, "minted a certificate");
        let renew_at = (not_after - LEAF_RENEW).max(SystemTime::now());
        Ok(Leaf { config: Arc::new(config), renew_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA valid until `left` from now, written to `dir`, and its configuration.
    fn ca_expiring_in(dir: &Path, left: Duration) -> InterceptConfig {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "short-lived test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = (SystemTime::now() - BACKDATE).into();
        params.not_after = (SystemTime::now() + left).into();
        let cert = params.self_signed(&key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let mut c = InterceptConfig::beside(dir);
        c.generate = false;
        std::fs::write(&c.ca_cert, cert.pem()).unwrap();
        std::fs::write(&c.ca_key, key.serialize_pem()).unwrap();
        c
    }

    #[test]
    fn a_leaf_never_outlives_its_ca() {
        let dir = std::env::temp_dir().join(format!("bearerd-ca-short-{}", std::process::id()));
        let ca = Authority::open(&ca_expiring_in(&dir, Duration::from_secs(2 * 3600))).unwrap();
        assert!(ca.remaining() < CA_WARN, "warned about at start and in /readyz");
        let (cert, _, end) = ca.mint("api.example.com").unwrap();
        assert!(end <= SystemTime::now() + Duration::from_secs(2 * 3600), "capped at the CA's end");
        let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
        assert!(x509.validity().not_after.timestamp() <= ca.not_after);
        let san = x509.subject_alternative_name().unwrap().unwrap();
        assert_eq!(format!("{:?}", san.value.general_names), r#"[DNSName("api.example.com")]"#);
        let expired = Authority::open(&ca_expiring_in(&dir.join("x"), Duration::ZERO)).unwrap();
        assert!(expired.mint("api.example.com").unwrap_err().contains("expired"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_and_one_host_is_minted_once() {
        let dir = std::env::temp_dir().join(format!("bearerd-ca-cache-{}", std::process::id()));
        let ca = Arc::new(Authority::open(&InterceptConfig::beside(&dir)).unwrap());
        let issued = prometheus::IntCounter::new("issued", "issued").unwrap();
        let mut certs = Certificates::new(ca, issued.clone());
        certs.max = 16;
        let certs = Arc::new(certs);
        // 50 handshakes for one host at once: one mint.
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = certs.clone();
                tokio::spawn(async move { c.server_config("api.example.com").await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(issued.get(), 1);
        for i in 0..100 {
            certs.server_config(&format!("h{i}.example.com")).await.unwrap();
            assert!(certs.cache.lock().unwrap().len() <= 16);
        }
        assert_eq!(issued.get(), 101);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn config(dir: &Path) -> InterceptConfig {
        InterceptConfig::beside(dir)
    }

    #[test]
    fn a_generated_ca_is_kept_and_read_back() {
        let dir = std::env::temp_dir().join(format!("bearerd-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = config(&dir);
        let first = Authority::open(&c).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&c.ca_key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is its owner's alone");
        let again = Authority::open(&c).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem(), "generated once, then read");
        assert!(again.remaining() > Duration::from_secs(9 * 365 * 24 * 3600));
        assert!(!format!("{again:?}").contains("PRIVATE"), "Debug shows no key");
        let (_, _, leaf_end) = again.mint("api.example.com").unwrap();
        assert!(leaf_end <= SystemTime::now() + LEAF_LIFETIME);

        // One file without the other: refused, naming the missing one.
        std::fs::remove_file(&c.ca_cert).unwrap();
        let e = Authority::open(&c).unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("remove both"), "{e}");
        // A key that is not the certificate's.
        let other = dir.join("other");
        let o = config(&other);
        Authority::open(&o).unwrap();
        std::fs::copy(&o.ca_cert, &c.ca_cert).unwrap();
        std::fs::copy(&c.ca_key, other.join("ca-key.pem")).unwrap();
        let e = Authority::open(&c).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
        assert!(!e.contains("PRIVATE KEY"), "{e}");
        // A certificate that is not a CA's.
        let leaf = rcgen::generate_simple_self_signed(vec!["x.example".to_string()]).unwrap();
        std::fs::write(&c.ca_cert, leaf.cert.pem()).unwrap();
        std::fs::write(&c.ca_key, leaf.signing_key.serialize_pem()).unwrap();
        let e = Authority::open(&c).unwrap_err().to_string();
        assert!(e.contains("not a CA"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
