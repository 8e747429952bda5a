//! A dry run of one request (SPEC 3 `POST /admin/explain`, SPEC 4 `bearerd explain`): how it
//! would arrive (through a tunnel for an `https://` URL, as a proxy request for `http://`, in
//! origin form for a path with a `Host`, `/invoke/<name>` by name), which app and template the
//! data plane's own plan ([`crate::proxy::plan`]) chooses for it and for the caller named, and the
//! upstream request as it would be sent, with every value that could be a secret redacted; for
//! no match, why not and the nearest templates; the token's state and whether a refresh would
//! come first. Nothing is sent, nothing is stored, no credential is checked.

use http::{Method, Request};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::caller::{Admitted, User};
use crate::proxy::connect::{self, Connect, Tunneled};
use crate::proxy::plan::{self, Head, Plan};
use crate::proxy::{Marks, ProxyError, Record};
use crate::snapshot::{App, Snapshot};
use crate::template::expr::{Bound, Part};
use crate::template::{RequestScope, TemplateSpec};
use crate::token::{TokenKey, TokenState, Tokens, unix_now};

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
    /// The caller (SPEC 2.2) the request is from, by name: what that caller would get.
    #[serde(default)]
    pub caller: Option<String>,
}

/// Shown instead of a value that may be a secret.
const REDACTED: &str = "[redacted]";

/// The explanation, as JSON; `tokens` gives token states (`None`: offline, no state), `ours`
/// whether a port is one of bearerd's own data listeners'.
pub(crate) fn explain(
    snap: &Snapshot,
    tokens: Option<&Tokens>,
    ours: &dyn Fn(u16) -> bool,
    req: &ExplainRequest,
) -> Value {
    let fail = |e: String| json!({"matched": false, "error": e});
    let Ok(method) = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes()) else {
        return fail(format!("`{}` is not an HTTP method", req.method));
    };
    // The request as it arrives: inside a tunnel (origin form, `Host` the CONNECT's host), as a
    // proxy request in absolute form, or in origin form with its own `Host`.
    let https = req.url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let (target, authority) = match req.url.split_once("://") {
        Some((_, rest)) => {
            let i = rest.find(['/', '?']).unwrap_or(rest.len());
            let path = if rest[i..].starts_with('/') { rest[i..].to_string() } else { format!("/{}", &rest[i..]) };
            (if https { path } else { req.url.clone() }, Some(rest[..i].to_string()))
        }
        None => (req.url.clone(), None),
    };
    let mut builder = Request::builder().method(method.clone()).uri(&target);
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let (true, Some(a)) = (https, &authority)
        && !req.headers.keys().any(|k| k.eq_ignore_ascii_case("host"))
    {
        builder = builder.header("host", a.as_str());
    }
    if let Some(app) = &req.app {
        builder = builder.header("x-bearerd-app", app.as_str());
    }
    if let Some(account) = &req.account {
        builder = builder.header("x-bearerd-account", account.as_str());
    }
    let parts = match builder.body(()) {
        Ok(r) => r.into_parts().0,
        Err(e) => return fail(format!("not a request bearerd could receive: {e}")),
    };
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    if host.is_empty() {
        return fail("the url needs a host: an absolute URL, or a Host header".into());
    }
    let marks = Marks::of(&parts.headers);
    let proxy_auth = parts.headers.get(http::header::PROXY_AUTHORIZATION).map(|v| v.as_bytes());
    let mut out = json!({});
    // The caller, by name (a dry run checks no credential).
    let caller = match &req.caller {
        None => {
            if !snap.callers.is_empty() {
                out["note"] = "callers are configured: every request needs one's credential; name the caller to see what it would get".into();
            }
            None
        }
        Some(name) => match snap.callers.index(name) {
            None => return fail(format!("no caller named `{name}`")),
            Some(i) => {
                let c = snap.callers.get(i);
                let user = proxy_auth
                    .and_then(|v| crate::caller::credential::basic_user(v, |u| u.map(String::from)))
                    .flatten();
                let user = match user {
                    None => User::None,
                    Some(u) => snap.app_index(&u).map_or(User::Unknown(u.as_str().into()), User::App),
                };
                // A caller whose JWT binds its account: the account given stands for the claim.
                let account = c.account_claim().and(req.account.as_deref()).map(Into::into);
                out["caller"] = c.name.to_string().into();
                Some(Admitted { caller: i, user, expires: None, account })
            }
        },
    };
    // Through a tunnel: what the CONNECT reaches first.
    let tunnel = match (https, &authority) {
        (true, Some(a)) => {
            let with_port = if a.contains(':') && !a.ends_with(']') { a.clone() } else { format!("{a}:443") };
            let reached = connect::connect_target(&with_port).and_then(|(name, port)| {
                let app = plan::named_app(snap, &parts.headers, marks, proxy_auth, None, caller.as_ref())?;
                connect::reach(snap, name, port, app, caller.clone())
            });
            match reached {
                Ok(Connect::Intercept { name, port, app, caller: tc }) => {
                    out["via"] = format!("CONNECT {name}:{port}, intercepted").into();
                    Some(Tunneled { name: name.into(), port, tls: true, app, caller: tc })
                }
                Ok(Connect::Tunnel { name, port }) => {
                    out["via"] =
                        format!("CONNECT {name}:{port}, a blind tunnel (tunnel_hosts): no template, no token").into();
                    out["matched"] = false.into();
                    return out;
                }
                Err(e) => {
                    out["via"] = format!("CONNECT refused: {e}").into();
                    None
                }
            }
        }
        _ => None,
    };
    let invoke = tunnel.is_none() && !https && crate::proxy::is_invoke(ours, snap, &parts, host);
    if out.get("via").is_none() {
        out["via"] = if invoke {
            "invoke by name"
        } else if authority.is_some() {
            "proxy request"
        } else {
            "origin form"
        }
        .into();
    }
    let head = Head {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        host,
        marks,
        proxy_auth,
        tunnel: tunnel.as_ref(),
        invoke,
    };
    let request = json!({"method": method.as_str(), "host": host, "path": parts.uri.path()});
    let planned = plan::plan(snap, &head, caller.as_ref(), &mut Record::default());
    let plan = match planned {
        Ok(p) => p,
        Err(ProxyError::NoMatch { .. }) => {
            let apps: Vec<&App> =
                match plan::named_app(snap, &parts.headers, marks, proxy_auth, tunnel.as_ref(), caller.as_ref()) {
                    Ok(Some(i)) => vec![&snap.apps[i]],
                    _ => snap.apps.iter().collect(),
                };
            merge(
                &mut out,
                json!({
                    "matched": false,
                    "request": request,
                    "why": format!("no template of {} has method {method}, host {host} and a path like {}",
                        if apps.len() == 1 { format!("app {}", apps[0].name) } else { "any app".into() }, parts.uri.path()),
                    "nearest": nearest(&apps, &method, host, parts.uri.path()),
                }),
            );
            return out;
        }
        Err(e) => {
            let (status, _) = e.classify();
            merge(
                &mut out,
                json!({"matched": false, "request": request, "status": status.as_u16(), "why": e.to_string()}),
            );
            return out;
        }
    };
    let refused =
        caller.as_ref().and_then(|c| crate::proxy::admit::admit(snap, plan.app, plan.account.as_ref(), c).err());
    matched(snap, tokens, plan, &mut out);
    out["admitted"] = refused.is_none().into();
    if let Some(e) = refused {
        out["refused"] = json!({"status": e.classify().0.as_u16(), "message": e.to_string()});
    }
    out
}

fn merge(out: &mut Value, more: Value) {
    if let (Value::Object(o), Value::Object(m)) = (out, more) {
        o.extend(m);
    }
}

fn matched(snap: &Snapshot, tokens: Option<&Tokens>, plan: Plan<'_, '_>, out: &mut Value) {
    let app = &snap.apps[plan.app];
    let t = &app.templates()[plan.template];
    let ctx = plan.ctx;
    let scope = RequestScope { context: &ctx, token: Some(REDACTED) };
    let secrets = secrets_of(app);
    let redact = |s: &str| secrets.iter().fold(s.to_string(), |s, secret| s.replace(secret.as_str(), REDACTED));
    let upstream = match t.render_host(&scope, &app.config.allow_hosts) {
        Err(e) => json!({"error": e.to_string()}),
        Ok(authority) => {
            let mut url = format!("{}://{authority}", if t.https { "https" } else { "http" });
            let template_query = redacted_query(t);
            match t.render_path_and_query(&scope, plan.query, &mut url) {
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
    merge(
        out,
        json!({
            "matched": true,
            "app": &*app.name,
            "template": t.name,
            "upstream": upstream,
            "context": ctx.values.iter().map(|(k, v)| (k.to_string(), Value::String(redact(v)))).collect::<serde_json::Map<_, _>>(),
        }),
    );
    if let (Some(i), Some(account)) = (t.integration, plan.account) {
        let integ = &app.config.fdk.integrations[i];
        out["integration"] = integ.name.clone().into();
        out["account"] = account.name.into();
        if account.ignored {
            out["account_note"] = "client credentials: one token for the integration, whatever account is named".into();
        }
        if let Some(tokens) = tokens {
            let key = TokenKey::new(&app.name, &integ.name, account.name);
            let token = tokens.get(&key);
            let state = token.as_ref().map_or(TokenState::Missing, |t| t.state(unix_now(), &integ.binding));
            let skew = snap.config.refresh.skew.as_secs();
            let due = token.as_ref().and_then(|t| t.expires_at).is_some_and(|e| e <= unix_now() + skew);
            out["token"] = json!({
                "state": state.as_str(),
                "refresh_first": state == TokenState::Valid && due || state == TokenState::Expired,
                "authorize": (state != TokenState::Valid).then(|| snap.authorize_url(&app.name, &integ.name, account.name)),
            });
        }
    }
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
    let ports: Vec<u16> =
        std::iter::once(config.listen.port()).chain(config.listen_tls.as_ref().map(|t| t.address.port())).collect();
    let snap = Snapshot::compile(config, 1, &crate::metrics::Metrics::new(), &crate::caller::Keys::offline());
    explain(&snap, None, &|p| ports.contains(&p), req)
}
