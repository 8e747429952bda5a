//! The shared token store on Redis, for several replicas serving the same installations.
//!
//! - A token is a hash `<prefix>token:<key>` with its `version` and the token record.
//! - Writes are compare-and-swap on the version, in one Lua script that also checks the writer
//!   still holds the refresh lease (fencing), so a slow replica whose lease expired cannot
//!   overwrite a newer token.
//! - The refresh lease is `<prefix>lease:<key>`: `SET NX PX` with a random owner, renewed by its
//!   holder, released only by its owner.
//! - Every write is published on `<prefix>events`; each replica updates its in-memory copy, and
//!   reloads everything when its subscription reconnects.
//! - `<prefix>epoch` marks one life of the data set: a replica that reconnects to a Redis whose
//!   epoch changed (restarted without persistence) writes back the tokens it holds where Redis
//!   has none (SPEC 5.6).
//!
//! Every operation has a short timeout: an unreachable Redis fails fast, and the data plane keeps
//! serving the tokens it holds in memory.

use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use super::store::{BoxFuture, Cas, Change, Lease, StoreError, TokenStore};
use super::{Token, TokenKey};
use crate::metrics::Metrics;

/// The longest a single Redis operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(1);

const CAS: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[3] then return -1 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('HSET', KEYS[1], 'version', ARGV[4], 'token', ARGV[2]) end
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
                if let Some(t) = self.get(&key).await? {
                    tokens.push((key, t));
                }
            }
            Ok(tokens)
        })
    }

    fn get<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<Option<Token>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let raw: Option<String> =
                self.op("get", redis::cmd("HGET").arg(self.token_key(key)).arg("token").query_async(&mut conn)).await?;
            raw.map(|r| decode(&r).and_then(|t| super::seal::open_token(self.sealer.as_deref(), key, t, "redis")))
                .transpose()
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
            let version = new.as_ref().map_or(0, |t| t.version);
            let owner = lease.map_or("", |l| l.owner.as_str());
            let mut conn = self.conn.clone();
            let mut inv = self.cas.prepare_invoke();
            inv.key(self.token_key(key)).key(self.lease_key(key)).arg(expected).arg(&value).arg(owner).arg(version);
            let r: i64 = self.op("cas", inv.invoke_async(&mut conn)).await?;
            Ok(if r == 1 { Cas::Done } else { Cas::Conflict })
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
/// notifications sent while disconnected are lost. Each subscription also reads the data set's
/// epoch (`<prefix>epoch`, a random value the first replica sets): a different or missing epoch
/// means Redis lost its data (restarted empty), and the replica writes back what it holds.
async fn subscribe(client: redis::Client, prefix: String, tx: mpsc::Sender<Change>) {
    let channel = format!("{prefix}events");
    let mut known: Option<String> = None;
    loop {
        if let Ok(Ok(mut pubsub)) = tokio::time::timeout(OP_TIMEOUT, client.get_async_pubsub()).await
            && pubsub.subscribe(&channel).await.is_ok()
        {
            let now = epoch(&client, &format!("{prefix}epoch")).await;
            let change = match (&known, &now) {
                (Some(k), Some(n)) if k != n => Change::Lost,
                _ => Change::All,
            };
            known = now.or(known);
            if tx.send(change).await.is_err() {
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

/// The data set's epoch: set to a random value if Redis has none, then read (`None` if Redis
/// could not be asked).
async fn epoch(client: &redis::Client, key: &str) -> Option<String> {
    let ask = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut b = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
        let fresh = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let _: Option<String> = redis::cmd("SET").arg(key).arg(&fresh).arg("NX").query_async(&mut conn).await?;
        redis::cmd("GET").arg(key).query_async::<Option<String>>(&mut conn).await
    };
    tokio::time::timeout(OP_TIMEOUT, ask).await.ok()?.ok()?
}
