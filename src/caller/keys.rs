//! The keys `jwt` callers verify with: a JWKS file (read with the configuration) or a
//! `jwks_url`, fetched over verified TLS and cached for its `Cache-Control` max-age (clamped to
//! [`MIN_AGE`]..[`MAX_AGE`]), fetched again for a `kid` it does not know at most once per
//! [`REFETCH_EVERY`] (forged `kid`s cannot make bearerd hammer the issuer), and kept when a
//! fetch fails (the last good keys serve while the issuer is down). A URL's cache outlives
//! reloads: [`Keys`] hands the same source to every snapshot that names it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::jose::{Jwks, Jws};
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// The shortest time a fetched JWKS is kept before it is fetched again (whatever
/// `Cache-Control` says, `no-store` included).
pub(crate) const MIN_AGE: Duration = Duration::from_secs(60);
/// The longest.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(3600);
/// How long a JWKS without `Cache-Control: max-age` is kept.
pub(crate) const DEFAULT_AGE: Duration = Duration::from_secs(300);
/// An unknown `kid` fetches the JWKS again at most this often.
pub(crate) const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// The largest JWKS read.
const MAX_JWKS: usize = 1 << 20;
/// A fetch that takes longer fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The `jwks_url` sources of the process, by URL, shared by the snapshots that name them.
pub(crate) struct Keys {
    /// `None` offline (`bearerd explain`): nothing is fetched.
    upstream: Option<Arc<Upstream>>,
    metrics: Arc<Metrics>,
    urls: Mutex<HashMap<String, Arc<KeySource>>>,
}

impl Keys {
    pub(crate) fn new(upstream: Arc<Upstream>, metrics: Arc<Metrics>) -> Keys {
        Keys { upstream: Some(upstream), metrics, urls: Mutex::default() }
    }

    /// Keys that never fetch (a dry run from the configuration alone).
    pub(crate) fn offline() -> Keys {
        Keys { upstream: None, metrics: Arc::new(Metrics::new()), urls: Mutex::default() }
    }

    /// The source of `url`: the one already known, or a new one whose first fetch starts now.
    /// `caller` labels its fetches in `jwks_fetches_total` (the first caller that names it).
    pub(crate) fn url(&self, url: &str, caller: &str) -> Arc<KeySource> {
        let mut urls = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = urls.get(url) {
            return s.clone();
        }
        let [ok, error] = crate::metrics::JWKS_RESULTS;
        let counter = |result| self.metrics.jwks_fetches.with_label_values(&[caller, result]);
        let source = Arc::new(KeySource {
            from: From::Url { url: url.to_string(), upstream: self.upstream.clone() },
            fetched: Mutex::new(Fetched::default()),
            fetching: tokio::sync::Mutex::new(()),
            fetches: Some((counter(ok), counter(error))),
        });
        urls.insert(url.to_string(), source.clone());
        if self.upstream.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            let s = source.clone();
            tokio::spawn(async move { s.refetch(true).await });
        }
        source
    }

    /// Forgets the URLs no caller names any more.
    pub(crate) fn retain(&self, used: &[&str]) {
        self.urls.lock().unwrap_or_else(|p| p.into_inner()).retain(|u, _| used.contains(&u.as_str()));
    }
}

/// One caller's keys.
pub(crate) struct KeySource {
    from: From,
    fetched: Mutex<Fetched>,
    /// Held by the fetch in flight: one at a time, and others wait for its keys.
    fetching: tokio::sync::Mutex<()>,
    /// `jwks_fetches_total` for `ok` and `error` (a URL's only).
    fetches: Option<(prometheus::IntCounter, prometheus::IntCounter)>,
}

enum From {
    File(Arc<Jwks>),
    Url { url: String, upstream: Option<Arc<Upstream>> },
}

#[derive(Default)]
struct Fetched {
    keys: Option<Arc<Jwks>>,
    /// Fetched again after this (in the background, the keys serving meanwhile).
    fresh_until: Option<Instant>,
    /// When the last fetch began.
    attempt: Option<Instant>,
}

impl KeySource {
    /// The keys of a JWKS file.
    pub(crate) fn file(jwks: Arc<Jwks>) -> Arc<KeySource> {
        Arc::new(KeySource {
            from: From::File(jwks),
            fetched: Mutex::new(Fetched::default()),
            fetching: tokio::sync::Mutex::new(()),
            fetches: None,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Fetched> {
        self.fetched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> Option<Arc<Jwks>> {
        match &self.from {
            From::File(j) => Some(j.clone()),
            From::Url { .. } => self.state().keys.clone(),
        }
    }

    /// Whether a key of this source signed `jws`. A `jwks_url` source fetches its keys again
    /// when they are stale (in the background) or when they do not have the token's `kid` (at
    /// most once per [`REFETCH_EVERY`], waiting for that fetch).
    pub(crate) async fn verifies(self: &Arc<Self>, jws: &Jws<'_>) -> bool {
        let verified = |keys: &Jwks| keys.candidates(jws.alg, jws.kid.as_deref()).any(|k| jws.verified_by(k));
        let known = |keys: &Jwks| match jws.kid.as_deref() {
            Some(kid) => keys.has_kid(kid),
            None => keys.candidates(jws.alg, None).next().is_some(),
        };
        if let From::File(keys) = &self.from {
            return verified(keys);
        }
        let (keys, stale) = {
            let s = self.state();
            (s.keys.clone(), s.fresh_until.is_none_or(|t| Instant::now() >= t))
        };
        if let Some(keys) = keys.as_deref()
            && known(keys)
        {
            if stale {
                let s = self.clone();
                tokio::spawn(async move { s.refetch(false).await });
            }
            return verified(keys);
        }
        self.refetch(false).await;
        self.current().is_some_and(|k| verified(&k))
    }

    /// Fetches the keys, unless a fetch began less than [`REFETCH_EVERY`] ago (`first`: the
    /// fetch at creation, which always runs). A fetch in flight is waited for instead.
    async fn refetch(&self, first: bool) {
        let From::Url { url, upstream } = &self.from else { return };
        let Some(upstream) = upstream else { return };
        let _guard = match self.fetching.try_lock() {
            Ok(g) => g,
            Err(_) => {
                // Another request is fetching: its keys are what this one wants too.
                let _ = self.fetching.lock().await;
                return;
            }
        };
        let now = Instant::now();
        {
            let mut s = self.state();
            if !first && s.attempt.is_some_and(|a| now.duration_since(a) < REFETCH_EVERY) {
                return;
            }
            s.attempt = Some(now);
        }
        let fetched = upstream.fetch_trusted(url, MAX_JWKS, now + FETCH_TIMEOUT.min(upstream.timeout())).await;
        let result = match fetched {
            Err(e) => Err(e.to_string()),
            Ok((status, _, _)) if !status.is_success() => Err(format!("HTTP {}", status.as_u16())),
            Ok((_, headers, body)) => Jwks::parse(&body).map(|j| (j, max_age(&headers))),
        };
        let mut s = self.state();
        match result {
            Ok((jwks, age)) => {
                if let Some((ok, _)) = &self.fetches {
                    ok.inc();
                }
                tracing::debug!(%url, keys = jwks.keys.len(), age_s = age.as_secs(), "caller keys fetched");
                s.keys = Some(Arc::new(jwks));
                s.fresh_until = Some(Instant::now() + age);
            }
            Err(e) => {
                if let Some((_, error)) = &self.fetches {
                    error.inc();
                }
                // The last good keys keep serving; the next try is a minute away at the soonest.
                s.fresh_until = Some(Instant::now() + MIN_AGE);
                tracing::warn!(%url, error = %e, kept = s.keys.is_some(), "cannot fetch a caller's JWKS");
            }
        }
    }
}

/// How long a fetched JWKS is kept: its `Cache-Control` max-age within [`MIN_AGE`] and
/// [`MAX_AGE`]; `no-cache`/`no-store` the minimum; no max-age [`DEFAULT_AGE`].
pub(crate) fn max_age(headers: &http::HeaderMap) -> Duration {
    let mut age = None;
    for v in headers.get_all(http::header::CACHE_CONTROL) {
        for d in v.to_str().unwrap_or("").split(',') {
            let d = d.trim().to_ascii_lowercase();
            if d == "no-cache" || d == "no-store" {
                return MIN_AGE;
            }
            if let Some(n) = d.strip_prefix("max-age=") {
                age = n.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
            }
        }
    }
    age.unwrap_or(DEFAULT_AGE).clamp(MIN_AGE, MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_control(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn a_jwks_is_kept_for_its_max_age_within_bounds() {
        assert_eq!(max_age(&cache_control("public, max-age=600")), Duration::from_secs(600));
        assert_eq!(max_age(&cache_control("max-age=5")), MIN_AGE);
        assert_eq!(max_age(&cache_control("max-age=86400")), MAX_AGE);
        assert_eq!(max_age(&cache_control("no-store")), MIN_AGE);
        assert_eq!(max_age(&cache_control("max-age=junk")), DEFAULT_AGE);
        assert_eq!(max_age(&http::HeaderMap::new()), DEFAULT_AGE);
    }
}
