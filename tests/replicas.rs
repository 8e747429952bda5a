//! Several replicas sharing one Redis and one strict provider: one refresh for all of them, a
//! crashed lease holder, Redis becoming unreachable, and changes seen by every replica.
//! Each test starts its own private `redis-server` on a free port.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::provider::Provider;
use support::redis::Redis;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_restarts_empty_gets_the_tokens_back_from_the_replicas() {
    let mut c = cluster(2).await;
    let at = c.provider.with(|s| s.make_access_token());
    c.replicas[0].put_token("demo", "api", "", json!({"access_token": at, "expires_in": 3600})).await;
    put_expired(&c, "agent-b").await;
    seen_everywhere(&c, "agent-b", "expired").await;
    let key = |account: &str| format!(r#"bearerd:token:["demo","api","{account}"]"#);
    c.redis.restart_empty();
    assert_eq!(c.redis.cli(&["EXISTS", &key("default")]), "0", "the new Redis starts empty");
    // Both tokens come back, written by the replicas that held them.
    eventually(Duration::from_secs(5), "the tokens are back in Redis", async || {
        c.redis.cli(&["EXISTS", &key("default")]) == "1" && c.redis.cli(&["EXISTS", &key("agent-b")]) == "1"
    })
    .await;
    for b in &c.replicas {
        assert_eq!(b.invoke("get", json!({})).await.status, 200);
    }
    // The refresh token survived: the expired token refreshes (once, for both replicas).
    let r = c.replicas[1].invoke_with("get", json!({}), &[("x-bearerd-account", "agent-b")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.provider.grants("refresh_token"), 1);
    // A token deleted while Redis was up is not brought back by a later reconnect.
    assert_eq!(c.replicas[0].admin("DELETE", "/admin/tokens/demo/api", "").await.status, 200);
    seen_everywhere(&c, "default", "missing").await;
    // (The replicas resubscribe, find the removal's version newer than their own, and only read.)
    let subscribers = c.redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(subscribers, "2");
    eventually(Duration::from_secs(5), "both replicas subscribe again", async || {
        c.redis.cli(&["PUBSUB", "NUMSUB", "bearerd:events"]).ends_with('2')
    })
    .await;
    let list = c.replicas[1].admin("GET", "/admin/tokens", "").await.json();
    assert!(list.as_array().unwrap().iter().any(|e| e["account"] == "default" && e["state"] == "missing"), "{list}");
    // The removal stays a removal: an empty record under a grown version.
    assert_eq!(c.redis.cli(&["HGET", &key("default"), "token"]), "");
}

struct Cluster {
    _dirs: Vec<TempDir>,
    redis: Redis,
    provider: Provider,
    api: MockApi,
    replicas: Vec<Bearerd>,
}

async fn cluster(n: usize) -> Cluster {
    cluster_on(Redis::start(), n).await
}

async fn cluster_on(redis: Redis, n: usize) -> Cluster {
    let ca = test_ca();
    let provider = Provider::start(&ca).await;
    let api = MockApi::start(Some(ca.server.clone()), provider.api_responder()).await;
    let mut dirs = Vec::new();
    let mut replicas = Vec::new();
    for _ in 0..n {
        let dir = TempDir::new();
        token_app(&dir, &api.host(), &provider.host());
        let cfg = Config::new().ca(&ca).app(App::new("demo")).redis(redis.port).write(&dir);
        replicas.push(start(&cfg).await);
        dirs.push(dir);
    }
    Cluster { _dirs: dirs, redis, provider, api, replicas }
}

async fn put_expired(c: &Cluster, account: &str) {
    let rt = c.provider.issue_refresh_token();
    let q = if account == "default" { String::new() } else { format!("?account={account}") };
    c.replicas[0]
        .put_token("demo", "api", &q, json!({"access_token": "stale", "refresh_token": rt, "expires_in": 0}))
        .await;
}

/// Waits until every replica lists `account`'s token in `state` (a put on one replica is seen
/// by the others within a second).
async fn seen_everywhere(c: &Cluster, account: &str, state: &str) {
    for b in &c.replicas {
        eventually(Duration::from_secs(1), &format!("{account}: {state} on every replica"), || async {
            let list = b.admin("GET", "/admin/tokens", "").await.json();
            list.as_array().unwrap().iter().any(|e| e["account"] == account && e["state"] == state)
        })
        .await;
    }
}

async fn settle(c: &Cluster) {
    seen_everywhere(c, "default", "expired").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_requests_on_three_replicas_make_one_refresh() {
    let c = cluster(3).await;
    c.provider.with(|s| s.delay = Duration::from_millis(300));
    put_expired(&c, "default").await;
    settle(&c).await;
    let addrs: Vec<_> = c.replicas.iter().map(|b| b.data).collect();
    let mut ok = 0;
    for r in invoke_concurrently(&addrs, "get", 300).await {
        assert_eq!(r.status, 200, "{}", r.text());
        ok += 1;
    }
    let grants = c.provider.grants("refresh_token");
    println!("replicas: 3 replicas, {ok} requests ok, {grants} refresh grant(s)");
    assert_eq!(grants, 1, "one refresh for the whole cluster");
    assert_eq!(c.provider.with(|s| s.replayed_refresh_tokens), 0);
    assert_eq!(c.api.count(), 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_lease_holder_blocks_the_others_for_at_most_one_lease() {
    let c = cluster(2).await;
    put_expired(&c, "default").await;
    settle(&c).await;
    // A replica that took the lease and died: the lease stays until it expires (2 s here).
    let lease = r#"bearerd:lease:["demo","api","default"]"#;
    assert_eq!(c.redis.cli(&["SET", lease, "dead-replica", "PX", "2000"]), "OK");
    let t0 = Instant::now();
    let r = c.replicas[1].invoke("get", json!({})).await;
    let took = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(4), "{took:?}");
    assert_eq!(c.provider.grants("refresh_token"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_redis_keeps_valid_tokens_serving_and_fails_refreshes_cleanly() {
    let c = cluster(2).await;
    let at = c.provider.with(|s| s.make_access_token());
    c.replicas[0].put_token("demo", "api", "", json!({"access_token": at, "expires_in": 3600})).await;
    put_expired(&c, "agent-b").await;
    seen_everywhere(&c, "default", "valid").await;
    seen_everywhere(&c, "agent-b", "expired").await;
    c.redis.signal("-STOP");
    for b in &c.replicas {
        let r = b.invoke("get", json!({})).await;
        assert_eq!(r.status, 200, "a valid token keeps serving: {}", r.text());
    }
    let t0 = Instant::now();
    let r = c.replicas[1].invoke_with("get", json!({}), &[("x-bearerd-account", "agent-b")]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errorSource"], "PLATFORM");
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert_eq!(c.provider.grants("refresh_token"), 0, "never a refresh that was not coordinated");
    c.redis.signal("-CONT");
    let mut recovered = false;
    for _ in 0..40 {
        let r = c.replicas[1].invoke_with("get", json!({}), &[("x-bearerd-account", "agent-b")]).await;
        if r.status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "refreshes work again once Redis answers");
    assert_eq!(c.provider.grants("refresh_token"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_on_one_replica_is_seen_by_the_others_within_a_second() {
    let c = cluster(3).await;
    let at = c.provider.with(|s| s.make_access_token());
    c.replicas[0].put_token("demo", "api", "", json!({"access_token": at})).await;
    seen_everywhere(&c, "default", "valid").await;
    for b in &c.replicas {
        assert_eq!(b.invoke("get", json!({})).await.status, 200);
    }
    assert_eq!(c.replicas[2].admin("DELETE", "/admin/tokens/demo/api", "").await.status, 200);
    let t0 = Instant::now();
    for b in &c.replicas {
        loop {
            if b.invoke("get", json!({})).await.status == 401 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(1), "the revoke was not seen within 1 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The token lives in Redis, not in a file; its removal leaves only its version there.
    let key = r#"bearerd:token:["demo","api","default"]"#;
    assert_eq!(c.redis.cli(&["HGET", key, "token"]), "");
    assert_eq!(c.redis.cli(&["HGET", key, "version"]), "2");
}

/// A Redis failover that lost the latest write, as the promoted replica would show it: the
/// token's record is put back to the version before a rotation, and the subscriptions break.
/// The replicas write the newer version back (compare-and-set on the version), and the next
/// refresh uses the rotated refresh token, not the spent one (SPEC 5.8).
#[tokio::test(flavor = "multi_thread")]
async fn a_token_write_lost_in_a_failover_is_written_back_and_its_refresh_token_used() {
    let c = cluster(2).await;
    // Every token the provider issues is due at once: every request refreshes.
    c.provider.with(|s| s.expires_in = Some(0));
    put_expired(&c, "default").await;
    settle(&c).await;
    let key = r#"bearerd:token:["demo","api","default"]"#;
    let before = c.redis.cli(&["HGET", key, "token"]);
    assert_eq!(c.redis.cli(&["HGET", key, "version"]), "1");
    let r = c.replicas[0].invoke("get", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.redis.cli(&["HGET", key, "version"]), "2", "the rotation is stored");
    eventually(Duration::from_secs(2), "replica 1 has seen version 2", async || {
        c.replicas[1].admin("GET", "/admin/tokens", "").await.text().contains("\"expired\"")
    })
    .await;
    // The failover: the store is back at version 1 (refresh token spent), connections drop.
    assert_eq!(c.redis.cli(&["HSET", key, "version", "1", "token", &before]), "0");
    assert_eq!(c.redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]), "2");
    eventually(Duration::from_secs(5), "a replica wrote version 2 back", async || {
        c.redis.cli(&["HGET", key, "version"]) == "2"
    })
    .await;
    assert_ne!(c.redis.cli(&["HGET", key, "token"]), before);
    // Both replicas refresh from the rotated refresh token: the strict provider refuses none.
    for b in &c.replicas {
        let r = b.invoke("get", json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(c.provider.with(|s| s.replayed_refresh_tokens), 0, "a spent refresh token was sent");
    assert_eq!(c.provider.grants("refresh_token"), 3);

    // Even without the resubscription: the store loses the write again, and the replica that
    // holds the newer version writes it back before it refreshes from it.
    let before = c.redis.cli(&["HGET", key, "token"]);
    let version: u64 = c.redis.cli(&["HGET", key, "version"]).parse().unwrap();
    let r = c.replicas[1].invoke("get", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let version = version.to_string();
    assert_eq!(c.redis.cli(&["HSET", key, "version", &version, "token", &before]), "0");
    let r = c.replicas[1].invoke("get", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.provider.with(|s| s.replayed_refresh_tokens), 0, "a spent refresh token was sent");
    let list = c.replicas[0].admin("GET", "/admin/tokens", "").await.text();
    assert!(!list.contains("reauthorize"), "{list}");
}

/// With a replica of the store, a rotated refresh token waits for the replica's acknowledgement
/// (`WAIT`) before the new access token is used; a replica that does not answer delays the
/// request by at most 500 ms and does not fail it (SPEC 5.8).
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_refresh_token_waits_for_a_store_replica_at_most_half_a_second() {
    let primary = Redis::start();
    let replica = Redis::start_replica_of(&primary);
    let c = cluster_on(primary, 2).await;
    let waits = || {
        let stats = c.redis.cli(&["INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
            .map_or(0, |v| v.split(',').next().unwrap().parse::<u32>().unwrap())
    };
    put_expired(&c, "default").await;
    settle(&c).await;
    let key = r#"bearerd:token:["demo","api","default"]"#;
    let r = c.replicas[0].invoke("get", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(waits(), 1, "one WAIT for the rotation");
    assert_eq!(replica.cli(&["HGET", key, "version"]), "2", "acknowledged before the token was used");
    // A replica that stops answering: the rotation is used after the 500 ms wait.
    put_expired(&c, "agent-b").await;
    seen_everywhere(&c, "agent-b", "expired").await;
    replica.signal("-STOP");
    let t0 = Instant::now();
    let r = c.replicas[1].invoke_with("get", json!({}), &[("x-bearerd-account", "agent-b")]).await;
    let took = t0.elapsed();
    replica.signal("-CONT");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(waits(), 2);
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(c.provider.grants("refresh_token"), 2);
}

/// A refresh whose lease ran out while the provider answered (a freeze, a slow endpoint) and
/// that no other replica overtook: the rotated token is stored anyway, since the refresh token
/// it replaces is spent; the next refresh uses the rotated one.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_whose_lease_ran_out_keeps_the_rotated_token() {
    let c = cluster(2).await;
    c.provider.with(|s| {
        s.delay = Duration::from_millis(1000);
        s.expires_in = Some(0);
    });
    put_expired(&c, "default").await;
    settle(&c).await;
    let (key, lease) = (r#"bearerd:token:["demo","api","default"]"#, r#"bearerd:lease:["demo","api","default"]"#);
    let b0 = c.replicas[0].data;
    let first = tokio::spawn(async move {
        let h = [("host", "bearerd"), ("content-type", "application/json")];
        send(b0, request("POST", "/invoke/get", &h, "{}")).await
    });
    eventually(Duration::from_secs(2), "the refresh took the lease", async || c.redis.cli(&["EXISTS", lease]) == "1")
        .await;
    // The lease runs out under the holder (as across a freeze).
    assert_eq!(c.redis.cli(&["DEL", lease]), "1");
    let r = first.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.redis.cli(&["HGET", key, "version"]), "2", "the rotated token was stored");
    c.provider.with(|s| s.delay = Duration::ZERO);
    let r = c.replicas[1].invoke("get", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.provider.with(|s| s.replayed_refresh_tokens), 0, "a spent refresh token was sent");
    assert_eq!(c.provider.grants("refresh_token"), 2);
}
