//! Tokens through their whole life, against a strict mock provider and a mock API that accepts
//! only the provider's current access tokens. Counts, not sleeps, show single flight.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::provider::Provider;
use support::redis::Redis;
use support::*;

/// Every lifecycle test runs against both token stores.
#[derive(Clone, Copy)]
enum Store {
    File,
    Redis,
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod file_store {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Store::File).await } )*
        }
        mod redis_store {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Store::Redis).await } )*
        }
    };
}

on_both_stores!(
    authorization_code_flow_with_pkce_and_single_use_state,
    basic_client_auth_and_custom_headers,
    two_hundred_requests_on_an_expired_token_make_one_refresh,
    a_rejection_with_100_in_flight_makes_one_refresh_and_100_replays,
    a_second_rejection_is_returned_as_it_is,
    rotated_refresh_tokens_are_never_sent_twice,
    a_dead_refresh_token_asks_for_authorization_and_is_not_hammered,
    failures_back_off_and_a_valid_token_keeps_serving,
    a_slow_token_endpoint_delays_only_requests_for_that_key,
    token_endpoint_timeout_is_504,
    client_credentials_are_fetched_once_on_first_need,
    a_refresh_without_a_new_refresh_token_keeps_the_old_one,
    a_refresh_outlives_the_request_that_started_it,
);

struct World {
    _redis: Option<Redis>,
    _dir: TempDir,
    provider: Provider,
    api: MockApi,
    b: Bearerd,
}

/// App `demo`, integration `api` (token endpoint: the provider), template `get` (GET /data on
/// the API with the access token) and `post` (POST /data). `oauth` adjusts the integration.
async fn world(store: Store, oauth: impl FnOnce(&mut serde_json::Value)) -> World {
    let ca = test_ca();
    let provider = Provider::start(&ca).await;
    let api = MockApi::start(Some(ca.server.clone()), provider.api_responder()).await;
    let dir = TempDir::new();
    let h = api.host();
    let mut o = oauth_one(&provider.host(), false);
    oauth(&mut o["integrations"]["api"]);
    let auth = json!({"Authorization": "Bearer <%= access_token %>"});
    dir.app(
        "demo",
        &json!({
            "get": {"schema": {"method": "GET", "host": h, "path": "/data", "headers": auth}, "options": {"oauth": "api"}},
            "post": {"schema": {"method": "POST", "host": h, "path": "/data", "headers": auth}, "options": {"oauth": "api"}},
        }),
        Some(&o),
    );
    let redis = match store {
        Store::File => None,
        Store::Redis => Some(Redis::start()),
    };
    let mut cfg = Config::new().ca(&ca).app(App::new("demo"));
    if let Some(r) = &redis {
        cfg = cfg.redis(r.port);
    }
    let b = start(&cfg.write(&dir)).await;
    World { _redis: redis, _dir: dir, provider, api, b }
}

/// Puts a token whose access token the API does not accept and whose refresh token is valid.
async fn put_stale(w: &World, expires_in: i64) -> String {
    let rt = w.provider.issue_refresh_token();
    let mut t = json!({"access_token": "stale-at", "refresh_token": rt});
    if expires_in >= 0 {
        t["expires_in"] = json!(expires_in);
    }
    w.b.put_token("demo", "api", "", t).await;
    rt
}

async fn metric(b: &Bearerd, line_prefix: &str) -> Option<u64> {
    let m = b.admin("GET", "/metrics", "").await.text();
    m.lines().find(|l| l.starts_with(line_prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

async fn authorization_code_flow_with_pkce_and_single_use_state(store: Store) {
    let w = world(store, |i| i["options"]["resource"] = json!("https://api.example/")).await;
    let r = w.b.admin("GET", "/auth/authorize/demo/api", "").await;
    assert_eq!(r.status, 302);
    let loc = url_params(r.header("location").unwrap());
    assert_eq!(loc["response_type"], "code");
    assert_eq!(loc["client_id"], "cid");
    assert_eq!(loc["redirect_uri"], "http://bearerd.test:10001/auth/callback");
    assert_eq!(loc["code_challenge_method"], "S256");
    assert_eq!(loc["scope"], "read");
    assert_eq!(loc["resource"], "https://api.example/");
    assert!(loc["state"].len() >= 40 && loc["code_challenge"].len() == 43);
    // The user consents at the provider, which redirects back with a code.
    let code = w.provider.issue_code(&loc["code_challenge"], &loc["redirect_uri"]);
    let cb = format!("/auth/callback?code={code}&state={}", loc["state"]);
    let r = w.b.admin("GET", &cb, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("authorized for app demo"));
    assert_eq!(w.provider.grants("authorization_code"), 1);
    let form = w.provider.with(|s| s.last_form["authorization_code"].clone());
    assert_eq!(form["resource"], "https://api.example/");
    assert!(!form.contains_key("scope"));
    let tokens = w.b.admin("GET", "/admin/tokens", "").await.json();
    assert_eq!(tokens[0]["state"], "valid");
    let r = w.b.invoke("get", json!({})).await;
    assert_eq!((r.status, r.text().as_str()), (200, "api-ok"));
    // Replayed state: 400, and the provider never sees it.
    let r = w.b.admin("GET", &cb, "").await;
    assert_eq!(r.status, 400);
    let r = w.b.admin("GET", "/auth/callback?code=x&state=forged", "").await;
    assert_eq!(r.status, 400);
    assert_eq!(w.provider.grants("authorization_code"), 1);
    // The provider's error: 400 with its error on the page, state used up, token untouched.
    let loc = url_params(w.b.admin("GET", "/auth/authorize/demo/api", "").await.header("location").unwrap());
    let r =
        w.b.admin(
            "GET",
            &format!("/auth/callback?error=access_denied&error_description=%3Cnope%3E&state={}", loc["state"]),
            "",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("access_denied") && r.text().contains("&lt;nope&gt;"));
    let r = w.b.admin("GET", &format!("/auth/callback?code=c&state={}", loc["state"]), "").await;
    assert_eq!(r.status, 400, "a state is single use even after an error");
    assert_eq!(w.provider.grants("authorization_code"), 1);
    assert_eq!(w.b.admin("GET", "/admin/tokens", "").await.json()[0]["state"], "valid");
    assert_eq!(
        metric(&w.b, "bearerd_authorizations_total{app=\"demo\",integration=\"api\",result=\"ok\"}").await,
        Some(1)
    );
    assert_eq!(
        metric(&w.b, "bearerd_authorizations_total{app=\"demo\",integration=\"api\",result=\"denied\"}").await,
        Some(1)
    );
}

async fn basic_client_auth_and_custom_headers(store: Store) {
    let w = world(store, |i| i["token_auth"] = json!("client_secret_basic")).await;
    w.provider.with(|s| s.basic = true);
    put_stale(&w, 0).await;
    let r = w.b.invoke("get", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let form = w.provider.with(|s| s.last_form["refresh_token"].clone());
    assert!(!form.contains_key("client_secret"));
    assert!(!form.contains_key("scope"), "scope is not sent on refreshes");
    assert_eq!(w.provider.with(|s| s.bad_client_auth), 0);

    // customHeaders go on token requests; an Authorization among them replaces client auth.
    let w = world(store, |i| {
        i["options"]["customHeaders"] = json!({"Authorization": "Basic Y2lkOmNzZWNyZXQ=", "X-Extra": "1"})
    })
    .await;
    w.provider.with(|s| s.basic = true);
    put_stale(&w, 0).await;
    assert_eq!(w.b.invoke("get", json!({})).await.status, 200);
    let headers = w.provider.with(|s| s.last_headers["refresh_token"].clone());
    assert_eq!(headers["x-extra"], "1");
}

async fn two_hundred_requests_on_an_expired_token_make_one_refresh(store: Store) {
    let w = world(store, |_| {}).await;
    w.provider.with(|s| s.delay = Duration::from_millis(300));
    put_stale(&w, 0).await;
    let mut ok = 0;
    for r in invoke_concurrently(&[w.b.data], "get", 200).await {
        assert_eq!(r.status, 200, "{}", r.text());
        ok += 1;
    }
    assert_eq!(ok, 200);
    assert_eq!(w.provider.grants("refresh_token"), 1, "exactly one refresh for 200 waiting requests");
    assert_eq!(w.api.count(), 200, "every request reached the API once, with the new token");
    let waiters = metric(&w.b, "bearerd_token_refresh_waiters_total{app=\"demo\",integration=\"api\"}").await.unwrap();
    assert!((1..200).contains(&waiters), "{waiters} requests waited on the one refresh");
    assert_eq!(
        metric(&w.b, "bearerd_token_refreshes_total{app=\"demo\",integration=\"api\",result=\"ok\"}").await,
        Some(1)
    );
    println!("single flight: 200 requests, 1 refresh grant, {waiters} waiters");
}

async fn a_rejection_with_100_in_flight_makes_one_refresh_and_100_replays(store: Store) {
    let w = world(store, |_| {}).await;
    w.provider.with(|s| s.delay = Duration::from_millis(200));
    put_stale(&w, -1).await; // no expiry: used until the API rejects it
    let data = w.b.data;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                send(data, request("POST", "/invoke/post", &[("host", "b")], &format!("{{\"body\": \"n{i}\"}}"))).await
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-bearerd-attempts"), Some("2"));
    }
    assert_eq!(w.provider.grants("refresh_token"), 1);
    let reqs = w.api.requests();
    assert_eq!(reqs.len(), 200, "100 rejected sends and 100 replays");
    let replayed: std::collections::HashSet<_> =
        reqs.iter().filter(|r| r.header("authorization") != Some("Bearer stale-at")).map(|r| r.body.clone()).collect();
    assert_eq!(replayed.len(), 100, "every body was replayed whole");
}

async fn a_second_rejection_is_returned_as_it_is(store: Store) {
    let w = world(store, |_| {}).await;
    put_stale(&w, -1).await;
    // The API rejects every token, even fresh ones.
    w.provider.with(|s| s.reject_all = true);
    let r = w.b.invoke("get", json!({})).await;
    assert_eq!(r.status, 401);
    assert!(r.header("x-bearerd-error").is_none(), "the upstream's answer, not bearerd's");
    assert_eq!(r.header("x-bearerd-attempts"), Some("2"));
    assert_eq!(w.provider.grants("refresh_token"), 1);
}

async fn rotated_refresh_tokens_are_never_sent_twice(store: Store) {
    let w = world(store, |_| {}).await;
    // Every new token is already within the skew: each round of requests refreshes again.
    w.provider.with(|s| s.expires_in = Some(30));
    put_stale(&w, 0).await;
    for _ in 0..15 {
        for r in invoke_concurrently(&[w.b.data], "get", 20).await {
            assert_eq!(r.status, 200);
        }
    }
    let grants = w.provider.grants("refresh_token");
    assert!((15..=300).contains(&grants), "{grants}");
    assert_eq!(w.provider.with(|s| s.replayed_refresh_tokens), 0, "no rotated refresh token was ever sent again");
    // Without rotation, the old refresh token is kept.
    w.provider.with(|s| s.rotate = false);
    assert_eq!(w.b.invoke("get", json!({})).await.status, 200);
    assert_eq!(w.b.invoke("get", json!({})).await.status, 200);
    assert_eq!(w.provider.with(|s| s.replayed_refresh_tokens), 0);
    println!("rotation: 300 requests in 15 rounds, {grants} refresh grants, 0 refresh tokens replayed");
}

async fn a_dead_refresh_token_asks_for_authorization_and_is_not_hammered(store: Store) {
    let w = world(store, |_| {}).await;
    w.b.put_token(
        "demo",
        "api",
        "",
        json!({"access_token": "stale-at", "refresh_token": "never-issued", "expires_in": 0}),
    )
    .await;
    for _ in 0..5 {
        let r = w.b.invoke("get", json!({})).await;
        assert_eq!(r.status, 401);
        let j = r.json();
        assert_eq!(j["errorSource"], "PLATFORM");
        assert_eq!(j["authorize"], "http://bearerd.test:10001/auth/authorize/demo/api");
    }
    assert_eq!(w.provider.grants("refresh_token"), 1, "one attempt, then reauthorize");
    assert_eq!(w.b.admin("GET", "/admin/tokens", "").await.json()[0]["state"], "reauthorize");
    assert_eq!(w.api.count(), 0);
    assert_eq!(
        metric(&w.b, "bearerd_token_refreshes_total{app=\"demo\",integration=\"api\",result=\"invalid_grant\"}").await,
        Some(1)
    );
}

async fn failures_back_off_and_a_valid_token_keeps_serving(store: Store) {
    let w = world(store, |_| {}).await;
    w.provider.with(|s| s.fail_status = Some(500));
    put_stale(&w, 0).await;
    let r = w.b.invoke("get", json!({})).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["errorSource"], "PLATFORM");
    let r = w.b.invoke("get", json!({})).await;
    assert_eq!(r.status, 502, "inside the back-off window: 502 at once");
    assert!(r.json()["message"].as_str().unwrap().contains("next attempt"));
    assert_eq!(w.provider.grants("refresh_token"), 1);
    assert_eq!(
        metric(&w.b, "bearerd_token_refreshes_total{app=\"demo\",integration=\"api\",result=\"error\"}").await,
        Some(1)
    );
    // A token that is only near expiry keeps being used while its refresh fails.
    let rt = w.provider.issue_refresh_token();
    let at = w.provider.with(|s| s.make_access_token());
    w.b.put_token("demo", "api", "", json!({"access_token": at, "refresh_token": rt, "expires_in": 30})).await;
    let r = w.b.invoke("get", json!({})).await;
    assert_eq!((r.status, r.text().as_str()), (200, "api-ok"));
    assert_eq!(w.provider.grants("refresh_token"), 2);
}

async fn a_slow_token_endpoint_delays_only_requests_for_that_key(store: Store) {
    let w = world(store, |_| {}).await;
    let slow_rt = w.provider.issue_refresh_token();
    w.provider.with(|s| {
        s.slow.insert(slow_rt.clone());
        s.slow_delay = Duration::from_secs(3);
    });
    w.b.put_token("demo", "api", "", json!({"access_token": "x", "refresh_token": slow_rt, "expires_in": 0})).await;
    let fast_rt = w.provider.issue_refresh_token();
    w.b.put_token(
        "demo",
        "api",
        "?account=other",
        json!({"access_token": "y", "refresh_token": fast_rt, "expires_in": 0}),
    )
    .await;
    let data = w.b.data;
    let slow = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = send(data, request("POST", "/invoke/get", &[("host", "b")], "{}")).await;
        (r.status, t0.elapsed())
    });
    // The slow refresh has reached the token endpoint and is held there.
    eventually(Duration::from_secs(5), "the slow refresh is at the token endpoint", async || {
        w.provider.with(|s| s.in_flight) == 1
    })
    .await;
    let t0 = Instant::now();
    let r = w.b.invoke_with("get", json!({}), &[("x-bearerd-account", "other")]).await;
    let fast = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!slow.is_finished(), "the slow refresh is still in flight");
    assert!(fast < Duration::from_millis(1500), "the other key waited {fast:?}");
    // Its own refresh ran beside the slow one (no lock shared between keys), and its request
    // carried the token issued for its own refresh token (refreshes are keyed by account).
    assert_eq!(w.provider.with(|s| s.max_in_flight), 2);
    let issued = w.provider.with(|s| s.issued_for[&fast_rt].clone());
    assert_eq!(w.api.requests().last().unwrap().header("authorization"), Some(format!("Bearer {issued}").as_str()));
    let (status, slow_took) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert!(slow_took >= Duration::from_secs(3));
}

async fn a_refresh_without_a_new_refresh_token_keeps_the_old_one(store: Store) {
    let w = world(store, |_| {}).await;
    // No rotation: the answer carries no refresh token; and every access token expires at once,
    // so each request refreshes.
    w.provider.with(|s| {
        s.rotate = false;
        s.expires_in = Some(0);
    });
    let rt = put_stale(&w, 0).await;
    for n in 1..=2 {
        let r = w.b.invoke("get", json!({})).await;
        assert_eq!(r.status, 200, "request {n}: {}", r.text());
        assert_eq!(w.provider.grants("refresh_token"), n);
        let sent = w.provider.with(|s| s.last_form["refresh_token"]["refresh_token"].clone());
        assert_eq!(sent, rt, "refresh {n} used the refresh token kept from before");
    }
}

async fn a_refresh_outlives_the_request_that_started_it(store: Store) {
    let w = world(store, |_| {}).await;
    w.provider.with(|s| s.delay = Duration::from_secs(2));
    put_stale(&w, 0).await;
    // The client gives up while the (rotating) refresh is at the token endpoint: over HTTP/2,
    // where closing the connection drops the request's future in bearerd.
    let stream = tokio::net::TcpStream::connect(w.b.data).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let client = tokio::spawn(async move { sender.send_request(request("POST", "/invoke/get", &[], "{}")).await });
    eventually(Duration::from_secs(5), "the refresh is at the token endpoint", async || {
        w.provider.with(|s| s.in_flight) == 1
    })
    .await;
    client.abort();
    conn.abort();
    // The refresh still finishes and its rotated refresh token is kept: the next request uses
    // the new access token without another grant.
    eventually(Duration::from_secs(5), "the refresh finished", async || w.provider.with(|s| s.in_flight) == 0).await;
    eventually(Duration::from_secs(2), "the refreshed token is stored", async || {
        w.b.admin("GET", "/admin/tokens", "").await.json()[0]["state"] == "valid"
    })
    .await;
    let r = w.b.invoke("get", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.provider.grants("refresh_token"), 1);
    assert_eq!(w.provider.with(|s| s.replayed_refresh_tokens), 0);
}

async fn token_endpoint_timeout_is_504(store: Store) {
    let w = world(store, |_| {}).await;
    w.provider.with(|s| s.delay = Duration::from_secs(7));
    put_stale(&w, 0).await;
    let t0 = Instant::now();
    let r = w.b.invoke("get", json!({})).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t0.elapsed() < Duration::from_secs(6));
}

async fn client_credentials_are_fetched_once_on_first_need(store: Store) {
    let w = world(store, |i| {
        i["grant_type"] = json!("client_credentials");
        i.as_object_mut().unwrap().remove("authorize_url");
    })
    .await;
    for r in invoke_concurrently(&[w.b.data], "get", 50).await {
        assert_eq!(r.status, 200);
    }
    assert_eq!(w.provider.grants("client_credentials"), 1);
    let form = w.provider.with(|s| s.last_form["client_credentials"].clone());
    assert_eq!(form["scope"], "read");
    assert_eq!(w.b.admin("GET", "/auth/authorize/demo/api", "").await.status, 400, "nothing to authorize");
    assert_eq!(w.b.invoke("get", json!({})).await.status, 200);
    assert_eq!(w.provider.grants("client_credentials"), 1, "cached until near expiry");
    // Accounts are not minted by requests: one token per integration whatever they name.
    for n in 0..50 {
        let account = format!("acct-{n}");
        let r = w.b.invoke_with("get", json!({}), &[("x-bearerd-account", account.as_str())]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(w.provider.grants("client_credentials"), 1, "no grant per named account");
    let tokens = w.b.admin("GET", "/admin/tokens", "").await.json();
    assert_eq!(tokens.as_array().unwrap().len(), 1, "one stored token: {tokens}");
}

fn url_params(url: &str) -> std::collections::HashMap<String, String> {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned()))
        .collect()
}

/// Every secret of a token's life, on its success and failure paths, stays out of a debug log:
/// the client secret, authorization codes, PKCE verifiers, `state`, access and refresh tokens.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_a_debug_log_on_any_path() {
    let (ca, provider, _api, dir) = provider_world().await;
    let cfg = Config::new().ca(&ca).app(App::new("demo")).upstream_timeout("2s").write(&dir);
    let b = Logged::start(&cfg, "debug");
    let admin = |method: &'static str, path: String, body: String| {
        let addr = b.admin;
        async move { send(addr, request(method, &path, &[("host", "a")], &body)).await }
    };
    let invoke = |account: &'static str| {
        let addr = b.data;
        async move {
            send(addr, request("POST", "/invoke/get", &[("host", "b"), ("x-bearerd-account", account)], "{}")).await
        }
    };
    // The code flow: an exchange that works, a replayed state, and the provider's error.
    let loc =
        url_params(admin("GET", "/auth/authorize/demo/api".into(), String::new()).await.header("location").unwrap());
    let code = provider.issue_code(&loc["code_challenge"], &loc["redirect_uri"]);
    let callback = format!("/auth/callback?code={code}&state={}", loc["state"]);
    assert_eq!(admin("GET", callback.clone(), String::new()).await.status, 200);
    assert_eq!(admin("GET", callback, String::new()).await.status, 400);
    let verifier = provider.with(|s| s.last_form["authorization_code"]["code_verifier"].clone());
    assert_eq!(invoke("default").await.status, 200);
    // A rejection: refresh, replay, and the second rejection returned.
    provider.with(|s| s.reject_all = true);
    assert_eq!(invoke("default").await.status, 401);
    provider.with(|s| s.reject_all = false);
    // A dead refresh token (invalid_grant), a failing endpoint (500), a slow one (timeout).
    let dead = provider.issue_refresh_token();
    provider.with(|s| s.slow.insert(dead.clone()));
    let put = |account: &'static str, rt: String| {
        admin(
            "PUT",
            format!("/admin/tokens/demo/api?account={account}"),
            json!({"access_token": format!("AT-PUT-{account}"), "refresh_token": rt, "expires_in": 0}).to_string(),
        )
    };
    assert_eq!(put("dead", "RT-NEVER-ISSUED".into()).await.status, 200);
    assert_eq!(invoke("dead").await.status, 401);
    let failing = provider.issue_refresh_token();
    assert_eq!(put("failing", failing.clone()).await.status, 200);
    provider.with(|s| s.fail_status = Some(500));
    assert_eq!(invoke("failing").await.status, 502);
    provider.with(|s| {
        s.fail_status = None;
        s.slow_delay = Duration::from_secs(4);
    });
    assert_eq!(put("slow", dead.clone()).await.status, 200);
    assert_eq!(invoke("slow").await.status, 504);
    let log = b.stop();
    assert!(log.contains("DEBUG"), "the log is at debug level:\n{log}");
    // The audit trail: the start lists apps and token states; every token event has its line.
    assert!(log.contains("demo: 1 templates, api 1 missing"), "{log}");
    for event in
        ["authorized", "token refreshed", "token stored through the admin API", "refresh refused (invalid_grant)"]
    {
        assert!(log.contains(event), "no `{event}` line:\n{log}");
    }
    let mut secrets = vec!["csecret".to_string(), code, verifier, loc["state"].clone(), dead, failing];
    secrets.extend(["RT-NEVER-ISSUED", "AT-PUT-dead", "AT-PUT-failing"].map(String::from));
    // Every token the provider issued.
    let issued = provider.with(|s| s.issued_for.values().cloned().collect::<Vec<_>>());
    assert!(!issued.is_empty());
    secrets.extend(issued);
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "{secret} reached the log:\n{log}");
    }
    // Refresh tokens the provider handed out have the `rt-` prefix; access tokens `at-`.
    assert!(!log.contains("rt-") && !log.contains("at-made"), "a token reached the log:\n{log}");
}
