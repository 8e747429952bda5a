//! The shared token store on Redis, for several replicas serving the same installations.
//!
//! - A token is a hash `<prefix>token:<key>` with its `version` and the token record. A removed
//!   token leaves its version behind with an empty record, so a version only grows and a replica
//!   that missed the removal does not write the token back (SPEC 5.8).
//! - Writes are compare-and-swap on the version, in one Lua script that also checks the writer
//!   still holds the refresh lease (fencing), so a slow replica whose lease expired cannot
//!   overwrite a newer token.
//! - The refresh lease is `<prefix>lease:<key>`: `SET NX PX` with a random owner, renewed by its
//!   holder, released only by its owner.
//! - Every write is published on `<prefix>events`; each replica updates its in-memory copy, and
//!   reloads everything when its subscription reconnects.
//! - A replica that resubscribes reads everything again; where Redis holds an older version than
//!   the replica (a failover lost writes, or Redis restarted without persistence), the replica
//!   writes its token back (SPEC 5.6, 5.8; `Tokens::sync`).
//!
//! Every operation has a short timeout: an unreachable Redis fails fast, and the data plane keeps
//! serving the tokens it holds in memory.

use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use super::store::{BoxFuture, Cas, Change, Lease, Replication, StoreError, Stored, TokenStore};
use super::{Token, TokenKey};
use crate::metrics::Metrics;

/// The longest a single Redis operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a rotated refresh token waits for a replica's acknowledgement (SPEC 5.8).
const WAIT_MS: u64 = 500;

const CAS: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[1], 'version', ARGV[4], 'token', ARGV[2])
return 1
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub(crate) struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    lease_ttl: Duration,
    cas: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    changes: std::sync::Mutex<Option<mpsc::Receiver<Change>>>,
    ops: prometheus::IntCounterVec,
    sealer: Option<std::sync::Arc<super::seal::Sealer>>,
}

impl RedisStore {
    /// Connects (failing after a few seconds if Redis does not answer) and subscribes to changes.
    pub(crate) async fn connect(
        url: &str,
        prefix: &str,
        lease_ttl: Duration,
        sealer: Option<std::sync::Arc<super::seal::Sealer>>,
        metrics: &Metrics,
    ) -> Result<RedisStore, StoreError> {
        let unavailable = |e: redis::RedisError| StoreError::Unavailable(e.to_string());
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1);
        let conn =
            tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new_with_config(client.clone(), config))
                .await
                .map_err(|_| StoreError::Unavailable("Redis did not answer within 5 s".into()))?
                .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(subscribe(client, prefix.to_string(), tx));
        Ok(RedisStore {
            conn,
            prefix: prefix.to_string(),
            lease_ttl,
            cas: redis::Script::new(CAS),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
            changes: std::sync::Mutex::new(Some(rx)),
            ops: metrics.store_operations.clone(),
            sealer,
        })
    }

    fn token_key(&self, key: &TokenKey) -> String {
        format!("{}token:{}", self.prefix, key_id(key))
    }

    fn lease_key(&self, key: &TokenKey) -> String {
        format!("{}lease:{}", self.prefix, key_id(key))
    }

    /// Runs one operation with the timeout, counting its result.
    async fn op<T>(&self, name: &str, f: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        let r = match tokio::time::timeout(OP_TIMEOUT, f).await {
            Err(_) => Err(StoreError::Unavailable(format!("Redis {name} timed out"))),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("Redis {name}: {e}"))),
            Ok(Ok(v)) => Ok(v),
        };
        self.ops.with_label_values(&[name, if r.is_ok() { "ok" } else { "error" }]).inc();
        r
    }
}

/// The Redis name of a token key: its three parts as a JSON array (any characters are safe).
fn key_id(key: &TokenKey) -> String {
    serde_json::to_string(&(&*key.app, &*key.integration, &*key.account)).unwrap_or_default()
}

fn parse_key_id(id: &str) -> Option<TokenKey> {
    let (a, i, c): (String, String, String) = serde_json::from_str(id).ok()?;
    Some(TokenKey::new(&a, &i, &c))
}

fn decode(raw: &str) -> Result<Token, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt { path: "redis".into(), message: e.to_string() })
}

impl TokenStore for RedisStore {
    fn load_all(&self) -> BoxFuture<'_, Result<Vec<(TokenKey, Token)>, StoreError>> {
        Box::pin(async move {
            let pattern = format!("{}token:*", self.prefix);
            let mut conn = self.conn.clone();
            let keys: Vec<String> = self
                .op("scan", async {
                    let mut out = Vec::new();
                    let mut cursor: u64 = 0;
                    loop {
                        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(500)
                            .query_async(&mut conn)
                            .await?;
                        out.extend(batch);
                        if next == 0 {
                            return Ok(out);
                        }
                        cursor = next;
                    }
                })
                .await?;
            let mut tokens = Vec::new();
            for k in keys {
                let Some(key) = k.strip_prefix(&format!("{}token:", self.prefix)).and_then(parse_key_id) else {
                    continue;
                };
                if let Some(t) = self.get(&key).await?.token {
                    tokens.push((key, t));
                }
            }
            Ok(tokens)
        })
    }

    fn get<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<Stored, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (version, raw): (Option<u64>, Option<String>) = self
                .op(
                    "get",
                    redis::cmd("HMGET").arg(self.token_key(key)).arg("version").arg("token").query_async(&mut conn),
                )
                .await?;
            let token = raw
                .filter(|r| !r.is_empty())
                .map(|r| decode(&r).and_then(|t| super::seal::open_token(self.sealer.as_deref(), key, t, "redis")))
                .transpose()?;
            Ok(Stored { version: version.unwrap_or(0), token })
        })
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a TokenKey,
        expected: u64,
        new: Option<Token>,
        lease: Option<&'a Lease>,
    ) -> BoxFuture<'a, Result<Cas, StoreError>> {
        Box::pin(async move {
            let value = match &new {
                Some(t) => serde_json::to_string(&super::seal::seal_token(self.sealer.as_deref(), key, t))
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
                None => String::new(),
            };
            // A removal leaves the next version behind.
            let version = new.as_ref().map_or(expected + 1, |t| t.version);
            let owner = lease.map_or("", |l| l.owner.as_str());
            let mut conn = self.conn.clone();
            let mut inv = self.cas.prepare_invoke();
            inv.key(self.token_key(key)).key(self.lease_key(key)).arg(expected).arg(&value).arg(owner).arg(version);
            let r: i64 = self.op("cas", inv.invoke_async(&mut conn)).await?;
            Ok(match r {
                1 => Cas::Done,
                -1 => Cas::Fenced,
                _ => Cas::Conflict,
            })
        })
    }

    fn lease<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<Option<Lease>, StoreError>> {
        Box::pin(async move {
            let mut b = [0u8; 16];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
            let owner = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let mut conn = self.conn.clone();
            let set: Option<String> = self
                .op(
                    "lease",
                    redis::cmd("SET")
                        .arg(self.lease_key(key))
                        .arg(&owner)
                        .arg("NX")
                        .arg("PX")
                        .arg(self.lease_ttl.as_millis() as u64)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(set.map(|_| Lease { key: key.clone(), owner }))
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut inv = self.renew.prepare_invoke();
            inv.key(self.lease_key(&lease.key)).arg(&lease.owner).arg(self.lease_ttl.as_millis() as u64);
            let r: i64 = self.op("renew", inv.invoke_async(&mut conn)).await?;
            Ok(r == 1)
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut inv = self.release.prepare_invoke();
            inv.key(self.lease_key(&lease.key)).arg(&lease.owner);
            let _: Result<i64, _> = self.op("release", inv.invoke_async(&mut conn)).await;
        })
    }

    /// `WAIT 1 500` after the write, where `ROLE` says the primary has replicas (outside any
    /// script or transaction, as `WAIT` must be). The connection is the one that wrote.
    fn replicated<'a>(&'a self, _key: &'a TokenKey) -> BoxFuture<'a, Replication> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let role: Result<redis::Value, _> = self.op("role", redis::cmd("ROLE").query_async(&mut conn)).await;
            let replicas = match role {
                Ok(redis::Value::Array(parts)) => match parts.get(2) {
                    Some(redis::Value::Array(r)) => r.len(),
                    _ => 0,
                },
                _ => 0,
            };
            if replicas == 0 {
                return Replication::NoReplicas;
            }
            let acked: Result<i64, _> =
                self.op("wait", redis::cmd("WAIT").arg(1).arg(WAIT_MS).query_async(&mut conn)).await;
            if acked.is_ok_and(|n| n >= 1) { Replication::Acknowledged } else { Replication::NotAcknowledged }
        })
    }

    fn publish<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let channel = format!("{}events", self.prefix);
            let _: Result<i64, _> =
                self.op("publish", redis::cmd("PUBLISH").arg(channel).arg(key_id(key)).query_async(&mut conn)).await;
        })
    }

    fn changes(&self) -> Option<mpsc::Receiver<Change>> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Forwards change notifications; after every (re)subscription everything is reloaded, since
/// notifications sent while disconnected are lost.
async fn subscribe(client: redis::Client, prefix: String, tx: mpsc::Sender<Change>) {
    let channel = format!("{prefix}events");
    loop {
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(OP_TIMEOUT, client.get_async_pubsub()).await
            && pubsub.subscribe(&channel).await.is_ok()
        {
            if tx.send(Change::All).await.is_err() {
                return;
            }
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Ok(payload) = msg.get_payload::<String>() else { continue };
                if let Some(key) = parse_key_id(&payload)
                    && tx.send(Change::Key(key)).await.is_err()
                {
                    return;
                }
            }
            tracing::warn!("lost the Redis change subscription; reconnecting");
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The private `redis-server` the integration tests start, for the tests below.
#[cfg(test)]
#[path = "../../tests/support/redis.rs"]
#[allow(dead_code, unreachable_pub)]
mod private_redis;

#[cfg(test)]
mod tests {
    //! The store's own guarantees, against a private `redis-server` (the one the integration
    //! tests start): the version check and the lease check of the compare-and-swap, and the
    //! lease's exclusivity, renewal, release and expiry.

    use std::time::Duration;

    use super::*;
    use crate::secret::Secret;

    use super::private_redis;

    async fn store(redis: &private_redis::Redis, lease_ttl: Duration) -> RedisStore {
        let url = format!("redis://127.0.0.1:{}/0", redis.port);
        RedisStore::connect(&url, "t:", lease_ttl, None, &Metrics::new()).await.unwrap()
    }

    fn token(at: &str, version: u64) -> Token {
        Token { version, ..Token::new(Secret::new(at)) }
    }

    fn key() -> TokenKey {
        TokenKey::new("demo", "api", "default")
    }

    #[tokio::test]
    async fn compare_and_swap_writes_only_over_the_expected_version() {
        let redis = private_redis::Redis::start();
        let s = store(&redis, Duration::from_secs(5)).await;
        let k = key();
        assert_eq!(s.compare_and_swap(&k, 0, Some(token("a", 1)), None).await.unwrap(), Cas::Done);
        // Expecting none stored, or an older version: nothing is written.
        assert_eq!(s.compare_and_swap(&k, 0, Some(token("b", 1)), None).await.unwrap(), Cas::Conflict);
        assert_eq!(s.compare_and_swap(&k, 7, Some(token("b", 8)), None).await.unwrap(), Cas::Conflict);
        assert_eq!(s.get(&k).await.unwrap().token.unwrap().access_token.expose(), "a");
        assert_eq!(s.compare_and_swap(&k, 1, Some(token("c", 2)), None).await.unwrap(), Cas::Done);
        assert_eq!(s.get(&k).await.unwrap().token.unwrap().access_token.expose(), "c");
        // A delete is a swap too.
        assert_eq!(s.compare_and_swap(&k, 1, None, None).await.unwrap(), Cas::Conflict);
        assert_eq!(s.compare_and_swap(&k, 2, None, None).await.unwrap(), Cas::Done);
        let removed = s.get(&k).await.unwrap();
        assert!(removed.token.is_none());
        // The removal is a version too: a write expecting none stored is refused, and the
        // version goes on growing.
        assert_eq!(removed.version, 3, "a removal leaves its version behind");
        assert_eq!(s.compare_and_swap(&k, 0, Some(token("d", 1)), None).await.unwrap(), Cas::Conflict);
        assert_eq!(s.compare_and_swap(&k, 3, Some(token("d", 4)), None).await.unwrap(), Cas::Done);
        assert_eq!(s.get(&k).await.unwrap().version, 4);
    }

    #[tokio::test]
    async fn a_write_under_a_lease_needs_the_lease_still_held() {
        let redis = private_redis::Redis::start();
        let s = store(&redis, Duration::from_millis(300)).await;
        let k = key();
        let held = s.lease(&k).await.unwrap().expect("a free lease");
        assert!(s.lease(&k).await.unwrap().is_none(), "the lease is exclusive");
        assert_eq!(s.compare_and_swap(&k, 0, Some(token("a", 1)), Some(&held)).await.unwrap(), Cas::Done);
        // A slow holder: its lease expires and another process takes it. The old holder's
        // write is refused even with the right version (fencing).
        let t0 = tokio::time::Instant::now();
        let other = loop {
            if let Some(l) = s.lease(&k).await.unwrap() {
                break l;
            }
            assert!(t0.elapsed() < Duration::from_secs(3), "the lease never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(t0.elapsed() >= Duration::from_millis(200), "the lease expired early");
        assert_eq!(s.compare_and_swap(&k, 1, Some(token("stale", 2)), Some(&held)).await.unwrap(), Cas::Fenced);
        assert!(!s.renew(&held).await.unwrap(), "an expired lease cannot be renewed by its old holder");
        assert_eq!(s.compare_and_swap(&k, 1, Some(token("new", 2)), Some(&other)).await.unwrap(), Cas::Done);
        // A write without a lease (an admin put) is not fenced: it only needs the version. The
        // lease holder then finds the version moved on.
        assert_eq!(s.compare_and_swap(&k, 2, Some(token("admin", 3)), None).await.unwrap(), Cas::Done);
        assert_eq!(s.compare_and_swap(&k, 2, Some(token("refresh", 3)), Some(&other)).await.unwrap(), Cas::Conflict);
        assert_eq!(s.get(&k).await.unwrap().token.unwrap().access_token.expose(), "admin");
    }

    #[tokio::test]
    async fn a_lease_is_renewed_and_released_only_by_its_holder() {
        let redis = private_redis::Redis::start();
        let s = store(&redis, Duration::from_millis(400)).await;
        let k = key();
        let held = s.lease(&k).await.unwrap().unwrap();
        let impostor = Lease { key: k.clone(), owner: "someone-else".into() };
        // Renewed past its first expiry, the lease stays held.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(s.renew(&held).await.unwrap());
        }
        assert!(s.lease(&k).await.unwrap().is_none(), "renewed for 800 ms on a 400 ms lease");
        assert!(!s.renew(&impostor).await.unwrap());
        s.release(&impostor).await;
        assert!(s.lease(&k).await.unwrap().is_none(), "only its owner releases it");
        s.release(&held).await;
        assert!(s.lease(&k).await.unwrap().is_some(), "released");
    }
}
