//! The admin page in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which scripts/test.sh installs) driven over WebDriver against bearerd and
//! a mock provider: Authorize through a whole authorization-code flow (by keyboard), see the
//! state turn valid, Forget (confirmed), Reload. A screenshot is kept at
//! target/admin-page.png; the page's weight and render time are printed.

mod support;

use serde_json::json;
use support::browser::Browser;
use support::*;

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
