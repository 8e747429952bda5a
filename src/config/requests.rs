//! `config/requests.json`: each declared template compiled into a [`TemplateSpec`], with its
//! expressions bound to the app's iparams, oauth_iparams and endpoint URLs, and every problem
//! named by file and JSON path.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};

use super::fdk::{MANIFEST, OAUTH, REQUESTS};
use super::manifest::Decl;
use super::oauth_config::IntegrationSpec;
use super::{Diag, UpstreamConfig, ptr};
use crate::template::expr::{self, Allow, Bindings, Bound, Name, Part, Parts, Syntax};
use crate::template::{PathTail, TemplateSpec};

/// What compiling a template needs from the rest of the app.
pub(super) struct TemplateCtx<'a> {
    pub(super) iparams: &'a HashMap<String, String>,
    pub(super) secure: &'a HashSet<String>,
    pub(super) endpoint_urls: &'a HashMap<String, String>,
    pub(super) integrations: &'a [Arc<IntegrationSpec>],
    /// Index of the legacy integration, when oauth_config.json is the legacy shape.
    pub(super) legacy: Option<usize>,
    /// oauth_iparams values for templates without an integration.
    pub(super) oauth_flat: &'a HashMap<String, String>,
    pub(super) oauth_present: bool,
    pub(super) oauth_unreadable: bool,
    pub(super) upstream: &'a UpstreamConfig,
}

/// The keys of a template's `schema` (`body` is read only to say it is ignored).
const SCHEMA_KEYS: [&str; 7] = ["method", "protocol", "host", "path", "headers", "query", "body"];

const ALLOW_HOST: Allow = Allow { context: true, iparam: true, oauth_iparams: true, access_token: false };
const ALLOW_PATH: Allow = Allow { context: true, iparam: true, oauth_iparams: false, access_token: false };
const ALLOW_HEADER: Allow = Allow { context: true, iparam: true, oauth_iparams: true, access_token: true };

/// Compiles one template of requests.json; `None` (with its problems in `d`) when it cannot be.
pub(super) fn compile_template(
    name: &str,
    def: &Value,
    decl: &Decl,
    c: &TemplateCtx<'_>,
    d: &mut Diag,
) -> Option<TemplateSpec> {
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
    for key in schema.keys().filter(|k| !SCHEMA_KEYS.contains(&k.as_str())) {
        d.error(
            REQUESTS,
            format!("{sp}/{}", ptr(key)),
            format!("unknown key `{key}` (a schema has method, protocol, host, path, headers and query)"),
        );
    }
    let options = Options::read(def, decl, &base, d);
    let integration = options.integration(name, &base, c, d);
    let method = method(schema, &sp, d);
    let https = https(schema, &sp, c.upstream, d);
    let oauth_iparams: HashMap<String, String> = match integration {
        Some(i) => c.integrations[i].oauth_iparams.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect(),
        None => c.oauth_flat.clone(),
    };
    let b = Binder { c, oauth_iparams: &oauth_iparams };
    let host = b.host(schema, &sp, d);
    let (path, path_tail, path_query) = b.path(schema, &sp, d);
    let query = b.query(schema, &sp, d);
    let (headers, sensitive, uses_token) = b.headers(schema, &sp, d);
    if let Some(hp) = uses_token.filter(|_| options.oauth.is_none() && !options.is_oauth) {
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
        sensitive,
        integration,
        max_attempts: options.max_attempts,
        retry_delay: options.retry_delay,
    })
}

/// A template's options: its own, with the manifest declaration's merged over them key by key.
struct Options {
    /// `oauth`: the integration's name, and where it was written.
    oauth: Option<(String, &'static str, String)>,
    is_oauth: bool,
    /// Where `isOAuth` was written.
    is_oauth_at: Option<(&'static str, String)>,
    max_attempts: u8,
    retry_delay: Duration,
}

impl Options {
    fn read(def: &Map<String, Value>, decl: &Decl, base: &str, d: &mut Diag) -> Options {
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
        let mut out =
            Options { oauth: None, is_oauth: false, is_oauth_at: None, max_attempts: 1, retry_delay: Duration::ZERO };
        for (k, v, file, p) in options {
            match k.as_str() {
                "oauth" => match v {
                    Value::String(s) => out.oauth = Some((s, file, p)),
                    Value::Null => {}
                    _ => d.error(file, p, "must be the name of an integration in config/oauth_config.json"),
                },
                "isOAuth" => match v {
                    Value::Bool(b) => {
                        out.is_oauth = b;
                        out.is_oauth_at = Some((file, p));
                    }
                    _ => d.error(file, p, "must be true or false"),
                },
                "maxAttempts" => match v.as_u64() {
                    Some(n @ 1..=5) => out.max_attempts = n as u8,
                    _ => d.error(file, p, format!("must be a whole number from 1 to 5, not {v}")),
                },
                "retryDelay" => match v.as_u64() {
                    Some(n @ 0..=1500) => out.retry_delay = Duration::from_millis(n),
                    _ => d.error(file, p, format!("must be a whole number of milliseconds from 0 to 1500, not {v}")),
                },
                _ => {} // Unknown option keys (timeout, per_page, ...) are accepted and ignored.
            }
        }
        out
    }

    /// The integration `oauth` or `isOAuth` selects, by index.
    fn integration(&self, name: &str, base: &str, c: &TemplateCtx<'_>, d: &mut Diag) -> Option<usize> {
        if c.oauth_unreadable {
            return None;
        }
        match (&self.oauth, self.is_oauth) {
            (Some((_, file, p)), true) => {
                d.error(file, p, "options.oauth and options.isOAuth cannot both be set");
                None
            }
            (Some((iname, file, p)), false) => {
                if !c.oauth_present {
                    let m = format!(
                        "template \"{name}\": options.oauth \"{iname}\" has no integration ({OAUTH} is missing)"
                    );
                    d.error(file, p, m);
                    return None;
                }
                if c.legacy.is_some() {
                    d.error(
                        file,
                        p,
                        format!(
                            "template \"{name}\": options.oauth \"{iname}\" names an integration, but {OAUTH} has the legacy shape without `integrations` (use isOAuth)"
                        ),
                    );
                    return None;
                }
                let found = c.integrations.iter().position(|i| &i.name == iname);
                if found.is_none() {
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
                found
            }
            (None, true) => {
                let (file, p) = self.is_oauth_at.clone().unwrap_or((REQUESTS, format!("{base}/options/isOAuth")));
                if !c.oauth_present {
                    d.error(file, p, format!("template \"{name}\": isOAuth is true but {OAUTH} is missing"));
                    None
                } else if let Some(l) = c.legacy {
                    Some(l)
                } else if c.integrations.len() == 1 {
                    // A 3.x config with a single integration: isOAuth can only mean that one.
                    Some(0)
                } else {
                    if !c.integrations.is_empty() {
                        d.error(
                            file,
                            p,
                            format!("template \"{name}\": isOAuth needs the legacy {OAUTH}; with `integrations`, name one in options.oauth"),
                        );
                    }
                    None
                }
            }
            (None, false) => None,
        }
    }
}

/// `schema.method`.
fn method(schema: &Map<String, Value>, sp: &str, d: &mut Diag) -> Option<Method> {
    match schema.get("method").and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref() {
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
    }
}

/// `schema.protocol`: whether the template is https (the default).
fn https(schema: &Map<String, Value>, sp: &str, upstream: &UpstreamConfig, d: &mut Diag) -> bool {
    match schema.get("protocol") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("https") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("http") => {
            if !upstream.allow_http {
                d.error(REQUESTS, format!("{sp}/protocol"), "http is refused unless upstream.allow_http is true");
            }
            false
        }
        Some(v) => {
            d.error(REQUESTS, format!("{sp}/protocol"), format!("must be \"https\" or \"http\", not {v}"));
            true
        }
    }
}

/// Parses and binds a template's expressions, with the app's values and the oauth_iparams of
/// the template's integration.
struct Binder<'a> {
    c: &'a TemplateCtx<'a>,
    oauth_iparams: &'a HashMap<String, String>,
}

impl Binder<'_> {
    fn bind(&self, src: &str, allow: Allow, p: &str, d: &mut Diag) -> Option<Parts<Bound>> {
        match expr::parse(src, Syntax::Erb) {
            Ok(parsed) => bind_parts(&parsed, self.c, self.oauth_iparams, allow, p, d),
            Err(e) => {
                d.error(REQUESTS, p, e);
                None
            }
        }
    }

    /// `schema.host`: a host name with an optional port once its load-time values are in.
    fn host(&self, schema: &Map<String, Value>, sp: &str, d: &mut Diag) -> Option<Parts<Bound>> {
        let hp = format!("{sp}/host");
        let Some(Value::String(h)) = schema.get("host") else {
            d.error(REQUESTS, hp, "is required and must be a string");
            return None;
        };
        let bound = self.bind(h.trim(), ALLOW_HOST, &hp, d);
        if let Some(lit) = bound.as_ref().and_then(|b| b.as_literal())
            && !crate::template::escape::valid_authority(lit)
        {
            d.error(REQUESTS, &hp, format!("`{lit}` is not a host name with an optional :port (no scheme, no path)"));
        }
        bound
    }

    /// `schema.path`, how its last value is escaped, and the query string written inside it.
    fn path(
        &self,
        schema: &Map<String, Value>,
        sp: &str,
        d: &mut Diag,
    ) -> (Option<Parts<Bound>>, PathTail, Option<Parts<Bound>>) {
        let path_src = match schema.get("path") {
            None | Some(Value::Null) => "/".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                d.error(REQUESTS, format!("{sp}/path"), format!("must be a string, not {v}"));
                "/".to_string()
            }
        };
        let pp = format!("{sp}/path");
        let parts = match expr::parse(&path_src, Syntax::Erb) {
            Ok(parts) => parts,
            Err(e) => {
                d.error(REQUESTS, &pp, e);
                return (None, PathTail::None, None);
            }
        };
        let whole = matches!(parts.0.as_slice(), [Part::Expr(_)]);
        if !whole && !matches!(parts.0.first(), Some(Part::Lit(s)) if s.starts_with('/')) {
            d.error(REQUESTS, &pp, "must start with `/`");
        }
        let (path_parts, query_parts) = split_query(parts);
        let path = bind_parts(&path_parts, self.c, self.oauth_iparams, ALLOW_PATH, &pp, d);
        if let Some(path) = &path {
            check_path_literals(path, &pp, d);
            for n in path_parts.names() {
                if let Name::Iparam(k) = n
                    && self.c.secure.contains(k)
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
        (path, tail, bind_parts(&query_parts, self.c, self.oauth_iparams, ALLOW_PATH, &pp, d))
    }

    /// `schema.query`: keys query-encoded, values bound.
    fn query(&self, schema: &Map<String, Value>, sp: &str, d: &mut Diag) -> Vec<(String, Parts<Bound>)> {
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
                    if let Some(b) = self.bind(&src, ALLOW_PATH, &qp, d) {
                        let mut key = String::new();
                        let _ = crate::template::escape::query_value(k, &mut key);
                        query.push((key, query_encoded(b)));
                    }
                }
            }
            Some(_) => d.error(REQUESTS, format!("{sp}/query"), "must be an object"),
        }
        query
    }

    /// `schema.headers`, and where the first one that reads `access_token` is.
    #[allow(clippy::type_complexity)]
    fn headers(
        &self,
        schema: &Map<String, Value>,
        sp: &str,
        d: &mut Diag,
    ) -> (Vec<(HeaderName, Parts<Bound>)>, Vec<bool>, Option<String>) {
        let mut headers = Vec::new();
        let mut sensitive = Vec::new();
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
                    let Some(b) = self.bind(src, ALLOW_HEADER, &hp, d) else { continue };
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
                    sensitive.push(crate::template::is_sensitive(&hn, src));
                    headers.push((hn, b));
                }
            }
            Some(_) => d.error(REQUESTS, format!("{sp}/headers"), "must be an object of strings"),
        }
        (headers, sensitive, uses_token)
    }
}

/// A query value with its literal text (and folded iparams) query-encoded at load, as the
/// platform encodes query values: `"a b & c"` cannot add a parameter or break the target.
pub(crate) fn query_encoded(value: Parts<Bound>) -> Parts<Bound> {
    let parts = value
        .0
        .into_iter()
        .map(|part| match part {
            Part::Lit(text) => {
                let mut encoded = String::new();
                let _ = crate::template::escape::query_value(&text, &mut encoded);
                Part::Lit(encoded)
            }
            expr => expr,
        })
        .collect();
    Parts(parts)
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
    let dot = |seg: &str| matches!(crate::template::escape::decode_segment(seg).as_ref(), "." | "..");
    if text.split('/').any(dot) {
        d.error(REQUESTS, p, "the path contains a `.` or `..` segment (or one percent-encoded)");
    }
}

fn is_framing_header(h: &HeaderName) -> bool {
    use http::header::*;
    [HOST, CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, UPGRADE, TE, TRAILER].contains(h)
        || h.as_str() == "keep-alive"
        || h.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct World {
        iparams: HashMap<String, String>,
        secure: HashSet<String>,
        none: HashMap<String, String>,
        integrations: Vec<Arc<IntegrationSpec>>,
        upstream: UpstreamConfig,
    }

    fn world() -> World {
        World {
            iparams: [("tenant".to_string(), "acme".to_string()), ("key".to_string(), "k".to_string())].into(),
            secure: ["key".to_string()].into(),
            none: HashMap::new(),
            integrations: Vec::new(),
            upstream: UpstreamConfig::default(),
        }
    }

    fn compile(w: &World, def: Value, decl_options: Option<Value>) -> (Option<TemplateSpec>, Diag) {
        let c = TemplateCtx {
            iparams: &w.iparams,
            secure: &w.secure,
            endpoint_urls: &w.none,
            integrations: &w.integrations,
            legacy: None,
            oauth_flat: &w.none,
            oauth_present: false,
            oauth_unreadable: false,
            upstream: &w.upstream,
        };
        let decl = Decl {
            file: MANIFEST,
            pointer: "/modules/common/requests/t".into(),
            options: decl_options.map(|o| o.as_object().unwrap().clone()),
        };
        let mut d = Diag::default();
        (compile_template("t", &def, &decl, &c, &mut d), d)
    }

    #[test]
    fn a_template_compiles_with_its_values_folded_in() {
        let def = json!({"schema": {"method": "post", "host": "<%= iparam.tenant %>.example.com",
            "path": "/v1/<%= context.id %>?a=1", "query": {"n": 5}, "headers": {"X-Key": "<%= iparam.key %>"}},
            "options": {"maxAttempts": 2, "retryDelay": 100, "timeout": 5}});
        let (t, d) = compile(&world(), def, Some(json!({"maxAttempts": 3})));
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let t = t.unwrap();
        assert_eq!((t.method.as_str(), t.https, t.host.as_literal()), ("POST", true, Some("acme.example.com")));
        assert_eq!(t.max_attempts, 3, "the manifest's options win key by key");
        assert_eq!(t.retry_delay, Duration::from_millis(100));
        assert_eq!(t.context_keys(), ["id"]);
        assert_eq!((t.query.len(), t.headers.len(), t.integration), (1, 1, None));
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let def = json!({"schema": {"method": "FETCH", "protocol": "http", "host": "https://x.com/p", "pathh": "/",
            "path": "v1", "headers": {"Content-Length": "1", "Authorization": "Bearer <%= access_token %>"}},
            "options": {"maxAttempts": 9, "oauth": "gh"}});
        let (t, d) = compile(&world(), def, None);
        assert!(t.is_none());
        let pointers: Vec<&str> = d.errors.iter().map(|e| e.pointer.as_str()).collect();
        for p in [
            "/t/schema/pathh",
            "/t/schema/method",
            "/t/schema/protocol",
            "/t/schema/host",
            "/t/schema/path",
            "/t/schema/headers/Content-Length",
            "/t/options/maxAttempts",
            "/t/options/oauth",
        ] {
            assert!(pointers.contains(&p), "{p} in {pointers:?}");
        }
    }

    #[test]
    fn a_secure_iparam_in_a_path_is_accepted_with_a_warning() {
        let def = json!({"schema": {"method": "GET", "host": "api.example.com", "path": "/k/<%= iparam.key %>"}});
        let (t, d) = compile(&world(), def, None);
        assert!(t.is_some() && d.errors.is_empty());
        assert!(d.warnings[0].message.contains("secure iparam \"key\""), "{:?}", d.warnings);
    }

    #[test]
    fn headers_that_carry_a_value_are_rendered_sensitive() {
        let def = json!({"schema": {"method": "GET", "host": "api.example.com",
            "headers": {"X-Key": "<%= iparam.key %>", "Accept": "application/json", "Cookie": "literal=1",
                "X-Who": "<%= context.who %>"}}});
        let (t, d) = compile(&world(), def, None);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let ctx = crate::template::Context::default();
        let scope = crate::template::RequestScope { context: &ctx, token: None };
        let mut seen = Vec::new();
        t.unwrap().render_headers(&scope, |n, v| seen.push((n.to_string(), v))).unwrap();
        for (name, value) in &seen {
            // Never indexed by HPACK (h2 honours the flag), and Debug hides the value.
            let expect = name != "accept";
            assert_eq!(value.is_sensitive(), expect, "{name}");
            assert_eq!(format!("{value:?}") == "Sensitive", expect, "{name}: {value:?}");
        }
        assert_eq!(seen.len(), 4);
    }
}
