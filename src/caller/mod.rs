//! Who is calling (SPEC 2.2): the credential a request offers ([`credential`], the one place
//! that reads it), checked against the configured callers (a secret compared by its SHA-256 in
//! constant time, a JWT verified with [`jwt`] against keys from [`keys`], a client certificate's
//! SAN), giving the [`Admitted`] caller with what it may use. Knows no proxy: the data plane asks
//! once per request (or once per tunnel) and turns a [`Failure`] into its answer.
//!
//! A credential that verified is remembered ([`cache`]), by the header value that carried it, so
//! that the next request with it costs a hash and a comparison: a JWT until its `exp`, a secret
//! until the next reload (the cache belongs to the snapshot).

mod cache;
pub(crate) mod credential;
mod jwt;
pub(crate) mod keys;

use std::sync::Arc;

use prometheus::IntCounter;

use crate::config::Config;
use crate::config::callers::{AccountRule, CallerCredential, SanRule};
use crate::fasthash::FastMap;
use crate::metrics::{AUTH_FAILURES, Metrics};
pub(crate) use credential::{ClientCert, Offered};
pub(crate) use keys::Keys;

/// The leeway for a JWT's `exp`, `nbf` and `iat` (clocks differ).
pub(crate) const LEEWAY: u64 = 60;

/// Seconds since the Unix epoch (what a JWT's times count).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why a request's caller was not admitted. Messages never carry the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    #[error("no caller credential: {0}")]
    Missing(&'static str),
    #[error("malformed caller credential: {0}")]
    Malformed(String),
    #[error("unknown caller credential: {0}")]
    Unknown(&'static str),
    #[error("expired caller credential: {0}")]
    Expired(&'static str),
    #[error("the caller's token is not accepted: {0}")]
    Claims(String),
}

impl Failure {
    /// The `reason` label of `caller_auth_failures_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Failure::Missing(_) => "missing",
            Failure::Malformed(_) => "malformed",
            Failure::Unknown(_) => "unknown",
            Failure::Expired(_) => "expired",
            Failure::Claims(_) => "claims",
        }
    }
}

/// A caller let in: which one, the app its `Basic` user named, when its token expires, and the
/// account its JWT binds it to (`accounts: {claim: X}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admitted {
    pub(crate) caller: usize,
    pub(crate) user: User,
    /// Unix seconds (a JWT's `exp`).
    pub(crate) expires: Option<u64>,
    pub(crate) account: Option<Arc<str>>,
}

/// The app a credential's `Basic` user names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum User {
    None,
    App(usize),
    /// A name that is no app's (the request gets 400 naming it).
    Unknown(Arc<str>),
}

/// One configured caller.
pub(crate) struct Caller {
    pub(crate) name: Arc<str>,
    /// By app index: whether it may use that app.
    apps: Vec<bool>,
    pub(crate) accounts: AccountRule,
    kind: Kind,
    /// `caller_requests_total{caller,app}` by app index.
    requests: Vec<Option<IntCounter>>,
}

enum Kind {
    Secret,
    Jwt(jwt::Rule),
    Cert(SanRule),
}

impl Caller {
    /// Whether the caller may use app `app` (an index of the configuration's apps).
    pub(crate) fn may_use(&self, app: usize) -> bool {
        self.apps.get(app).copied().unwrap_or(false)
    }

    /// Whether the caller may name `account` (not the default one) of an integration.
    pub(crate) fn may_name(&self, account: &str, bound: Option<&str>) -> bool {
        match &self.accounts {
            AccountRule::None => false,
            AccountRule::All => true,
            AccountRule::Only(list) => list.iter().any(|a| a == account),
            AccountRule::Claim(_) => bound == Some(account),
        }
    }

    /// The claim its JWT binds the account to, if it does.
    pub(crate) fn account_claim(&self) -> Option<&str> {
        match &self.accounts {
            AccountRule::Claim(c) => Some(c),
            _ => None,
        }
    }

    /// Counts one request of this caller to app `app`.
    pub(crate) fn count(&self, app: usize) {
        if let Some(Some(c)) = self.requests.get(app) {
            c.inc();
        }
    }
}

/// The configured callers, compiled: one snapshot's.
pub(crate) struct Callers {
    list: Vec<Caller>,
    by_name: FastMap<Box<str>, usize>,
    /// App names by index, for the app a `Basic` user names.
    apps: FastMap<Box<str>, usize>,
    /// `(caller, SHA-256 of its secret)`.
    secrets: Vec<(usize, [u8; 32])>,
    jwt: Vec<usize>,
    certs: Vec<usize>,
    cache: cache::Cache,
    failures: [IntCounter; AUTH_FAILURES.len()],
}

impl Callers {
    /// Compiles `config.callers`; `keys` gives every `jwks_url` its (shared, lasting) source.
    pub(crate) fn compile(config: &Config, keys: &Keys, metrics: &Metrics) -> Callers {
        let apps: FastMap<Box<str>, usize> =
            config.apps.iter().enumerate().map(|(i, a)| (a.name.as_str().into(), i)).collect();
        let mut out = Callers {
            list: Vec::with_capacity(config.callers.len()),
            by_name: FastMap::default(),
            apps,
            secrets: Vec::new(),
            jwt: Vec::new(),
            certs: Vec::new(),
            cache: cache::Cache::new(),
            failures: AUTH_FAILURES.map(|r| metrics.caller_auth_failures.with_label_values(&[r])),
        };
        let mut urls = Vec::new();
        for (i, c) in config.callers.iter().enumerate() {
            let kind = match &c.credential {
                CallerCredential::Secret(d) => {
                    out.secrets.push((i, d.0));
                    Kind::Secret
                }
                CallerCredential::Jwt(rule) => {
                    out.jwt.push(i);
                    if let crate::config::callers::KeysFrom::Url(u) = &rule.keys {
                        urls.push(u.as_str());
                    }
                    Kind::Jwt(jwt::Rule::new(rule, &c.name, keys))
                }
                CallerCredential::TlsClient(san) => {
                    out.certs.push(i);
                    Kind::Cert(san.clone())
                }
            };
            let may: Vec<bool> = config.apps.iter().map(|a| c.apps.allows(&a.name)).collect();
            // By app index; none for an app it may not use (no such series is exported).
            let by_app = config
                .apps
                .iter()
                .zip(&may)
                .map(|(a, m)| m.then(|| metrics.caller_requests.with_label_values(&[&c.name, &a.name])))
                .collect();
            out.by_name.insert(c.name.as_str().into(), i);
            out.list.push(Caller {
                name: c.name.as_str().into(),
                apps: may,
                accounts: c.accounts.clone(),
                kind,
                requests: by_app,
            });
        }
        keys.retain(&urls);
        out
    }

    /// No callers are configured: the data plane is open (on loopback only).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn get(&self, i: usize) -> &Caller {
        &self.list[i]
    }

    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Counts a refusal in `caller_auth_failures_total` (`reason`: one of [`AUTH_FAILURES`]).
    pub(crate) fn refused(&self, reason: &str) {
        if let Some(i) = AUTH_FAILURES.iter().position(|r| *r == reason) {
            self.failures[i].inc();
        }
    }

    /// The caller without waiting, when that can be decided now: a credential verified before
    /// (from the cache), or none offered (a client certificate, or missing). `None`: it must be
    /// verified ([`Callers::verify`]).
    #[inline]
    pub(crate) fn lookup(
        &self,
        offered: Option<&Offered<'_>>,
        cert: Option<&ClientCert>,
    ) -> Option<Result<Admitted, Failure>> {
        match offered {
            Some(o) => self.cache.get(o.raw),
            None => Some(self.by_cert(cert).ok_or(Failure::Missing(
                "send the caller's secret or token as the proxy URL's password, as Proxy-Authorization: Bearer, or on /invoke as Authorization: Bearer",
            ))),
        }
    }

    fn by_cert(&self, cert: Option<&ClientCert>) -> Option<Admitted> {
        let cert = cert?;
        let i = self.certs.iter().copied().find(|&i| match &self.list[i].kind {
            Kind::Cert(SanRule::Uri(u)) => cert.uris.iter().any(|c| c == u),
            Kind::Cert(SanRule::Dns(d)) => cert.dns.iter().any(|c| c == d),
            _ => false,
        })?;
        Some(Admitted { caller: i, user: User::None, expires: None, account: None })
    }

    /// Verifies an offered credential that is not in the cache: a secret of a caller (by its
    /// SHA-256, compared in constant time with every secret caller's), else a JWT a `jwt` caller
    /// accepts. What verified is remembered.
    pub(crate) async fn verify(&self, offered: &Offered<'_>) -> Result<Admitted, Failure> {
        let (user, secret) = offered.decode()?;
        let user = match user {
            None => User::None,
            Some(name) => match self.apps.get(name.as_str()) {
                Some(&i) => User::App(i),
                None => User::Unknown(name.into()),
            },
        };
        let digest = crate::config::callers::sha256(secret.as_bytes());
        let mut found = None;
        for (i, d) in &self.secrets {
            // Every secret caller is compared, in constant time.
            if crate::secret::ct_eq(d, &digest) {
                found = Some(*i);
            }
        }
        let admitted = match found {
            Some(caller) => Admitted { caller, user, expires: None, account: None },
            None if !self.jwt.is_empty() && crate::jose::looks_like_jws(&secret) => {
                let (caller, exp, account) = jwt::verify(self, &secret).await?;
                Admitted { caller, user, expires: Some(exp), account }
            }
            None => return Err(Failure::Unknown("it is no caller's secret, and no token a caller accepts")),
        };
        self.cache.put(offered.raw, &admitted);
        Ok(admitted)
    }
}
