//! Getting a usable token: a lock-free read when the token is fresh; otherwise one refresh per
//! token however many requests wait (single flight), with back-off after failures and
//! `reauthorize` after `invalid_grant`.
//!
//! A refresh runs in its own task, so it completes (and a rotated refresh token is stored) even
//! when every request that waited for it has gone away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::oauth::{self, GrantError};
use super::{Lease, Token, TokenKey, unix_now};
use crate::config::Grant;
use crate::proxy::ProxyError;
use crate::server::Shared;
use crate::snapshot::Snapshot;

/// The first back-off after a failed refresh; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Whether a token expiring at `expires_at` must be refreshed at `now` (Unix seconds).
pub fn due(expires_at: Option<u64>, now: u64, skew: Duration) -> bool {
    expires_at.is_some_and(|e| e <= now.saturating_add(skew.as_secs()))
}

/// Whether it has expired.
pub fn expired(expires_at: Option<u64>, now: u64) -> bool {
    expires_at.is_some_and(|e| e <= now)
}

/// How a refresh ended, as every waiter sees it.
#[derive(Debug, Clone)]
enum Failure {
    Reauthorize,
    Grant { timeout: bool, reason: String },
    Store(String),
}

type Outcome = Result<Arc<Token>, Failure>;

struct Backoff {
    failures: u32,
    until: Instant,
}

/// Where an integration lives in the snapshot.
#[derive(Clone, Copy)]
pub struct Target {
    pub app: usize,
    pub integration: usize,
}

/// Single flight and back-off, per token key.
#[derive(Default)]
pub struct Refresher {
    flights: Mutex<HashMap<TokenKey, watch::Receiver<Option<Outcome>>>>,
    backoff: Mutex<HashMap<TokenKey, Backoff>>,
}

impl Refresher {
    /// Forgets a key's back-off (after a new authorization or a token put by hand).
    pub fn reset(&self, key: &TokenKey) {
        lock(&self.backoff).remove(key);
    }

    /// The current token for `key` when it can be sent as it is (fresh, or not refreshable and
    /// not expired); `None` when it must be refreshed first. No await: the hot path.
    pub fn fresh(
        &self,
        shared: &Shared,
        snap: &Snapshot,
        target: Target,
        key: &TokenKey,
    ) -> Result<Option<Arc<Token>>, ProxyError> {
        let integ = snap.apps[target.app].integration(target.integration);
        let now = unix_now();
        match shared.tokens.get(key) {
            Some(t) if t.needs_authorization(&integ.binding) => Err(reauthorize(snap, key)),
            Some(t) if !due(t.expires_at, now, snap.config.refresh.skew) => {
                shared.metrics.token_cache_hit.inc();
                Ok(Some(t))
            }
            Some(t) if integ.grant == Grant::AuthorizationCode && t.refresh_token.is_none() => {
                // Nothing to refresh with: use it until it expires, then ask for authorization.
                if expired(t.expires_at, now) { Err(reauthorize(snap, key)) } else { Ok(Some(t)) }
            }
            None if integ.grant == Grant::AuthorizationCode => Err(no_token(snap, key)),
            _ => Ok(None),
        }
    }

    /// The token to send for `key`: the current one while it is fresh, else a refreshed one.
    pub async fn token(
        &self,
        shared: &Arc<Shared>,
        snap: &Arc<Snapshot>,
        target: Target,
        key: &TokenKey,
        deadline: Instant,
    ) -> Result<Arc<Token>, ProxyError> {
        if let Some(t) = self.fresh(shared, snap, target, key)? {
            return Ok(t);
        }
        let current = shared.tokens.get(key);
        shared.metrics.token_cache_miss.inc();
        let observed = current.as_ref().map_or(0, |t| t.version);
        match self.refresh(shared, snap, target, key, observed, deadline).await {
            Ok(t) => Ok(t),
            Err(e) => match current {
                // A proactive refresh failed but the token has not expired yet: keep using it.
                Some(t)
                    if !t.reauthorize
                        && !expired(t.expires_at, unix_now())
                        && !matches!(e, ProxyError::Reauthorize { .. }) =>
                {
                    Ok(t)
                }
                _ => Err(e),
            },
        }
    }

    /// After the upstream rejected `rejected` (a token version): the replacement. If the token
    /// was already replaced meanwhile, the current one is returned without another refresh.
    pub async fn after_rejection(
        &self,
        shared: &Arc<Shared>,
        snap: &Arc<Snapshot>,
        target: Target,
        key: &TokenKey,
        rejected: u64,
        deadline: Instant,
    ) -> Result<Arc<Token>, ProxyError> {
        let integ = snap.apps[target.app].integration(target.integration);
        match shared.tokens.get(key) {
            Some(t) if t.needs_authorization(&integ.binding) => return Err(reauthorize(snap, key)),
            Some(t) if t.version != rejected => return Ok(t),
            Some(t) if integ.grant == Grant::AuthorizationCode && t.refresh_token.is_none() => {
                return Err(reauthorize(snap, key));
            }
            None => return Err(no_token(snap, key)),
            Some(_) => {}
        }
        self.refresh(shared, snap, target, key, rejected, deadline).await
    }

    /// Joins the refresh in flight for `key`, or starts one if the token is still the one
    /// `observed` (version; 0 for none).
    async fn refresh(
        &self,
        shared: &Arc<Shared>,
        snap: &Arc<Snapshot>,
        target: Target,
        key: &TokenKey,
        observed: u64,
        deadline: Instant,
    ) -> Result<Arc<Token>, ProxyError> {
        let integ = snap.apps[target.app].integration(target.integration);
        let mut rx = {
            let mut flights = lock(&self.flights);
            if let Some(rx) = flights.get(key) {
                shared.metrics.token_refresh_waiters.with_label_values(&[&*key.app, &*key.integration]).inc();
                rx.clone()
            } else {
                // Someone may have finished a refresh since this request read the token.
                if let Some(cur) = shared.tokens.get(key)
                    && cur.version != observed
                {
                    if cur.needs_authorization(&integ.binding) {
                        return Err(reauthorize(snap, key));
                    }
                    if !due(cur.expires_at, unix_now(), snap.config.refresh.skew) {
                        return Ok(cur);
                    }
                }
                if let Some(b) = lock(&self.backoff).get(key)
                    && b.until > Instant::now()
                {
                    let secs = (b.until - Instant::now()).as_secs() + 1;
                    return Err(ProxyError::TokenEndpoint {
                        integration: integ.name.clone(),
                        reason: format!("the last refresh failed; the next attempt is allowed in {secs} s"),
                    });
                }
                let (tx, rx) = watch::channel(None);
                flights.insert(key.clone(), rx.clone());
                tokio::spawn(run(shared.clone(), snap.clone(), target, key.clone(), tx));
                rx
            }
        };
        let outcome = match tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await {
            Err(_) => return Err(ProxyError::TokenEndpointTimeout { integration: integ.name.clone() }),
            Ok(Err(_)) => {
                return Err(ProxyError::TokenEndpoint {
                    integration: integ.name.clone(),
                    reason: "the refresh was abandoned".into(),
                });
            }
            Ok(Ok(v)) => v.clone(),
        };
        match outcome {
            Some(Ok(t)) => Ok(t),
            Some(Err(Failure::Reauthorize)) => Err(reauthorize(snap, key)),
            Some(Err(Failure::Grant { timeout: true, .. })) => {
                Err(ProxyError::TokenEndpointTimeout { integration: integ.name.clone() })
            }
            Some(Err(Failure::Grant { reason, .. })) => {
                Err(ProxyError::TokenEndpoint { integration: integ.name.clone(), reason })
            }
            Some(Err(Failure::Store(reason))) => Err(ProxyError::Store(reason)),
            None => Err(ProxyError::TokenEndpoint { integration: integ.name.clone(), reason: "no outcome".into() }),
        }
    }
}

/// How long a refresh lease lasts without renewal: a crashed holder blocks the others for at
/// most this long.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a waiting process looks at the store for the holder's new token.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// The refresh itself, in its own task: one per key in this process, and, through the store's
/// lease, one per key across every process sharing the store.
async fn run(
    shared: Arc<Shared>,
    snap: Arc<Snapshot>,
    target: Target,
    key: TokenKey,
    tx: watch::Sender<Option<Outcome>>,
) {
    let deadline = Instant::now() + snap.upstream.config().timeout;
    let observed = shared.tokens.get(&key).map_or(0, |t| t.version);
    let outcome = coordinated(&shared, &snap, target, &key, observed, deadline).await;
    lock(&shared.refresher.flights).remove(&key);
    let _ = tx.send(Some(outcome));
}

async fn coordinated(
    shared: &Arc<Shared>,
    snap: &Snapshot,
    target: Target,
    key: &TokenKey,
    observed: u64,
    deadline: Instant,
) -> Outcome {
    let store = shared.tokens.store().clone();
    let timed_out = || Failure::Grant { timeout: true, reason: "the refresh did not finish in time".into() };
    let mut waited = false;
    loop {
        let lease = match tokio::time::timeout_at(deadline, store.lease(key)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(Failure::Store(format!("the refresh cannot be coordinated: {e}"))),
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
            let outcome = holding(shared, snap, target, key, &lease, observed, deadline).await;
            renewer.abort();
            store.release(&lease).await;
            return outcome;
        }
        // Another process is refreshing this token: wait for its result in the store.
        if !waited {
            waited = true;
            shared.metrics.lease_waits.with_label_values(&[&*key.app, &*key.integration]).inc();
        }
        match store.get(key).await {
            Ok(Some(t)) if t.version != observed => {
                let t = Arc::new(t);
                shared.tokens.cache_set(key, Some(t.clone()));
                let integ = snap.apps[target.app].integration(target.integration);
                return if t.needs_authorization(&integ.binding) { Err(Failure::Reauthorize) } else { Ok(t) };
            }
            Ok(_) => {}
            Err(e) => return Err(Failure::Store(format!("the refresh cannot be coordinated: {e}"))),
        }
        if Instant::now() + LEASE_POLL >= deadline {
            return Err(timed_out());
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

/// Refreshes while holding the lease. The store is read first: another process may have
/// refreshed already, and its refresh token (rotated) must not be sent again.
async fn holding(
    shared: &Arc<Shared>,
    snap: &Snapshot,
    target: Target,
    key: &TokenKey,
    lease: &Lease,
    observed: u64,
    deadline: Instant,
) -> Outcome {
    let integ = snap.apps[target.app].integration(target.integration);
    let current = match shared.tokens.store().get(key).await {
        Ok(t) => t.map(Arc::new),
        Err(e) => return Err(Failure::Store(e.to_string())),
    };
    shared.tokens.cache_set(key, current.clone());
    if let Some(cur) = &current
        && cur.version != observed
    {
        if cur.needs_authorization(&integ.binding) {
            return Err(Failure::Reauthorize);
        }
        if !due(cur.expires_at, unix_now(), snap.config.refresh.skew) {
            return Ok(cur.clone());
        }
    }
    let version = current.as_ref().map_or(0, |t| t.version);
    let refresh_token = current.as_ref().and_then(|t| t.refresh_token.clone());
    let result = match (integ.grant, &refresh_token) {
        (Grant::ClientCredentials, _) => {
            oauth::request_token(&snap.upstream, integ, oauth::Grant::ClientCredentials, None, deadline).await
        }
        (Grant::AuthorizationCode, Some(rt)) => {
            oauth::request_token(&snap.upstream, integ, oauth::Grant::RefreshToken(rt), Some(rt), deadline).await
        }
        (Grant::AuthorizationCode, None) => return Err(Failure::Reauthorize),
    };
    let refreshes = |result: &str| {
        shared.metrics.token_refreshes.with_label_values(&[&*key.app, &*key.integration, result]).inc();
    };
    match result {
        Ok(mut token) => {
            refreshes("ok");
            shared.refresher.reset(key);
            token.binding = Some(integ.binding.clone());
            // Stored (durably) before any waiter sees the new access token.
            match shared.tokens.replace(key, version, token, Some(lease)).await {
                Ok(Ok(t)) => Ok(t),
                // Replaced meanwhile (a token put by hand, a new authorization): that one wins.
                Ok(Err(Some(newer))) if !newer.needs_authorization(&integ.binding) => Ok(newer),
                Ok(Err(_)) => Err(Failure::Reauthorize),
                Err(e) => {
                    tracing::error!(token = %key, error = %e, "storing a refreshed token failed");
                    Err(Failure::Store(e.to_string()))
                }
            }
        }
        Err(GrantError::InvalidGrant(detail)) => {
            refreshes("invalid_grant");
            tracing::warn!(token = %key, detail = detail.as_deref().unwrap_or(""), "refresh refused (invalid_grant): authorization needed");
            if let Some(cur) = current {
                let mut dead = Token::clone(&cur);
                dead.reauthorize = true;
                match shared.tokens.replace(key, version, dead, Some(lease)).await {
                    // Another process replaced the token meanwhile: not a reason to re-authorize.
                    Ok(Err(Some(newer))) if !newer.needs_authorization(&integ.binding) => return Ok(newer),
                    Err(e) => tracing::error!(token = %key, error = %e, "marking a token for re-authorization failed"),
                    _ => {}
                }
            }
            Err(Failure::Reauthorize)
        }
        Err(e) => {
            refreshes(e.result_label());
            let wait = shared.refresher.fail(key);
            tracing::warn!(token = %key, error = %e, retry_in_ms = wait.as_millis() as u64, "refresh failed");
            Err(Failure::Grant { timeout: matches!(e, GrantError::Timeout), reason: e.to_string() })
        }
    }
}

impl Refresher {
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

/// A number in [0, 1) that differs between calls (for jitter; not for secrets).
fn jitter_fraction() -> f32 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f32::from(u16::from_le_bytes(b)) / 65536.0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn no_token(snap: &Snapshot, key: &TokenKey) -> ProxyError {
    ProxyError::NoToken {
        integration: key.integration.to_string(),
        account: key.account.to_string(),
        authorize: snap.authorize_url(&key.app, &key.integration, &key.account),
    }
}

fn reauthorize(snap: &Snapshot, key: &TokenKey) -> ProxyError {
    ProxyError::Reauthorize {
        integration: key.integration.to_string(),
        account: key.account.to_string(),
        authorize: snap.authorize_url(&key.app, &key.integration, &key.account),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = Refresher::default();
        let k = TokenKey::new("a", "i", "default");
        let waits: Vec<Duration> = (0..12).map(|_| r.fail(&k)).collect();
        assert!(waits[0] >= FIRST_BACKOFF && waits[0] < FIRST_BACKOFF * 2);
        assert!(waits[3] >= FIRST_BACKOFF * 8);
        assert!(waits[11] <= MAX_BACKOFF.mul_f64(1.2));
        r.reset(&k);
        assert!(r.fail(&k) < FIRST_BACKOFF * 2);
    }
}
