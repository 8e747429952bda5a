//! The compiled request template: what a template of `requests.json` becomes once every
//! load-time value (iparams, oauth_iparams, endpoint URLs) is folded in.

use std::time::Duration;

use http::{HeaderName, Method};

use super::expr::{Bound, Part, Parts};

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
    /// By header: whether its value may carry a secret (it was written with an expression: the
    /// access token, an iparam, a context value; or it is a credential header). Rendered as a
    /// sensitive value: never indexed by HPACK, never shown by `Debug`. A header without an
    /// entry is sensitive.
    pub sensitive: Vec<bool>,
    /// Index into the app's integrations.
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
