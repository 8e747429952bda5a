//! An FDK app folder: `manifest.json`, `config/requests.json`, `config/oauth_config.json` and
//! `config/iparams.json`, read as they are committed (BOMs, CRLF, the 2.3 and 3.x shapes) and
//! compiled into [`TemplateSpec`]s and [`IntegrationSpec`]s. Policy for real apps: SPEC 1.4.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};

use super::{AppValues, Diag, UpstreamConfig, ptr, scalar_text};
use crate::secret::Secret;
use crate::template::expr::{self, Allow, Bindings, Bound, Name, Part, Parts, Syntax};

const MANIFEST: &str = "manifest.json";
const REQUESTS: &str = "config/requests.json";
const OAUTH: &str = "config/oauth_config.json";
const IPARAMS: &str = "config/iparams.json";

/// The integration name given to a legacy (top-level) oauth_config.json.
pub const LEGACY_INTEGRATION: &str = "default";

const MAX_TEMPLATES: usize = 100;
const MAX_INTEGRATIONS: usize = 3;

/// A compiled FDK app.
#[derive(Debug, Clone, Default)]
pub struct FdkApp {
    pub platform_version: Option<String>,
    /// Declared templates only: an undeclared one cannot be invoked.
    pub templates: Vec<TemplateSpec>,
    pub integrations: Vec<IntegrationSpec>,
    /// Files that were read.
    pub files: Vec<PathBuf>,
}

/// One request template, with every load-time value folded in.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    pub name: String,
    pub method: Method,
    pub https: bool,
    pub host: Parts<Bound>,
    /// The path up to the first `?` written in it.
    pub path: Parts<Bound>,
    /// Whether the path ends in a context value that may span segments (SPEC deviation,
    /// README "Paths"): `"/v1.0<%= context.path %>"` or a whole path `"<%= context.path %>"`.
    pub path_tail: PathTail,
    /// The query string written inside `path`, after its `?` (may be empty).
    pub path_query: Parts<Bound>,
    /// `schema.query`: keys are already query-encoded.
    pub query: Vec<(String, Parts<Bound>)>,
    pub headers: Vec<(HeaderName, Parts<Bound>)>,
    /// Index into [`FdkApp::integrations`].
    pub integration: Option<usize>,
    pub max_attempts: u8,
    pub retry_delay: Duration,
}

impl TemplateSpec {
    /// The context keys this template reads, sorted and without duplicates.
    pub fn context_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        self.host.context_keys(&mut keys);
        self.path.context_keys(&mut keys);
        self.path_query.context_keys(&mut keys);
        for (_, q) in &self.query {
            q.context_keys(&mut keys);
        }
        for (_, h) in &self.headers {
            h.context_keys(&mut keys);
        }
        let mut keys: Vec<String> = keys.into_iter().map(str::to_string).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// How the last expression of a path is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathTail {
    /// Every context value is one segment.
    None,
    /// The path ends in a context value: it may hold `/`, never a `.` or `..` segment.
    Tail,
    /// The whole path is one context value, which gets a leading `/` if it lacks one.
    Whole,
}

impl PathTail {
    /// A path ends in a tail when its last part is a context value glued to the text before it
    /// (`/v1.0<%= context.path %>`), or is one context value alone. A value that starts its own
    /// segment (`/users/<%= context.id %>`) is one segment.
    pub fn of(path: &Parts<Bound>) -> PathTail {
        match path.0.as_slice() {
            [Part::Expr(e)] if e.uses_context() => PathTail::Whole,
            [.., Part::Lit(before), Part::Expr(e)] if e.uses_context() && !before.ends_with('/') => PathTail::Tail,
            _ => PathTail::None,
        }
    }
}

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
    pub fn option(&self, name: &str) -> Option<&str> {
        self.authorize_params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Reads a JSON file; `Ok(None)` when it does not exist. A BOM is skipped.
fn read_json(dir: &Path, file: &str, d: &mut Diag, files: &mut Vec<PathBuf>) -> Option<Value> {
    let path = dir.join(file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            d.error(file, "", format!("cannot read: {e}"));
            return None;
        }
    };
    files.push(path);
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    match serde_json::from_slice(text) {
        Ok(v) => Some(v),
        Err(e) => {
            d.error(file, "", format!("not valid JSON: {e}"));
            None
        }
    }
}

/// Loads one app folder. Problems go to `d`; the returned app is only meaningful when `d` has
/// no errors.
pub fn load_app(dir: &Path, values: &AppValues, upstream: &UpstreamConfig, d: &mut Diag) -> FdkApp {
    let mut app = FdkApp::default();
    if !dir.is_dir() {
        d.error(&dir.display().to_string(), "", "is not a folder (an FDK app folder with manifest.json)");
        return app;
    }
    let Some(manifest) = read_json(dir, MANIFEST, d, &mut app.files) else {
        if !d.errors.iter().any(|e| e.file == MANIFEST) {
            d.error(MANIFEST, "", "is missing: an FDK app folder needs manifest.json");
        }
        return app;
    };
    let requests = read_json(dir, REQUESTS, d, &mut app.files);
    let oauth = read_json(dir, OAUTH, d, &mut app.files);
    let iparams_decl = read_json(dir, IPARAMS, d, &mut app.files);

    app.platform_version = manifest.get("platform-version").and_then(scalar_text);
    let declared = declared_templates(&manifest, d);

    // Installation parameter values: declared defaults, then the supplied values.
    let mut iparams: HashMap<String, String> = HashMap::new();
    let mut secure: HashSet<String> = HashSet::new();
    match &iparams_decl {
        Some(Value::Object(decls)) => {
            for (k, decl) in decls {
                if let Some(dv) = decl.get("default_value").and_then(scalar_text) {
                    iparams.insert(k.clone(), dv);
                }
                if decl.get("secure").and_then(Value::as_bool) == Some(true) {
                    secure.insert(k.clone());
                }
            }
        }
        Some(_) => d.warn(IPARAMS, "", "is not an object of iparam declarations; ignored"),
        None => {}
    }
    iparams.extend(values.iparams.iter().map(|(k, v)| (k.clone(), v.clone())));

    // Integrations first: templates refer to them.
    let (integrations, legacy) = load_integrations(oauth.as_ref(), values, upstream, d);
    app.integrations = integrations;

    let Some(requests) = requests else {
        for (name, p) in &declared {
            d.error(p.file, &p.pointer, format!("template \"{name}\" is declared but {REQUESTS} is missing"));
        }
        return app;
    };
    let Value::Object(requests) = requests else {
        d.error(REQUESTS, "", "must be an object of templates");
        return app;
    };
    if requests.len() > MAX_TEMPLATES {
        d.error(REQUESTS, "", format!("has {} templates; at most {MAX_TEMPLATES} are allowed", requests.len()));
    }
    for (name, p) in &declared {
        if !requests.contains_key(name) {
            d.error(p.file, &p.pointer, format!("template \"{name}\" is declared but {REQUESTS} does not define it"));
        }
    }
    let ctx = TemplateCtx {
        iparams: &iparams,
        secure: &secure,
        endpoint_urls: &values.endpoint_urls,
        integrations: &app.integrations,
        legacy,
        oauth_flat: &values.oauth_iparams,
        oauth_present: oauth.is_some(),
        upstream,
    };
    let mut undeclared = Vec::new();
    for (name, def) in &requests {
        let Some(decl) = declared.iter().find(|(n, _)| n == name) else {
            undeclared.push(name.as_str());
            continue;
        };
        if let Some(t) = compile_template(name, def, &decl.1, &ctx, d) {
            app.templates.push(t);
        }
    }
    if !undeclared.is_empty() {
        d.warn(
            REQUESTS,
            "",
            format!("not declared in {MANIFEST}, so they cannot be invoked: {}", undeclared.join(", ")),
        );
    }
    app
}

/// Where a template was declared, and the options the declaration carries.
struct Decl {
    file: &'static str,
    pointer: String,
    options: Option<Map<String, Value>>,
}

fn declared_templates(manifest: &Value, d: &mut Diag) -> Vec<(String, Decl)> {
    let mut out = Vec::new();
    let mut collect = |v: &Value, base: String, d: &mut Diag| match v {
        Value::Object(map) => {
            for (name, entry) in map {
                let pointer = format!("{base}/{}", ptr(name));
                let options = match entry {
                    Value::Object(e) => match e.get("options") {
                        Some(Value::Object(o)) => Some(o.clone()),
                        Some(_) => {
                            d.error(MANIFEST, format!("{pointer}/options"), "must be an object");
                            None
                        }
                        None => None,
                    },
                    _ => {
                        d.error(MANIFEST, &pointer, "a declared request must be an object (`{}`)");
                        None
                    }
                };
                out.push((name.clone(), Decl { file: MANIFEST, pointer, options }));
            }
        }
        _ => d.error(MANIFEST, base, "must be an object of template names"),
    };
    if let Some(r) = manifest.pointer("/modules/common/requests") {
        collect(r, "/modules/common/requests".into(), d);
    }
    if let Some(Value::Object(products)) = manifest.get("product") {
        for (prod, p) in products {
            if let Some(r) = p.get("requests") {
                collect(r, format!("/product/{}/requests", ptr(prod)), d);
            }
        }
    }
    if let Some(r) = manifest.get("requests") {
        // Platform 2.3 apps in the wild put `requests` at the top level (SPEC 1.4: accepted).
        collect(r, "/requests".into(), d);
    }
    let mut seen = HashSet::new();
    out.retain(|(n, _)| seen.insert(n.clone()));
    out
}

/// What compiling a template needs from the rest of the app.
struct TemplateCtx<'a> {
    iparams: &'a HashMap<String, String>,
    secure: &'a HashSet<String>,
    endpoint_urls: &'a HashMap<String, String>,
    integrations: &'a [IntegrationSpec],
    /// Index of the legacy integration, when oauth_config.json is the legacy shape.
    legacy: Option<usize>,
    /// oauth_iparams values for templates without an integration.
    oauth_flat: &'a HashMap<String, String>,
    oauth_present: bool,
    upstream: &'a UpstreamConfig,
}

const ALLOW_HOST: Allow = Allow { context: true, iparam: true, oauth_iparams: true, access_token: false };
const ALLOW_PATH: Allow = Allow { context: true, iparam: true, oauth_iparams: false, access_token: false };
const ALLOW_HEADER: Allow = Allow { context: true, iparam: true, oauth_iparams: true, access_token: true };

fn compile_template(name: &str, def: &Value, decl: &Decl, c: &TemplateCtx<'_>, d: &mut Diag) -> Option<TemplateSpec> {
    let base = format!("/{}", ptr(name));
    let before = d.errors.len();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        d.error(REQUESTS, &base, format!("template name \"{name}\" may use only letters, digits, `_` and `-`"));
    }
    let Some(def) = def.as_object() else {
        d.error(REQUESTS, &base, "a template must be an object with `schema` and `options`");
        return None;
    };
    let Some(schema) = def.get("schema").and_then(Value::as_object) else {
        d.error(REQUESTS, format!("{base}/schema"), "is required and must be an object");
        return None;
    };
    let sp = format!("{base}/schema");

    // Options: the template's, with the manifest declaration's merged over them key by key.
    let mut options: Vec<(String, Value, &'static str, String)> = Vec::new();
    match def.get("options") {
        Some(Value::Object(o)) => {
            for (k, v) in o {
                options.push((k.clone(), v.clone(), REQUESTS, format!("{base}/options/{}", ptr(k))));
            }
        }
        Some(Value::Null) | None => {}
        Some(_) => d.error(REQUESTS, format!("{base}/options"), "must be an object"),
    }
    if let Some(o) = &decl.options {
        for (k, v) in o {
            options.retain(|(k2, ..)| k2 != k);
            options.push((k.clone(), v.clone(), MANIFEST, format!("{}/options/{}", decl.pointer, ptr(k))));
        }
    }
    let mut integration = None;
    let mut oauth_named = None;
    let mut is_oauth = false;
    let mut max_attempts = 1u8;
    let mut retry_delay = Duration::ZERO;
    for (k, v, file, p) in &options {
        match k.as_str() {
            "oauth" => match v {
                Value::String(s) => {
                    oauth_named = Some((s.clone(), *file, p.clone()));
                }
                Value::Null => {}
                _ => d.error(file, p, "must be the name of an integration in config/oauth_config.json"),
            },
            "isOAuth" => match v {
                Value::Bool(b) => is_oauth = *b,
                _ => d.error(file, p, "must be true or false"),
            },
            "maxAttempts" => match v.as_u64() {
                Some(n @ 1..=5) => max_attempts = n as u8,
                _ => d.error(file, p, format!("must be a whole number from 1 to 5, not {v}")),
            },
            "retryDelay" => match v.as_u64() {
                Some(n @ 0..=1500) => retry_delay = Duration::from_millis(n),
                _ => d.error(file, p, format!("must be a whole number of milliseconds from 0 to 1500, not {v}")),
            },
            _ => {} // Unknown option keys (timeout, per_page, ...) are accepted and ignored.
        }
    }
    match (&oauth_named, is_oauth) {
        (Some((_, file, p)), true) => {
            d.error(file, p, "options.oauth and options.isOAuth cannot both be set");
        }
        (Some((iname, file, p)), false) => {
            if !c.oauth_present {
                d.error(
                    file,
                    p,
                    format!("template \"{name}\": options.oauth \"{iname}\" has no integration ({OAUTH} is missing)"),
                );
            } else if c.legacy.is_some() {
                d.error(
                    file,
                    p,
                    format!(
                        "template \"{name}\": options.oauth \"{iname}\" names an integration, but {OAUTH} has the legacy shape without `integrations` (use isOAuth)"
                    ),
                );
            } else {
                match c.integrations.iter().position(|i| &i.name == iname) {
                    Some(i) => integration = Some(i),
                    None => {
                        let known: Vec<&str> = c.integrations.iter().map(|i| i.name.as_str()).collect();
                        d.error(
                            file,
                            p,
                            format!(
                                "template \"{name}\": no integration named \"{iname}\" in {OAUTH} (it has: {})",
                                if known.is_empty() { "none".to_string() } else { known.join(", ") }
                            ),
                        );
                    }
                }
            }
        }
        (None, true) => {
            let p = options.iter().find(|(k, ..)| k == "isOAuth").map(|(_, _, f, p)| (*f, p.clone()));
            let (file, p) = p.unwrap_or((REQUESTS, format!("{base}/options/isOAuth")));
            if !c.oauth_present {
                d.error(file, p, format!("template \"{name}\": isOAuth is true but {OAUTH} is missing"));
            } else if let Some(l) = c.legacy {
                integration = Some(l);
            } else if c.integrations.len() == 1 {
                // A 3.x config with a single integration: isOAuth can only mean that one.
                integration = Some(0);
            } else if !c.integrations.is_empty() {
                d.error(
                    file,
                    p,
                    format!("template \"{name}\": isOAuth needs the legacy {OAUTH}; with `integrations`, name one in options.oauth"),
                );
            }
        }
        (None, false) => {}
    }

    // Method and protocol.
    let method = match schema.get("method").and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref() {
        Some("GET") => Some(Method::GET),
        Some("POST") => Some(Method::POST),
        Some("PUT") => Some(Method::PUT),
        Some("DELETE") => Some(Method::DELETE),
        Some("PATCH") => Some(Method::PATCH),
        Some(other) => {
            d.error(REQUESTS, format!("{sp}/method"), format!("`{other}` is not one of GET, POST, PUT, DELETE, PATCH"));
            None
        }
        None => {
            d.error(REQUESTS, format!("{sp}/method"), "is required (GET, POST, PUT, DELETE or PATCH)");
            None
        }
    };
    let https = match schema.get("protocol") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("https") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("http") => {
            if !c.upstream.allow_http {
                d.error(REQUESTS, format!("{sp}/protocol"), "http is refused unless upstream.allow_http is true");
            }
            false
        }
        Some(v) => {
            d.error(REQUESTS, format!("{sp}/protocol"), format!("must be \"https\" or \"http\", not {v}"));
            true
        }
    };

    let oip: HashMap<String, String> = match integration {
        Some(i) => c.integrations[i].oauth_iparams.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect(),
        None => c.oauth_flat.clone(),
    };
    let bind = |src: &str, syntax: Syntax, allow: Allow, p: &str, d: &mut Diag| -> Option<Parts<Bound>> {
        let parsed = match expr::parse(src, syntax) {
            Ok(parsed) => parsed,
            Err(e) => {
                d.error(REQUESTS, p, e);
                return None;
            }
        };
        bind_parts(&parsed, c, &oip, allow, p, d)
    };

    // Host.
    let host = match schema.get("host") {
        Some(Value::String(h)) => {
            let hp = format!("{sp}/host");
            let bound = bind(h.trim(), Syntax::Erb, ALLOW_HOST, &hp, d);
            if let Some(lit) = bound.as_ref().and_then(|b| b.as_literal())
                && !crate::template::escape::valid_authority(lit)
            {
                d.error(
                    REQUESTS,
                    &hp,
                    format!("`{lit}` is not a host name with an optional :port (no scheme, no path)"),
                );
            }
            bound
        }
        _ => {
            d.error(REQUESTS, format!("{sp}/host"), "is required and must be a string");
            None
        }
    };

    // Path, and the query string written inside it.
    let path_src = match schema.get("path") {
        None | Some(Value::Null) => "/".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            d.error(REQUESTS, format!("{sp}/path"), format!("must be a string, not {v}"));
            "/".to_string()
        }
    };
    let pp = format!("{sp}/path");
    let (path, path_tail, path_query) = match expr::parse(&path_src, Syntax::Erb) {
        Ok(parts) => {
            let whole = matches!(parts.0.as_slice(), [Part::Expr(_)]);
            if !whole && !matches!(parts.0.first(), Some(Part::Lit(s)) if s.starts_with('/')) {
                d.error(REQUESTS, &pp, "must start with `/`");
            }
            let (path_parts, query_parts) = split_query(parts);
            let path = bind_parts(&path_parts, c, &oip, ALLOW_PATH, &pp, d);
            if let Some(path) = &path {
                check_path_literals(path, &pp, d);
                for n in path_parts.names() {
                    if let Name::Iparam(k) = n
                        && c.secure.contains(k)
                    {
                        d.warn(
                            REQUESTS,
                            &pp,
                            format!("secure iparam \"{k}\" is used in the path; paths are not logged, but the upstream's logs will hold it"),
                        );
                    }
                }
            }
            let tail = path.as_ref().map_or(PathTail::None, PathTail::of);
            (path, tail, bind_parts(&query_parts, c, &oip, ALLOW_PATH, &pp, d))
        }
        Err(e) => {
            d.error(REQUESTS, &pp, e);
            (None, PathTail::None, None)
        }
    };

    // Query object.
    let mut query = Vec::new();
    match schema.get("query") {
        None | Some(Value::Null) => {}
        Some(Value::Object(q)) => {
            for (k, v) in q {
                let qp = format!("{sp}/query/{}", ptr(k));
                let src = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        d.error(REQUESTS, &qp, "must be a string or a number");
                        continue;
                    }
                };
                if let Some(b) = bind(&src, Syntax::Erb, ALLOW_PATH, &qp, d) {
                    let mut key = String::new();
                    let _ = crate::template::escape::query_value(k, &mut key);
                    query.push((key, b));
                }
            }
        }
        Some(_) => d.error(REQUESTS, format!("{sp}/query"), "must be an object"),
    }

    // Headers.
    let mut headers = Vec::new();
    let mut uses_token: Option<String> = None;
    match schema.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let hp = format!("{sp}/headers/{}", ptr(k));
                let Ok(hn) = HeaderName::from_bytes(k.trim().as_bytes()) else {
                    d.error(REQUESTS, &hp, format!("`{k}` is not a valid header name"));
                    continue;
                };
                if is_framing_header(&hn) {
                    d.error(REQUESTS, &hp, format!("{hn} is set by bearerd and cannot be set by a template"));
                    continue;
                }
                let Value::String(src) = v else {
                    d.error(REQUESTS, &hp, "must be a string");
                    continue;
                };
                if let Some(b) = bind(src, Syntax::Erb, ALLOW_HEADER, &hp, d) {
                    for part in &b.0 {
                        if let Part::Lit(l) = part
                            && HeaderValue::from_str(l.trim()).is_err()
                            && l.bytes().any(|b| b < 0x20 && b != b'\t')
                        {
                            d.error(REQUESTS, &hp, "contains a control character (CR, LF or NUL)");
                        }
                    }
                    if b.uses_token() && uses_token.is_none() {
                        uses_token = Some(hp.clone());
                    }
                    headers.push((hn, b));
                }
            }
        }
        Some(_) => d.error(REQUESTS, format!("{sp}/headers"), "must be an object of strings"),
    }
    if let Some(hp) = uses_token.filter(|_| oauth_named.is_none() && !is_oauth) {
        d.error(
            REQUESTS,
            hp,
            format!("template \"{name}\" uses access_token but has no options.oauth or options.isOAuth"),
        );
    }
    if let Some(Value::Object(_)) | Some(Value::String(_)) = schema.get("body") {
        d.warn(REQUESTS, format!("{sp}/body"), "a template body is ignored: the body is given at invoke time");
    }

    if d.errors.len() != before {
        return None;
    }
    Some(TemplateSpec {
        name: name.to_string(),
        method: method?,
        https,
        host: host?,
        path: path?,
        path_tail,
        path_query: path_query?,
        query,
        headers,
        integration,
        max_attempts,
        retry_delay,
    })
}

fn bind_parts(
    parts: &Parts<expr::Expr>,
    c: &TemplateCtx<'_>,
    oauth_iparams: &HashMap<String, String>,
    allow: Allow,
    p: &str,
    d: &mut Diag,
) -> Option<Parts<Bound>> {
    let b = Bindings { iparams: c.iparams, oauth_iparams, endpoint_urls: c.endpoint_urls, allow };
    match parts.bind(&b) {
        Ok(b) => Some(b),
        Err(errs) => {
            for e in errs {
                let msg = match &e {
                    expr::BindError::NotAllowed(Name::AccessToken) => {
                        "access_token may only be used in header values".to_string()
                    }
                    expr::BindError::NotAllowed(Name::OAuthIparam(k)) => {
                        format!("oauth_iparams.{k} may only be used in the host and header values")
                    }
                    _ => e.to_string(),
                };
                d.error(REQUESTS, p, msg);
            }
            None
        }
    }
}

/// Splits a parsed path at the first `?` in its literal text.
fn split_query(parts: Parts<expr::Expr>) -> (Parts<expr::Expr>, Parts<expr::Expr>) {
    let mut path = Vec::new();
    let mut query = Vec::new();
    let mut in_query = false;
    for part in parts.0 {
        match part {
            Part::Lit(s) if !in_query => match s.split_once('?') {
                Some((a, b)) => {
                    in_query = true;
                    if !a.is_empty() {
                        path.push(Part::Lit(a.to_string()));
                    }
                    if !b.is_empty() {
                        query.push(Part::Lit(b.to_string()));
                    }
                }
                None => path.push(Part::Lit(s)),
            },
            p if in_query => query.push(p),
            p => path.push(p),
        }
    }
    (Parts(path), Parts(query))
}

/// Load-time values in a path are trusted (the operator wrote them) but must still be a path.
fn check_path_literals(path: &Parts<Bound>, p: &str, d: &mut Diag) {
    let text: String = path
        .0
        .iter()
        .map(|part| match part {
            Part::Lit(s) => s.as_str(),
            Part::Expr(_) => "x",
        })
        .collect();
    if text.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        d.error(REQUESTS, p, "the path contains a space, a control character or `#`");
    }
    if text.split('/').any(|seg| seg == ".." || seg == ".") {
        d.error(REQUESTS, p, "the path contains a `.` or `..` segment");
    }
}

fn is_framing_header(h: &HeaderName) -> bool {
    use http::header::*;
    [HOST, CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, UPGRADE, TE, TRAILER].contains(h)
        || h.as_str() == "keep-alive"
        || h.as_str() == "proxy-connection"
}

/// Reads oauth_config.json; returns the integrations and, for the legacy shape, the index of the
/// single legacy integration.
fn load_integrations(
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
    let grant = match def.get("grant_type").and_then(Value::as_str) {
        None | Some("authorization_code") => Grant::AuthorizationCode,
        Some("client_credentials") => Grant::ClientCredentials,
        Some(other) => {
            d.error(
                OAUTH,
                format!("{p}/grant_type"),
                format!("`{other}` is not authorization_code or client_credentials"),
            );
            Grant::AuthorizationCode
        }
    };
    let client_id = field("client_id", true, d);
    let client_secret = field("client_secret", true, d);
    let token_url = field("token_url", true, d);
    let authorize_url = field("authorize_url", grant == Grant::AuthorizationCode, d);
    let display_name = def.get("display_name").and_then(Value::as_str).map(str::to_string);
    for (key, url) in [("token_url", &token_url), ("authorize_url", &authorize_url)] {
        if let Some(u) = url {
            check_url(u, upstream.allow_http, &format!("{p}/{key}"), d);
        }
    }
    let token_auth = match def.get("token_auth").and_then(Value::as_str) {
        None | Some("client_secret_post") => TokenAuth::ClientSecretPost,
        Some("client_secret_basic") => TokenAuth::ClientSecretBasic,
        Some(other) => {
            d.error(
                OAUTH,
                format!("{p}/token_auth"),
                format!("`{other}` is not client_secret_post or client_secret_basic"),
            );
            TokenAuth::ClientSecretPost
        }
    };
    let agent = match def.get("token_type").and_then(Value::as_str) {
        None | Some("account") => false,
        Some("agent") => true,
        Some(other) => {
            d.error(OAUTH, format!("{p}/token_type"), format!("`{other}` is not account or agent"));
            false
        }
    };
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
