//! Bad configuration is refused with every problem named by file and JSON path.

mod support;

use serde_json::json;
use support::*;

fn load_err(dir: &TempDir, yaml_text: &str) -> Vec<String> {
    let p = dir.write("bearerd.yaml", yaml_text);
    match bearerd::config::load_with_env(&p, &|k| (k == "SET_VAR").then(|| "from-env".to_string())) {
        Ok(_) => panic!("expected an error for:\n{yaml_text}"),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_has(errors: &[String], needle: &str) {
    assert!(errors.iter().any(|e| e.contains(needle)), "no error contains {needle:?}; got:\n{}", errors.join("\n"));
}

fn good_app(dir: &TempDir) {
    dir.app(
        "demo",
        &json!({"get": {"schema": {"method": "GET", "host": "api.example.com", "path": "/x",
            "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}}),
        Some(&oauth_one("auth.example.com", false)),
    );
}

#[test]
fn yaml_problems() {
    let dir = TempDir::new();
    good_app(&dir);
    let app = "apps:\n  - {name: demo, path: apps/demo}\n";
    assert_has(
        &load_err(&dir, &format!("lisen: 1.2.3.4:1\n{app}")),
        "bearerd.yaml: /lisen: unknown field `lisen`, expected one of `listen`",
    );
    assert_has(&load_err(&dir, &format!("admin: {{listn: x}}\n{app}")), "/admin/listn: unknown field `listn`");
    assert_has(&load_err(&dir, "listen: 127.0.0.1:0\n"), "missing field `apps`");
    // SPEC's sections: shutdown is read (its durations checked); intercept's CA comes whole and
    // its tunnel hosts are host names; caps must be at least 1.
    let errs = load_err(
        &dir,
        &format!(
            "shutdown: {{drain_delay: 5, grace: soon}}\nintercept: {{ca_key: k.pem, tunnel_hosts: \
             [ok.example.com, '*.ok.example.com:8443', 'https://x.example', 10.0.0.1, 'x.example:0']}}\n\
             max_connections: 0\n{app}"
        ),
    );
    assert_has(&errs, "/shutdown/drain_delay: must be a duration like 15s");
    assert_has(&errs, "/shutdown/grace:");
    assert_has(&errs, "/intercept: intercept.ca_cert and intercept.ca_key go together");
    assert_has(&errs, "/intercept/tunnel_hosts/2: `https://x.example`: must be a host name");
    assert_has(&errs, "/intercept/tunnel_hosts/3: `10.0.0.1`: must be a host name, not an IP address");
    assert_has(&errs, "/intercept/tunnel_hosts/4: `x.example:0`: the port must be 1-65535");
    assert!(!errs.iter().any(|e| e.contains("tunnel_hosts/0") || e.contains("tunnel_hosts/1")), "{errs:?}");
    assert_has(&errs, "/max_connections: must be at least 1");
    // Every typo, not only the first; a number where a duration goes says what it wants.
    let errs = load_err(
        &dir,
        &format!("lisen: x\nadmin: {{listn: x}}\nupstream: {{timeout: 15}}\nrefresh: {{replay_buffer: 64}}\n{app}"),
    );
    assert_has(&errs, "/lisen: unknown field `lisen`");
    assert_has(&errs, "/admin/listn: unknown field `listn`");
    assert_has(
        &errs,
        "/upstream/timeout: must be a duration like 15s (a number needs a unit: ms, s, m or h), not integer `15`",
    );
    assert_has(&errs, "/refresh/replay_buffer: must be a size like 64KiB, not integer `64`");
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert_has(
        &load_err(&dir, &format!("listen: ${{UNSET_VAR}}\n{app}")),
        "/listen: environment variable UNSET_VAR is not set",
    );
    let errs = load_err(
        &dir,
        &format!(
            "listen: nowhere\nadmin: {{listen: 0.0.0.0:10001}}\nrefresh: {{skew: 5 parsecs, replay_buffer: lots}}\n\
             upstream: {{timeout: soon, ca_file: missing.pem}}\nstore: {{file: a.json, redis: redis://x}}\n{app}  - {{name: Demo!, path: apps/nothere}}\n  - {{name: demo, path: apps/demo}}\n"
        ),
    );
    // Every problem at once.
    for needle in [
        "/listen: `nowhere` is not an address",
        "/admin/token: admin.listen 0.0.0.0:10001 is not a loopback address: admin.token is required",
        "/refresh/skew: `5 parsecs` is not a duration",
        "/refresh/replay_buffer: `lots` is not a size",
        "/upstream/timeout: `soon` is not a duration",
        "/upstream/ca_file: cannot read",
        "/store: store.file and store.redis are exclusive",
        "/apps/1/name: app name `Demo!` must match [a-z0-9_-]+",
        "/apps/2/name: app name `demo` is already used by /apps/0",
        "is not a folder",
    ] {
        assert_has(&errs, needle);
    }
    // $${ escapes, ${SET_VAR} expands, relative paths are relative to the YAML file.
    let p = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0, token: \"${SET_VAR}-$${literal}\"}\nstore: {file: st/t.json}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let c = bearerd::config::load_with_env(&p, &|k| (k == "SET_VAR").then(|| "from-env".to_string())).unwrap();
    assert!(c.admin.token.as_ref().unwrap().constant_time_eq(b"from-env-${literal}"));
    assert_eq!(c.store, bearerd::config::StoreConfig::File(dir.path().join("st/t.json")));
    assert_eq!(c.refresh.skew.as_secs(), 60);
    assert_eq!(c.refresh.replay_buffer, 65536);
    assert_eq!(c.upstream.timeout.as_secs(), 15);
    assert!(format!("{c:?}").contains("\"...\""), "the admin token is redacted in Debug");
    assert!(!format!("{c:?}").contains("from-env"));
}

/// Writes one app with `requests` (and `oauth`) and returns the load errors.
fn app_errors(requests: serde_json::Value, oauth: Option<serde_json::Value>, extra_yaml: &str) -> Vec<String> {
    let dir = TempDir::new();
    dir.app("demo", &requests, oauth.as_ref());
    load_err(
        &dir,
        &format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\napps:\n  - name: demo\n    path: apps/demo\n{extra_yaml}"
        ),
    )
}

#[test]
fn fdk_problems_name_file_template_and_key() {
    let t = |schema: serde_json::Value, options: serde_json::Value| json!({"schema": schema, "options": options});
    let errs = app_errors(
        json!({
            "asanaGetWorkspace": t(json!({"method": "GET", "host": "app.asana.com", "path": "/w"}), json!({"oauth": "asna"})),
            "badMethod": t(json!({"method": "FETCH", "host": "h.com"}), json!({})),
            "noHost": t(json!({"method": "GET"}), json!({})),
            "schemeHost": t(json!({"method": "GET", "host": "https://h.com/x"}), json!({})),
            "httpProto": t(json!({"method": "GET", "host": "h.com", "protocol": "http"}), json!({})),
            "relPath": t(json!({"method": "GET", "host": "h.com", "path": "v1/x"}), json!({})),
            "tokenInPath": t(json!({"method": "GET", "host": "h.com", "path": "/<%= access_token %>"}), json!({"oauth": "api"})),
            "noOauth": t(json!({"method": "GET", "host": "h.com", "headers": {"Authorization": "Bearer <%= access_token %>"}}), json!({})),
            "attempts": t(json!({"method": "GET", "host": "h.com"}), json!({"maxAttempts": 7, "retryDelay": 5000})),
            "unknownName": t(json!({"method": "GET", "host": "h.com", "path": "/<%= secret.x %>"}), json!({})),
            "missingIparam": t(json!({"method": "GET", "host": "<%= iparam.domain %>"}), json!({})),
            "badHeader": t(json!({"method": "GET", "host": "h.com", "headers": {"Content-Length": "5"}}), json!({})),
            "bad name!": t(json!({"method": "GET", "host": "h.com"}), json!({})),
        }),
        Some(oauth_one("auth.example.com", false)),
        "",
    );
    for needle in [
        "app demo: config/requests.json: /asanaGetWorkspace/options/oauth: template \"asanaGetWorkspace\": no integration named \"asna\" in config/oauth_config.json (it has: api)",
        "/badMethod/schema/method: `FETCH` is not one of GET, POST, PUT, DELETE, PATCH",
        "/noHost/schema/host: is required",
        "/schemeHost/schema/host: `https://h.com/x` is not a host name",
        "/httpProto/schema/protocol: http is refused unless upstream.allow_http is true",
        "/relPath/schema/path: must start with `/`",
        "/tokenInPath/schema/path: access_token may only be used in header values",
        "/noOauth/schema/headers/Authorization: template \"noOauth\" uses access_token but has no options.oauth or options.isOAuth",
        "/attempts/options/maxAttempts: must be a whole number from 1 to 5",
        "/attempts/options/retryDelay: must be a whole number of milliseconds from 0 to 1500",
        "/unknownName/schema/path: in `secret.x`: unknown name `secret.x`",
        "/missingIparam/schema/host: iparam \"domain\" is referenced but has no value",
        "/badHeader/schema/headers/Content-Length: content-length is set by bearerd",
        "/bad name!: template name \"bad name!\" may use only letters, digits",
    ] {
        assert_has(&errs, needle);
    }
    assert_eq!(errs.len(), 14, "{}", errs.join("\n"));
}

#[test]
fn limits_and_integration_problems() {
    let many: serde_json::Map<String, serde_json::Value> =
        (0..101).map(|i| (format!("t{i}"), json!({"schema": {"method": "GET", "host": "h.com"}}))).collect();
    assert_has(&app_errors(serde_json::Value::Object(many), None, ""), "has 101 templates; at most 100 are allowed");
    let integ = |agent: bool| {
        json!({"client_id": "c", "client_secret": "s", "authorize_url": "https://a.com/a", "token_url": "https://a.com/t",
               "token_type": if agent { "agent" } else { "account" }})
    };
    let errs = app_errors(
        json!({}),
        Some(json!({"integrations": {"a": integ(true), "b": integ(true), "c": integ(false), "d": integ(false),
            "e": {"client_id": "c", "token_url": "ftp://x", "grant_type": "password", "token_auth": "mtls"}}})),
        "",
    );
    for needle in [
        "config/oauth_config.json: /integrations: has 5 integrations; at most 3",
        "/integrations: 2 integrations have token_type agent; at most one may",
        "/integrations/e/client_secret: is required",
        "/integrations/e/token_url: `ftp://x` is not an https URL",
        "/integrations/e/grant_type: `password` is not authorization_code or client_credentials",
        "/integrations/e/token_auth: `mtls` is not client_secret_post or client_secret_basic",
    ] {
        assert_has(&errs, needle);
    }
    // Client credentials need no authorize_url.
    let dir = TempDir::new();
    dir.app(
        "demo",
        &json!({}),
        Some(&json!({"integrations": {"m2m": {"client_id": "c", "client_secret": "s", "token_url": "https://a.com/t", "grant_type": "client_credentials"}}})),
    );
    let p = dir.write("bearerd.yaml", "apps:\n  - {name: demo, path: apps/demo}\n");
    let c = bearerd::config::load(&p).unwrap();
    assert_eq!(c.apps[0].fdk.integrations[0].grant, bearerd::config::Grant::ClientCredentials);
}

#[test]
fn manifest_declarations_and_undeclared_templates() {
    let dir = TempDir::new();
    dir.write(
        "apps/demo/manifest.json",
        r#"{"platform-version": "3.0", "modules": {"common": {"requests": {"a": {"options": {"maxAttempts": 3}}, "ghost": {}}}}}"#,
    );
    dir.write(
        "apps/demo/config/requests.json",
        r#"{"a": {"schema": {"method": "GET", "host": "h.com"}, "options": {"maxAttempts": 9, "retryDelay": 10}}, "hidden": {"schema": {"method": "GET", "host": "h.com"}}}"#,
    );
    let errs = load_err(&dir, "apps:\n  - {name: demo, path: apps/demo}\n");
    assert_eq!(
        errs,
        vec![
            "app demo: manifest.json: /modules/common/requests/ghost: template \"ghost\" is declared but config/requests.json does not define it"
        ],
        "the manifest's options replace the template's maxAttempts 9"
    );
    dir.write(
        "apps/demo/manifest.json",
        r#"{"platform-version": "3.0", "modules": {"common": {"requests": {"a": {"options": {"maxAttempts": 3}}}}}}"#,
    );
    let p = dir.path().join("bearerd.yaml");
    let c = bearerd::config::load(&p).unwrap();
    let t = &c.apps[0].fdk.templates;
    assert_eq!(t.len(), 1, "the undeclared template cannot be invoked");
    assert_eq!((t[0].max_attempts, t[0].retry_delay.as_millis()), (3, 10));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.to_string().contains("not declared in manifest.json, so they cannot be invoked: hidden"))
    );
    dir.write("apps/demo/config/requests.json", "{ not json");
    let errs = load_err(&dir, "apps:\n  - {name: demo, path: apps/demo}\n");
    assert_has(&errs, "app demo: config/requests.json: not valid JSON");
    assert_eq!(errs.len(), 1, "no follow-on errors for the declared templates: {errs:?}");
    // The same for oauth_config.json: templates naming an integration add nothing to its error.
    good_app(&dir);
    dir.write("apps/demo/config/oauth_config.json", "{\"integrations\": ");
    let errs = load_err(&dir, "apps:\n  - {name: demo, path: apps/demo}\n");
    assert_has(&errs, "app demo: config/oauth_config.json: not valid JSON");
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn check_and_run_commands_report_and_exit() {
    let dir = TempDir::new();
    dir.app(
        "demo",
        &json!({"get": {"schema": {"method": "GET", "host": "h.com"}, "options": {"oauth": "nope"}}}),
        None,
    );
    let p = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let bin = env!("CARGO_BIN_EXE_bearerd");
    let out = std::process::Command::new(bin).args(["check", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("options.oauth \"nope\" has no integration (config/oauth_config.json is missing)"),
        "{stderr}"
    );
    let out = std::process::Command::new(bin).args(["run", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "run refuses an invalid configuration with EX_CONFIG");
    // check --app: the same messages, without a bearerd.yaml.
    let out =
        std::process::Command::new(bin).args(["check", "--app"]).arg(dir.path().join("apps/demo")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("options.oauth \"nope\" has no integration"));
    good_app(&dir);
    let out =
        std::process::Command::new(bin).args(["check", "--app"]).arg(dir.path().join("apps/demo")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("get GET api.example.com integration=api context=[]"), "{stdout}");
    // explain: the offline dry run, from $BEARERD_CONFIG; 0 on a match, 1 on none.
    let explain = |args: &[&str]| {
        let out = std::process::Command::new(bin).arg("explain").args(args).env("BEARERD_CONFIG", &p).output().unwrap();
        (out.status.code(), serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default())
    };
    let (code, e) = explain(&["GET", "https://api.example.com/x", "-H", "Accept: text/plain"]);
    assert_eq!(code, Some(0), "{e}");
    assert_eq!(
        (e["template"].clone(), e["upstream"]["url"].clone()),
        (json!("get"), json!("https://api.example.com/x"))
    );
    assert!(e.get("token").is_none(), "offline: no token state");
    let (code, e) = explain(&["DELETE", "https://api.example.com/x"]);
    assert_eq!(code, Some(1));
    assert_eq!(e["nearest"][0]["template"], "get");
}

/// SPEC 7: in a Lambda sandbox only /tmp is writable, so bearerd's defaults go to /tmp/bearerd
/// (the token file, and the intercept CA also with `store.redis`); outside it, beside the YAML.
/// Nothing is created by loading.
#[test]
fn in_lambda_the_default_state_is_under_tmp() {
    use std::path::Path;
    let dir = TempDir::new();
    good_app(&dir);
    let lambda = |k: &str| (k == "AWS_LAMBDA_RUNTIME_API").then(|| "127.0.0.1:9001".to_string());
    let p = dir.write("bearerd.yaml", "listen: 127.0.0.1:0\napps:\n  - {name: demo, path: apps/demo}\n");
    let c = bearerd::config::load_with_env(&p, &lambda).unwrap();
    assert_eq!(c.store, bearerd::config::StoreConfig::File("/tmp/bearerd/tokens.json".into()));
    assert_eq!(c.intercept.ca_cert.parent(), Some(Path::new("/tmp/bearerd")));
    let outside = bearerd::config::load_with_env(&p, &|_| None).unwrap();
    assert_eq!(outside.store, bearerd::config::StoreConfig::File(dir.path().join(".bearerd/tokens.json")));
    assert_eq!(outside.intercept.ca_cert.parent(), Some(dir.path().join(".bearerd").as_path()));

    let p = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nstore: {redis: \"redis://127.0.0.1:6379/0\"}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let c = bearerd::config::load_with_env(&p, &lambda).unwrap();
    assert_eq!(c.intercept.ca_cert.parent(), Some(Path::new("/tmp/bearerd")));
    // A file the configuration names is used where it says, in Lambda too.
    let p = dir.write(
        "bearerd.yaml",
        "listen: 127.0.0.1:0\nstore: {file: /tmp/elsewhere/t.json}\napps:\n  - {name: demo, path: apps/demo}\n",
    );
    let c = bearerd::config::load_with_env(&p, &lambda).unwrap();
    assert_eq!(c.store, bearerd::config::StoreConfig::File("/tmp/elsewhere/t.json".into()));
}
