//! Tokens: what is stored per (app, integration, account), the store it lives in ([`store`]),
//! and [`Tokens`], the in-memory view the data plane reads without locks.

pub mod oauth;
pub mod refresh;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
pub use store::{Cas, FileStore, StoreError, TokenStore};

/// The account used when a request names none.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Which token: one per (app, integration, account).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenKey {
    pub app: Arc<str>,
    pub integration: Arc<str>,
    pub account: Arc<str>,
}

impl TokenKey {
    pub fn new(app: &str, integration: &str, account: &str) -> Self {
        TokenKey { app: app.into(), integration: integration.into(), account: account.into() }
    }
}

impl std::fmt::Display for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.app, self.integration, self.account)
    }
}

/// A stored token. `Debug` never shows the secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub access_token: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// Unix seconds; `None` when the provider gave no `expires_in`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The refresh token was refused (`invalid_grant`): a new authorization is needed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reauthorize: bool,
    /// Incremented on every write; the store's compare-and-swap checks it.
    #[serde(default)]
    pub version: u64,
    /// The integration's `token_url` and `client_id` the token was obtained for
    /// ([`crate::config::IntegrationSpec::binding`]); a token bound to others is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
}

/// What `/admin/tokens` reports for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    Valid,
    Expired,
    Missing,
    Reauthorize,
}

impl Token {
    /// Whether the token needs a new authorization before it can be used for an integration
    /// whose binding is `binding`.
    pub fn needs_authorization(&self, binding: &str) -> bool {
        self.reauthorize || self.binding.as_deref().is_some_and(|b| b != binding)
    }

    pub fn state(&self, now: u64, binding: &str) -> TokenState {
        if self.needs_authorization(binding) {
            TokenState::Reauthorize
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenState::Expired
        } else {
            TokenState::Valid
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

type Map = HashMap<TokenKey, Arc<Token>>;

/// The tokens of every app: a lock-free map for readers, written through the store.
pub struct Tokens {
    cache: ArcSwap<Map>,
    store: Arc<dyn TokenStore>,
    /// Serialises writers so that cache and store change in the same order.
    write: tokio::sync::Mutex<()>,
}

impl Tokens {
    /// Opens the store and loads every token in it.
    pub async fn open(store: Arc<dyn TokenStore>) -> Result<Tokens, StoreError> {
        let all = store.load_all().await?;
        let map: Map = all.into_iter().map(|(k, t)| (k, Arc::new(t))).collect();
        Ok(Tokens { cache: ArcSwap::from_pointee(map), store, write: tokio::sync::Mutex::new(()) })
    }

    /// The current token for `key` (the hot path: no lock, no I/O).
    pub fn get(&self, key: &TokenKey) -> Option<Arc<Token>> {
        self.cache.load().get(key).cloned()
    }

    /// Every stored token.
    pub fn list(&self) -> Vec<(TokenKey, Arc<Token>)> {
        let mut v: Vec<_> = self.cache.load().iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Stores `token` for `key`, replacing whatever is there. Durable before it returns.
    pub async fn put(&self, key: &TokenKey, token: Token) -> Result<Arc<Token>, StoreError> {
        let _w = self.write.lock().await;
        let expected = self.get(key).map_or(0, |t| t.version);
        self.write_version(key, expected, token).await
    }

    /// Replaces the token for `key` only if its version is still `expected` (0: none stored).
    /// `Ok(Err(current))` when it was changed meanwhile; nothing is written then.
    pub async fn replace(
        &self,
        key: &TokenKey,
        expected: u64,
        token: Token,
    ) -> Result<Result<Arc<Token>, Option<Arc<Token>>>, StoreError> {
        let _w = self.write.lock().await;
        let current = self.get(key);
        if current.as_ref().map_or(0, |t| t.version) != expected {
            return Ok(Err(current));
        }
        self.write_version(key, expected, token).await.map(Ok)
    }

    /// Writes through the store, then the cache. The caller holds `self.write`.
    async fn write_version(&self, key: &TokenKey, expected: u64, mut token: Token) -> Result<Arc<Token>, StoreError> {
        token.version = expected + 1;
        match self.store.compare_and_swap(key, expected, Some(token.clone())).await? {
            Cas::Done => {}
            Cas::Conflict => return Err(StoreError::Conflict(key.to_string())),
        }
        let token = Arc::new(token);
        self.update(|m| {
            m.insert(key.clone(), token.clone());
        });
        Ok(token)
    }

    /// Forgets the token for `key`; false when there was none.
    pub async fn delete(&self, key: &TokenKey) -> Result<bool, StoreError> {
        let _w = self.write.lock().await;
        let Some(current) = self.get(key) else {
            return Ok(false);
        };
        match self.store.compare_and_swap(key, current.version, None).await? {
            Cas::Done => {}
            Cas::Conflict => return Err(StoreError::Conflict(key.to_string())),
        }
        self.update(|m| {
            m.remove(key);
        });
        Ok(true)
    }

    fn update(&self, f: impl Fn(&mut Map)) {
        self.cache.rcu(|m| {
            let mut m = Map::clone(m);
            f(&mut m);
            m
        });
    }
}
