//! The `<%= expr %>` language of FDK templates: parsed once at load time, evaluated per request.
//!
//! Grammar (whitespace between tokens is free):
//! ```text
//! expr   := concat ('||' concat)*
//! concat := atom ('+' atom)*
//! atom   := 'string' | "string" | name | encode '(' expr ')' | '(' expr ')'
//! name   := ident ('.' ident)*
//! ```
//! Parsing turns a template string into [`Parts`]; [`Parts::bind`] resolves every name against
//! the load-time values (iparams, oauth_iparams, endpoint URLs) and the names the position allows,
//! folding everything known at load time into literals. What is left for request time is only
//! `context.*` and `access_token`.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;

/// A name as written in a template, before binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Context(String),
    Iparam(String),
    OAuthIparam(String),
    EndpointUrl(String),
    AccessToken,
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Context(k) => write!(f, "context.{k}"),
            Name::Iparam(k) => write!(f, "iparam.{k}"),
            Name::OAuthIparam(k) => write!(f, "oauth_iparams.{k}"),
            Name::EndpointUrl(k) => write!(f, "current_host.endpoint_urls.{k}"),
            Name::AccessToken => f.write_str("access_token"),
        }
    }
}

/// A parsed expression. `Name` is resolved by [`Parts::bind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Lit(Box<str>),
    Name(Name),
    Concat(Vec<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Encode(Box<Expr>),
}

/// A bound expression: only request-time names remain.
#[derive(Clone, PartialEq, Eq)]
pub enum Bound {
    Lit(Box<str>),
    Context(Box<str>),
    AccessToken,
    Concat(Box<[Bound]>),
    Or(Box<Bound>, Box<Bound>),
    Encode(Box<Bound>),
}

impl std::fmt::Debug for Bound {
    // Literals may hold iparam values (secrets); show the shape only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::Lit(_) => f.write_str("Lit(..)"),
            Bound::Context(k) => write!(f, "Context({k})"),
            Bound::AccessToken => f.write_str("AccessToken"),
            Bound::Concat(v) => f.debug_tuple("Concat").field(v).finish(),
            Bound::Or(a, b) => f.debug_tuple("Or").field(a).field(b).finish(),
            Bound::Encode(e) => f.debug_tuple("Encode").field(e).finish(),
        }
    }
}

/// One piece of a template string.
#[derive(Clone, PartialEq, Eq)]
pub enum Part<E> {
    Lit(String),
    Expr(E),
}

impl<E: std::fmt::Debug> std::fmt::Debug for Part<E> {
    // Literal text may hold folded iparam values (secrets): never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Lit(s) => write!(f, "Lit({} bytes)", s.len()),
            Part::Expr(e) => f.debug_tuple("Expr").field(e).finish(),
        }
    }
}

/// A template string split into literal text and expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts<E>(pub Vec<Part<E>>);

/// Which syntaxes a template string may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `<%= %>` only (requests.json): `{{` is literal text.
    Erb,
    /// `<%= %>` and `{{ }}` (oauth_config.json URLs and credentials).
    ErbAndMustache,
}

/// Values known at load time and the names a position may use.
pub struct Bindings<'a> {
    pub iparams: &'a HashMap<String, String>,
    pub oauth_iparams: &'a HashMap<String, String>,
    pub endpoint_urls: &'a HashMap<String, String>,
    pub allow: Allow,
}

/// Names a template position may refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allow {
    pub context: bool,
    pub iparam: bool,
    pub oauth_iparams: bool,
    pub access_token: bool,
}

/// A problem found while binding: which name, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindError {
    NotAllowed(Name),
    NoValue(Name),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::NotAllowed(n) => write!(f, "`{n}` cannot be used here"),
            BindError::NoValue(Name::Iparam(k)) => write!(
                f,
                "iparam \"{k}\" is referenced but has no value (set apps[].iparams.{k} or a default_value in config/iparams.json)"
            ),
            BindError::NoValue(Name::OAuthIparam(k)) => {
                write!(f, "oauth_iparam \"{k}\" is referenced but has no value (set apps[].oauth_iparams)")
            }
            BindError::NoValue(Name::EndpointUrl(k)) => {
                write!(f, "endpoint URL \"{k}\" is referenced but has no value (set apps[].endpoint_urls.{k})")
            }
            BindError::NoValue(n) => write!(f, "`{n}` has no value"),
        }
    }
}

/// Parses a template string. The error says what is wrong at which byte offset.
pub fn parse(input: &str, syntax: Syntax) -> Result<Parts<Expr>, String> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = input;
    loop {
        let erb = rest.find("<%=");
        let mustache = match syntax {
            Syntax::ErbAndMustache => rest.find("{{"),
            Syntax::Erb => None,
        };
        let (start, open_len, close) = match (erb, mustache) {
            (Some(e), Some(m)) if m < e => (m, 2, "}}"),
            (Some(e), _) => (e, 3, "%>"),
            (None, Some(m)) => (m, 2, "}}"),
            (None, None) => break,
        };
        lit.push_str(&rest[..start]);
        let body_start = start + open_len;
        let Some(end) = rest[body_start..].find(close) else {
            return Err(format!(
                "unterminated expression at offset {}: missing `{close}`",
                input.len() - rest.len() + start
            ));
        };
        let body = &rest[body_start..body_start + end];
        let expr = parse_expr(body).map_err(|e| format!("in `{}`: {e}", body.trim()))?;
        if !lit.is_empty() {
            parts.push(Part::Lit(std::mem::take(&mut lit)));
        }
        parts.push(Part::Expr(expr));
        rest = &rest[body_start + end + close.len()..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(Parts(parts))
}

fn parse_expr(src: &str) -> Result<Expr, String> {
    let mut p = Parser { src, pos: 0 };
    let e = p.or()?;
    p.ws();
    if p.pos != src.len() {
        return Err(format!("unexpected `{}`", &src[p.pos..]));
    }
    Ok(e)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(c) = self.src[self.pos..].chars().next() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.src[self.pos..].starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.concat()?;
        while self.eat("||") {
            let right = self.concat()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn concat(&mut self) -> Result<Expr, String> {
        let first = self.atom()?;
        let mut items = vec![first];
        while self.eat("+") {
            items.push(self.atom()?);
        }
        Ok(if items.len() == 1 { items.pop().unwrap_or(Expr::Lit("".into())) } else { Expr::Concat(items) })
    }

    fn atom(&mut self) -> Result<Expr, String> {
        self.ws();
        let rest = &self.src[self.pos..];
        let Some(c) = rest.chars().next() else {
            return Err("expression is empty or ends early".into());
        };
        if c == '\'' || c == '"' {
            let Some(end) = rest[1..].find(c) else {
                return Err("unterminated string literal".into());
            };
            self.pos += end + 2;
            return Ok(Expr::Lit(rest[1..1 + end].into()));
        }
        if c == '(' {
            self.pos += 1;
            let e = self.or()?;
            if !self.eat(")") {
                return Err("missing `)`".into());
            }
            return Ok(e);
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == '$') {
            return Err(format!("unexpected `{c}`"));
        }
        let len = rest
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '$' || ch == '.'))
            .unwrap_or(rest.len());
        let path = &rest[..len];
        self.pos += len;
        if path == "encode" && self.eat("(") {
            let e = self.or()?;
            if !self.eat(")") {
                return Err("missing `)` after encode(".into());
            }
            return Ok(Expr::Encode(Box::new(e)));
        }
        resolve_name(path).map(Expr::Name)
    }
}

fn resolve_name(path: &str) -> Result<Name, String> {
    let segs: Vec<&str> = path.split('.').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(format!("malformed name `{path}`"));
    }
    let rest = || segs[1..].join(".");
    Ok(match segs.as_slice() {
        ["access_token"] => Name::AccessToken,
        [key] => Name::Context((*key).to_string()),
        ["context", _, ..] => Name::Context(rest()),
        ["iparam", _, ..] => Name::Iparam(rest()),
        ["oauth_iparams", _, ..] => Name::OAuthIparam(rest()),
        ["current_host", "endpoint_urls", key] => Name::EndpointUrl((*key).to_string()),
        _ => return Err(format!("unknown name `{path}`")),
    })
}

impl Parts<Expr> {
    /// Every name the template refers to, in order.
    pub fn names(&self) -> Vec<&Name> {
        fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a Name>) {
            match e {
                Expr::Lit(_) => {}
                Expr::Name(n) => out.push(n),
                Expr::Concat(v) => v.iter().for_each(|e| walk(e, out)),
                Expr::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::Encode(e) => walk(e, out),
            }
        }
        let mut out = Vec::new();
        for p in &self.0 {
            if let Part::Expr(e) = p {
                walk(e, &mut out);
            }
        }
        out
    }

    /// Resolves every name; returns every problem, not only the first.
    pub fn bind(&self, b: &Bindings<'_>) -> Result<Parts<Bound>, Vec<BindError>> {
        let mut errors = Vec::new();
        let mut out: Vec<Part<Bound>> = Vec::new();
        for p in &self.0 {
            let bound = match p {
                Part::Lit(s) => Part::Lit(s.clone()),
                Part::Expr(e) => match fold(bind_expr(e, b, &mut errors, false)) {
                    Bound::Lit(s) => Part::Lit(s.into()),
                    e => Part::Expr(e),
                },
            };
            match (out.last_mut(), bound) {
                (Some(Part::Lit(prev)), Part::Lit(s)) => prev.push_str(&s),
                (_, bound) => out.push(bound),
            }
        }
        if errors.is_empty() { Ok(Parts(out)) } else { Err(errors) }
    }
}

/// Binds one expression. With `optional`, a load-time name without a value is empty instead of
/// an error: that is how `oauth_iparams.x || 'default'` reads when `x` was not supplied.
fn bind_expr(e: &Expr, b: &Bindings<'_>, errors: &mut Vec<BindError>, optional: bool) -> Bound {
    let lookup = |map: &HashMap<String, String>, k: &str, allowed: bool, n: &Name, errors: &mut Vec<BindError>| {
        if !allowed {
            errors.push(BindError::NotAllowed(n.clone()));
            return Bound::Lit("".into());
        }
        match map.get(k) {
            Some(v) => Bound::Lit(v.as_str().into()),
            None if optional => Bound::Lit("".into()),
            None => {
                errors.push(BindError::NoValue(n.clone()));
                Bound::Lit("".into())
            }
        }
    };
    match e {
        Expr::Lit(s) => Bound::Lit(s.clone()),
        Expr::Name(n) => match n {
            Name::Context(k) => {
                if b.allow.context {
                    Bound::Context(k.as_str().into())
                } else {
                    errors.push(BindError::NotAllowed(n.clone()));
                    Bound::Lit("".into())
                }
            }
            Name::AccessToken => {
                if b.allow.access_token {
                    Bound::AccessToken
                } else {
                    errors.push(BindError::NotAllowed(n.clone()));
                    Bound::Lit("".into())
                }
            }
            Name::Iparam(k) => lookup(b.iparams, k, b.allow.iparam, n, errors),
            Name::OAuthIparam(k) => lookup(b.oauth_iparams, k, b.allow.oauth_iparams, n, errors),
            // Endpoint URLs are installation facts like iparams.
            Name::EndpointUrl(k) => lookup(b.endpoint_urls, k, b.allow.iparam, n, errors),
        },
        Expr::Concat(v) => Bound::Concat(v.iter().map(|e| bind_expr(e, b, errors, optional)).collect()),
        Expr::Or(x, y) => {
            Bound::Or(Box::new(bind_expr(x, b, errors, true)), Box::new(bind_expr(y, b, errors, optional)))
        }
        Expr::Encode(x) => Bound::Encode(Box::new(bind_expr(x, b, errors, optional))),
    }
}

/// Folds sub-expressions whose value is known at load time into literals.
fn fold(e: Bound) -> Bound {
    match e {
        Bound::Concat(v) => {
            let v: Vec<Bound> = v.into_vec().into_iter().map(fold).collect();
            if v.iter().all(|e| matches!(e, Bound::Lit(_))) {
                let mut s = String::new();
                for e in &v {
                    if let Bound::Lit(l) = e {
                        s.push_str(l);
                    }
                }
                Bound::Lit(s.into())
            } else {
                Bound::Concat(v.into())
            }
        }
        Bound::Or(a, b) => match (fold(*a), fold(*b)) {
            (Bound::Lit(a), _) if !a.is_empty() => Bound::Lit(a),
            (Bound::Lit(_), b) => b,
            (a, b) => Bound::Or(Box::new(a), Box::new(b)),
        },
        Bound::Encode(x) => match fold(*x) {
            Bound::Lit(s) => Bound::Lit(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()).into()),
            x => Bound::Encode(Box::new(x)),
        },
        e => e,
    }
}

/// What a request supplies at render time.
pub trait Scope {
    /// The value of `context.<key>`; `None` when the request did not supply it.
    fn context(&self, key: &str) -> Option<&str>;
    /// The access token, when the template's integration has one.
    fn access_token(&self) -> Option<&str>;
    /// `context.<key>` as a request's path wrote it, when it was captured from a path tail.
    fn tail_as_sent(&self, _key: &str) -> Option<&str> {
        None
    }
}

impl Bound {
    /// Evaluates the expression. A missing value renders as an empty string.
    pub(crate) fn eval<'a>(&'a self, scope: &'a dyn Scope) -> Cow<'a, str> {
        match self {
            Bound::Lit(s) => Cow::Borrowed(s),
            Bound::Context(k) => Cow::Borrowed(scope.context(k).unwrap_or("")),
            Bound::AccessToken => Cow::Borrowed(scope.access_token().unwrap_or("")),
            Bound::Concat(v) => {
                let mut s = String::new();
                for e in v.iter() {
                    s.push_str(&e.eval(scope));
                }
                Cow::Owned(s)
            }
            Bound::Or(a, b) => {
                let v = a.eval(scope);
                if v.is_empty() { b.eval(scope) } else { v }
            }
            Bound::Encode(x) => Cow::Owned(base64::engine::general_purpose::STANDARD.encode(x.eval(scope).as_bytes())),
        }
    }

    /// True when the expression reads `context.*`.
    pub(crate) fn uses_context(&self) -> bool {
        match self {
            Bound::Lit(_) | Bound::AccessToken => false,
            Bound::Context(_) => true,
            Bound::Concat(v) => v.iter().any(Bound::uses_context),
            Bound::Or(a, b) => a.uses_context() || b.uses_context(),
            Bound::Encode(x) => x.uses_context(),
        }
    }

    /// True when the expression reads `access_token`.
    pub(crate) fn uses_token(&self) -> bool {
        match self {
            Bound::Lit(_) | Bound::Context(_) => false,
            Bound::AccessToken => true,
            Bound::Concat(v) => v.iter().any(Bound::uses_token),
            Bound::Or(a, b) => a.uses_token() || b.uses_token(),
            Bound::Encode(x) => x.uses_token(),
        }
    }

    /// Names of the context keys the expression reads.
    pub fn context_keys<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Bound::Lit(_) | Bound::AccessToken => {}
            Bound::Context(k) => out.push(k),
            Bound::Concat(v) => v.iter().for_each(|e| e.context_keys(out)),
            Bound::Or(a, b) => {
                a.context_keys(out);
                b.context_keys(out);
            }
            Bound::Encode(x) => x.context_keys(out),
        }
    }
}

impl Parts<Bound> {
    /// The text when the template has no request-time parts.
    pub fn as_literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    pub(crate) fn uses_context(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Expr(e) if e.uses_context()))
    }

    pub(crate) fn uses_token(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Part::Expr(e) if e.uses_token()))
    }

    pub fn context_keys<'a>(&'a self, out: &mut Vec<&'a str>) {
        for p in &self.0 {
            if let Part::Expr(e) = p {
                e.context_keys(out);
            }
        }
    }

    /// Renders into `out`, passing each expression's value through `escape`.
    pub(crate) fn render_into<E>(
        &self,
        scope: &dyn Scope,
        out: &mut String,
        mut escape: impl FnMut(&str, &mut String) -> Result<(), E>,
    ) -> Result<(), E> {
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Expr(e) => escape(&e.eval(scope), out)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(Vec<(&'static str, &'static str)>, Option<&'static str>);
    impl Scope for S {
        fn context(&self, key: &str) -> Option<&str> {
            self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        }
        fn access_token(&self) -> Option<&str> {
            self.1
        }
    }

    fn bind_all(src: &str, iparams: &[(&str, &str)]) -> Result<Parts<Bound>, Vec<BindError>> {
        let ip: HashMap<String, String> = iparams.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let empty = HashMap::new();
        parse(src, Syntax::ErbAndMustache).unwrap().bind(&Bindings {
            iparams: &ip,
            oauth_iparams: &ip,
            endpoint_urls: &empty,
            allow: Allow { context: true, iparam: true, oauth_iparams: true, access_token: true },
        })
    }

    fn render(src: &str, iparams: &[(&str, &str)], scope: &S) -> String {
        let mut out = String::new();
        bind_all(src, iparams)
            .unwrap()
            .render_into::<()>(scope, &mut out, |v, o| {
                o.push_str(v);
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn spacing_variants_all_parse() {
        let s = S(vec![], Some("T"));
        for src in ["Bearer <%= access_token %>", "Bearer <%=access_token%>", "Bearer <%= access_token%>"] {
            assert_eq!(render(src, &[], &s), "Bearer T");
        }
        assert_eq!(render("bearer <%= access_token %>", &[], &s), "bearer T");
        assert_eq!(render("token <%= access_token %>", &[], &s), "token T");
        assert_eq!(render("Token token=<%= access_token %>", &[], &s), "Token token=T");
    }

    #[test]
    fn encode_concat_and_fallback_fold_at_load() {
        let p = bind_all("Basic <%= encode(iparam.api_key + ':x') %>", &[("api_key", "k")]).unwrap();
        assert_eq!(p.as_literal(), Some("Basic azp4"));
        let p = bind_all("<%= oauth_iparams.client_id || 'literal' %>", &[]).unwrap();
        assert_eq!(p.as_literal(), Some("literal"), "the left of || may be missing");
        assert!(bind_all("<%= oauth_iparams.a || oauth_iparams.b %>", &[]).is_err(), "the last fallback may not");
        assert!(bind_all("x<%= oauth_iparams.client_id %>", &[]).is_err());
        let p = bind_all("<%= oauth_iparams.client_id || 'literal' %>", &[("client_id", "")]).unwrap();
        assert_eq!(p.as_literal(), Some("literal"));
        let p = bind_all("<%= oauth_iparams.client_id || 'literal' %>", &[("client_id", "mine")]).unwrap();
        assert_eq!(p.as_literal(), Some("mine"));
    }

    #[test]
    fn mustache_only_where_allowed_and_curly_text_is_literal() {
        let p = bind_all("https://{{ oauth_iparams.domain }}/t", &[("domain", "x.io")]).unwrap();
        assert_eq!(p.as_literal(), Some("https://x.io/t"));
        let erb = parse("/v1/{conversation_id}/{{x}}", Syntax::Erb).unwrap();
        assert_eq!(erb.0, vec![Part::Lit("/v1/{conversation_id}/{{x}}".into())]);
    }

    #[test]
    fn bare_names_are_context_and_missing_context_is_empty() {
        let s = S(vec![("workspace_id", "42")], None);
        assert_eq!(render("/w/<%= workspace_id %>/<%= context.other %>", &[], &s), "/w/42/");
        let s2 = S(vec![("a", "")], None);
        assert_eq!(render("<%= context.a || context.b || 'z' %>", &[], &s2), "z");
        assert_eq!(render("<%= encode(context.a + ':x') %>", &[], &S(vec![("a", "u")], None)), "dTp4");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse("<%= access_token", Syntax::Erb).unwrap_err().contains("unterminated"));
        assert!(parse("<%= foo.bar %>", Syntax::Erb).unwrap_err().contains("unknown name `foo.bar`"));
        assert!(parse("<%= 'a' + %>", Syntax::Erb).is_err());
        assert!(parse("<%= encode(x %>", Syntax::Erb).unwrap_err().contains("missing `)`"));
        assert!(parse("<%= a b %>", Syntax::Erb).unwrap_err().contains("unexpected"));
        let ip = HashMap::new();
        let err = parse("<%= access_token %>/<%= iparam.k %>", Syntax::Erb)
            .unwrap()
            .bind(&Bindings {
                iparams: &ip,
                oauth_iparams: &ip,
                endpoint_urls: &ip,
                allow: Allow { context: true, iparam: true, oauth_iparams: false, access_token: false },
            })
            .unwrap_err();
        assert_eq!(err, vec![BindError::NotAllowed(Name::AccessToken), BindError::NoValue(Name::Iparam("k".into()))]);
    }

    #[test]
    fn endpoint_urls_and_debug_hides_literals() {
        let p = parse("<%= current_host.endpoint_urls.freshworks_crm %>", Syntax::Erb).unwrap();
        assert_eq!(p.names(), vec![&Name::EndpointUrl("freshworks_crm".into())]);
        let b = bind_all("Token <%= context.x %> secret-value", &[]).unwrap();
        assert!(!format!("{b:?}").contains("secret-value"));
    }
}
