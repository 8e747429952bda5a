//! `config/oauth_config.json`: the app's OAuth integrations (the `integrations` shape or the
//! legacy single object), with their oauth_iparams folded in, plus bearerd's extensions
//! (`grant_type`, `token_auth`, `issuer`).

use std::collections::HashMap;

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::fdk::{LEGACY_INTEGRATION, MAX_INTEGRATIONS, OAUTH};
use super::{AppValues, Diag, UpstreamConfig, ptr, scalar_text};
use crate::secret::Secret;
use crate::template::expr::{self, Allow, Bindings, Name, Syntax};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    AuthorizationCode,
    ClientCredentials,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    ClientSecretPost,
    ClientSecretBasic,
}

/// One OAuth integration, with its oauth_iparams folded in.
#[derive(Debug, Clone)]
pub struct IntegrationSpec {
    pub name: String,
    pub display_name: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub authorize_url: Option<String>,
    pub token_url: String,
    /// `options` less `customHeaders`: authorize parameters (scope, prompt, ...).
    pub authorize_params: Vec<(String, String)>,
    /// `options.customHeaders`, sent on token-endpoint requests.
    pub custom_headers: Vec<(HeaderName, Secret)>,
    pub agent: bool,
    pub grant: Grant,
    pub token_auth: TokenAuth,
    pub issuer: Option<String>,
    /// The oauth_iparams values this integration was compiled with (for templates using them).
    pub oauth_iparams: HashMap<String, Secret>,
    /// A fingerprint of `token_url` and `client_id`: tokens obtained under other values are not
    /// used (the operator must authorize again).
    pub binding: String,
}

impl IntegrationSpec {
    /// The authorize parameter `name` (`scope`, `resource`, ...), if set.
    pub(crate) fn option(&self, name: &str) -> Option<&str> {
        self.authorize_params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Reads oauth_config.json; returns the integrations and, for the legacy shape, the index of the
/// single legacy integration.
pub(super) fn load_integrations(
    oauth: Option<&Value>,
    values: &AppValues,
    upstream: &UpstreamConfig,
    d: &mut Diag,
) -> (Vec<IntegrationSpec>, Option<usize>) {
    let Some(oauth) = oauth else {
        return (Vec::new(), None);
    };
    let Some(obj) = oauth.as_object() else {
        d.error(OAUTH, "", "must be an object");
        return (Vec::new(), None);
    };
    let mut out = Vec::new();
    match obj.get("integrations") {
        Some(Value::Object(ints)) => {
            if ints.len() > MAX_INTEGRATIONS {
                d.error(OAUTH, "/integrations", format!("has {} integrations; at most {MAX_INTEGRATIONS}", ints.len()));
            }
            for (name, def) in ints {
                let p = format!("/integrations/{}", ptr(name));
                if let Some(i) = load_integration(name, def, &p, values, upstream, d) {
                    out.push(i);
                }
            }
            let agents = out.iter().filter(|i| i.agent).count();
            if agents > 1 {
                d.error(
                    OAUTH,
                    "/integrations",
                    format!("{agents} integrations have token_type agent; at most one may"),
                );
            }
            (out, None)
        }
        Some(_) => {
            d.error(OAUTH, "/integrations", "must be an object of integrations");
            (out, None)
        }
        None => {
            let i = load_integration(LEGACY_INTEGRATION, oauth, "", values, upstream, d);
            let n = i.is_some() as usize;
            out.extend(i);
            (out, (n == 1).then_some(0))
        }
    }
}

fn load_integration(
    name: &str,
    def: &Value,
    p: &str,
    values: &AppValues,
    upstream: &UpstreamConfig,
    d: &mut Diag,
) -> Option<IntegrationSpec> {
    let Some(def) = def.as_object() else {
        d.error(OAUTH, p, "an integration must be an object");
        return None;
    };
    let before = d.errors.len();
    // oauth_iparams: declared defaults, shared values, then this integration's values.
    let mut oip: HashMap<String, String> = HashMap::new();
    if let Some(Value::Object(decls)) = def.get("oauth_iparams") {
        for (k, decl) in decls {
            if let Some(v) = decl.get("default_value").and_then(scalar_text) {
                oip.insert(k.clone(), v);
            }
        }
    }
    oip.extend(values.oauth_iparams.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(own) = values.oauth_iparams_by_integration.get(name) {
        oip.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let empty = HashMap::new();
    let field = |key: &str, required: bool, d: &mut Diag| -> Option<String> {
        let fp = format!("{p}/{key}");
        match def.get(key) {
            Some(Value::String(s)) => {
                let parsed = match expr::parse(s, Syntax::ErbAndMustache) {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        d.error(OAUTH, &fp, e);
                        return None;
                    }
                };
                let b = Bindings {
                    iparams: &values.iparams,
                    oauth_iparams: &oip,
                    endpoint_urls: &empty,
                    allow: Allow { context: false, iparam: true, oauth_iparams: true, access_token: false },
                };
                match parsed.bind(&b) {
                    Ok(bound) => match bound.as_literal() {
                        Some(l) => Some(l.to_string()),
                        None => {
                            d.error(OAUTH, &fp, "must be known at load time");
                            None
                        }
                    },
                    Err(errs) => {
                        for e in errs {
                            let msg = match e {
                                expr::BindError::NoValue(Name::OAuthIparam(k)) => format!(
                                    "oauth_iparam \"{k}\" is referenced but has no value (set apps[].oauth_iparams.{name}.{k})"
                                ),
                                e => e.to_string(),
                            };
                            d.error(OAUTH, &fp, msg);
                        }
                        None
                    }
                }
            }
            None | Some(Value::Null) if !required => None,
            None | Some(Value::Null) => {
                d.error(OAUTH, &fp, "is required");
                None
            }
            Some(v) => {
                d.error(OAUTH, &fp, format!("must be a string, not {v}"));
                None
            }
        }
    };
    // A field that names one of a few choices; absent means the first.
    let choice = |key: &str, choices: &[&str], d: &mut Diag| -> usize {
        match def.get(key).and_then(Value::as_str) {
            None => 0,
            Some(v) => choices.iter().position(|c| *c == v).unwrap_or_else(|| {
                d.error(OAUTH, format!("{p}/{key}"), format!("`{v}` is not {}", choices.join(" or ")));
                0
            }),
        }
    };
    let grant = match choice("grant_type", &["authorization_code", "client_credentials"], d) {
        1 => Grant::ClientCredentials,
        _ => Grant::AuthorizationCode,
    };
    // A client ID or secret the file leaves empty may be saved through /custom_configs.
    let empty = |key: &str| def.get(key).and_then(Value::as_str).is_none_or(|s| s.trim().is_empty());
    let given = |key: &str| values.clients.get(name).and_then(|m| m.get(key)).filter(|v| !v.is_empty()).cloned();
    let credential = |key: &str, d: &mut Diag| match given(key) {
        Some(v) if empty(key) => Some(v),
        _ => field(key, true, d),
    };
    let client_id = credential("client_id", d);
    let client_secret = credential("client_secret", d);
    let token_url = field("token_url", true, d);
    let authorize_url = field("authorize_url", grant == Grant::AuthorizationCode, d);
    let display_name = def.get("display_name").and_then(Value::as_str).map(str::to_string);
    for (key, url) in [("token_url", &token_url), ("authorize_url", &authorize_url)] {
        if let Some(u) = url {
            check_url(u, upstream.allow_http, &format!("{p}/{key}"), d);
        }
    }
    let token_auth = match choice("token_auth", &["client_secret_post", "client_secret_basic"], d) {
        1 => TokenAuth::ClientSecretBasic,
        _ => TokenAuth::ClientSecretPost,
    };
    let agent = choice("token_type", &["account", "agent"], d) == 1;
    let issuer = def.get("issuer").and_then(Value::as_str).map(str::to_string);
    let mut authorize_params = Vec::new();
    let mut custom_headers = Vec::new();
    match def.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                let op = format!("{p}/options/{}", ptr(k));
                if k == "customHeaders" {
                    let Some(h) = v.as_object() else {
                        d.error(OAUTH, &op, "must be an object of header values");
                        continue;
                    };
                    for (hk, hv) in h {
                        let hp = format!("{op}/{}", ptr(hk));
                        match (HeaderName::from_bytes(hk.as_bytes()), hv.as_str().map(HeaderValue::from_str)) {
                            (Ok(n), Some(Ok(_))) => {
                                custom_headers.push((n, Secret::new(hv.as_str().unwrap_or_default())))
                            }
                            _ => d.error(OAUTH, &hp, "must be a valid header name with a string value"),
                        }
                    }
                    continue;
                }
                if let Some(s) = scalar_text(v) {
                    authorize_params.push((k.clone(), s));
                }
            }
        }
        Some(_) => d.error(OAUTH, format!("{p}/options"), "must be an object"),
    }
    if d.errors.len() != before {
        return None;
    }
    let (client_id, token_url) = (client_id?, token_url?);
    let binding = binding_of(&token_url, &client_id);
    Some(IntegrationSpec {
        name: name.to_string(),
        display_name,
        binding,
        client_id,
        client_secret: Secret::new(client_secret?),
        authorize_url,
        token_url,
        authorize_params,
        custom_headers,
        agent,
        grant,
        token_auth,
        issuer,
        oauth_iparams: oip.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
    })
}

/// The first 8 bytes of SHA-256 over `token_url` and `client_id`, in hex.
fn binding_of(token_url: &str, client_id: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, format!("{token_url}\n{client_id}").as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn check_url(u: &str, allow_http: bool, p: &str, d: &mut Diag) {
    match u.parse::<http::Uri>() {
        Ok(uri) if uri.authority().is_some() => match uri.scheme_str() {
            Some("https") => {}
            Some("http") if allow_http => {}
            Some("http") => d.error(OAUTH, p, format!("`{u}` is http: refused unless upstream.allow_http is true")),
            _ => d.error(OAUTH, p, format!("`{u}` is not an https URL")),
        },
        _ => d.error(OAUTH, p, format!("`{u}` is not an absolute URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(oauth: Value, values: &AppValues) -> (Vec<IntegrationSpec>, Option<usize>, Diag) {
        let mut d = Diag::default();
        let (ints, legacy) = load_integrations(Some(&oauth), values, &UpstreamConfig::default(), &mut d);
        (ints, legacy, d)
    }

    fn integration(extra: Value) -> Value {
        let mut i = json!({"client_id": "cid", "client_secret": "s", "authorize_url": "https://auth.example.com/authorize",
            "token_url": "https://auth.example.com/token", "options": {"scope": "read", "customHeaders": {"X-A": "1"}}});
        i.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        i
    }

    #[test]
    fn both_shapes_and_the_extensions() {
        let (ints, legacy, d) = load(integration(json!({})), &AppValues::default());
        assert_eq!((ints.len(), legacy, d.errors.len()), (1, Some(0), 0));
        assert_eq!(ints[0].name, LEGACY_INTEGRATION);
        assert_eq!(ints[0].option("scope"), Some("read"));
        assert_eq!(ints[0].custom_headers[0].0, "x-a");
        let two = json!({"integrations": {
            "a": integration(json!({"token_type": "agent"})),
            "m2m": integration(json!({"grant_type": "client_credentials", "token_auth": "client_secret_basic"})),
        }});
        let (ints, legacy, d) = load(two, &AppValues::default());
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(legacy, None);
        assert!(ints[0].agent && ints[0].grant == Grant::AuthorizationCode);
        assert_eq!((ints[1].grant, ints[1].token_auth), (Grant::ClientCredentials, TokenAuth::ClientSecretBasic));
        assert_ne!(ints[0].binding, "", "tokens are bound to token_url and client_id");
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let bad = json!({"integrations": {
            "a": integration(json!({"token_type": "agent"})),
            "b": integration(json!({"token_type": "agent"})),
            "c": {"client_secret": "s", "token_url": "http://plain.example.com/token"},
        }});
        let (_, _, d) = load(bad, &AppValues::default());
        let pointers: Vec<&str> = d.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/integrations"), "two agent integrations: {pointers:?}");
        assert!(pointers.iter().any(|p| p.starts_with("/integrations/c")), "{pointers:?}");
        assert!(d.errors.iter().all(|e| e.file == OAUTH));
    }

    #[test]
    fn oauth_iparams_are_folded_in_per_integration() {
        let oauth = json!({"integrations": {"gh": integration(json!({
            "token_url": "https://<%= oauth_iparams.domain %>/token",
            "oauth_iparams": {"domain": {"type": "text", "required": true}}
        }))}});
        let mut values = AppValues::default();
        values
            .oauth_iparams_by_integration
            .insert("gh".into(), [("domain".to_string(), "github.com".to_string())].into());
        let (ints, _, d) = load(oauth.clone(), &values);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(ints[0].token_url, "https://github.com/token");
        let (_, _, d) = load(oauth, &AppValues::default());
        assert!(d.errors[0].message.contains("oauth_iparam \"domain\""), "{:?}", d.errors);
    }
}
