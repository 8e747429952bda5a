//! The admin page (SPEC 3 `GET /`): what a person opens instead of curl. One self-contained page
//! rendered by the server (no script, no file from elsewhere), usable with a keyboard: every app,
//! integration and account with its state, time to expiry and scope; Authorize where a person
//! must act; Forget (after a confirmation page); Reload; the configuration generation and the
//! last reload's result; the latest token events. Never a token or a secret.
//!
//! Its actions are forms that POST to `/ui/*`, refused unless they carry the page's per-process
//! token and come from the page's own origin (`Origin`, `Sec-Fetch-Site`).

use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};

use super::{Admin, accounts, query_param};
use crate::config::Grant;
use crate::token::{TokenKey, TokenState, unix_now};
use crate::upstream::Body;

/// `GET /`: the page, with a notice after an action (from a fixed set, never reflected text).
pub(crate) fn page(admin: &Admin, notice: Option<&str>) -> Response<Body> {
    let shared = &admin.state;
    let snap = shared.snapshot.load();
    let now = unix_now();
    let csrf = esc(admin.csrf.expose());
    let mut h = String::with_capacity(8 * 1024);
    h.push_str(HEAD);
    let _ = write!(
        h,
        "<header><h1>bearerd</h1><p>version {} &middot; configuration generation {} &middot; <a href=\"/custom_configs\">Custom configurations</a></p>",
        env!("CARGO_PKG_VERSION"),
        snap.generation
    );
    match notice {
        Some("reloaded") => h.push_str("<p class=\"notice\" role=\"status\">Configuration reloaded.</p>"),
        Some("reload-failed") => {
            h.push_str("<p class=\"notice bad\" role=\"status\">The reload failed: see below.</p>")
        }
        Some("forgotten") => h.push_str("<p class=\"notice\" role=\"status\">Token forgotten.</p>"),
        _ => {}
    }
    match admin.reloader.last_outcome() {
        None => h.push_str("<p>No reload since the start.</p>"),
        Some(o) if o.errors.is_empty() => {
            let _ = write!(
                h,
                "<p>Last reload: <strong class=\"ok\">succeeded</strong> ({}, {}).</p>",
                esc(&o.trigger),
                ago(now, o.at)
            );
        }
        Some(o) => {
            let _ = write!(
                h,
                "<p>Last reload: <strong class=\"bad\">failed</strong> ({}, {}); the previous configuration keeps serving.</p><ul class=\"errors\">",
                esc(&o.trigger),
                ago(now, o.at)
            );
            for e in &o.errors {
                let _ = write!(h, "<li>{}</li>", esc(e));
            }
            h.push_str("</ul>");
        }
    }
    let _ = write!(
        h,
        "<form method=\"post\" action=\"/ui/reload\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Reload configuration</button></form></header><main><h2>Tokens</h2>"
    );
    h.push_str("<table><thead><tr><th scope=\"col\">App</th><th scope=\"col\">Integration</th><th scope=\"col\">Account</th><th scope=\"col\">State</th><th scope=\"col\">Expires</th><th scope=\"col\">Scope</th><th scope=\"col\">Actions</th></tr></thead><tbody>");
    let stored = shared.tokens.list();
    let mut rows = 0;
    accounts(&stored, &snap, |k, t, integ, state| {
        rows += 1;
        let expires = match t.and_then(|t| t.expires_at) {
            None if t.is_some() => "no expiry".to_string(),
            None => "&mdash;".to_string(),
            Some(e) if e > now => format!("in {}", span(e - now)),
            Some(e) => format!("{} ago", span(now - e)),
        };
        // The name beside the display name: metrics, logs and URLs use the name.
        let name = match integ.display_name.as_deref() {
            Some(d) if d != integ.name => format!("{} <code>{}</code>", esc(d), esc(&integ.name)),
            _ => format!("<code>{}</code>", esc(&integ.name)),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{name}</td><td>{}</td><td><span class=\"state {s}\">{s}</span></td><td>{expires}</td><td>{}</td><td>",
            esc(&k.app),
            esc(&k.account),
            esc(t.and_then(|t| t.scope.as_deref()).unwrap_or("")),
            s = state.as_str(),
        );
        if state != TokenState::Valid && integ.grant == Grant::AuthorizationCode {
            let url = snap.authorize_url(&k.app, &k.integration, &k.account);
            let path = url.strip_prefix(&snap.config.admin.public_url).unwrap_or(&url);
            let _ = write!(h, "<a class=\"button authorize\" href=\"{}\">Authorize</a> ", esc(path));
        }
        if t.is_some() {
            let _ = write!(
                h,
                "<form method=\"post\" action=\"/ui/forget\">{}<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" class=\"forget\">Forget</button></form>",
                key_fields(k)
            );
        }
        h.push_str("</td></tr>");
    });
    if rows == 0 {
        h.push_str("<tr><td colspan=\"7\">No integrations are configured.</td></tr>");
    }
    h.push_str("</tbody></table><h2>Latest token events</h2>");
    let events = shared.tokens.events.recent();
    if events.is_empty() {
        h.push_str("<p>None since the start.</p>");
    } else {
        h.push_str("<ol class=\"events\">");
        for e in events.iter().take(20) {
            let _ = write!(
                h,
                "<li><time>{}</time> {} <strong>{}</strong>{}</li>",
                super::rfc3339(e.at),
                esc(&e.key.to_string()),
                esc(e.what),
                e.detail.as_deref().map(|d| format!(": {}", esc(d))).unwrap_or_default()
            );
        }
        h.push_str("</ol>");
    }
    h.push_str("</main></body></html>\n");
    html(StatusCode::OK, h)
}

/// `POST /ui/*`: an action of the page. `form` is the request's urlencoded body.
pub(crate) async fn act(admin: &Admin, req: &Request<Bytes>) -> Response<Body> {
    let form = std::str::from_utf8(req.body()).unwrap_or("");
    let public_url = admin.state.snapshot.load().config.admin.public_url.clone();
    if !super::same_origin(req, &public_url)
        || !admin.csrf_matches(query_param(Some(form), "csrf").as_deref().unwrap_or(""))
    {
        return html(
            StatusCode::FORBIDDEN,
            format!(
                "{HEAD}<main><h1>Refused</h1><p>This action must come from bearerd's own page. <a href=\"/\">Back</a></p></main></body></html>\n"
            ),
        );
    }
    let key = || {
        let field = |n| query_param(Some(form), n).filter(|v| !v.is_empty());
        Some(TokenKey::new(&field("app")?, &field("integration")?, &field("account")?))
    };
    match req.uri().path() {
        "/ui/reload" => match admin.reloader.reload("admin page").await {
            Ok(_) => see_other("/?notice=reloaded"),
            Err(_) => see_other("/?notice=reload-failed"),
        },
        "/ui/forget" => match key() {
            Some(k) => confirm_forget(admin, &k),
            None => see_other("/"),
        },
        "/ui/forget/confirm" => {
            if let Some(k) = key()
                && let Ok(true) = admin.state.tokens.delete(&k).await
            {
                tracing::info!(token = %k, outcome = "deleted", "token deleted through the admin page");
                admin.state.tokens.events.push(&k, "deleted", None);
            }
            see_other("/?notice=forgotten")
        }
        _ => html(
            StatusCode::NOT_FOUND,
            format!("{HEAD}<main><h1>Not found</h1><p><a href=\"/\">Back</a></p></main></body></html>\n"),
        ),
    }
}

/// The confirmation of Forget: a page of its own, so it needs no script.
fn confirm_forget(admin: &Admin, k: &TokenKey) -> Response<Body> {
    let body = format!(
        "{HEAD}<main><h1>Forget this token?</h1><p>App <strong>{}</strong>, integration <strong>{}</strong>, account <strong>{}</strong>. Requests that need it get 401 until someone authorizes again.</p>\
         <form method=\"post\" action=\"/ui/forget/confirm\">{}<input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" class=\"forget\" autofocus>Forget</button> <a class=\"button\" href=\"/\">Cancel</a></form></main></body></html>\n",
        esc(&k.app),
        esc(&k.integration),
        esc(&k.account),
        key_fields(k),
        esc(admin.csrf.expose())
    );
    html(StatusCode::OK, body)
}

fn key_fields(k: &TokenKey) -> String {
    format!(
        "<input type=\"hidden\" name=\"app\" value=\"{}\"><input type=\"hidden\" name=\"integration\" value=\"{}\"><input type=\"hidden\" name=\"account\" value=\"{}\">",
        esc(&k.app),
        esc(&k.integration),
        esc(&k.account)
    )
}

pub(super) fn see_other(location: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(location));
    r
}

pub(super) fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Nothing from elsewhere, no script, no framing by other sites.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the
    // page's own form posts.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
}

/// `3 h 5 min`, `45 s`.
fn span(secs: u64) -> String {
    match secs {
        s if s < 90 => format!("{s} s"),
        s if s < 90 * 60 => format!("{} min", s / 60),
        s if s < 48 * 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} days", s / 86_400),
    }
}

fn ago(now: u64, at: u64) -> String {
    format!("{} ago", span(now.saturating_sub(at)))
}

pub(super) fn esc(s: &str) -> String {
    super::auth::html_escape(s)
}

pub(super) const HEAD: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>bearerd</title><style>\
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:64rem;padding:1rem 1.5rem;color:#1d2430;background:#fff}\
h1{margin:.2rem 0}h2{margin-top:2rem;font-size:1.15rem}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #d8dde6;vertical-align:middle}\
th{font-weight:600;background:#f3f5f8}\
form{display:inline;margin:0}\
button,a.button{font:inherit;display:inline-block;padding:.3rem .8rem;border:1px solid #2456a6;border-radius:4px;background:#2f6bd1;color:#fff;text-decoration:none;cursor:pointer}\
button.forget{background:#fff;color:#a3262c;border-color:#a3262c}\
a.button:not(.authorize){background:#fff;color:#2456a6}\
a:focus-visible,button:focus-visible{outline:3px solid #f0a500;outline-offset:2px}\
.state{padding:.1rem .5rem;border-radius:3px;font-weight:600}\
.valid{background:#dff3e4;color:#17602c}.expired{background:#fff1d6;color:#7a4b00}.missing{background:#eceff3;color:#3b4452}.reauthorize{background:#fde2e1;color:#8c1d18}\
.ok{color:#17602c}.bad{color:#a3262c}.notice{padding:.5rem .8rem;background:#e8f0fd;border-left:4px solid #2f6bd1}.notice.bad{background:#fde2e1;border-color:#a3262c}\
input:not([type=checkbox]),select,textarea{font:inherit;width:min(100%,28rem);padding:.25rem .4rem;box-sizing:border-box}\
fieldset{margin:1rem 0;border:1px solid #d8dde6;border-radius:4px}.required{color:#a3262c}.field{margin:.6rem 0}\
code{font:.85em ui-monospace,monospace;color:#5b6473}.errors{color:#8c1d18}.events{padding-left:1.2rem}.events time{color:#5b6473;font-variant-numeric:tabular-nums}\
@media (prefers-color-scheme:dark){body{background:#15191f;color:#e4e8ee}th{background:#1f252d}th,td{border-color:#2c333d}}\
</style></head><body>";
