//! `GET /custom_configs`, the page FDK developers know from `fdk run` (SPEC 8): for each app,
//! each integration in `oauth_config.json`'s order with what its files leave open (client ID and
//! secret, OAuth iparams), then the installation parameters of `config/iparams.json` with their
//! types, defaults and required marks; `POST /custom_configs` validates them (a required one left
//! empty is refused, naming it), saves them sealed beside the token store
//! ([`crate::token::settings`]), reloads, and offers Authorize for each integration. Values the
//! configuration gives (`bearerd.yaml`, the command line) win, and are shown as given. A saved
//! secret is never shown back. Its form post is refused from other origins, as the admin page's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::Admin;
use super::page::{HEAD, esc, html, see_other};
use crate::config::install::{self, Field, FieldKind, Form, Saved, SavedApp};
use crate::snapshot::App;
use crate::token::settings::Settings;
use crate::upstream::Body;

/// `GET /custom_configs`.
pub(crate) fn page(admin: &Admin, notice: Option<&str>) -> Response<Body> {
    let saved = settings(admin).and_then(|s| s.read()).unwrap_or_default();
    render(admin, &saved, notice, &[], &BTreeMap::new(), StatusCode::OK)
}

fn settings(admin: &Admin) -> Result<Settings, String> {
    let snap = admin.state.snapshot.load();
    let source = snap.config.source.as_ref().ok_or("this configuration was not read from a file or an app folder")?;
    Ok(Settings::of(source))
}

/// The page, with `errors` and what was entered (`entered`, so that a refused form keeps it).
fn render(
    admin: &Admin,
    saved: &Saved,
    notice: Option<&str>,
    errors: &[String],
    entered: &BTreeMap<String, Vec<String>>,
    status: StatusCode,
) -> Response<Body> {
    let snap = admin.state.snapshot.load();
    let csrf = esc(admin.csrf.expose());
    let mut h = String::with_capacity(8 * 1024);
    h.push_str(HEAD);
    h.push_str("<header><h1>Custom configurations</h1><p>What the app's files leave open: client IDs and secrets, OAuth iparams, installation parameters. Saved sealed beside bearerd's token store, never into the app folder. <a href=\"/\">Tokens</a></p>");
    if notice == Some("saved") {
        h.push_str("<p class=\"notice\" role=\"status\">Saved, and the configuration reloaded.</p>");
    }
    if !errors.is_empty() {
        h.push_str("<div class=\"notice bad\" role=\"alert\"><p>Not saved:</p><ul class=\"errors\">");
        for e in errors {
            let _ = write!(h, "<li>{}</li>", esc(e));
        }
        h.push_str("</ul></div>");
    }
    h.push_str("</header><main>");
    for app in &snap.apps {
        let form = install::form(&app.config.path);
        let mine = saved.apps.get(&*app.name);
        let _ = write!(
            h,
            "<form method=\"post\" action=\"/custom_configs\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"app\" value=\"{}\"><h2>App {}</h2>",
            esc(&app.name),
            esc(&app.name)
        );
        if !app.config.missing.is_empty() {
            let _ = write!(
                h,
                "<p class=\"notice bad\">Not configured yet: {}. The app serves no request until these have values.</p>",
                esc(&app.config.missing.join(", "))
            );
        }
        for integ in &form.integrations {
            let name = match integ.display_name.as_deref() {
                Some(d) if d != integ.name => format!("{} <code>{}</code>", esc(d), esc(&integ.name)),
                _ => format!("<code>{}</code>", esc(&integ.name)),
            };
            let _ = write!(h, "<fieldset><legend>Integration {name}</legend>");
            if integ.fields.is_empty() {
                h.push_str("<p>Its files give everything it needs.</p>");
            }
            for f in &integ.fields {
                field_html(&mut h, app, Some(&integ.name), f, mine, entered);
            }
            h.push_str("</fieldset>");
        }
        if !form.iparams.is_empty() {
            h.push_str("<fieldset><legend>Installation parameters</legend>");
            for f in &form.iparams {
                field_html(&mut h, app, None, f, mine, entered);
            }
            h.push_str("</fieldset>");
        }
        if form.integrations.iter().all(|i| i.fields.is_empty()) && form.iparams.is_empty() {
            h.push_str("<p>The app's files leave nothing open.</p>");
        } else {
            h.push_str("<p><button type=\"submit\">Save</button></p>");
        }
        h.push_str("</form>");
        authorize_html(&mut h, admin, app, &form, &snap.config.admin.public_url);
    }
    h.push_str("</main></body></html>\n");
    html(status, h)
}

/// One field: its label (with a required mark), its input as its type asks, its description.
fn field_html(
    h: &mut String,
    app: &App,
    integration: Option<&str>,
    f: &Field,
    saved: Option<&SavedApp>,
    entered: &BTreeMap<String, Vec<String>>,
) {
    let id = install::field_id(integration, f);
    let given = given(app, &id, f);
    let saved_value = saved.and_then(|s| saved_of(s, integration, f));
    let value = entered.get(&id).and_then(|v| v.first()).map(String::as_str).or(saved_value).or(f.default.as_deref());
    let mark = if f.required { " <span class=\"required\" title=\"required\">*</span>" } else { "" };
    let _ = write!(h, "<p class=\"field\"><label for=\"{id}\">{}{mark}</label><br>", esc(&f.label), id = esc(&id));
    let disabled = if given { " disabled" } else { "" };
    let required = if f.required && !given && !(f.secret && saved_value.is_some()) { " required" } else { "" };
    let attrs = format!("id=\"{}\" name=\"{}\"{disabled}{required}", esc(&id), esc(&id));
    if given {
        let _ = write!(h, "<input type=\"text\" {attrs} value=\"given by the configuration\">");
    } else if f.secret {
        let hint = if saved_value.is_some() { "saved: leave empty to keep it" } else { "" };
        let _ = write!(h, "<input type=\"password\" {attrs} autocomplete=\"off\" placeholder=\"{hint}\">");
    } else {
        match f.typ.as_str() {
            "paragraph" => {
                let _ = write!(h, "<textarea {attrs} rows=\"3\">{}</textarea>", esc(value.unwrap_or("")));
            }
            "dropdown" | "radio" => {
                let _ = write!(h, "<select {attrs}>");
                if !f.required {
                    h.push_str("<option value=\"\"></option>");
                }
                for o in &f.options {
                    let selected = if value == Some(o.as_str()) { " selected" } else { "" };
                    let _ = write!(h, "<option{selected}>{}</option>", esc(o));
                }
                h.push_str("</select>");
            }
            "multiselect" => {
                let chosen: Vec<String> = match entered.get(&id) {
                    Some(v) => v.clone(),
                    None => value.and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default(),
                };
                let _ = write!(h, "<select multiple {attrs}>");
                for o in &f.options {
                    let selected = if chosen.contains(o) { " selected" } else { "" };
                    let _ = write!(h, "<option{selected}>{}</option>", esc(o));
                }
                h.push_str("</select>");
            }
            "checkbox" => {
                let checked = if value == Some("true") { " checked" } else { "" };
                let _ = write!(h, "<input type=\"checkbox\" {attrs} value=\"true\"{checked}>");
            }
            typ => {
                let input = match typ {
                    "number" => "number",
                    "email" => "email",
                    "url" => "url",
                    "date" => "date",
                    "phone_number" | "phone" => "tel",
                    _ => "text",
                };
                let _ = write!(h, "<input type=\"{input}\" {attrs} value=\"{}\">", esc(value.unwrap_or("")));
            }
        }
    }
    if let Some(d) = &f.description {
        let _ = write!(h, "<br><small>{}</small>", esc(d));
    }
    h.push_str("</p>");
}

/// The app's non-secure installation parameters as a serverless handler's `args.iparams` has
/// them: typed as `iparams.json` declares them (a checkbox a boolean, a multiselect a list, a
/// number a number), the rest as text.
pub(crate) fn iparams_json(app: &App) -> serde_json::Value {
    let form = install::form(&app.config.path);
    let typed = |k: &str, v: &str| -> serde_json::Value {
        let typ = form.iparams.iter().find(|f| f.key == k).map(|f| f.typ.as_str());
        match typ {
            Some("checkbox") => serde_json::Value::Bool(v == "true"),
            Some("multiselect") | Some("number") => serde_json::from_str(v).unwrap_or_else(|_| v.into()),
            _ => v.into(),
        }
    };
    app.config.fdk.iparams.iter().map(|(k, v)| (k.clone(), typed(k, v))).collect()
}

/// Authorize, for each integration a person authorizes (an agent one for an account named), with
/// the state of the token it has.
fn authorize_html(h: &mut String, admin: &Admin, app: &App, form: &Form, public_url: &str) {
    let mut any = false;
    let stored = admin.state.tokens.list();
    let now = crate::token::unix_now();
    for integ in &app.config.fdk.integrations {
        if integ.grant != crate::config::Grant::AuthorizationCode {
            continue;
        }
        if !any {
            h.push_str("<h3>Authorize</h3><ul class=\"authorize\">");
            any = true;
        }
        let shown = form.integrations.iter().find(|i| i.name == integ.name).and_then(|i| i.display_name.clone());
        let name = esc(shown.as_deref().unwrap_or(&integ.name));
        let path = format!("/auth/authorize/{}/{}", app.name, integ.name);
        if !app.config.missing.is_empty() {
            let _ = write!(h, "<li>{name}: save the values above first</li>");
        } else if integ.agent {
            let _ = write!(
                h,
                "<li><form method=\"get\" action=\"{}\">{name}, for the agent <input name=\"account\" aria-label=\"agent account\" required> <button type=\"submit\">Authorize</button></form></li>",
                esc(&path)
            );
        } else {
            let state = stored
                .iter()
                .find(|(k, _)| {
                    *k.app == *app.name && *k.integration == *integ.name && &*k.account == crate::token::DEFAULT_ACCOUNT
                })
                .map_or(crate::token::TokenState::Missing, |(_, t)| t.state(now, &integ.binding))
                .as_str();
            let _ = write!(
                h,
                "<li><a class=\"button authorize\" href=\"{}\">Authorize {name}</a> <span class=\"state {state}\">{state}</span></li>",
                esc(&path)
            );
        }
    }
    if any {
        let _ = write!(
            h,
            "</ul><p><small>The provider's redirect URI: <code>{}/auth/callback</code></small></p>",
            esc(public_url)
        );
    }
}

/// Whether the configuration (`bearerd.yaml`, the command line) gives field `f` (form id `id`) a
/// value: an oauth_iparam may be given for every integration at once.
fn given(app: &App, id: &str, f: &Field) -> bool {
    app.config.given.contains(id)
        || (f.kind == FieldKind::OAuthIparam && app.config.given.contains(&format!("oauth.*.{}", f.key)))
}

fn saved_of<'s>(s: &'s SavedApp, integration: Option<&str>, f: &Field) -> Option<&'s str> {
    let v = match (f.kind, integration) {
        (FieldKind::Iparam, _) | (_, None) => s.iparams.get(&f.key),
        (FieldKind::OAuthIparam, Some(i)) => s.oauth_iparams.get(i).and_then(|m| m.get(&f.key)),
        (_, Some(i)) => s.clients.get(i).and_then(|m| m.get(&f.key)),
    };
    v.map(String::as_str).filter(|v| !v.is_empty())
}

/// `application/x-www-form-urlencoded`: every name with its values, in order.
fn form_values(body: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let text = String::from_utf8_lossy(body);
    for kv in text.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        out.entry(decode(k)).or_default().push(decode(v));
    }
    out
}

/// A value as its type wants it, or why not.
fn checked(f: &Field, values: &[String]) -> Result<String, String> {
    let one = values.first().map(|v| v.trim().to_string()).unwrap_or_default();
    let bad = |what: &str| Err(format!("{} must be {what}", f.label));
    match f.typ.as_str() {
        "checkbox" => Ok(if one == "true" { "true".into() } else { "false".into() }),
        "multiselect" => {
            let chosen: Vec<&String> = values.iter().filter(|v| !v.is_empty()).collect();
            if let Some(v) = chosen.iter().find(|v| !f.options.contains(v)) {
                return Err(format!("{}: `{v}` is not one of its options", f.label));
            }
            Ok(if chosen.is_empty() { String::new() } else { serde_json::to_string(&chosen).unwrap_or_default() })
        }
        _ if one.is_empty() => Ok(one),
        "number" if one.parse::<f64>().is_err() => bad("a number"),
        "email" if !one.contains('@') || one.contains(char::is_whitespace) => bad("an email address"),
        "url" if !(one.starts_with("https://") || one.starts_with("http://")) => bad("an http(s) URL"),
        "dropdown" | "radio" if !f.options.contains(&one) => {
            Err(format!("{}: `{one}` is not one of its options ({})", f.label, f.options.join(", ")))
        }
        _ => Ok(one),
    }
}

/// `POST /custom_configs`: validates, saves sealed, reloads; the page again with what was
/// refused, or a redirect to it.
pub(crate) async fn save(admin: &Admin, req: &Request<Bytes>) -> Response<Body> {
    let entered = form_values(req.body());
    let first = |k: &str| entered.get(k).and_then(|v| v.first()).cloned().unwrap_or_default();
    let public_url = admin.state.snapshot.load().config.admin.public_url.clone();
    if !super::same_origin(req, &public_url) || !admin.csrf_matches(&first("csrf")) {
        return html(
            StatusCode::FORBIDDEN,
            format!(
                "{HEAD}<main><h1>Refused</h1><p>This form must come from bearerd's own page. <a href=\"/custom_configs\">Back</a></p></main></body></html>\n"
            ),
        );
    }
    let store = match settings(admin) {
        Ok(s) => s,
        Err(e) => return render(admin, &Saved::default(), None, &[e], &entered, StatusCode::CONFLICT),
    };
    let mut saved = match store.read() {
        Ok(s) => s,
        Err(e) => return render(admin, &Saved::default(), None, &[e], &entered, StatusCode::INTERNAL_SERVER_ERROR),
    };
    let snap = admin.state.snapshot.load_full();
    let app_name = first("app");
    let Some(app) = snap.app(&app_name) else {
        return render(admin, &saved, None, &[format!("no app named {app_name}")], &entered, StatusCode::BAD_REQUEST);
    };
    let form = install::form(&app.config.path);
    let mut errors = Vec::new();
    let mut mine = saved.apps.get(&app_name).cloned().unwrap_or_default();
    let fields = form
        .integrations
        .iter()
        .flat_map(|i| i.fields.iter().map(move |f| (Some(i.name.as_str()), f)))
        .chain(form.iparams.iter().map(|f| (None, f)));
    for (integration, f) in fields {
        let id = install::field_id(integration, f);
        if given(app, &id, f) {
            continue;
        }
        let posted = entered.get(&id).cloned().unwrap_or_default();
        let value = match checked(f, &posted) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        // A secret left empty keeps the one saved.
        if value.is_empty() && f.secret && saved_of(&mine, integration, f).is_some() {
            continue;
        }
        if value.is_empty() && f.required {
            errors.push(format!("{} is required", f.label));
            continue;
        }
        let slot = match (f.kind, integration) {
            (FieldKind::Iparam, _) | (_, None) => &mut mine.iparams,
            (FieldKind::OAuthIparam, Some(i)) => mine.oauth_iparams.entry(i.to_string()).or_default(),
            (_, Some(i)) => mine.clients.entry(i.to_string()).or_default(),
        };
        if value.is_empty() {
            slot.remove(&f.key);
        } else {
            slot.insert(f.key.clone(), value);
        }
    }
    if !errors.is_empty() {
        return render(admin, &saved, None, &errors, &entered, StatusCode::BAD_REQUEST);
    }
    saved.apps.insert(app_name.clone(), mine);
    if let Err(e) = store.write(&saved) {
        return render(admin, &saved, None, &[e], &entered, StatusCode::INTERNAL_SERVER_ERROR);
    }
    tracing::info!(app = %app_name, "installation values saved through /custom_configs");
    match admin.reloader.reload("custom_configs").await {
        Ok(_) => see_other("/custom_configs?notice=saved"),
        Err(errors) => {
            let errors: Vec<String> =
                errors.0.iter().map(|e| format!("saved, but the configuration does not load: {e}")).collect();
            render(admin, &saved, None, &errors, &BTreeMap::new(), StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(typ: &str, options: &[&str]) -> Field {
        Field {
            key: "k".into(),
            label: "K".into(),
            description: None,
            kind: FieldKind::Iparam,
            typ: typ.into(),
            required: false,
            secret: false,
            default: None,
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn values_are_checked_by_type() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(checked(&f("number", &[]), &v(&["12.5"])), Ok("12.5".into()));
        assert!(checked(&f("number", &[]), &v(&["twelve"])).unwrap_err().contains("a number"));
        assert!(checked(&f("email", &[]), &v(&["nope"])).is_err());
        assert!(checked(&f("url", &[]), &v(&["ftp://x"])).is_err());
        assert_eq!(checked(&f("dropdown", &["a", "b"]), &v(&["b"])), Ok("b".into()));
        assert!(checked(&f("dropdown", &["a", "b"]), &v(&["c"])).is_err());
        assert_eq!(checked(&f("checkbox", &[]), &v(&[])), Ok("false".into()));
        assert_eq!(checked(&f("multiselect", &["a", "b"]), &v(&["a", "b"])), Ok("[\"a\",\"b\"]".into()));
        assert!(checked(&f("multiselect", &["a"]), &v(&["z"])).is_err());
        assert_eq!(checked(&f("text", &[]), &v(&[" x "])), Ok("x".into()));
        assert_eq!(
            form_values(b"a=1&b=x+y&b=%2Fz&c"),
            BTreeMap::from([
                ("a".to_string(), vec!["1".to_string()]),
                ("b".to_string(), vec!["x y".to_string(), "/z".to_string()]),
                ("c".to_string(), vec![String::new()]),
            ])
        );
    }
}
