//! Real FDK app shapes (SPEC 1.4), with fixtures that describe what real apps do: endpoint URLs,
//! iparams declarations, the same oauth_iparam name in two integrations, apps without
//! requests.json, and secrets in paths that must never reach a log line.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_urls_supply_current_host() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    // A CRM app whose host is the installation's own endpoint.
    dir.app(
        "crm",
        &json!({"getDeal": {"schema": {"method": "GET", "host": "<%= current_host.endpoint_urls.freshworks_crm %>",
            "path": "/crm/sales/api/deals/<%= context.deal_id %>?include=contacts",
            "headers": {"Authorization": "Token token=<%= iparam.api_key %>"}}}}),
        None,
    );
    let crm =
        App::new("crm").iparam("api_key", "k").endpoint_url("freshworks_crm", &format!("https://{}/", api.host()));
    let b = start(&Config::new().ca(&ca).app(crm).write(&dir)).await;
    let r = b.invoke("getDeal", json!({"context": {"deal_id": 7}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.requests()[0].path_and_query, "/crm/sales/api/deals/7?include=contacts");
    assert_eq!(api.requests()[0].header("authorization"), Some("Token token=k"));
    b.shutdown().await;
    // Without a value it is a load error that names the key.
    let cfg = Config::new().app(App::new("crm").iparam("api_key", "k")).write(&dir);
    let e = bearerd::config::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("/getDeal/schema/host: endpoint URL \"freshworks_crm\" is referenced but has no value"), "{e}");
}

#[test]
fn the_same_oauth_iparam_name_in_two_integrations() {
    let dir = TempDir::new();
    let integ = |path: &str| {
        json!({"client_id": "<%= oauth_iparams.client_id || 'shared-id' %>", "client_secret": "s",
               "authorize_url": format!("https://<%= oauth_iparams.domain %>/{path}/authorize"),
               "token_url": format!("https://{{{{ oauth_iparams.domain }}}}/{path}/token"),
               "oauth_iparams": {"domain": {"type": "text", "required": true}}})
    };
    dir.app("two", &json!({}), Some(&json!({"integrations": {"asana": integ("a"), "github": integ("g")}})));
    let two = App::new("two")
        .oauth_iparam_for("asana", "domain", "app.asana.com")
        .oauth_iparam_for("github", "domain", "github.com")
        .oauth_iparam_for("github", "client_id", "gh-id");
    let cfg = Config::new().app(two).write(&dir);
    let c = bearerd::config::load(&cfg).unwrap();
    let ints = &c.apps[0].fdk.integrations;
    assert_eq!(ints[0].token_url, "https://app.asana.com/a/token");
    assert_eq!(ints[0].client_id, "shared-id");
    assert_eq!(ints[1].token_url, "https://github.com/g/token");
    assert_eq!(ints[1].client_id, "gh-id");
    // Missing for one integration: named with the integration.
    let cfg = Config::new().app(App::new("two").oauth_iparam_for("asana", "domain", "app.asana.com")).write(&dir);
    let e = bearerd::config::load(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("config/oauth_config.json: /integrations/github/token_url: oauth_iparam \"domain\" is referenced but has no value (set apps[].oauth_iparams.github.domain)"),
        "{e}"
    );
}

#[test]
fn iparams_declarations_defaults_secure_and_undeclared() {
    let dir = TempDir::new();
    dir.app(
        "a",
        &json!({"t": {"schema": {"method": "GET", "host": "<%= iparam.domain %>", "path": "/repos/<%= iparam.repo %>/x",
            "query": {"d": "<%= iparam.delay %>"}}}}),
        None,
    );
    dir.write(
        "apps/a/config/iparams.json",
        &json!({"repo": {"type": "text", "secure": true, "required": true}, "delay": {"type": "number", "default_value": 10},
                "unused": {"type": "text", "required": true}})
        .to_string(),
    );
    // `domain` is not declared but has a value; `delay` comes from its default; `unused` is
    // required but not referenced; `repo` is secure and in a path (a warning).
    let a = || App::new("a").iparam("domain", "x.example.com");
    let cfg = Config::new().app(a().iparam("repo", "o/r")).write(&dir);
    let c = bearerd::config::load(&cfg).unwrap();
    let t = &c.apps[0].fdk.templates[0];
    assert_eq!(t.host.as_literal(), Some("x.example.com"));
    assert_eq!(t.path.as_literal(), Some("/repos/o/r/x"));
    assert_eq!(t.query[0].1.as_literal(), Some("10"));
    assert!(c.warnings.iter().any(|w| w.to_string().contains("secure iparam \"repo\" is used in the path")));
    let cfg = Config::new().app(a()).write(&dir);
    let e = bearerd::config::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("/t/schema/path: iparam \"repo\" is referenced but has no value"), "{e}");
    // An iparam value that would climb the path is refused at load.
    let cfg = Config::new().app(a().iparam("repo", "../admin")).write(&dir);
    let e = bearerd::config::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("the path contains a `.` or `..` segment"), "{e}");
    // Percent-encoded too (found by the template fuzz target: `%2E` in a template's own path).
    let cfg = Config::new().app(a().iparam("repo", "%2e%2E")).write(&dir);
    let e = bearerd::config::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("the path contains a `.` or `..` segment"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_without_requests_json_can_still_be_authorized() {
    let dir = TempDir::new();
    dir.write("apps/old/manifest.json", r#"{"platform-version": "2.2", "product": {"freshservice": {}}}"#);
    dir.write(
        "apps/old/config/oauth_config.json",
        &oauth_one("gitlab.example.com", false)["integrations"]["api"].to_string(),
    );
    let cfg = config(&dir, None, "old");
    assert_eq!(bearerd::config::load(&cfg).unwrap().apps[0].fdk.templates.len(), 0);
    let b = start(&cfg).await;
    let r = b.admin("GET", "/auth/authorize/old/default", "").await;
    assert_eq!(r.status, 302);
    assert!(r.header("location").unwrap().starts_with("https://gitlab.example.com/authorize?response_type=code"));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_in_paths_never_reach_the_log() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let dir = TempDir::new();
    // A chat bot API with the bot token in the path, and a token-authorized template.
    dir.app(
        "bot",
        &json!({
            "send": {"schema": {"method": "POST", "host": api.host(), "path": "/bot<%= context.bot_token %>/sendMessage",
                "query": {"key": "<%= context.query_secret %>"}}},
            "me": {"schema": {"method": "GET", "host": api.host(), "path": "/me", "headers": {"Authorization": "Bearer <%= access_token %>"}},
                   "options": {"oauth": "api"}},
        }),
        Some(&oauth_one(&api.host(), false)),
    );
    let cfg = config(&dir, Some(&ca), "bot");
    let bearerd = Logged::start(&cfg, "debug");
    let (data, admin) = (bearerd.data, bearerd.admin);
    let put = request(
        "PUT",
        "/admin/tokens/bot/api",
        &[("host", "a")],
        r#"{"access_token": "AT-SECRET-9", "refresh_token": "RT-SECRET-9"}"#,
    );
    assert_eq!(send(admin, put).await.status, 200);
    let body = json!({"context": {"bot_token": "123:BOT-SECRET", "query_secret": "Q-SECRET"}}).to_string();
    assert_eq!(send(data, request("POST", "/invoke/send", &[("host", "b")], &body)).await.status, 200);
    assert_eq!(send(data, request("POST", "/invoke/me", &[("host", "b")], "{}")).await.status, 200);
    // Transparent, with the secret in the request's own path and query.
    let host = api.host();
    let uri = format!("http://{host}/bot123:BOT-SECRET/sendMessage?key=Q-SECRET");
    assert_eq!(send(data, request("POST", &uri, &[("host", &host)], "")).await.status, 200);
    assert_eq!(api.count(), 3);
    // Refused (no GET template): the application hears its path back, the log only the host.
    let uri = format!("http://{host}/bot123:BOT-SECRET/getMe");
    assert_eq!(send(data, request("GET", &uri, &[("host", &host)], "")).await.status, 403);
    let log = bearerd.stop();
    assert!(log.contains("bearerd::access"), "the access log is on:\n{log}");
    assert!(log.contains("template=\"send\""));
    assert!(log.contains(&format!("upstream=\"{host}\" status=403")), "the refused host is logged:\n{log}");
    for secret in ["BOT-SECRET", "Q-SECRET", "AT-SECRET-9", "RT-SECRET-9", "csecret", "sendMessage"] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
}
