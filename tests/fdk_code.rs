//! FDK app code unchanged (SPEC 8): a serverless `server.js` written the way FDK apps are
//! (`exports = {...}`, `$request.invokeTemplate` with context and body, the rejection caught,
//! `renderData`) run by `clients/fdk`'s `bearerd-fdk` (Node) against bearerd, a mock provider
//! and a mock API, and asserted on what the API received; and `bearerd run --app` with
//! `/custom_configs` in headless Chromium, from an empty form to a token the app's code uses.
//! Screenshots are kept at target/custom-configs*.png.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::browser::Browser;
use support::*;

const CREDENTIAL: &str = "fdk-caller-secret-0123456789abcdef";

/// The package's command, `node clients/fdk/bin/bearerd-fdk.js`.
fn bearerd_fdk() -> Command {
    let mut c = Command::new("node");
    c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/fdk/bin/bearerd-fdk.js"));
    c.env_remove("BEARERD_URL")
        .env_remove("BEARERD_ADMIN_URL")
        .env_remove("BEARERD_CREDENTIAL")
        .env_remove("BEARERD_APP")
        .env_remove("BEARERD_ACCOUNT");
    c
}

/// What one `bearerd-fdk invoke` printed: its exit code, stdout as JSON, stderr.
struct Run {
    code: i32,
    out: Value,
    err: String,
}

async fn invoke(mut c: Command) -> Run {
    let o =
        tokio::task::spawn_blocking(move || c.output().expect("node is installed (scripts/test.sh installs nodejs)"))
            .await
            .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let out = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("stdout is not JSON:\n{}\nstderr:\n{err}", String::from_utf8_lossy(&o.stdout)));
    Run { code: o.status.code().unwrap_or(-1), out, err }
}

/// A serverless app as FDK apps write it: `exports`, not `module.exports`; the rejection of
/// `invokeTemplate` caught and passed to `renderData`; what it returns ignored.
const SERVER_JS: &str = r#"
const util = require('util');

exports = {
  onTicketCreateHandler: async function (args) {
    try {
      const orders = await $request.invokeTemplate('listOrders', {
        context: { email: args.data.requester.email },
      });
      const list = JSON.parse(orders.response);
      const note = await $request.invokeTemplate('createNote', {
        context: { ticket_id: args.data.ticket.id },
        body: JSON.stringify({ body: util.format('%d orders in %s', list.length, args.iparams.store), private: true }),
      });
      console.log('noted', list.length, 'orders');
      renderData(null, {
        orders: list.length,
        status: orders.status,
        note: note.status,
        content_type: orders.headers['content-type'],
        iparams: Object.keys(args.iparams).sort(),
      });
    } catch (error) {
      console.error('failed', error.status);
      renderData({ status: error.status, message: error.response, errorSource: error.errorSource });
    }
    return 'ignored';
  },

  lookupOrders: async function (args) {
    try {
      const r = await $request.invokeTemplate('listOrders', { context: { email: args.email } });
      renderData(null, JSON.parse(r.response));
    } catch (error) {
      renderData({ status: error.status, message: error.response, errorSource: error.errorSource });
    }
  },

  unknownTemplate: async function () {
    try {
      await $request.invokeTemplate('deleteOrder', { context: {} });
      renderData(null, 'unreachable');
    } catch (error) {
      renderData({ status: error.status, message: error.response, errorSource: error.errorSource });
    }
  },

  usesTheDatabase: async function () {
    await $db.get('orders');
    renderData(null, 'unreachable');
  },
};
"#;

const MANIFEST: &str = r#"{
  "platform-version": "3.0",
  "modules": {
    "common": {
      "requests": { "listOrders": {}, "createNote": {} },
      "functions": { "lookupOrders": { "timeout": 10 }, "unknownTemplate": {}, "usesTheDatabase": {} }
    },
    "support_ticket": {
      "events": { "onTicketCreate": { "handler": "onTicketCreateHandler" } }
    }
  },
  "engines": { "node": "18.20.8", "fdk": "9.8.1" }
}"#;

/// The `shop` app: two templates to `api_host` with the integration's token and a secure iparam,
/// the integration `shop` at the provider.
fn shop_app(dir: &Path, api_host: &str, oauth: Value) {
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("manifest.json", MANIFEST);
    write("server/server.js", SERVER_JS);
    write(
        "config/requests.json",
        &json!({
            "listOrders": {"schema": {"method": "GET", "host": api_host, "path": "/stores/<%= iparam.store %>/orders",
                "query": {"customer": "<%= context.email %>"},
                "headers": {"Authorization": "Bearer <%= access_token %>", "X-Api-Key": "<%= iparam.api_key %>"}},
                "options": {"oauth": "shop"}},
            "createNote": {"schema": {"method": "POST", "host": api_host, "path": "/tickets/<%= context.ticket_id %>/notes",
                "headers": {"Authorization": "Bearer <%= access_token %>", "Content-Type": "application/json"}},
                "options": {"oauth": "shop"}}
        })
        .to_string(),
    );
    write("config/oauth_config.json", &oauth.to_string());
    write(
        "config/iparams.json",
        &json!({
            "store": {"display_name": "Store name", "description": "Your shop's name", "type": "text", "required": true},
            "region": {"display_name": "Region", "type": "dropdown", "options": ["eu", "us"], "default_value": "eu"},
            "notify": {"display_name": "Notify the requester", "type": "checkbox"},
            "api_key": {"display_name": "Shop API key", "type": "text", "required": true, "secure": true}
        })
        .to_string(),
    );
}

/// A mock API that checks the provider's tokens and answers as a shop would: two orders for
/// jane@example.com, 404 for anyone else, 201 for a note.
fn shop_api(provider: &provider::Provider) -> Responder {
    let p = provider.clone();
    std::sync::Arc::new(move |r, _| {
        let token = r.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        if !p.access_valid(token) {
            return Reply::status(401);
        }
        if r.method == "POST" {
            return Reply { status: 201, ..Reply::ok(r#"{"id":7}"#) }.header("content-type", "application/json");
        }
        if r.path_and_query.ends_with("customer=jane%40example.com") {
            Reply::ok(r#"[{"id":1},{"id":2}]"#).header("content-type", "application/json")
        } else {
            Reply { status: 404, ..Reply::ok(r#"{"message":"no such customer"}"#) }
        }
    })
}

fn shop_oauth(provider_host: &str, client_id: &str, client_secret: &str, oauth_iparams: Value) -> Value {
    json!({"integrations": {"shop": {
        "display_name": "Shop",
        "client_id": client_id,
        "client_secret": client_secret,
        "authorize_url": format!("https://{provider_host}/authorize"),
        "token_url": format!("https://{provider_host}/token"),
        "options": {"scope": "orders"},
        "token_type": "account",
        "oauth_iparams": oauth_iparams,
    }}})
}

#[tokio::test(flavor = "multi_thread")]
async fn an_fdk_serverless_app_runs_unchanged_through_bearerd() {
    let ca = test_ca();
    let provider = provider::Provider::start(&ca).await;
    let api = MockApi::start(Some(ca.server.clone()), shop_api(&provider)).await;
    let dir = TempDir::new();
    let app_dir = dir.path().join("apps/shop");
    shop_app(&app_dir, &api.host(), shop_oauth(&provider.host(), "cid", "csecret", json!({})));
    let cfg = Config::new()
        .ca(&ca)
        .app(App::new("shop").iparam("store", "acme").iparam("api_key", "shop-key-secret"))
        .set("callers", json!([{"name": "fdk", "secret": CREDENTIAL, "apps": ["shop"]}]))
        .write(&dir);
    let b = start(&cfg).await;
    let token = provider.with(|s| s.make_access_token());
    let put = json!({"access_token": token, "expires_in": 3600});
    assert_eq!(b.put_token("shop", "shop", "", put).await.status, 200);
    let payload =
        dir.write("payload.json", r#"{"data": {"ticket": {"id": 42}, "requester": {"email": "jane@example.com"}}}"#);
    let server_js = app_dir.join("server/server.js");
    let at = |mut c: Command| {
        c.env("BEARERD_URL", format!("http://{}", b.data))
            .env("BEARERD_ADMIN_URL", format!("http://{}", b.admin))
            .env("BEARERD_CREDENTIAL", CREDENTIAL)
            .current_dir(&app_dir);
        c
    };

    // A product event, by the name manifest.json gives it: both templates called, the answer
    // rendered; args.iparams from bearerd without the secure one.
    let mut c = at(bearerd_fdk());
    c.arg("invoke").arg(&server_js).arg("onTicketCreate").arg(&payload);
    let run = invoke(c).await;
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    assert_eq!(
        run.out,
        json!({"response": {"orders": 2, "status": 200, "note": 201, "content_type": "application/json",
            "iparams": ["region", "store"]}}),
        "{}",
        run.err
    );
    assert!(run.err.contains("noted 2 orders"), "the app's console goes to stderr: {}", run.err);
    let got = api.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[0].method.as_str(), got[0].path_and_query.as_str()),
        ("GET", "/stores/acme/orders?customer=jane%40example.com")
    );
    assert_eq!(got[0].header("authorization"), Some(format!("Bearer {token}").as_str()));
    assert_eq!(
        got[0].header("x-api-key"),
        Some("shop-key-secret"),
        "a secure iparam stays inside bearerd, for templates"
    );
    assert_eq!((got[1].method.as_str(), got[1].path_and_query.as_str()), ("POST", "/tickets/42/notes"));
    let note: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(note, json!({"body": "2 orders in acme", "private": true}));
    assert!(got.iter().all(|r| r.header(CREDENTIAL).is_none() && !format!("{:?}", r.headers).contains(CREDENTIAL)));

    // An SMI function, by its handler's name: the API's 404 is rejected as FDK rejects it.
    let lookup = dir.write("lookup.json", r#"{"email": "nobody@example.com"}"#);
    let mut c = at(bearerd_fdk());
    c.arg("invoke").arg(&server_js).arg("lookupOrders").arg(&lookup);
    let run = invoke(c).await;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.out,
        json!({"error": {"status": 404, "message": r#"{"message":"no such customer"}"#, "errorSource": "APP"}}),
        "{}",
        run.err
    );

    // bearerd's own refusal keeps its errorSource: the same as /invoke answers directly.
    let mut c = at(bearerd_fdk());
    c.arg("invoke").arg(&server_js).arg("unknownTemplate");
    let run = invoke(c).await;
    let direct = b
        .invoke_with("deleteOrder", json!({"context": {}}), &[("authorization", &format!("Bearer {CREDENTIAL}"))])
        .await;
    assert_eq!(direct.header("x-bearerd-error"), Some("1"));
    assert_eq!(run.code, 1);
    assert_eq!(run.out["error"]["status"], json!(direct.status));
    assert_eq!(run.out["error"]["errorSource"], direct.json()["errorSource"]);
    assert_eq!(run.out["error"]["message"], json!(direct.text()));

    // Without the caller's credential bearerd refuses, and the app sees why.
    let mut c = at(bearerd_fdk());
    c.env_remove("BEARERD_CREDENTIAL").arg("invoke").arg(&server_js).arg("lookupOrders").arg(&lookup);
    let run = invoke(c).await;
    assert_eq!((run.code, &run.out["error"]["status"]), (1, &json!(401)), "{}", run.out);

    // A platform feature that is not the request method is an error that names it.
    let mut c = at(bearerd_fdk());
    c.arg("invoke").arg(&server_js).arg("usesTheDatabase");
    let run = invoke(c).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.out["error"]["status"], json!(500), "uncaught, as any error a handler throws: {}", run.out);
    assert!(
        run.out["error"]["message"].as_str().unwrap().contains("$db.get is an FDK platform feature"),
        "{}",
        run.out
    );

    // bearerd out of reach: 502 PLATFORM, as FDK's own platform errors are.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut c = at(bearerd_fdk());
    c.env("BEARERD_URL", format!("http://{closed}")).arg("invoke").arg(&server_js).arg("lookupOrders").arg(&lookup);
    let run = invoke(c).await;
    assert_eq!(
        (&run.out["error"]["status"], &run.out["error"]["errorSource"]),
        (&json!(502), &json!("PLATFORM")),
        "{}",
        run.out
    );

    // `serve`: the same handlers over HTTP, POST /event/<name>.
    let mut c = at(bearerd_fdk());
    c.arg("serve").arg(&server_js).arg("--port").arg("0").stderr(Stdio::piped()).stdout(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let addr: std::net::SocketAddr =
        line.split("http://").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    let body = std::fs::read_to_string(&payload).unwrap();
    let r = send(
        addr,
        request("POST", "/event/onTicketCreate", &[("host", "x"), ("content-type", "application/json")], &body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["response"]["orders"], json!(2));
    let lookup_body = std::fs::read_to_string(&lookup).unwrap();
    let r = send(addr, request("POST", "/event/lookupOrders", &[("host", "x")], &lookup_body)).await;
    assert_eq!(r.status, 404, "the error's status: {}", r.text());
    assert_eq!(r.json()["error"]["errorSource"], json!("APP"));
    let r = send(addr, request("POST", "/event/noSuchHandler", &[("host", "x")], "{}")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("noSuchHandler"), "{}", r.text());
    let _ = child.kill();
    let _ = child.wait();
    // Invoked: 2 + 1 (the refused and unreachable ones reach nothing); served: 2 + 1.
    assert_eq!(api.count(), 6, "the served handlers called the API as the invoked ones did");
    b.shutdown().await;
}

/// `bearerd run --app DIR --admin-listen ... ` as a child process, its log collected.
fn run_app(app_dir: &Path, ca_file: &Path, admin_port: u16, extra: &[&str]) -> Logged {
    let admin = format!("127.0.0.1:{admin_port}");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--app".as_ref(),
        app_dir.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--admin-listen".as_ref(),
        admin.as_ref(),
        "--allow-private-ips".as_ref(),
        "--ca-file".as_ref(),
        ca_file.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Logged::run(&args, "info")
}

fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn run_app_and_custom_configs_as_fdk_run_in_a_real_browser() {
    let ca = test_ca();
    let provider = provider::Provider::start(&ca).await;
    provider.with(|s| {
        s.client_id = "entered-client-id".into();
        s.client_secret = "entered-client-secret".into();
    });
    let api = MockApi::start(Some(ca.server.clone()), shop_api(&provider)).await;
    let dir = TempDir::new();
    let ca_file = dir.write("ca.pem", &ca.ca_pem);
    let app_dir = dir.path().join("shop");
    // As the skills-workshop GitHub app writes it: the client from oauth_iparams.
    let oauth_iparams = json!({
        "client_id": {"display_name": "Shop client ID", "type": "text", "required": true},
        "client_secret": {"display_name": "Shop client secret", "type": "text", "required": true, "secure": true}
    });
    shop_app(
        &app_dir,
        &api.host(),
        shop_oauth(
            &provider.host(),
            "<%= oauth_iparams.client_id %>",
            "<%= oauth_iparams.client_secret %>",
            oauth_iparams,
        ),
    );
    let before = files_under(&app_dir);
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://localhost:{admin_port}");
    let bd = run_app(&app_dir, &ca_file, admin_port, &[]);
    assert!(bd.log.contains("not configured") || bd.log.contains("custom_configs"), "{}", bd.log);

    // Not configured yet: the data plane says so and spends nothing.
    let r = send(
        bd.data,
        request(
            "POST",
            "/invoke/listOrders",
            &[("host", "x"), ("content-type", "application/json")],
            r#"{"context":{"email":"jane@example.com"}}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("custom_configs") && r.text().contains("Store name"), "{}", r.text());
    assert_eq!(api.count(), 0);

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/custom_configs")).await;
    let text = browser.text_with("Custom configurations").await;
    for label in [
        "Integration Shop",
        "Shop client ID",
        "Shop client secret",
        "Store name",
        "Region",
        "Notify the requester",
        "Shop API key",
    ] {
        assert!(text.contains(label), "{label}: {text}");
    }
    assert!(text.contains("Not configured yet"), "{text}");
    // oauth_config.json's fields first, then iparams.json's, in the files' order.
    let order = browser.script("return [...document.querySelectorAll('form[action=\"/custom_configs\"] [name]')].map(e => e.name).filter(n => n !== 'csrf' && n !== 'app')").await;
    assert_eq!(
        order,
        json!([
            "oauth.shop.client_id",
            "oauth.shop.client_secret",
            "iparam.store",
            "iparam.region",
            "iparam.notify",
            "iparam.api_key"
        ])
    );
    assert_eq!(
        browser.script("return document.querySelector('[name=\"iparam.region\"]').value").await,
        json!("eu"),
        "the default"
    );
    assert_eq!(browser.script("return document.querySelector('[name=\"iparam.store\"]').required").await, json!(true));
    assert_eq!(
        browser.script("return document.querySelector('[name=\"iparam.api_key\"]').type").await,
        json!("password")
    );
    assert_eq!(
        browser.script("return document.querySelector('[name=\"iparam.notify\"]').type").await,
        json!("checkbox")
    );
    assert!(!text.contains("Authorize Shop"), "no Authorize before the values are saved: {text}");

    // The server refuses a required field left empty, naming it (the browser's own check off).
    browser.fill("[name='oauth.shop.client_id']", "entered-client-id").await;
    browser
        .script("document.querySelectorAll('[required]').forEach(e => e.removeAttribute('required')); return 0")
        .await;
    browser.click("form[action='/custom_configs'] button[type=submit]").await;
    let text = browser.text_with("Not saved").await;
    assert!(text.contains("Shop client secret is required") && text.contains("Store name is required"), "{text}");
    assert!(!dir.path().join("shop/.bearerd/settings.json").exists(), "nothing saved");
    assert_eq!(
        browser.script("return document.querySelector('[name=\"oauth.shop.client_id\"]').value").await,
        json!("entered-client-id"),
        "what was entered is kept"
    );

    // Filled in: saved, reloaded, Authorize offered.
    browser.fill("[name='oauth.shop.client_secret']", "entered-client-secret").await;
    browser.fill("[name='iparam.store']", "acme").await;
    browser.fill("[name='iparam.api_key']", "shop-key-secret").await;
    browser.click("[name='iparam.notify']").await;
    browser.click("form[action='/custom_configs'] button[type=submit]").await;
    let text = browser.text_with("Saved, and the configuration reloaded.").await;
    assert!(text.contains("Authorize Shop") && !text.contains("Not configured yet"), "{text}");
    assert!(text.contains(&format!("{base}/auth/callback")), "the redirect URI to register: {text}");
    let html = browser.script("return document.documentElement.outerHTML").await.as_str().unwrap().to_string();
    assert!(
        !html.contains("entered-client-secret") && !html.contains("shop-key-secret"),
        "a saved secret is never shown back"
    );
    assert_eq!(browser.script("return document.querySelector('[name=\"iparam.notify\"]').checked").await, json!(true));
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
    let shot = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/custom-configs.png"));
    browser.screenshot(shot).await;
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000, "a real screenshot");

    // Sealed beside the store, never into the app folder.
    let sealed = std::fs::read(app_dir.join(".bearerd/settings.json")).expect("saved in DIR/.bearerd");
    let sealed = String::from_utf8_lossy(&sealed);
    for secret in ["entered-client-secret", "shop-key-secret", "entered-client-id", "acme"] {
        assert!(!sealed.contains(secret), "{secret} is sealed: {sealed}");
    }
    let after: Vec<_> =
        files_under(&app_dir).into_iter().filter(|(p, _)| !p.starts_with(app_dir.join(".bearerd"))).collect();
    assert_eq!(after, before, "the app folder's own files are untouched");

    // Authorize: the provider sees the client entered on the page, and sends the browser back to
    // localhost:<admin port>/auth/callback.
    browser.click("a.authorize").await;
    browser.text_with("Authorized").await;
    assert_eq!(provider.grants("authorization_code"), 1);
    let form = provider.with(|s| s.last_form["authorization_code"].clone());
    assert_eq!(form.get("client_id").map(String::as_str), Some("entered-client-id"));
    assert_eq!(form.get("redirect_uri").map(String::as_str), Some(format!("{base}/auth/callback").as_str()));
    browser.goto(&format!("{base}/custom_configs")).await;
    let text = browser.text_with("Custom configurations").await;
    assert!(text.contains("Authorize Shop valid"), "the token's state beside Authorize: {text}");
    // The whole page in the shot.
    browser.on("POST", "/window/rect", Some(json!({"width": 1100, "height": 1500}))).await;
    let shot = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/custom-configs-authorized.png"));
    browser.screenshot(shot).await;

    // Another origin cannot post the form.
    let r = send(
        bd.admin,
        request(
            "POST",
            "/custom_configs",
            &[
                ("host", &format!("localhost:{admin_port}")),
                ("origin", "http://evil.example"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "app=shop&iparam.store=evil",
        ),
    )
    .await;
    assert_eq!(r.status, 403);
    browser.quit().await;

    // The app's code, unchanged, with the installation parameters bearerd holds.
    let payload =
        dir.write("payload.json", r#"{"data": {"ticket": {"id": 42}, "requester": {"email": "jane@example.com"}}}"#);
    let fdk_at = |data: std::net::SocketAddr| {
        let mut c = bearerd_fdk();
        c.env("BEARERD_URL", format!("http://{data}"))
            .env("BEARERD_ADMIN_URL", format!("http://127.0.0.1:{admin_port}"))
            .current_dir(&app_dir)
            .args(["invoke", "server/server.js", "onTicketCreate"])
            .arg(&payload);
        c
    };
    let run = invoke(fdk_at(bd.data)).await;
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    assert_eq!(run.out["response"]["iparams"], json!(["notify", "region", "store"]), "{}", run.out);
    let got = api.requests();
    assert_eq!(got[0].path_and_query, "/stores/acme/orders?customer=jane%40example.com");
    assert_eq!(got[0].header("x-api-key"), Some("shop-key-secret"));
    let log = bd.stop();
    for secret in ["entered-client-secret", "shop-key-secret"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }

    // Started again: the values and the token are still there. A value given on the command line
    // wins over the saved one, and the page shows it as given.
    let bd = run_app(&app_dir, &ca_file, admin_port, &["--iparam", "store=given-store"]);
    let run = invoke(fdk_at(bd.data)).await;
    assert_eq!(run.code, 0, "{}\n{}", run.out, run.err);
    assert_eq!(api.requests()[2].path_and_query, "/stores/given-store/orders?customer=jane%40example.com");
    let page = send(bd.admin, request("GET", "/custom_configs", &[("host", "localhost")], "")).await;
    let html = page.text();
    let store = html.split("name=\"iparam.store\"").nth(1).unwrap().split('>').next().unwrap();
    assert!(store.contains("disabled") && store.contains("given by the configuration"), "{store}");
    let ip = send(bd.admin, request("GET", "/admin/iparams/shop", &[("host", "localhost")], "")).await;
    assert_eq!(ip.json(), json!({"store": "given-store", "region": "eu", "notify": true}));
    bd.stop();
}
