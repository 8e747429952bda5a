//! Headless Chromium (Debian's `chromium` and `chromium-driver`, which scripts/test.sh installs)
//! driven over WebDriver, for the tests of bearerd's pages.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{TempDir, eventually, request, send};

/// A WebDriver session on chromedriver, spoken to over HTTP/1.1.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    pub async fn start() -> Browser {
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

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let host = self.addr.to_string();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = send(self.addr, request(method, path, &[("host", &host), ("content-type", "application/json")], &body))
            .await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{method} {path}: {}", r.text()));
        assert!(r.status < 300, "{method} {path}: {v}");
        v["value"].clone()
    }

    pub async fn on(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{what}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.on("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub async fn element(&self, css: &str) -> String {
        let v = self.on("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        v["element-6066-11e4-a52e-4f735466cecf"].as_str().unwrap_or_else(|| panic!("no {css}: {v}")).to_string()
    }

    pub async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.on("POST", &format!("/element/{e}/click"), Some(json!({}))).await;
    }

    /// Presses Enter on the element (a keyboard user's click).
    pub async fn enter(&self, css: &str) {
        let e = self.element(css).await;
        self.on("POST", &format!("/element/{e}/value"), Some(json!({"text": "\u{E007}"}))).await;
    }

    /// Replaces what the field holds with `text`, typed.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.on("POST", &format!("/element/{e}/clear"), Some(json!({}))).await;
        self.on("POST", &format!("/element/{e}/value"), Some(json!({"text": text}))).await;
    }

    pub async fn script(&self, js: &str) -> Value {
        self.on("POST", "/execute/sync", Some(json!({"script": js, "args": []}))).await
    }

    pub async fn text(&self) -> String {
        self.script("return document.body ? document.body.innerText : ''").await.as_str().unwrap_or("").to_string()
    }

    /// The page's text once it shows `needle` (a click that submits a form may return before the
    /// next page is in).
    pub async fn text_with(&self, needle: &str) -> String {
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

    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.on("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub async fn quit(mut self) {
        let _ = self.on("DELETE", "", None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
