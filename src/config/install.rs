//! Installation values an FDK developer enters rather than writes (SPEC 8): what an app's files
//! leave open ([`form`]: client ID and secret where `oauth_config.json` leaves them empty, the
//! OAuth iparams it declares, the installation parameters of `config/iparams.json`), the values
//! saved for them through `/custom_configs` ([`Saved`], kept sealed by the token layer), and
//! `bearerd run --app DIR`: one app folder served with FDK's defaults and no `bearerd.yaml`
//! ([`AppSource`]). Values given in a `bearerd.yaml` or on the command line win over saved ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppValues;
use super::fdk::{IPARAMS, OAUTH};

/// What a field that still needs a value is given while it has none (`run --app` before
/// `/custom_configs` is filled in): a value that makes every URL and header valid, so the app
/// loads; the app refuses requests and authorizations until it is configured.
pub const UNSET: &str = "not-configured";

/// One value the files leave open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub key: String,
    pub label: String,
    pub description: Option<String>,
    pub kind: FieldKind,
    /// The iparam type (`text`, `paragraph`, `number`, `dropdown`, `checkbox`, ...); `text` for
    /// a client ID, `password` for a secret.
    pub typ: String,
    pub required: bool,
    /// Never shown back once saved (a client secret, a `secure` parameter).
    pub secret: bool,
    pub default: Option<String>,
    /// The choices of a dropdown, radio or multiselect.
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    ClientId,
    ClientSecret,
    OAuthIparam,
    Iparam,
}

/// The fields of one integration, in `oauth_config.json`'s order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormIntegration {
    pub name: String,
    pub display_name: Option<String>,
    pub agent: bool,
    pub fields: Vec<Field>,
}

/// Everything an app's files leave open: per integration, then the installation parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pub integrations: Vec<FormIntegration>,
    pub iparams: Vec<Field>,
}

fn read(dir: &Path, file: &str) -> Option<Value> {
    let bytes = std::fs::read(dir.join(file)).ok()?;
    serde_json::from_slice(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes)).ok()
}

fn field(key: &str, decl: &Value, kind: FieldKind) -> Field {
    let text = |k: &str| decl.get(k).and_then(Value::as_str).map(str::to_string);
    let secure = decl.get("secure").and_then(Value::as_bool) == Some(true);
    let typ = text("type").unwrap_or_else(|| "text".into());
    Field {
        key: key.to_string(),
        label: text("display_name").unwrap_or_else(|| key.to_string()),
        description: text("description"),
        kind,
        secret: secure || typ == "password" || (kind == FieldKind::OAuthIparam && key.ends_with("secret")),
        typ,
        required: decl.get("required").and_then(Value::as_bool) == Some(true),
        default: decl.get("default_value").and_then(super::scalar_text).filter(|v| !v.is_empty()),
        options: decl
            .get("options")
            .and_then(Value::as_array)
            .map(|o| o.iter().filter_map(super::scalar_text).filter(|v| !v.is_empty()).collect())
            .unwrap_or_default(),
    }
}

/// What the app folder's files leave open, read as the loader reads them (a file that cannot be
/// read contributes nothing: the loader reports it).
pub fn form(dir: &Path) -> Form {
    let mut out = Form::default();
    if let Some(Value::Object(oauth)) = read(dir, OAUTH) {
        let integrations: Vec<(String, &serde_json::Map<String, Value>)> = match oauth.get("integrations") {
            Some(Value::Object(ints)) => {
                ints.iter().filter_map(|(n, d)| d.as_object().map(|d| (n.clone(), d))).collect()
            }
            _ => vec![(super::fdk::LEGACY_INTEGRATION.to_string(), &oauth)],
        };
        for (name, def) in integrations {
            let mut fields = Vec::new();
            let empty = |k: &str| def.get(k).and_then(Value::as_str).is_none_or(|s| s.trim().is_empty());
            let client_credentials = def.get("grant_type").and_then(Value::as_str) == Some("client_credentials");
            if empty("client_id") {
                fields.push(Field {
                    key: "client_id".into(),
                    label: "Client ID".into(),
                    description: None,
                    kind: FieldKind::ClientId,
                    typ: "text".into(),
                    required: true,
                    secret: false,
                    default: None,
                    options: Vec::new(),
                });
            }
            if empty("client_secret") {
                fields.push(Field {
                    key: "client_secret".into(),
                    label: "Client secret".into(),
                    description: None,
                    kind: FieldKind::ClientSecret,
                    typ: "password".into(),
                    required: true,
                    secret: true,
                    default: None,
                    options: Vec::new(),
                });
            }
            if let Some(Value::Object(decls)) = def.get("oauth_iparams") {
                fields.extend(decls.iter().map(|(k, d)| field(k, d, FieldKind::OAuthIparam)));
            }
            out.integrations.push(FormIntegration {
                agent: def.get("token_type").and_then(Value::as_str) == Some("agent") && !client_credentials,
                display_name: def.get("display_name").and_then(Value::as_str).map(str::to_string),
                name,
                fields,
            });
        }
    }
    if let Some(Value::Object(decls)) = read(dir, IPARAMS) {
        out.iparams = decls.iter().map(|(k, d)| field(k, d, FieldKind::Iparam)).collect();
    }
    out
}

/// Installation values saved through `/custom_configs`, per app. `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(default)]
    pub apps: BTreeMap<String, SavedApp>,
}

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedApp {
    #[serde(default)]
    pub iparams: BTreeMap<String, String>,
    /// By integration.
    #[serde(default)]
    pub oauth_iparams: BTreeMap<String, BTreeMap<String, String>>,
    /// By integration: `client_id` and `client_secret` where the files leave them empty.
    #[serde(default)]
    pub clients: BTreeMap<String, BTreeMap<String, String>>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.apps.iter()).finish()
    }
}

impl std::fmt::Debug for SavedApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedApp")
            .field("iparams", &self.iparams.keys().collect::<Vec<_>>())
            .field(
                "oauth_iparams",
                &self.oauth_iparams.iter().map(|(i, m)| (i, m.keys().collect::<Vec<_>>())).collect::<Vec<_>>(),
            )
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SavedApp {
    /// Puts the saved values under `v` (the configured ones win).
    pub(crate) fn under(&self, v: &mut AppValues) {
        for (k, val) in &self.iparams {
            v.iparams.entry(k.clone()).or_insert_with(|| val.clone());
        }
        for (integration, values) in &self.oauth_iparams {
            let own = v.oauth_iparams_by_integration.entry(integration.clone()).or_default();
            for (k, val) in values {
                if !v.oauth_iparams.contains_key(k) {
                    own.entry(k.clone()).or_insert_with(|| val.clone());
                }
            }
        }
        for (integration, values) in &self.clients {
            let client = v.clients.entry(integration.clone()).or_default();
            for (k, val) in values {
                client.entry(k.clone()).or_insert_with(|| val.clone());
            }
        }
    }
}

/// The value `v` gives a field of `integration` (`None` for an installation parameter).
pub fn value_of<'v>(v: &'v AppValues, integration: Option<&str>, f: &Field) -> Option<&'v str> {
    let found = match (f.kind, integration) {
        (FieldKind::Iparam, _) => v.iparams.get(&f.key),
        (FieldKind::OAuthIparam, Some(i)) => {
            v.oauth_iparams_by_integration.get(i).and_then(|m| m.get(&f.key)).or_else(|| v.oauth_iparams.get(&f.key))
        }
        (FieldKind::ClientId | FieldKind::ClientSecret, Some(i)) => v.clients.get(i).and_then(|m| m.get(&f.key)),
        _ => None,
    };
    found.map(String::as_str).filter(|s| !s.is_empty())
}

/// The field `f` of integration `integration` (`None`: an installation parameter), as a form
/// names it: `iparam.<key>`, `oauth.<integration>.<key>`, `client.<integration>.<key>`.
pub fn field_id(integration: Option<&str>, f: &Field) -> String {
    match (f.kind, integration) {
        (FieldKind::Iparam, _) | (_, None) => format!("iparam.{}", f.key),
        (FieldKind::OAuthIparam, Some(i)) => format!("oauth.{i}.{}", f.key),
        (FieldKind::ClientId | FieldKind::ClientSecret, Some(i)) => format!("client.{i}.{}", f.key),
    }
}

/// The ids of the fields `v` gives values for (an oauth_iparam given for every integration as
/// `oauth.*.<key>`).
pub(crate) fn given_ids(v: &AppValues) -> std::collections::BTreeSet<String> {
    let mut out: std::collections::BTreeSet<String> = v.iparams.keys().map(|k| format!("iparam.{k}")).collect();
    out.extend(v.oauth_iparams.keys().map(|k| format!("oauth.*.{k}")));
    for (i, m) in &v.oauth_iparams_by_integration {
        out.extend(m.keys().map(|k| format!("oauth.{i}.{k}")));
    }
    out
}

/// Completes `v` for `form` while the app is being set up (`run --app`): a required field with
/// no value is given [`UNSET`] (and named in what is returned, so that the app refuses to serve
/// until it has one), an optional one without a value or default is empty, as on the platform.
pub(crate) fn fill_unset(form: &Form, v: &mut AppValues) -> Vec<String> {
    let mut missing = Vec::new();
    let mut fill = |v: &mut AppValues, integration: Option<&str>, f: &Field| {
        if f.default.is_some() || value_of(v, integration, f).is_some() {
            return;
        }
        let value = if f.required {
            missing.push(match integration {
                Some(i) => format!("{} of integration {i}", f.label),
                None => format!("installation parameter {}", f.label),
            });
            UNSET
        } else {
            ""
        };
        let slot = match (f.kind, integration) {
            (FieldKind::Iparam, _) | (_, None) => &mut v.iparams,
            (FieldKind::OAuthIparam, Some(i)) => v.oauth_iparams_by_integration.entry(i.to_string()).or_default(),
            (FieldKind::ClientId | FieldKind::ClientSecret, Some(i)) => {
                v.clients.entry(i.to_string()).or_default().insert(f.key.clone(), value.into());
                return;
            }
        };
        slot.insert(f.key.clone(), value.into());
    };
    for integ in &form.integrations {
        for f in &integ.fields {
            fill(v, Some(&integ.name), f);
        }
    }
    for f in &form.iparams {
        fill(v, None, f);
    }
    missing
}

/// `bearerd run --app DIR`: one FDK app folder, FDK's ports and callback, the store in
/// `DIR/.bearerd/`, and the values and upstream settings given on the command line.
#[derive(Debug, Clone, Default)]
pub struct AppSource {
    pub dir: PathBuf,
    pub values: AppValues,
    pub allow_http: bool,
    pub allow_private_ips: bool,
    pub ca_file: Option<PathBuf>,
    /// The listeners, when not `fdk run`'s ([`FDK_LISTEN`], [`FDK_ADMIN_LISTEN`]).
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
}

/// The data listener and the admin listener of `fdk run`.
pub const FDK_LISTEN: &str = "127.0.0.1:10080";
pub const FDK_ADMIN_LISTEN: &str = "127.0.0.1:10001";
pub const FDK_PUBLIC_URL: &str = "http://localhost:10001";

impl AppSource {
    /// The app's name: its folder's, as an app name may be written (`[a-z0-9_-]+`).
    pub fn name(&self) -> String {
        let dir = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        let raw = dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        let name: String = raw
            .chars()
            .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' { c } else { '-' })
            .collect();
        let name = name.trim_matches('-').to_string();
        if name.is_empty() { "app".into() } else { name }
    }

    /// Where its token store and saved values live.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(".bearerd")
    }

    /// The `bearerd.yaml` this stands for (as JSON), with the values given (and the saved ones
    /// under them) folded into its one app.
    pub(crate) fn as_yaml(&self, values: &AppValues) -> Value {
        let map = |m: &std::collections::HashMap<String, String>| {
            m.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>()
        };
        let mut oauth = map(&values.oauth_iparams);
        for (integration, own) in &values.oauth_iparams_by_integration {
            oauth.insert(integration.clone(), Value::Object(map(own)));
        }
        let mut upstream = json!({"allow_http": self.allow_http, "allow_private_ips": self.allow_private_ips});
        if let Some(ca) = &self.ca_file {
            upstream["ca_file"] = json!(ca.display().to_string());
        }
        // The redirect URI names the admin listener's port, on `localhost` as `fdk run`'s does.
        let admin_listen = self.admin_listen.as_deref().unwrap_or(FDK_ADMIN_LISTEN);
        let public_url = match self.admin_listen.as_deref().and_then(|a| a.rsplit_once(':')) {
            Some((_, port)) => format!("http://localhost:{port}"),
            None => FDK_PUBLIC_URL.to_string(),
        };
        json!({
            "listen": self.listen.as_deref().unwrap_or(FDK_LISTEN),
            "admin": {"listen": admin_listen, "public_url": public_url},
            "apps": [{
                "name": self.name(),
                "path": self.dir.display().to_string(),
                "iparams": map(&values.iparams),
                "oauth_iparams": oauth,
                "endpoint_urls": map(&values.endpoint_urls),
            }],
            "store": {"file": self.state_dir().join("tokens.json").display().to_string()},
            "upstream": upstream,
            // A developer's Ctrl-C: no pod to drain.
            "shutdown": {"drain_delay": "0s", "grace": "5s"},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "bearerd-install-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::write(
            dir.join("config/oauth_config.json"),
            json!({"integrations": {
                "github": {"client_id": "<%= oauth_iparams.client_id %>", "client_secret": "<%= oauth_iparams.client_secret %>",
                    "authorize_url": "https://github.com/login/oauth/authorize", "token_url": "https://github.com/login/oauth/access_token",
                    "oauth_iparams": {"client_id": {"display_name": "GitHub Client ID", "type": "text", "required": true},
                                      "client_secret": {"display_name": "GitHub Client Secret", "type": "text", "required": true}}},
                "zoom": {"client_id": "", "token_type": "agent", "authorize_url": "https://z/a", "token_url": "https://z/t"}
            }})
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.join("config/iparams.json"),
            json!({"domain": {"display_name": "Domain", "type": "text", "required": true},
                   "plan": {"type": "dropdown", "options": ["free", "pro"], "default_value": "free"},
                   "api_key": {"type": "text", "secure": true}})
            .to_string(),
        )
        .unwrap();
        dir
    }

    #[test]
    fn the_form_asks_for_what_the_files_leave_open_in_their_order() {
        let dir = folder();
        let f = form(&dir);
        let names: Vec<&str> = f.integrations.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["github", "zoom"], "oauth_config.json's order");
        let keys = |i: usize| f.integrations[i].fields.iter().map(|f| (f.key.as_str(), f.kind)).collect::<Vec<_>>();
        assert_eq!(keys(0), [("client_id", FieldKind::OAuthIparam), ("client_secret", FieldKind::OAuthIparam)]);
        assert!(f.integrations[0].fields[1].secret, "a secret oauth_iparam is never shown back");
        assert_eq!(keys(1), [("client_id", FieldKind::ClientId), ("client_secret", FieldKind::ClientSecret)]);
        assert!(f.integrations[1].agent);
        let iparams: Vec<(&str, bool, bool)> =
            f.iparams.iter().map(|f| (f.key.as_str(), f.required, f.secret)).collect();
        assert_eq!(iparams, [("domain", true, false), ("plan", false, false), ("api_key", false, true)]);
        assert_eq!(f.iparams[1].options, ["free", "pro"]);
        // Required and empty: given UNSET and named; saved values fill them; configured ones win.
        let mut v = AppValues::default();
        let missing = fill_unset(&f, &mut v);
        assert_eq!(missing.len(), 5, "{missing:?}");
        assert_eq!(v.iparams["domain"], UNSET);
        let saved = SavedApp {
            iparams: [("domain".to_string(), "saved.example".to_string())].into(),
            oauth_iparams: [("github".to_string(), [("client_id".to_string(), "saved-id".to_string())].into())].into(),
            clients: Default::default(),
        };
        let mut v = AppValues::default();
        v.iparams.insert("domain".into(), "given.example".into());
        saved.under(&mut v);
        assert_eq!(v.iparams["domain"], "given.example");
        assert_eq!(v.oauth_iparams_by_integration["github"]["client_id"], "saved-id");
        assert!(!format!("{saved:?}").contains("saved-id"), "Debug shows names only");
        let _ = std::fs::remove_dir_all(dir);
    }
}
