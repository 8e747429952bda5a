//! `config/requests.json`: each declared template compiled into a [`TemplateSpec`], with its
//! expressions bound to the app's iparams, oauth_iparams and endpoint URLs, and every problem
//! named by file and JSON path.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde_json::Value;

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
    pub(super) upstream: &'a UpstreamConfig,
}

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
