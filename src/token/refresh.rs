//! Getting a usable token: a lock-free read when the token is fresh; otherwise one refresh per
//! token however many requests wait (single flight), with back-off after failures and
//! `reauthorize` after `invalid_grant`.
//!
//! The [`Refresher`] owns what a refresh needs (the tokens and their store, the upstream client
//! that reaches token endpoints, its metric handles and its clock) and is handed, per request,
//! the integration whose token it gets ([`Need`]). A refresh runs in its own task, so it
//! completes (and a rotated refresh token is stored) even when every request that waited for it
//! has gone away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec};
use tokio::sync::watch;
use tokio::time::Instant;

use super::oauth::{self, GrantError};
use super::{Lease, Replication, Token, TokenError, TokenKey, Tokens, unix_now};
use crate::config::{Grant, IntegrationSpec};
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// The first back-off after a failed refresh; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Whether a token expiring at `expires_at` must be refreshed at `now` (Unix seconds).
pub(crate) fn due(expires_at: Option<u64>, now: u64, skew: Duration) -> bool {
    expires_at.is_some_and(|e| e <= now.saturating_add(skew.as_secs()))
}

/// Whether it has expired.
pub(crate) fn expired(expires_at: Option<u64>, now: u64) -> bool {
    expires_at.is_some_and(|e| e <= now)
}

/// The token a request needs: whose it is, the integration that grants it, and how long before
/// its expiry it is refreshed.
#[derive(Clone, Copy)]
pub(crate) struct Need<'a> {
    pub(crate) key: &'a TokenKey,
    pub(crate) integration: &'a Arc<IntegrationSpec>,
    pub(crate) skew: Duration,
}

/// How a refresh ended, as every waiter sees it.
type Refreshed = Result<Arc<Token>, TokenError>;

struct Backoff {
    failures: u32,
    until: Instant,
}

/// The metric handles a refresher counts with.
#[derive(Clone)]
struct Counters {
    cache_hit: IntCounter,
    cache_miss: IntCounter,
    waiters: IntCounterVec,
    lease_waits: IntCounterVec,
    refreshes: IntCounterVec,
}

/// Seconds since the Unix epoch, as the refresher reads them.
pub(crate) type Clock = fn() -> u64;

/// Single flight and back-off, per token key.
pub(crate) struct Refresher {
    tokens: Arc<Tokens>,
    upstream: Arc<Upstream>,
    counters: Counters,
    clock: Clock,
    flights: Mutex<HashMap<TokenKey, watch::Receiver<Option<Refreshed>>>>,
    backoff: Mutex<HashMap<TokenKey, Backoff>>,
}

impl Refresher {
    pub(crate) fn new(tokens: Arc<Tokens>, upstream: Arc<Upstream>, metrics: &Metrics) -> Refresher {
        Refresher {
            tokens,
            upstream,
            counters: Counters {
                cache_hit: metrics.token_cache_hit.clone(),
                cache_miss: metrics.token_cache_miss.clone(),
                waiters: metrics.token_refresh_waiters.clone(),
                lease_waits: metrics.lease_waits.clone(),
                refreshes: metrics.token_refreshes.clone(),
            },
            clock: unix_now,
            flights: Mutex::default(),
            backoff: Mutex::default(),
        }
    }

    /// The same refresher reading time from `clock`.
    #[cfg(test)]
    fn with_clock(mut self, clock: Clock) -> Refresher {
        self.clock = clock;
        self
    }

    /// Forgets a key's back-off (after a new authorization or a token put by hand).
    pub(crate) fn reset(&self, key: &TokenKey) {
        lock(&self.backoff).remove(key);
    }

    /// The current token when it can be sent as it is (fresh, or not refreshable and not
    /// expired); `None` when it must be refreshed first. No await: the hot path.
    pub(crate) fn fresh(&self, need: Need<'_>) -> Result<Option<Arc<Token>>, TokenError> {
        let integ = need.integration;
        let now = (self.clock)();
        match self.tokens.get(need.key) {
            Some(t) if t.needs_authorization(&integ.binding) => Err(TokenError::Reauthorize(need.key.clone())),
            Some(t) if !due(t.expires_at, now, need.skew) => {
                self.counters.cache_hit.inc();
                Ok(Some(t))
            }
            Some(t) if integ.grant == Grant::AuthorizationCode && t.refresh_token.is_none() => {
                // Nothing to refresh with: use it until it expires, then ask for authorization.
                if expired(t.expires_at, now) { Err(TokenError::Reauthorize(need.key.clone())) } else { Ok(Some(t)) }
            }
            None if integ.grant == Grant::AuthorizationCode => Err(TokenError::Missing(need.key.clone())),
            _ => Ok(None),
        }
    }

    /// The token to send: the current one while it is fresh, else a refreshed one.
    pub(crate) async fn token(self: &Arc<Self>, need: Need<'_>, deadline: Instant) -> Result<Arc<Token>, TokenError> {
        if let Some(t) = self.fresh(need)? {
            return Ok(t);
        }
        let current = self.tokens.get(need.key);
        self.counters.cache_miss.inc();
        let observed = current.as_ref().map_or(0, |t| t.version);
        match self.refresh(need, observed, deadline).await {
            Ok(t) => Ok(t),
            Err(e) => match current {
                // A proactive refresh failed but the token has not expired yet: keep using it.
                Some(t)
                    if !t.reauthorize
                        && !expired(t.expires_at, (self.clock)())
                        && !matches!(e, TokenError::Reauthorize(_)) =>
                {
                    Ok(t)
                }
                _ => Err(e),
            },
        }
    }

    /// After the upstream rejected `rejected` (a token version): the replacement. If the token
    /// was already replaced meanwhile, the current one is returned without another refresh.
    pub(crate) async fn after_rejection(
        self: &Arc<Self>,
        need: Need<'_>,
        rejected: u64,
        deadline: Instant,
    ) -> Result<Arc<Token>, TokenError> {
        let integ = need.integration;
        match self.tokens.get(need.key) {
            Some(t) if t.needs_authorization(&integ.binding) => return Err(TokenError::Reauthorize(need.key.clone())),
            Some(t) if t.version != rejected => return Ok(t),
            Some(t) if integ.grant == Grant::AuthorizationCode && t.refresh_token.is_none() => {
                return Err(TokenError::Reauthorize(need.key.clone()));
            }
            None => return Err(TokenError::Missing(need.key.clone())),
            Some(_) => {}
        }
        self.refresh(need, rejected, deadline).await
    }

    /// Joins the refresh in flight for the key, or starts one if the token is still the one
    /// `observed` (version; 0 for none).
    async fn refresh(self: &Arc<Self>, need: Need<'_>, observed: u64, deadline: Instant) -> Refreshed {
        let (key, integ) = (need.key, need.integration);
        let mut rx = {
            let mut flights = lock(&self.flights);
            if let Some(rx) = flights.get(key) {
                self.counters.waiters.with_label_values(&[&*key.app, &*key.integration]).inc();
                rx.clone()
            } else {
                // Someone may have finished a refresh since this request read the token.
                if let Some(cur) = self.tokens.get(key)
                    && cur.version != observed
                {
                    if cur.needs_authorization(&integ.binding) {
                        return Err(TokenError::Reauthorize(key.clone()));
                    }
                    if !due(cur.expires_at, (self.clock)(), need.skew) {
                        return Ok(cur);
                    }
                }
                if let Some(b) = lock(&self.backoff).get(key)
                    && b.until > Instant::now()
                {
                    let secs = (b.until - Instant::now()).as_secs() + 1;
                    return Err(TokenError::Endpoint {
                        integration: integ.name.clone(),
                        reason: format!("the last refresh failed; the next attempt is allowed in {secs} s"),
                    });
                }
                let (tx, rx) = watch::channel(None);
                flights.insert(key.clone(), rx.clone());
                let run =
                    Run { refresher: self.clone(), key: key.clone(), integration: integ.clone(), skew: need.skew };
                tokio::spawn(run.run(tx));
                rx
            }
        };
        let abandoned =
            || TokenError::Endpoint { integration: integ.name.clone(), reason: "the refresh was abandoned".into() };
        match tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await {
            Err(_) => Err(TokenError::EndpointTimeout { integration: integ.name.clone() }),
            Ok(Err(_)) => Err(abandoned()),
            Ok(Ok(v)) => v.clone().unwrap_or_else(|| Err(abandoned())),
        }
    }

    /// Records a failure and returns the back-off before the next attempt (exponential, with
    /// jitter of up to a fifth).
    fn fail(&self, key: &TokenKey) -> Duration {
        let mut backoff = lock(&self.backoff);
        let failures = backoff.get(key).map_or(0, |b| b.failures) + 1;
        let base = FIRST_BACKOFF.saturating_mul(1 << (failures - 1).min(16)).min(MAX_BACKOFF);
        let jitter = base.mul_f64(f64::from(jitter_fraction()) / 5.0);
        let wait = base + jitter;
        backoff.insert(key.clone(), Backoff { failures, until: Instant::now() + wait });
        wait
    }
}

/// How long a refresh lease lasts without renewal: a crashed holder blocks the others for at
/// most this long.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a waiting process looks at the store for the holder's new token.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// One refresh, in its own task: one per key in this process, and, through the store's lease,
/// one per key across every process sharing the store.
struct Run {
    refresher: Arc<Refresher>,
    key: TokenKey,
    integration: Arc<IntegrationSpec>,
    skew: Duration,
}

impl Run {
    async fn run(self, tx: watch::Sender<Option<Refreshed>>) {
        let deadline = Instant::now() + self.refresher.upstream.timeout();
        let observed = self.refresher.tokens.get(&self.key).map_or(0, |t| t.version);
        let outcome = self.coordinated(observed, deadline).await;
        lock(&self.refresher.flights).remove(&self.key);
        let _ = tx.send(Some(outcome));
    }

    async fn coordinated(&self, observed: u64, deadline: Instant) -> Refreshed {
        let (r, key) = (&self.refresher, &self.key);
        let store = r.tokens.store().clone();
        let timed_out = || TokenError::EndpointTimeout { integration: self.integration.name.clone() };
        let uncoordinated = |e: super::StoreError| TokenError::Store(format!("the refresh cannot be coordinated: {e}"));
        let mut waited = false;
        loop {
            let lease = match tokio::time::timeout_at(deadline, store.lease(key)).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => return Err(uncoordinated(e)),
                Ok(Ok(l)) => l,
            };
            if let Some(lease) = lease {
                let renewer = {
                    let (store, lease) = (store.clone(), lease.clone());
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(LEASE_TTL / 3).await;
                            if !matches!(store.renew(&lease).await, Ok(true)) {
                                return;
                            }
                        }
                    })
                };
                let outcome = self.holding(&lease, observed, deadline).await;
                renewer.abort();
                store.release(&lease).await;
                return outcome;
            }
            // Another process is refreshing this token: wait for its result in the store.
            if !waited {
                waited = true;
                r.counters.lease_waits.with_label_values(&[&*key.app, &*key.integration]).inc();
            }
            match r.tokens.current(key).await {
                Ok(Some(t)) if t.version > observed => {
                    return if t.needs_authorization(&self.integration.binding) {
                        Err(TokenError::Reauthorize(key.clone()))
                    } else {
                        Ok(t)
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(uncoordinated(e)),
            }
            if Instant::now() + LEASE_POLL >= deadline {
                return Err(timed_out());
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// Refreshes while holding the lease. The store is read first: another process may have
    /// refreshed already, and its refresh token (rotated) must not be sent again.
    async fn holding(&self, lease: &Lease, observed: u64, deadline: Instant) -> Refreshed {
        let (r, key, integ) = (&self.refresher, &self.key, &*self.integration);
        let reauthorize = || TokenError::Reauthorize(key.clone());
        // The newest version this process has seen, written back if the store lost it (SPEC
        // 5.8): a refresh token is never taken from an older one.
        let current = match r.tokens.current(key).await {
            Ok(t) => t,
            Err(e) => return Err(TokenError::Store(e.to_string())),
        };
        if let Some(cur) = &current
            && cur.version > observed
        {
            if cur.needs_authorization(&integ.binding) {
                return Err(reauthorize());
            }
            if !due(cur.expires_at, (r.clock)(), self.skew) {
                return Ok(cur.clone());
            }
        }
        let version = current.as_ref().map_or(0, |t| t.version);
        let refresh_token = current.as_ref().and_then(|t| t.refresh_token.clone());
        let result = match (integ.grant, &refresh_token) {
            (Grant::ClientCredentials, _) => {
                oauth::request_token(&r.upstream, integ, oauth::GrantRequest::ClientCredentials, None, deadline).await
            }
            (Grant::AuthorizationCode, Some(rt)) => {
                let grant = oauth::GrantRequest::RefreshToken(rt);
                oauth::request_token(&r.upstream, integ, grant, Some(rt), deadline).await
            }
            (Grant::AuthorizationCode, None) => return Err(reauthorize()),
        };
        let refreshes = |result: &str| {
            r.counters.refreshes.with_label_values(&[&*key.app, &*key.integration, result]).inc();
        };
        match result {
            Ok(mut token) => {
                refreshes("ok");
                r.reset(key);
                token.binding = Some(integ.binding.clone());
                // Stored (durably) before any waiter sees the new access token.
                match r.tokens.replace(key, version, token, Some(lease)).await {
                    Ok(Ok(t)) => {
                        let rotated = t.refresh_token.is_some() && t.refresh_token != refresh_token;
                        if rotated && r.tokens.store().replicated(key).await == Replication::NotAcknowledged {
                            // Used anyway; this process keeps it, and writes it back should a
                            // failover lose it (Tokens::adopt).
                            tracing::warn!(token = %key, "no store replica acknowledged the rotated refresh token within 500 ms");
                        }
                        tracing::info!(token = %key, outcome = "ok", expires_at = t.expires_at, "token refreshed");
                        r.tokens.events.push(key, "refreshed", None);
                        Ok(t)
                    }
                    // Replaced meanwhile (a token put by hand, a new authorization): that one wins.
                    Ok(Err(Some(newer))) if !newer.needs_authorization(&integ.binding) => Ok(newer),
                    Ok(Err(_)) => Err(reauthorize()),
                    Err(e) => {
                        tracing::error!(token = %key, error = %e, "storing a refreshed token failed");
                        Err(TokenError::Store(e.to_string()))
                    }
                }
            }
            Err(GrantError::InvalidGrant(detail)) => {
                refreshes("invalid_grant");
                r.tokens.events.push(
                    key,
                    "needs authorization",
                    Some("the refresh token was refused (invalid_grant)".into()),
                );
                tracing::warn!(token = %key, detail = detail.as_deref().unwrap_or(""), "refresh refused (invalid_grant): authorization needed");
                if let Some(cur) = current {
                    let mut dead = Token::clone(&cur);
                    dead.reauthorize = true;
                    match r.tokens.replace(key, version, dead, Some(lease)).await {
                        // Another process replaced the token meanwhile: not a reason to re-authorize.
                        Ok(Err(Some(newer))) if !newer.needs_authorization(&integ.binding) => return Ok(newer),
                        Err(e) => {
                            tracing::error!(token = %key, error = %e, "marking a token for re-authorization failed")
                        }
                        _ => {}
                    }
                }
                Err(reauthorize())
            }
            Err(e) => {
                refreshes(e.result_label());
                r.tokens.events.push(key, "refresh failed", Some(e.to_string()));
                let wait = r.fail(key);
                tracing::warn!(token = %key, error = %e, retry_in_ms = wait.as_millis() as u64, "refresh failed");
                Err(match e {
                    GrantError::Timeout => TokenError::EndpointTimeout { integration: integ.name.clone() },
                    e => TokenError::Endpoint { integration: integ.name.clone(), reason: e.to_string() },
                })
            }
        }
    }
}

/// A number in [0, 1) that differs between calls (for jitter; not for secrets).
fn jitter_fraction() -> f32 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f32::from(u16::from_le_bytes(b)) / 65536.0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::config::{TokenAuth, UpstreamConfig};
    use crate::secret::Secret;
    use crate::token::FileStore;

    /// A refresher over a fresh file store, whose upstream reaches loopback.
    async fn refresher(dir: &std::path::Path) -> Refresher {
        let store = Arc::new(FileStore::open(&dir.join("tokens.json"), None).unwrap());
        let tokens = Arc::new(Tokens::open(store).await.unwrap());
        let config = UpstreamConfig { allow_private_ips: true, allow_http: true, ..UpstreamConfig::default() };
        let upstream = Arc::new(Upstream::new(&config, |_| false).unwrap());
        Refresher::new(tokens, upstream, &Metrics::new())
    }

    fn integration(grant: Grant, token_url: &str) -> Arc<IntegrationSpec> {
        Arc::new(IntegrationSpec {
            name: "api".into(),
            display_name: None,
            client_id: "cid".into(),
            client_secret: Secret::new("secret"),
            authorize_url: None,
            token_url: token_url.into(),
            authorize_params: Vec::new(),
            custom_headers: Vec::new(),
            agent: false,
            grant,
            token_auth: TokenAuth::ClientSecretPost,
            issuer: None,
            oauth_iparams: Default::default(),
            binding: "b".into(),
        })
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("bearerd-refresh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The injected clock of [`fresh_tokens_follow_the_clock_and_the_skew`].
    static NOW: AtomicU64 = AtomicU64::new(0);

    #[tokio::test]
    async fn fresh_tokens_follow_the_clock_and_the_skew() {
        let dir = temp_dir("clock");
        let r = refresher(&dir).await.with_clock(|| NOW.load(Ordering::Relaxed));
        let integ = integration(Grant::AuthorizationCode, "https://auth.example.com/token");
        let (rotating, fixed) = (TokenKey::new("a", "api", "default"), TokenKey::new("a", "api", "fixed"));
        let bound = |refresh: Option<&str>| Token {
            expires_at: Some(1000),
            refresh_token: refresh.map(Secret::new),
            binding: Some("b".into()),
            ..Token::new(Secret::new("at"))
        };
        r.tokens.put(&rotating, bound(Some("rt"))).await.unwrap();
        r.tokens.put(&fixed, bound(None)).await.unwrap();
        let skew = Duration::from_secs(60);
        let fresh = |key: &TokenKey| r.fresh(Need { key, integration: &integ, skew });
        NOW.store(939, Ordering::Relaxed);
        assert!(fresh(&rotating).unwrap().is_some(), "61 s before expiry: fresh");
        NOW.store(940, Ordering::Relaxed);
        assert!(fresh(&rotating).unwrap().is_none(), "within the skew: refresh first");
        assert!(fresh(&fixed).unwrap().is_some(), "nothing to refresh with: used until it expires");
        NOW.store(1000, Ordering::Relaxed);
        assert!(matches!(fresh(&fixed), Err(TokenError::Reauthorize(_))), "expired, no refresh token");
        let missing = TokenKey::new("a", "api", "nobody");
        assert!(matches!(fresh(&missing), Err(TokenError::Missing(_))), "accounts are not minted");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_backs_off_before_the_endpoint_is_asked_again() {
        let dir = temp_dir("backoff");
        let r = Arc::new(refresher(&dir).await);
        // Nothing listens on port 1: every grant fails.
        let integ = integration(Grant::ClientCredentials, "http://127.0.0.1:1/token");
        let key = TokenKey::new("a", "api", "default");
        let need = Need { key: &key, integration: &integ, skew: Duration::from_secs(60) };
        let far = || Instant::now() + Duration::from_secs(60);
        let first = r.token(need, far()).await;
        assert!(matches!(first, Err(TokenError::Endpoint { .. } | TokenError::EndpointTimeout { .. })), "{first:?}");
        let failures = || lock(&r.backoff).get(&key).map(|b| (b.failures, b.until));
        let (n, until) = failures().expect("a back-off");
        assert_eq!(n, 1);
        // Inside the window: refused at once, and the endpoint is not asked.
        let inside = r.token(need, far()).await;
        assert!(matches!(&inside, Err(TokenError::Endpoint { reason, .. }) if reason.contains("next attempt")));
        assert_eq!(failures().map(|f| f.0), Some(1), "no attempt inside the window");
        assert!(lock(&r.flights).is_empty());
        // After it: one more attempt, which fails and doubles the back-off.
        tokio::time::advance(until - Instant::now() + Duration::from_millis(1)).await;
        let _ = r.token(need, far()).await;
        let (n, until2) = failures().unwrap();
        assert_eq!(n, 2);
        assert!(until2 - Instant::now() >= FIRST_BACKOFF * 2, "doubled");
        r.reset(&key);
        assert!(failures().is_none(), "a new token forgets the back-off");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expiry_arithmetic() {
        let skew = Duration::from_secs(60);
        assert!(!due(None, 1000, skew), "a token without expiry is used until rejected");
        assert!(!due(Some(1061), 1000, skew));
        assert!(due(Some(1060), 1000, skew), "within the skew");
        assert!(due(Some(900), 1000, skew));
        assert!(!expired(Some(1001), 1000));
        assert!(expired(Some(1000), 1000));
        assert!(!expired(None, u64::MAX));
    }
}
