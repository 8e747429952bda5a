//! The admin page in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which scripts/test.sh installs) driven over WebDriver against bearerd and
//! a mock provider: Authorize through a whole authorization-code flow (by keyboard), see the
//! state turn valid, Forget (confirmed), Reload. A screenshot is kept at
//! target/admin-page.png; the page's weight and render time are printed.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// A WebDriver session on chromedriver, spoken to over HTTP/1.1.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test.sh installs chromium-driver)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        eventually(Duration::from_secs(20), "chromedriver answers", async || {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        let profile = TempDir::new();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--ignore-certificate-errors", "--window-size=1100,800",
                     format!("--user-data-dir={}", profile.path().display())],
        }}}});
        let mut b = Browser { driver, addr, session: String::new() };
        let v = b.call("POST", "/session", Some(caps)).await;
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        std::mem::forget(profile);
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let host = self.addr.to_string();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = send(self.addr, request(method, path, &[("host", &host), ("content-type", "application/json")], &body))
            .await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{method} {path}: {}", r.text()));
        assert!(r.status < 300, "{method} {path}: {v}");
        v["value"].clone()
    }

    async fn on(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{what}", self.session), body).await
    }

    async fn goto(&self, url: &str) {
        self.on("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn element(&self, css: &str) -> String {
        let v = self.on("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        v["element-6066-11e4-a52e-4f735466cecf"].as_str().unwrap_or_else(|| panic!("no {css}: {v}")).to_string()
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.on("POST", &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    /// Presses Enter on the element (a keyboard user's click).
    async fn enter(&self, css: &str) {
        let e = self.element(css).await;
        self.on("POST", &format!("/element/{e}/value"), Some(json!({"text": "\u{E007}"}))).await;
    }

    async fn script(&self, js: &str) -> Value {
        self.on("POST", "/execute/sync", Some(json!({"script": js, "args": []}))).await
    }

    async fn text(&self) -> String {
        self.script("return document.body ? document.body.innerText : ''").await.as_str().unwrap_or("").to_string()
    }

    /// The page's text once it shows `needle` (a click that submits a form may return before the
    /// next page is in).
    async fn text_with(&self, needle: &str) -> String {
        let mut text = String::new();
        let t0 = tokio::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the page never showed {needle:?}:\n{text}");
    }

    async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.on("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    async fn quit(mut self) {
        let _ = self.on("DELETE", "", None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_page_in_a_real_browser() {
    let (ca, provider, _api, dir) = provider_world().await;
    // The browser reaches the admin listener at its public URL, where the provider sends it back.
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{admin_port}");
    let cfg = Config::new()
        .ca(&ca)
        .app(App::new("demo"))
        .set("admin", json!({"listen": format!("127.0.0.1:{admin_port}"), "public_url": base}))
        .write(&dir);
    let b = start(&cfg).await;

    // The page's weight, and that it asks for nothing from elsewhere and runs no script.
    let page = send(b.admin, request("GET", "/", &[("host", "a")], "")).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"), "{html}");
    assert!(page.header("content-security-policy").unwrap().starts_with("default-src 'none'"));

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    browser.text_with("Latest token events").await;
    let render_ms = browser.script("return performance.getEntriesByType('navigation')[0].duration").await;
    println!("admin page: {} bytes, rendered in {render_ms} ms (navigation duration)", html.len());
    let text = browser.text().await;
    assert!(text.contains("missing") && text.contains("Authorize"), "{text}");
    // The integration's name beside its display name: metrics, logs and URLs use the name.
    assert!(text.contains("API api"), "{text}");
    // Every control is a link or a button: reachable with Tab, activated with Enter.
    let odd =
        browser.script("return document.querySelectorAll('[tabindex], [onclick], div[role=button]').length").await;
    assert_eq!(odd, json!(0));

    // Authorize, by keyboard: through the provider and back to the callback.
    browser.enter("a.authorize").await;
    browser.text_with("Authorized").await;
    assert_eq!(provider.grants("authorization_code"), 1);
    browser.click("a[href='/']").await;
    let text = browser.text_with("Latest token events").await;
    assert!(text.contains("valid") && !text.contains("Authorize"), "{text}");
    assert!(text.contains("authorized"), "the event is listed: {text}");
    assert_eq!(b.invoke("get", json!({})).await.status, 200, "the token works");
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
    let shot = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/admin-page.png"));
    browser.screenshot(shot).await;
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000, "a real screenshot");

    // Forget: a confirmation page first, then the token is gone.
    browser.click("button.forget").await;
    browser.text_with("Forget this token?").await;
    browser.click("button.forget").await;
    let text = browser.text_with("Token forgotten.").await;
    assert!(text.contains("missing"), "{text}");
    assert_eq!(b.invoke("get", json!({})).await.status, 401);

    // Reload.
    browser.click("form[action='/ui/reload'] button").await;
    let text = browser.text_with("Configuration reloaded.").await;
    assert!(text.contains("Last reload: succeeded"), "{text}");
    browser.quit().await;

    // Actions from another origin, or without the page's token, are refused and do nothing.
    let post = |headers: Vec<(&'static str, &'static str)>, body: &'static str| {
        let mut h = vec![("host", "127.0.0.1"), ("content-type", "application/x-www-form-urlencoded")];
        h.extend(headers);
        send(b.admin, request("POST", "/ui/reload", &h, body))
    };
    assert_eq!(post(vec![("origin", "http://evil.example")], "csrf=x").await.status, 403);
    assert_eq!(post(vec![("sec-fetch-site", "cross-site")], "").await.status, 403);
    assert_eq!(post(vec![], "csrf=guess").await.status, 403);
    b.shutdown().await;
}
