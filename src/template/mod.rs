//! Request templates: the compiled template ([`spec`]), the expression language ([`expr`]),
//! escaping per position ([`escape`]), matching a request to a template ([`route`]) and
//! rendering a template into the parts of an upstream request (this file). Templates know
//! nothing of configuration files or of serving.

pub mod escape;
pub mod expr;
pub mod route;
pub mod spec;

use std::borrow::Cow;

use http::{HeaderName, HeaderValue};

use escape::{HostPattern, Refused};
use expr::Scope;
pub use spec::{PathTail, TemplateSpec};

/// The request-time values a template is rendered with.
#[derive(Debug, Default)]
pub struct Context<'a> {
    pub values: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// A value a transparent match captured from a path tail, as the request's path wrote it
    /// (see [`route::Match::tail_as_sent`]).
    pub tail_as_sent: Option<(Cow<'a, str>, String)>,
}

impl<'a> Context<'a> {
    /// Takes in the values a transparent match captured from the host and path (and a path
    /// tail as the request wrote it); the matched template's index.
    pub fn capture<'r: 'a, 'q: 'a>(&mut self, m: route::Match<'r, 'q>) -> usize {
        if let (Some(raw), Some((k, _))) = (m.tail_as_sent, m.captures.last()) {
            self.tail_as_sent = Some((Cow::Borrowed(*k), raw));
        }
        for (k, v) in m.captures {
            self.insert(k, v);
        }
        m.template
    }

    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) {
        let key = key.into();
        match self.values.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value.into(),
            None => self.values.push((key, value.into())),
        }
    }
}

/// A context plus the access token: what expressions read at request time.
pub struct RequestScope<'a> {
    pub context: &'a Context<'a>,
    pub token: Option<&'a str>,
}

impl Scope for RequestScope<'_> {
    fn context(&self, key: &str) -> Option<&str> {
        self.context.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }
    fn access_token(&self) -> Option<&str> {
        self.token
    }
    fn tail_as_sent(&self, key: &str) -> Option<&str> {
        self.context.tail_as_sent.as_ref().filter(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Why a template could not be rendered for a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("host value refused: {0}")]
    Host(Refused),
    #[error("the rendered host is not a valid host name")]
    InvalidHost,
    #[error("host {0} is not in the app's allow_hosts")]
    HostNotAllowed(String),
    #[error("header {name}: {reason}")]
    Header { name: HeaderName, reason: Refused },
    #[error("header {0}: the value is not a valid header value")]
    HeaderInvalid(HeaderName),
    #[error("path value refused: {0}")]
    Path(Refused),
    #[error("the rendered path and query are longer than {0} bytes")]
    TooLong(usize),
}

/// Whether a template header, as written, may carry a secret: an expression in its value (the
/// access token, an installation value, a context value), or a credential header's name.
pub fn is_sensitive(name: &HeaderName, source: &str) -> bool {
    use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
    *name == AUTHORIZATION || *name == PROXY_AUTHORIZATION || *name == COOKIE || source.contains("<%")
}

/// The longest path and query a template renders (servers refuse longer request lines, and
/// `http::Uri` cannot hold more than 64 KiB).
pub const MAX_TARGET: usize = 32 * 1024;

impl TemplateSpec {
    /// Renders `host[:port]`. A host that takes a context value must match `allow_hosts`.
    pub fn render_host<'s>(&'s self, scope: &dyn Scope, allow: &[HostPattern]) -> Result<Cow<'s, str>, RenderError> {
        if let Some(lit) = self.host.as_literal() {
            return Ok(Cow::Borrowed(lit));
        }
        let mut out = String::new();
        self.host.render_into(scope, &mut out, escape::host_value).map_err(RenderError::Host)?;
        out.make_ascii_lowercase();
        if !escape::valid_authority(&out) {
            return Err(RenderError::InvalidHost);
        }
        if self.host.uses_context() && !allow.iter().any(|p| p.matches(&out)) {
            return Err(RenderError::HostNotAllowed(out));
        }
        Ok(Cow::Owned(out))
    }

    /// Renders the path and query into `out`. `request_query` is the query string a transparent
    /// request carried: it comes first, and template parameters whose key it already has are
    /// left out.
    pub fn render_path_and_query(
        &self,
        scope: &dyn Scope,
        request_query: Option<&str>,
        out: &mut String,
    ) -> Result<(), RenderError> {
        let path_start = out.len();
        match self.path_tail {
            PathTail::None => self.path.render_into(scope, out, escape::path_segment),
            PathTail::Tail | PathTail::Whole => {
                // The last expression is the tail; any before it are single segments.
                let leading = self.path_tail == PathTail::Whole;
                let exprs = self.path.0.iter().filter(|p| matches!(p, expr::Part::Expr(_))).count();
                let mut i = 0;
                let as_sent = match self.path.0.iter().rev().find(|p| matches!(p, expr::Part::Expr(_))) {
                    Some(expr::Part::Expr(expr::Bound::Context(k))) => scope.tail_as_sent(k),
                    _ => None,
                };
                self.path.render_into(scope, out, |v, out| {
                    i += 1;
                    match (i == exprs, as_sent) {
                        (true, Some(raw)) => escape::path_as_sent(raw, leading, out),
                        (true, None) => escape::path_tail(v, leading, out),
                        (false, _) => escape::path_segment(v, out),
                    }
                })
            }
        }
        .map_err(RenderError::Path)?;
        if self.path.uses_context() {
            escape::no_dot_segments(&out[path_start..]).map_err(RenderError::Path)?;
        }
        let mut first = true;
        let mut sep = |out: &mut String| {
            out.push(if first { '?' } else { '&' });
            first = false;
        };
        if let Some(q) = request_query.filter(|q| !q.is_empty()) {
            sep(out);
            out.push_str(q);
        }
        let has_key =
            |key: &str| request_query.is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some(key)));
        if !self.path_query.0.is_empty() {
            let mut rendered = String::new();
            let _ = self.path_query.render_into(scope, &mut rendered, escape::query_value);
            let kept: Vec<&str> = rendered
                .split('&')
                .filter(|kv| !kv.is_empty() && !has_key(kv.split('=').next().unwrap_or("")))
                .collect();
            if !kept.is_empty() {
                sep(out);
                out.push_str(&kept.join("&"));
            }
        }
        for (key, value) in &self.query {
            if has_key(key) {
                continue;
            }
            sep(out);
            out.push_str(key);
            out.push('=');
            let _ = value.render_into(scope, out, escape::query_value);
        }
        if out.len() - path_start > MAX_TARGET {
            return Err(RenderError::TooLong(MAX_TARGET));
        }
        Ok(())
    }

    /// Renders every template header, refusing values that would inject a header. A value that
    /// carries a token or an installation value, and any credential header, is marked sensitive:
    /// never indexed by HPACK on an HTTP/2 upstream, never shown by `Debug`.
    pub fn render_headers(
        &self,
        scope: &dyn Scope,
        mut emit: impl FnMut(&HeaderName, HeaderValue),
    ) -> Result<(), RenderError> {
        let mut buf = String::new();
        for (i, (name, value)) in self.headers.iter().enumerate() {
            buf.clear();
            value
                .render_into(scope, &mut buf, escape::header_value)
                .map_err(|reason| RenderError::Header { name: name.clone(), reason })?;
            let mut v =
                HeaderValue::from_bytes(buf.trim().as_bytes()).map_err(|_| RenderError::HeaderInvalid(name.clone()))?;
            if self.sensitive.get(i).copied().unwrap_or(true) {
                v.set_sensitive(true);
            }
            emit(name, v);
        }
        Ok(())
    }
}
