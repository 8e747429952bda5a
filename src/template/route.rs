//! Transparent matching: from (method, host, path) to one template, without scanning templates.
//!
//! Templates are indexed by their literal host (lower-case) and then by a trie of path segments:
//! a literal segment is a hash lookup; a segment of the form `prefix<%= context.k %>suffix`
//! captures one segment as the context value `k`. Literal segments are tried before captures.
//! A template whose host or path cannot be matched this way (an `||` or `+` expression across a
//! segment) can still be invoked by name.

use crate::fasthash::FastMap;
use std::borrow::Cow;

use http::Method;

use super::escape::{decode_segment, split_port};
use super::expr::{Bound, Part, Parts};
use super::{PathTail, TemplateSpec};

/// A matcher for the templates of one app.
#[derive(Debug, Default)]
pub struct Router {
    hosts: FastMap<Box<str>, Node>,
    /// Hosts that capture a context value: few, so they are scanned.
    dynamic: Vec<(SegPat, Node)>,
    /// Templates that cannot be matched transparently (invoke by name only).
    pub unmatchable: Vec<usize>,
}

#[derive(Debug, Default)]
struct Node {
    lit: FastMap<Box<str>, Node>,
    pats: Vec<(SegPat, Node)>,
    /// Path tails: a capture of everything that is left of the path.
    tails: Vec<(TailPat, Vec<Leaf>)>,
    leaves: Vec<Leaf>,
}

/// `prefix<%= context.k %>` ending a path; `leading` when it is the whole path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TailPat {
    prefix: Box<str>,
    leading: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SegPat {
    prefix: Box<str>,
    suffix: Box<str>,
    key: Box<str>,
}

impl SegPat {
    fn capture<'s>(&self, seg: &'s str) -> Option<&'s str> {
        if seg.len() >= self.prefix.len() + self.suffix.len()
            && seg.starts_with(&*self.prefix)
            && seg.ends_with(&*self.suffix)
        {
            Some(&seg[self.prefix.len()..seg.len() - self.suffix.len()])
        } else {
            None
        }
    }
}

#[derive(Debug)]
struct Leaf {
    method: Method,
    template: usize,
    /// The context key of each capture, in order (the host's first, when it captures).
    keys: Box<[Box<str>]>,
}

/// How a host is covered by templates ([`Router::covers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMatch {
    /// A template names the host.
    Literal,
    /// A template's host captures a context value from it: `allow_hosts` decides.
    Captured,
}

/// A matched template and the context values its host and path captured.
#[derive(Debug)]
pub struct Match<'r, 'q> {
    pub template: usize,
    /// Each value decoded, as headers and queries use it.
    pub captures: Vec<(&'r str, Cow<'q, str>)>,
    /// A path tail's capture as the request's path wrote it, when that differs from the decoded
    /// value (it holds percent-encoded bytes): rendered back into the path as it is, so that a
    /// `%2F` stays one (SPEC 2).
    pub tail_as_sent: Option<String>,
}

/// What the search through the path captures: decoded values, and a tail as it was sent.
#[derive(Default)]
struct Caps<'q> {
    values: Vec<Cow<'q, str>>,
    tail_as_sent: Option<String>,
}

enum Seg {
    Lit(String),
    Pat(SegPat),
    Tail(TailPat, Box<str>),
}

/// One segment (or host) as a literal or a single-capture pattern; `None` if neither.
fn classify(parts: &[Part<&Bound>]) -> Option<Seg> {
    match parts {
        [] => Some(Seg::Lit(String::new())),
        [Part::Lit(s)] => Some(Seg::Lit(s.clone())),
        _ => {
            let mut prefix = String::new();
            let mut suffix = String::new();
            let mut key = None;
            for p in parts {
                match (p, &key) {
                    (Part::Lit(s), None) => prefix.push_str(s),
                    (Part::Lit(s), Some(_)) => suffix.push_str(s),
                    (Part::Expr(Bound::Context(k)), None) => key = Some(k.clone()),
                    _ => return None,
                }
            }
            key.map(|key| Seg::Pat(SegPat { prefix: prefix.into(), suffix: suffix.into(), key }))
        }
    }
}

/// Splits a bound path into segments (the text before the leading `/` is dropped).
fn segments(path: &Parts<Bound>) -> Vec<Vec<Part<&Bound>>> {
    let mut segs: Vec<Vec<Part<&Bound>>> = vec![Vec::new()];
    for p in &path.0 {
        match p {
            Part::Lit(s) => {
                let mut pieces = s.split('/');
                if let Some(first) = pieces.next()
                    && !first.is_empty()
                {
                    push_lit(segs.last_mut(), first);
                }
                for piece in pieces {
                    segs.push(Vec::new());
                    if !piece.is_empty() {
                        push_lit(segs.last_mut(), piece);
                    }
                }
            }
            Part::Expr(e) => {
                if let Some(last) = segs.last_mut() {
                    last.push(Part::Expr(e));
                }
            }
        }
    }
    segs.remove(0);
    segs
}

fn push_lit(seg: Option<&mut Vec<Part<&Bound>>>, s: &str) {
    if let Some(seg) = seg {
        seg.push(Part::Lit(s.to_string()));
    }
}

impl Router {
    /// Builds the matcher. Templates are given in load order; on a tie the first wins.
    pub fn new(templates: &[TemplateSpec]) -> Router {
        let mut r = Router::default();
        for (i, t) in templates.iter().enumerate() {
            if !r.insert(i, t) {
                r.unmatchable.push(i);
            }
        }
        r
    }

    fn insert(&mut self, idx: usize, t: &TemplateSpec) -> bool {
        let host_parts: Vec<Part<&Bound>> = t
            .host
            .0
            .iter()
            .map(|p| match p {
                Part::Lit(s) => Part::Lit(s.to_ascii_lowercase()),
                Part::Expr(e) => Part::Expr(e),
            })
            .collect();
        let Some(host) = classify(&host_parts) else {
            return false;
        };
        let mut segs = Vec::new();
        match (t.path_tail, t.path.0.as_slice()) {
            (PathTail::Whole, [Part::Expr(Bound::Context(k))]) => {
                segs.push(Seg::Tail(TailPat { prefix: "".into(), leading: true }, k.clone()));
            }
            (PathTail::Whole, _) => return false,
            _ => {
                for s in segments(&t.path) {
                    match classify(&s) {
                        Some(Seg::Lit(l)) => segs.push(Seg::Lit(decode_segment(&l).into_owned())),
                        Some(p) => segs.push(p),
                        None => return false,
                    }
                }
                if t.path_tail == PathTail::Tail {
                    match segs.pop() {
                        Some(Seg::Pat(p)) if p.suffix.is_empty() => {
                            segs.push(Seg::Tail(TailPat { prefix: p.prefix, leading: false }, p.key));
                        }
                        _ => return false,
                    }
                }
            }
        }
        let mut keys: Vec<Box<str>> = Vec::new();
        let mut node = match host {
            Seg::Tail(..) => return false,
            Seg::Lit(h) => self.hosts.entry(h.into()).or_default(),
            Seg::Pat(p) => {
                keys.push(p.key.clone());
                entry(&mut self.dynamic, p, Node::default)
            }
        };
        for seg in segs {
            node = match seg {
                Seg::Tail(tail, key) => {
                    keys.push(key);
                    add_leaf(entry(&mut node.tails, tail, Vec::new), &t.method, idx, keys);
                    return true;
                }
                Seg::Lit(l) => node.lit.entry(l.into()).or_default(),
                Seg::Pat(p) => {
                    keys.push(p.key.clone());
                    entry(&mut node.pats, p, Node::default)
                }
            };
        }
        add_leaf(&mut node.leaves, &t.method, idx, keys);
        true
    }

    /// How a template of this router can be reached on `host` (`name:port`, lower case), if
    /// one can: a template names it literally, or a template's host captures a context value
    /// from it (the caller then checks the app's `allow_hosts`). A template without a port is
    /// reached on 443 (and 80).
    pub fn covers(&self, host: &str) -> Option<HostMatch> {
        let bare = without_default_port(host);
        if self.hosts.contains_key(host) || bare.is_some_and(|b| self.hosts.contains_key(b)) {
            return Some(HostMatch::Literal);
        }
        let any = |h: &str| self.dynamic.iter().any(|(pat, _)| pat.capture(h).is_some());
        (any(host) || bare.is_some_and(any)).then_some(HostMatch::Captured)
    }

    /// Finds the template for a request. `host` is the request's `host[:port]`, `path` its path
    /// without the query string.
    pub fn find<'r, 'q>(&'r self, method: &Method, host: &str, path: &'q str) -> Option<Match<'r, 'q>> {
        let lower: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let path = path.strip_prefix('/')?;
        // Paths of up to 16 segments are split on the stack.
        let mut short: [&'q str; 16] = [""; 16];
        let mut n = 0;
        for seg in path.split('/') {
            if n == short.len() {
                n += 1;
                break;
            }
            short[n] = seg;
            n += 1;
        }
        let long: Vec<&'q str>;
        let segs: &[&'q str] = if n > short.len() {
            long = path.split('/').collect();
            &long
        } else {
            &short[..n]
        };
        let mut caps = Caps::default();
        if let Some(node) = self.hosts.get(lower.as_ref())
            && let Some(leaf) = node.find(method, segs, &mut caps)
        {
            return Some(leaf.to_match(caps));
        }
        // A request for `host:80` or `host:443` may match a template without a port.
        if let Some(bare) = without_default_port(&lower)
            && let Some(node) = self.hosts.get(bare)
            && let Some(leaf) = node.find(method, segs, &mut caps)
        {
            return Some(leaf.to_match(caps));
        }
        for (pat, node) in &self.dynamic {
            if let Some(v) = pat.capture(&lower) {
                caps.values.clear();
                caps.values.push(Cow::Owned(v.to_string()));
                if let Some(leaf) = node.find(method, segs, &mut caps) {
                    return Some(leaf.to_match(caps));
                }
            }
        }
        None
    }
}

/// `host` without a port of 80 or 443 (the ports a template without one is reached on), when it
/// has one of them.
fn without_default_port(host: &str) -> Option<&str> {
    match split_port(host) {
        (name, Some("80" | "443")) => Some(name),
        _ => None,
    }
}

/// The value under `key` in a short association list, inserted with `make` when absent.
fn entry<K: PartialEq, V>(list: &mut Vec<(K, V)>, key: K, make: impl FnOnce() -> V) -> &mut V {
    let pos = match list.iter().position(|(k, _)| *k == key) {
        Some(pos) => pos,
        None => {
            list.push((key, make()));
            list.len() - 1
        }
    };
    &mut list[pos].1
}

/// Adds a template for `method`; when an earlier template has the same method, host and path,
/// the earlier one wins.
fn add_leaf(leaves: &mut Vec<Leaf>, method: &Method, template: usize, keys: Vec<Box<str>>) {
    if !leaves.iter().any(|l| l.method == *method) {
        leaves.push(Leaf { method: method.clone(), template, keys: keys.into() });
    }
}

impl Leaf {
    fn to_match<'r, 'q>(&'r self, caps: Caps<'q>) -> Match<'r, 'q> {
        Match {
            template: self.template,
            captures: self.keys.iter().map(|k| &**k).zip(caps.values).collect(),
            tail_as_sent: caps.tail_as_sent,
        }
    }
}

impl Node {
    fn find<'q>(&self, method: &Method, segs: &[&'q str], caps: &mut Caps<'q>) -> Option<&Leaf> {
        let Some((first, rest)) = segs.split_first() else {
            return self.leaves.iter().find(|l| l.method == *method);
        };
        let decoded = decode_segment(first);
        if let Some(child) = self.lit.get(decoded.as_ref())
            && let Some(leaf) = child.find(method, rest, caps)
        {
            return Some(leaf);
        }
        for (pat, child) in &self.pats {
            if let Some(v) = pat.capture(&decoded) {
                let v = match &decoded {
                    Cow::Borrowed(_) => {
                        let start = first.len() - v.len() - pat.suffix.len();
                        Cow::Borrowed(&first[start..start + v.len()])
                    }
                    Cow::Owned(_) => Cow::Owned(v.to_string()),
                };
                caps.values.push(v);
                if let Some(leaf) = child.find(method, rest, caps) {
                    return Some(leaf);
                }
                caps.values.pop();
            }
        }
        for (tail, leaves) in &self.tails {
            let Some(leaf) = leaves.iter().find(|l| l.method == *method) else { continue };
            let Some(head) = decoded.strip_prefix(&*tail.prefix) else { continue };
            // `head` then the rest of the segments, joined again by `/`.
            let join = |head: &str, seg: &dyn Fn(&str) -> Cow<'_, str>| {
                let mut v = String::with_capacity(64);
                if tail.leading {
                    v.push('/');
                }
                v.push_str(head);
                for s in rest {
                    v.push('/');
                    v.push_str(&seg(s));
                }
                v
            };
            caps.values.push(Cow::Owned(join(head, &|s| decode_segment(s))));
            if first.contains('%') || rest.iter().any(|s| s.contains('%')) {
                // The same tail as sent, when its prefix is written plainly.
                caps.tail_as_sent = first.strip_prefix(&*tail.prefix).map(|raw| join(raw, &|s| Cow::Borrowed(s)));
            }
            return Some(leaf);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::expr::{self, Allow, Bindings, Syntax};
    use std::time::Duration;

    fn spec(name: &str, method: Method, host: &str, path: &str) -> TemplateSpec {
        let empty = std::collections::HashMap::new();
        let b = Bindings {
            iparams: &empty,
            oauth_iparams: &empty,
            endpoint_urls: &empty,
            allow: Allow { context: true, iparam: true, oauth_iparams: true, access_token: true },
        };
        let bind = |s: &str| expr::parse(s, Syntax::Erb).unwrap().bind(&b).unwrap();
        TemplateSpec {
            name: name.into(),
            method,
            https: true,
            host: bind(host),
            path: bind(path),
            path_tail: PathTail::of(&bind(path)),
            path_query: Parts(vec![]),
            query: vec![],
            headers: vec![],
            sensitive: vec![],
            integration: None,
            max_attempts: 1,
            retry_delay: Duration::ZERO,
        }
    }

    #[test]
    fn literal_beats_capture_and_captures_are_decoded() {
        let ts = vec![
            spec("byId", Method::GET, "api.x.com", "/v1/users/<%= context.id %>"),
            spec("me", Method::GET, "api.x.com", "/v1/users/me"),
            spec("post", Method::POST, "api.x.com", "/v1/users/<%= context.id %>"),
            spec("json", Method::GET, "api.x.com", "/v1/items/<%= context.id %>.json"),
        ];
        let r = Router::new(&ts);
        assert_eq!(r.find(&Method::GET, "api.x.com", "/v1/users/me").unwrap().template, 1);
        let m = r.find(&Method::GET, "API.X.com", "/v1/users/a%20b").unwrap();
        assert_eq!(m.template, 0);
        assert_eq!(m.captures, vec![("id", Cow::Owned::<str>("a b".into()))]);
        assert_eq!(r.find(&Method::POST, "api.x.com", "/v1/users/7").unwrap().template, 2);
        assert!(r.find(&Method::DELETE, "api.x.com", "/v1/users/7").is_none());
        assert!(r.find(&Method::GET, "api.x.com", "/v1/users/7/extra").is_none());
        assert!(r.find(&Method::GET, "other.com", "/v1/users/7").is_none());
        let m = r.find(&Method::GET, "api.x.com", "/v1/items/42.json").unwrap();
        assert_eq!((m.template, m.captures[0].1.as_ref()), (3, "42"));
        assert!(r.find(&Method::GET, "api.x.com:80", "/v1/users/me").is_some());
        assert!(r.find(&Method::GET, "api.x.com:443", "/v1/users/me").is_some(), "http://host:443 (SPEC 2)");
        assert!(r.find(&Method::GET, "api.x.com:8443", "/v1/users/me").is_none());
        assert_eq!(r.covers("api.x.com:443"), Some(HostMatch::Literal));
        assert_eq!(r.covers("api.x.com:8443"), None, "a port no template uses");
        assert_eq!(r.covers("other.com:443"), None);
    }

    #[test]
    fn dynamic_host_captures_and_unmatchable() {
        let ts = vec![
            spec("fd", Method::GET, "<%= context.domain %>", "/api/v2/tickets/<%= context.id %>"),
            spec("odd", Method::GET, "api.x.com", "/a/<%= context.x || 'y' %>"),
        ];
        let r = Router::new(&ts);
        let m = r.find(&Method::GET, "acme.freshdesk.com", "/api/v2/tickets/9").unwrap();
        assert_eq!(m.captures[0], ("domain", Cow::Owned::<str>("acme.freshdesk.com".into())));
        assert_eq!(m.captures[1].1, "9");
        assert_eq!(r.unmatchable, vec![1]);
        assert_eq!(r.covers("acme.freshdesk.com:443"), Some(HostMatch::Captured));
    }

    #[test]
    fn path_tails_capture_the_rest() {
        let ts = vec![
            spec("azure", Method::GET, "graph.x.com", "/v1.0<%= context.path %>"),
            spec("tv", Method::GET, "webapi.tv.com", "<%= context.path %>"),
            spec("fixed", Method::GET, "webapi.tv.com", "/api/v1/ping"),
        ];
        let r = Router::new(&ts);
        let m = r.find(&Method::GET, "graph.x.com", "/v1.0/users/alice@example.com").unwrap();
        assert_eq!((m.template, m.captures[0].1.as_ref()), (0, "/users/alice@example.com"));
        let m = r.find(&Method::GET, "webapi.tv.com", "/api/v1/devices").unwrap();
        assert_eq!((m.template, m.captures[0].1.as_ref()), (1, "/api/v1/devices"));
        assert_eq!(r.find(&Method::GET, "webapi.tv.com", "/api/v1/ping").unwrap().template, 2);
        // Decoded for headers and queries; as sent for the path.
        let m = r.find(&Method::GET, "webapi.tv.com", "/api/v4/projects/group%2Fproject/issues").unwrap();
        assert_eq!(m.captures[0].1, "/api/v4/projects/group/project/issues");
        assert_eq!(m.tail_as_sent.as_deref(), Some("/api/v4/projects/group%2Fproject/issues"));
        let m = r.find(&Method::GET, "graph.x.com", "/v1.0/users/a%2Fb").unwrap();
        assert_eq!(m.tail_as_sent.as_deref(), Some("/users/a%2Fb"));
        assert_eq!(r.find(&Method::GET, "graph.x.com", "/v1.0/users/plain").unwrap().tail_as_sent, None);
        // The tail only applies after its literal prefix.
        assert!(r.find(&Method::GET, "graph.x.com", "/beta/users").is_none());
    }

    #[test]
    fn thousands_of_templates() {
        let ts: Vec<TemplateSpec> = (0..5000)
            .map(|i| {
                spec(
                    &format!("t{i}"),
                    Method::GET,
                    &format!("h{}.x.com", i % 50),
                    &format!("/v1/r{i}/<%= context.id %>"),
                )
            })
            .collect();
        let r = Router::new(&ts);
        let m = r.find(&Method::GET, "h7.x.com", "/v1/r4957/abc").unwrap();
        assert_eq!(m.template, 4957);
    }
}
