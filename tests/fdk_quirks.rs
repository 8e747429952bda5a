//! Every quirk of real FDK apps (FDK.md) reaches the upstream as the platform would send it.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn quirks_of_real_apps_render_as_the_platform_would() {
    let ca = test_ca();
    let api = MockApi::tls(&ca).await;
    let h = api.host();
    let dir = TempDir::new();
    let requests = json!({
        "spacing1": {"schema": {"method": "GET", "host": h, "path": "/s1", "headers": {"Authorization": "Bearer <%=access_token%>"}}, "options": {"oauth": "api"}},
        "spacing2": {"schema": {"method": "GET", "host": h, "path": "/s2", "headers": {"Authorization": "bearer <%= access_token%>"}}, "options": {"oauth": "api"}},
        "github": {"schema": {"method": "GET", "host": h, "path": "/s3", "headers": {"Authorization": "token <%= access_token %>"}}, "options": {"oauth": "api"}},
        "tokenToken": {"schema": {"method": "GET", "host": h, "path": "/s4", "headers": {"Authorization": "Token token=<%= iparam.api_key %>"}}},
        "basic": {"schema": {"method": "GET", "host": h, "path": "/basic", "headers": {"Authorization": "Basic <%= encode(iparam.api_key + ':X') %>"}}},
        "basicCtx": {"schema": {"method": "GET", "host": h, "path": "/basic2", "headers": {"Authorization": "Basic <%= encode(context.user + ':' + context.pass) %>"}}},
        "fallback": {"schema": {"method": "GET", "host": h, "path": "/fb/<%= context.page || '1' %>", "headers": {"X-Client": "<%= oauth_iparams.client_id || 'built-in' %>"}}},
        "bare": {"schema": {"method": "GET", "host": h, "path": "/w/<%= workspace_id %>/tasks?name=<%= ticket_subject %>&n=<%= context.n %>", "query": {"limit": 50, "filter[state]": "open", "who": "<%= context.who %>"}}},
        "curly": {"schema": {"method": "GET", "host": h, "path": "/conversations/{conversation_id}/x"}},
        "iparamPath": {"schema": {"method": "GET", "host": h, "path": "/repos/<%= iparam.repo %>/issues"}},
        "wholePath": {"schema": {"method": "GET", "host": h, "path": "<%= context.path %>"}},
        "gluedPath": {"schema": {"method": "GET", "host": h, "path": "/v1.0<%= context.path %>"}},
    });
    dir.app("demo", &requests, Some(&oauth_one(&h, false)));
    let cfg =
        Config::new().ca(&ca).app(App::new("demo").iparam("api_key", "k3y").iparam("repo", "acme/widgets")).write(&dir);
    let b = start(&cfg).await;
    b.put_token("demo", "api", "", json!({"access_token": "AT"})).await;
    let calls = [
        ("spacing1", json!({})),
        ("spacing2", json!({})),
        ("github", json!({})),
        ("tokenToken", json!({})),
        ("basic", json!({})),
        ("basicCtx", json!({"context": {"user": "u", "pass": "p"}})),
        ("fallback", json!({"context": {"page": ""}})),
        ("bare", json!({"context": {"workspace_id": 42, "ticket_subject": "Help & more", "who": "a b"}})),
        ("curly", json!({})),
        ("iparamPath", json!({})),
        ("wholePath", json!({"context": {"path": "/api/v1/devices"}})),
        ("gluedPath", json!({"context": {"path": "/users/alice@example.com"}})),
    ];
    for (name, body) in &calls {
        let r = b.invoke(name, body.clone()).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
    }
    let got = api.requests();
    assert!(got.iter().all(|r| r.method == "GET"), "an invoke sends the template's method, not POST");
    let auth = |i: usize| got[i].header("authorization").map(str::to_string);
    assert_eq!(auth(0).as_deref(), Some("Bearer AT"));
    assert_eq!(auth(1).as_deref(), Some("bearer AT"));
    assert_eq!(auth(2).as_deref(), Some("token AT"));
    assert_eq!(auth(3).as_deref(), Some("Token token=k3y"));
    assert_eq!(auth(4).as_deref(), Some("Basic azN5Olg="));
    assert_eq!(auth(5).as_deref(), Some("Basic dTpw"));
    assert_eq!(got[6].path_and_query, "/fb/1");
    assert_eq!(got[6].header("x-client"), Some("built-in"));
    assert_eq!(
        got[7].path_and_query,
        "/w/42/tasks?name=Help%20%26%20more&n=&limit=50&filter%5Bstate%5D=open&who=a%20b"
    );
    assert_eq!(got[8].path_and_query, "/conversations/%7Bconversation_id%7D/x".replace("%7B", "{").replace("%7D", "}"));
    assert_eq!(got[9].path_and_query, "/repos/acme/widgets/issues", "iparams are the operator's and stay as written");
    assert_eq!(got[10].path_and_query, "/api/v1/devices");
    assert_eq!(got[11].path_and_query, "/v1.0/users/alice@example.com");
    // A path tail never climbs.
    let r = b.invoke("wholePath", json!({"context": {"path": "/api/../admin"}})).await;
    assert_eq!(r.status, 400);
    assert_eq!(api.count(), calls.len());
    // Transparent requests through a catch-all path: percent-encoded bytes reach the API as the
    // client sent them (GitLab's `group%2Fproject`), and an encoded dot segment is refused.
    let h = api.host();
    let r =
        send(b.data, request("GET", &format!("http://{h}/api/v4/projects/group%2Fproject/issues?x=1"), &[], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.requests().last().unwrap().path_and_query, "/api/v4/projects/group%2Fproject/issues?x=1");
    let r = send(b.data, request("GET", &format!("http://{h}/v1.0/users/a%2Fb%20c"), &[], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.requests().last().unwrap().path_and_query, "/v1.0/users/a%2Fb%20c");
    let r = send(b.data, request("GET", &format!("http://{h}/api/%2e%2E/admin"), &[], "")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(api.count(), calls.len() + 2);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mustache_oauth_iparams_and_legacy_configs_load() {
    let dir = TempDir::new();
    // Platform 2.3: requests declared at the top level, legacy oauth_config with {{ }}.
    dir.write(
        "apps/legacy/manifest.json",
        "\u{feff}{\r\n\t\"platform-version\": \"2.3\",\r\n\t\"product\": {\"freshdesk\": {}},\r\n\t\"requests\": {\"createTask\": {}}\r\n}",
    );
    dir.write(
        "apps/legacy/config/requests.json",
        r#"{"createTask": {"schema": {"method": "POST", "host": "app.asana.com", "path": "/api/1.0/workspaces/<%= workspace_id %>/tasks",
            "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"isOAuth": true}}}"#,
    );
    dir.write(
        "apps/legacy/config/oauth_config.json",
        r#"{"client_id": "{{ oauth_iparams.client_id }}", "client_secret": "s", "authorize_url": "https://{{oauth_iparams.domain}}/authorize",
            "token_url": "https://<%= oauth_iparams.domain %>/token", "token_type": "account"}"#,
    );
    let legacy = App::new("legacy").oauth_iparam("client_id", "my-id").oauth_iparam("domain", "auth.example.com");
    let cfg = Config::new().app(legacy).write(&dir);
    let c = bearerd::config::load(&cfg).unwrap();
    let i = &c.apps[0].fdk.integrations[0];
    assert_eq!(i.client_id, "my-id");
    assert_eq!(i.authorize_url.as_deref(), Some("https://auth.example.com/authorize"));
    assert_eq!(i.token_url, "https://auth.example.com/token");
    assert_eq!(c.apps[0].fdk.templates[0].integration, Some(0));
}
