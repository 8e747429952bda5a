//! A dry run of one request (SPEC 3 `POST /admin/explain`, SPEC 4 `bearerd explain`): which app
//! and template match and the upstream request as it would be sent, with every value that could
//! be a secret redacted; for no match, why not and the nearest templates; the token's state and
//! whether a refresh would come first. Nothing is sent, nothing is stored.

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::snapshot::{App, Snapshot};
use crate::template::expr::{Bound, Part};
use crate::template::route::Match;
use crate::template::{Context, RequestScope, TemplateSpec};
use crate::token::{DEFAULT_ACCOUNT, TokenKey, TokenState, Tokens, unix_now};

/// What is explained: a request as an application would send it through bearerd.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    pub method: String,
    /// `https://api.example.com/v1/x?y=1`, or a path with a `Host` among the headers.
    pub url: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
}

/// Shown instead of a value that may be a secret.
const REDACTED: &str = "[redacted]";

/// The explanation, as JSON; `tokens` gives token states (`None`: offline, no state).
pub(crate) fn explain(snap: &Snapshot, tokens: Option<&Tokens>, req: &ExplainRequest) -> Value {
    let Ok(method) = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes()) else {
        return json!({"matched": false, "error": format!("`{}` is not an HTTP method", req.method)});
    };
    let header = |name: &str| req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let (host, path, query) = match split_url(&req.url, header("host")) {
        Some(parts) => parts,
        None => return json!({"matched": false, "error": "the url needs a host: an absolute URL, or a Host header"}),
    };
    let app_name = req.app.as_deref().or(header("x-bearerd-app"));
    let apps: Vec<&App> = match app_name {
        Some(name) => match snap.app(name) {
            Some(a) => vec![a],
            None => return json!({"matched": false, "error": format!("no app named `{name}`")}),
        },
        None => snap.apps.iter().collect(),
    };
    let mut matches: Vec<(&App, Match<'_, '_>)> =
        apps.iter().filter_map(|a| a.router.find(&method, &host, &path).map(|m| (*a, m))).collect();
    let request = json!({"method": method.as_str(), "host": host, "path": path});
    if matches.len() == 1
        && let Some((app, m)) = matches.pop()
    {
        return matched(snap, tokens, app, m, req, query.as_deref());
    }
    match matches.as_slice() {
        [] => json!({
            "matched": false,
            "request": request,
            "why": format!("no template of {} has method {method}, host {host} and a path like {path}",
                if apps.len() == 1 { format!("app {}", apps[0].name) } else { "any app".into() }),
            "nearest": nearest(&apps, &method, &host, &path),
        }),
        several => json!({
            "matched": false,
            "request": request,
            "why": "templates of several apps match: name the app (x-bearerd-app)",
            "candidates": several.iter().map(|(a, m)| json!({"app": &*a.name, "template": a.templates()[m.template].name})).collect::<Vec<_>>(),
        }),
    }
}

/// `(host, path, query)` of an absolute URL, or of a path with the `Host` header.
fn split_url(url: &str, host_header: Option<&str>) -> Option<(String, String, Option<String>)> {
    let (authority, rest) = match url.split_once("://") {
        Some((_, rest)) => match rest.find(['/', '?']) {
            Some(i) => (rest[..i].to_string(), &rest[i..]),
            None => (rest.to_string(), "/"),
        },
        None => (host_header?.to_string(), url),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (rest, None),
    };
    let path = if path.is_empty() { "/".to_string() } else { path.to_string() };
    // As the data plane matches it: a host with the scheme's default port is the host.
    let authority = authority.strip_suffix(":443").or(authority.strip_suffix(":80")).unwrap_or(&authority);
    (!authority.is_empty()).then(|| (authority.to_ascii_lowercase(), path, query))
}

fn matched(
    snap: &Snapshot,
    tokens: Option<&Tokens>,
    app: &App,
    m: Match<'_, '_>,
    req: &ExplainRequest,
    query: Option<&str>,
) -> Value {
    let mut ctx = Context::default();
    let t = &app.templates()[ctx.capture(m)];
    let scope = RequestScope { context: &ctx, token: Some(REDACTED) };
    let secrets = secrets_of(app);
    let redact = |s: &str| secrets.iter().fold(s.to_string(), |s, secret| s.replace(secret.as_str(), REDACTED));
    let upstream = match t.render_host(&scope, &app.config.allow_hosts) {
        Err(e) => json!({"error": e.to_string()}),
        Ok(authority) => {
            let mut url = format!("{}://{authority}", if t.https { "https" } else { "http" });
            let template_query = redacted_query(t);
            match t.render_path_and_query(&scope, query, &mut url) {
                Err(e) => json!({"error": e.to_string()}),
                Ok(()) => {
                    // Query values the template sets may be keys: only their names are shown.
                    let url = match url.split_once('?') {
                        Some((base, q)) => {
                            let shown: Vec<String> = q
                                .split('&')
                                .map(|kv| match kv.split_once('=') {
                                    Some((k, _)) if template_query.contains(&k.to_string()) => {
                                        format!("{k}={REDACTED}")
                                    }
                                    _ => kv.to_string(),
                                })
                                .collect();
                            format!("{base}?{}", shown.join("&"))
                        }
                        None => url,
                    };
                    let headers: serde_json::Map<String, Value> =
                        t.headers.iter().map(|(n, _)| (n.as_str().to_string(), REDACTED.into())).collect();
                    json!({"method": t.method.as_str(), "url": redact(&url), "headers": headers})
                }
            }
        }
    };
    let mut out = json!({
        "matched": true,
        "app": &*app.name,
        "template": t.name,
        "upstream": upstream,
        "context": ctx.values.iter().map(|(k, v)| (k.to_string(), Value::String(redact(v)))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(i) = t.integration {
        let integ = &app.config.fdk.integrations[i];
        let account = if integ.grant == crate::config::Grant::ClientCredentials {
            DEFAULT_ACCOUNT.to_string()
        } else {
            req.account.clone().or(req.headers.get("x-bearerd-account").cloned()).unwrap_or(DEFAULT_ACCOUNT.into())
        };
        out["integration"] = integ.name.clone().into();
        out["account"] = account.clone().into();
        if let Some(tokens) = tokens {
            let key = TokenKey::new(&app.name, &integ.name, &account);
            let token = tokens.get(&key);
            let state = token.as_ref().map_or(TokenState::Missing, |t| t.state(unix_now(), &integ.binding));
            let skew = snap.config.refresh.skew.as_secs();
            let due = token.as_ref().and_then(|t| t.expires_at).is_some_and(|e| e <= unix_now() + skew);
            out["token"] = json!({
                "state": state.as_str(),
                "refresh_first": state == TokenState::Valid && due || state == TokenState::Expired,
                "authorize": (state != TokenState::Valid).then(|| snap.authorize_url(&app.name, &integ.name, &account)),
            });
        }
    }
    out
}

/// The query keys a template sets (their values are redacted).
fn redacted_query(t: &TemplateSpec) -> Vec<String> {
    let mut keys: Vec<String> = t.query.iter().map(|(k, _)| k.clone()).collect();
    let mut text = String::new();
    for part in &t.path_query.0 {
        if let Part::Lit(l) = part {
            text.push_str(l);
        } else {
            text.push('x');
        }
    }
    keys.extend(text.split('&').filter_map(|kv| kv.split('=').next()).filter(|k| !k.is_empty()).map(String::from));
    keys
}

/// Values of the app's configuration that are secrets: client secrets, oauth_iparams, custom
/// header values.
fn secrets_of(app: &App) -> Vec<String> {
    let mut out = Vec::new();
    for integ in &app.config.fdk.integrations {
        out.push(integ.client_secret.expose().to_string());
        out.extend(integ.oauth_iparams.values().map(|s| s.expose().to_string()));
        out.extend(integ.custom_headers.iter().map(|(_, s)| s.expose().to_string()));
    }
    out.retain(|s| s.len() >= 4);
    out
}

/// The templates nearest to a request that none matches, best first, each with where it parts
/// from the request: host, method, or the path segment where matching stopped.
fn nearest(apps: &[&App], method: &Method, host: &str, path: &str) -> Vec<Value> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut scored: Vec<(u32, Value)> = Vec::new();
    for app in apps {
        for t in app.templates() {
            let host_ok = match t.host.as_literal() {
                Some(h) => h.eq_ignore_ascii_case(host) || h.split(':').next() == Some(host),
                None => true,
            };
            let (matched, stop) = path_match(t, &segs);
            let method_ok = t.method == *method;
            let score = u32::from(host_ok) * 1000 + matched * 10 + u32::from(method_ok) * 5;
            let differs = if !host_ok {
                format!("host: the template's is {}", t.host.as_literal().unwrap_or("dynamic"))
            } else if let Some((i, want)) = stop {
                format!("path segment {} (`{}`): the template has `{want}`", i + 1, segs.get(i).unwrap_or(&""))
            } else if !method_ok {
                format!("method: the template's is {}", t.method)
            } else {
                "the path is longer or shorter than the template's".into()
            };
            scored.push((
                score,
                json!({"app": &*app.name, "template": t.name, "method": t.method.as_str(), "differs": differs}),
            ));
        }
    }
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.into_iter().take(3).map(|(_, v)| v).collect()
}

/// How many of the request's path segments the template's path matches in order, and where it
/// stopped (the segment index and what the template has there), if it did.
fn path_match(t: &TemplateSpec, segs: &[&str]) -> (u32, Option<(usize, String)>) {
    // The template's path as segments: literal text, or `*` where an expression is.
    let mut text = String::new();
    for part in &t.path.0 {
        match part {
            Part::Lit(l) => text.push_str(l),
            Part::Expr(Bound::Lit(l)) => text.push_str(l),
            Part::Expr(_) => text.push('\u{0}'),
        }
    }
    let tsegs: Vec<&str> = text.trim_start_matches('/').split('/').collect();
    for (i, want) in tsegs.iter().enumerate() {
        if want.contains('\u{0}') {
            if t.path_tail != crate::template::PathTail::None && i + 1 == tsegs.len() {
                return (segs.len() as u32, None);
            }
            continue;
        }
        match segs.get(i) {
            Some(got) if crate::template::escape::decode_segment(got) == *want => {}
            _ => return (i as u32, Some((i, want.to_string()))),
        }
    }
    let n = tsegs.len().min(segs.len()) as u32;
    if segs.len() > tsegs.len() { (n, Some((tsegs.len(), String::new()))) } else { (n, None) }
}

/// `bearerd explain`: the same dry run from a configuration alone (no token state).
pub fn offline(config: crate::config::Config, req: &ExplainRequest) -> Value {
    let snap = Snapshot::compile(config, 1, &crate::metrics::Metrics::new());
    explain(&snap, None, req)
}
