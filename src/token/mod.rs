//! Tokens: what is stored per (app, integration, account), the store it lives in ([`store`]:
//! the embedded file store; [`redis_store`]: shared by several replicas; [`seal`]: encryption at
//! rest), [`Tokens`], the in-memory view the data plane reads without locks, the token-endpoint
//! client ([`oauth`]) and single-flight refresh ([`refresh`]). It knows no proxy, server or
//! admin: its callers hand it the integration a token is for, and get a [`TokenError`].

pub mod events;
pub(crate) mod oauth;
pub(crate) mod redis_store;
pub(crate) mod refresh;
pub(crate) mod seal;
pub mod settings;
pub(crate) mod store;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
pub(crate) use refresh::{Need, Refresher};
pub use store::{Cas, Change, FileStore, Lease, Replication, StoreError, Stored, TokenStore};

/// The account used when a request names none.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Why no usable token could be had. Messages never carry a token or a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TokenError {
    /// No token is stored and none can be obtained without a person: authorize first.
    #[error("no token for {0}: authorize it first")]
    Missing(TokenKey),
    /// The token can no longer be refreshed (`invalid_grant`, or bound to other settings).
    #[error("the token for {0} can no longer be refreshed: authorize again")]
    Reauthorize(TokenKey),
    #[error("Token endpoint for integration {integration} failed: {reason}")]
    Endpoint { integration: String, reason: String },
    #[error("Token endpoint for integration {integration} did not answer in time")]
    EndpointTimeout { integration: String },
    #[error("Token store failed: {0}")]
    Store(String),
}

/// The account a token of an integration is kept under, as a request, the admin API, an
/// authorization or a dry run names it (`named`): the one rule all of them follow (SPEC 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Account<'a> {
    /// [`DEFAULT_ACCOUNT`] or the name given.
    pub(crate) name: &'a str,
    /// A name was given that the integration does not use (client credentials: one token per
    /// integration, whatever is named). The data plane goes on with the default account; the
    /// admin API refuses it.
    pub(crate) ignored: bool,
}

/// Why a named account cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AccountError {
    #[error("an account name is 1-256 visible characters")]
    Invalid,
    #[error("integration {0} has agent tokens: name the agent's account")]
    Required(String),
}

/// The account rule: an agent integration needs a named account (there is no default); a
/// client-credentials integration has one token whatever is named; any other uses the named
/// account or the default one. A name is 1-256 visible characters.
pub(crate) fn account<'a>(
    integ: &crate::config::IntegrationSpec,
    named: Option<&'a str>,
) -> Result<Account<'a>, AccountError> {
    if let Some(n) = named
        && (n.is_empty() || n.len() > 256 || n.bytes().any(|b| !(b' '..=b'~').contains(&b)))
    {
        return Err(AccountError::Invalid);
    }
    if integ.grant == crate::config::Grant::ClientCredentials {
        return Ok(Account { name: DEFAULT_ACCOUNT, ignored: named.is_some_and(|n| n != DEFAULT_ACCOUNT) });
    }
    match named {
        Some(n) => Ok(Account { name: n, ignored: false }),
        None if integ.agent => Err(AccountError::Required(integ.name.clone())),
        None => Ok(Account { name: DEFAULT_ACCOUNT, ignored: false }),
    }
}

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

impl TokenState {
    /// The name `/admin/tokens` and the `tokens` gauge use.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Valid => "valid",
            TokenState::Expired => "expired",
            TokenState::Missing => "missing",
            TokenState::Reauthorize => "reauthorize",
        }
    }
}

impl Token {
    /// A token with only an access token: no refresh token, no expiry, version 0.
    pub fn new(access_token: Secret) -> Token {
        Token {
            access_token,
            refresh_token: None,
            expires_at: None,
            token_type: None,
            scope: None,
            reauthorize: false,
            version: 0,
            binding: None,
        }
    }

    /// Whether the token needs a new authorization before it can be used for an integration
    /// whose binding is `binding`.
    pub(crate) fn needs_authorization(&self, binding: &str) -> bool {
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

type Map = crate::fasthash::FastMap<TokenKey, Arc<Token>>;

/// How often a write is retried when another process changed the token in between.
const WRITE_TRIES: usize = 5;

/// The tokens of every app: a lock-free map for readers, written through the store.
pub struct Tokens {
    cache: ArcSwap<Map>,
    store: Arc<dyn TokenStore>,
    /// Serialises this process's writers so that cache and store change in the same order.
    write: tokio::sync::Mutex<()>,
    /// The latest token events, for the admin page.
    pub events: events::Events,
}

impl Tokens {
    /// Opens the store and loads every token in it.
    pub async fn open(store: Arc<dyn TokenStore>) -> Result<Tokens, StoreError> {
        let all = store.load_all().await?;
        let map: Map = all.into_iter().map(|(k, t)| (k, Arc::new(t))).collect();
        Ok(Tokens {
            cache: ArcSwap::from_pointee(map),
            store,
            write: tokio::sync::Mutex::new(()),
            events: events::Events::default(),
        })
    }

    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// The current token for `key` (the hot path: no lock, no I/O).
    pub fn get(&self, key: &TokenKey) -> Option<Arc<Token>> {
        self.cache.load().get(key).cloned()
    }

    /// Every token this process knows.
    pub fn list(&self) -> Vec<(TokenKey, Arc<Token>)> {
        let mut v: Vec<_> = self.cache.load().iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Stores `token` for `key`, replacing whatever is there. Durable before it returns; other
    /// processes sharing the store are told.
    pub async fn put(&self, key: &TokenKey, token: Token) -> Result<Arc<Token>, StoreError> {
        let _w = self.write.lock().await;
        for _ in 0..WRITE_TRIES {
            let expected = self.store.get(key).await?.version;
            let mut token = token.clone();
            token.version = expected + 1;
            if self.store.compare_and_swap(key, expected, Some(token.clone()), None).await? == Cas::Done {
                let token = Arc::new(token);
                self.cache_set(key, Some(token.clone()));
                self.store.publish(key).await;
                return Ok(token);
            }
        }
        Err(StoreError::Conflict(key.to_string()))
    }

    /// Replaces the token for `key` only if its stored version is still `expected` (0: none)
    /// and `lease`, when given, is still held. `Ok(Err(current))` when it was changed meanwhile;
    /// nothing is written then.
    pub async fn replace(
        &self,
        key: &TokenKey,
        expected: u64,
        mut token: Token,
        lease: Option<&Lease>,
    ) -> Result<Result<Arc<Token>, Option<Arc<Token>>>, StoreError> {
        let _w = self.write.lock().await;
        token.version = expected + 1;
        let mut cas = self.store.compare_and_swap(key, expected, Some(token.clone()), lease).await?;
        if cas == Cas::Fenced {
            // The lease ran out while the token was obtained (a freeze, a slow endpoint) and no
            // newer token was written: the refresh token this one replaces may be spent, so it
            // is kept. The version check still lets a token written meanwhile win.
            tracing::warn!(token = %key, "the refresh lease ran out before the new token was stored; storing it anyway");
            cas = self.store.compare_and_swap(key, expected, Some(token.clone()), None).await?;
        }
        if cas == Cas::Done {
            let token = Arc::new(token);
            self.cache_set(key, Some(token.clone()));
            self.store.publish(key).await;
            return Ok(Ok(token));
        }
        let stored = self.store.get(key).await?;
        Ok(Err(self.adopt(key, stored).await?))
    }

    /// What the store holds for `key` now, as [`Tokens::adopt`] leaves it: the token to refresh
    /// from is the newest this process has seen, never an older one the store fell back to.
    pub(crate) async fn current(&self, key: &TokenKey) -> Result<Option<Arc<Token>>, StoreError> {
        let _w = self.write.lock().await;
        let stored = self.store.get(key).await?;
        self.adopt(key, stored).await
    }

    /// Brings the cache to what the store holds for `key` (the caller holds the write lock),
    /// unless this process holds a newer version: the store then lost a write (a failover of a
    /// replicated Redis), and the newer token is written back, compare-and-set on the store's
    /// version so a token written meanwhile wins (SPEC 5.8).
    async fn adopt(&self, key: &TokenKey, mut stored: Stored) -> Result<Option<Arc<Token>>, StoreError> {
        for _ in 0..WRITE_TRIES {
            let held = match self.get(key) {
                Some(held) if held.version > stored.version => held,
                _ => {
                    let token = stored.token.map(Arc::new);
                    self.cache_set(key, token.clone());
                    return Ok(token);
                }
            };
            if self.store.compare_and_swap(key, stored.version, Some(Token::clone(&held)), None).await? == Cas::Done {
                tracing::warn!(
                    token = %key,
                    held = held.version,
                    stored = stored.version,
                    "the token store held an older version than this process (a write lost in a failover): wrote it back"
                );
                self.events.push(key, "written back", Some(format!("the store had version {}", stored.version)));
                self.store.publish(key).await;
                return Ok(Some(held));
            }
            stored = self.store.get(key).await?;
        }
        Err(StoreError::Conflict(key.to_string()))
    }

    /// Forgets the token for `key`; false when there was none.
    pub(crate) async fn delete(&self, key: &TokenKey) -> Result<bool, StoreError> {
        let _w = self.write.lock().await;
        for _ in 0..WRITE_TRIES {
            let stored = self.store.get(key).await?;
            if stored.token.is_none() {
                self.cache_set(key, None);
                return Ok(false);
            }
            if self.store.compare_and_swap(key, stored.version, None, None).await? == Cas::Done {
                self.cache_set(key, None);
                self.store.publish(key).await;
                return Ok(true);
            }
        }
        Err(StoreError::Conflict(key.to_string()))
    }

    /// Brings the cache up to date after another process changed the store. Where the store
    /// holds an older version than this process (it lost writes: a Redis failover, or a restart
    /// without persistence), the newer token is written back ([`Tokens::adopt`]).
    pub async fn sync(&self, change: Change) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        match change {
            Change::Key(key) => {
                let stored = self.store.get(&key).await?;
                self.adopt(&key, stored).await?;
            }
            Change::All => {
                let all: Map = self.store.load_all().await?.into_iter().map(|(k, t)| (k, Arc::new(t))).collect();
                let held = self.cache.load_full();
                // Held newer than the listing shows, or absent from it: removed (a version left
                // behind), or lost. Kept until adopt settles each.
                let behind: Vec<_> = held
                    .iter()
                    .filter(|(k, t)| all.get(*k).is_none_or(|s| s.version < t.version))
                    .map(|(k, t)| (k.clone(), t.version))
                    .collect();
                let mut next = all;
                next.extend(behind.iter().map(|(k, _)| (k.clone(), held[k].clone())));
                self.cache.store(Arc::new(next));
                let mut restored = 0usize;
                for (key, version) in &behind {
                    let stored = self.store.get(key).await?;
                    restored += usize::from(stored.version < *version);
                    self.adopt(key, stored).await?;
                }
                if restored > 0 {
                    tracing::warn!(
                        held = held.len(),
                        restored,
                        "the token store had lost tokens: wrote back those held here"
                    );
                }
            }
        }
        Ok(())
    }

    /// Records what the store holds for `key` (`None`: nothing).
    pub(crate) fn cache_set(&self, key: &TokenKey, token: Option<Arc<Token>>) {
        self.cache.rcu(|m| {
            let mut m = Map::clone(m);
            match &token {
                Some(t) => m.insert(key.clone(), t.clone()),
                None => m.remove(key),
            };
            m
        });
    }
}
