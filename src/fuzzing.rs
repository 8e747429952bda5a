//! The parser checks behind the fuzz targets in `fuzz/` (built with the `fuzzing` feature) and
//! the property tests that `cargo test` runs with generated inputs. Each takes arbitrary bytes
//! and panics when a property fails, so a fuzzer and a test report the same finding:
//!
//! - [`request_framing`]: bearerd's HTTP/1.1 request reading against hyper's server
//!   (`http::oracle`): the same requests, or a refusal an RFC section makes right;
//! - [`answer_framing`]: bearerd's reading of an upstream's answer against hyper's client;
//! - [`template`]: the `<%= %>` parser and renderer: what a context value renders to stays in
//!   its position (one path segment, one query value, one header value);
//! - [`loaders`]: the FDK app loader and the `bearerd.yaml` loader never panic, and every error
//!   names its file and a JSON pointer.

use std::collections::HashMap;

use crate::http::oracle;
use crate::template::expr::{self, Allow, Bindings, Syntax};
use crate::template::{Context, PathTail, RequestScope, TemplateSpec};

/// Cut points, then the stream: the first byte says how many cut points (0-3) follow, one byte
/// each.
fn cuts_and_stream(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else { return (Vec::new(), data) };
    let n = usize::from(n % 4).min(rest.len());
    (rest[..n].iter().map(|&b| usize::from(b)).collect(), &rest[n..])
}

/// bearerd and hyper's server read the same request stream alike (see `http::oracle`).
pub fn request_framing(data: &[u8]) {
    let (cuts, stream) = cuts_and_stream(data);
    oracle::check(stream, &cuts);
}

/// bearerd and hyper's client read the same answer alike.
pub fn answer_framing(data: &[u8]) {
    let (cuts, stream) = cuts_and_stream(data);
    if !stream.is_empty() {
        oracle::check_answer(stream, &cuts);
    }
}

/// The parts of a NUL-separated input, as text.
fn parts(data: &[u8], n: usize) -> Vec<String> {
    let mut out: Vec<String> = data.splitn(n, |&b| b == 0).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    out.resize(n, String::new());
    out
}

/// A path template, a query value template and a header value template, then two context
/// values `a` and `b`, separated by NUL bytes. Whatever parses and binds is rendered, and what
/// the context values became must stay where the template put them.
pub fn template(data: &[u8]) {
    let p = parts(data, 5);
    let iparams: HashMap<String, String> = [("x".to_string(), "acme".to_string())].into();
    let empty = HashMap::new();
    let bind = |src: &str| {
        let b = Bindings {
            iparams: &iparams,
            oauth_iparams: &empty,
            endpoint_urls: &empty,
            allow: Allow { context: true, iparam: true, oauth_iparams: false, access_token: true },
        };
        expr::parse(src, Syntax::ErbAndMustache).ok()?.bind(&b).ok()
    };
    let (Some(path), Some(query), Some(header)) = (bind(&p[0]), bind(&p[1]), bind(&p[2])) else { return };
    // The checks are about context values: the template's own text is a path the loader
    // accepts (no `?`, `#`, space or control character; no `.` or `..` segment, with each
    // expression taken as a plain word).
    let text: String = path
        .0
        .iter()
        .map(|part| match part {
            expr::Part::Lit(l) => l.as_str(),
            expr::Part::Expr(_) => "x",
        })
        .collect();
    if !text.starts_with('/') || text.contains(['?', '#']) || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return;
    }
    let dot = |seg: &str| matches!(crate::template::escape::decode_segment(seg).as_ref(), "." | "..");
    if text.split('/').any(dot) || text.parse::<http::uri::PathAndQuery>().is_err() {
        return;
    }
    let spec = TemplateSpec {
        name: "fuzz".into(),
        method: http::Method::GET,
        https: true,
        host: bind("api.test").unwrap_or_else(|| unreachable!()),
        path_tail: PathTail::of(&path),
        path,
        path_query: bind("").unwrap_or_else(|| unreachable!()),
        // Query literals are encoded by the loader, as here.
        query: vec![("q".into(), crate::config::requests::query_encoded(query))],
        headers: vec![(http::HeaderName::from_static("x-h"), header)],
        sensitive: vec![true],
        integration: None,
        max_attempts: 1,
        retry_delay: std::time::Duration::ZERO,
    };
    let mut ctx = Context::default();
    ctx.insert("a", p[3].as_str());
    ctx.insert("b", p[4].as_str());
    let scope = RequestScope { context: &ctx, token: Some("tok") };
    let mut out = String::new();
    if spec.render_path_and_query(&scope, None, &mut out).is_ok() {
        // A valid origin-form target, with exactly one query parameter (`q`) after the path.
        let target: http::uri::PathAndQuery = out.parse().unwrap_or_else(|e| panic!("{out:?} is not a target: {e}"));
        let query = target.query().unwrap_or_else(|| panic!("{out:?} lost its query"));
        assert!(query.starts_with("q=") && !query[2..].contains(['&', '=', '#']), "{out:?}: a value added a parameter");
        // Context values never make a dot segment, and in a template without a path tail they
        // never add a segment.
        let dot = |s: &str| {
            let d = percent_encoding::percent_decode_str(s).decode_utf8_lossy();
            d == "." || d == ".."
        };
        assert!(!target.path().split('/').any(dot), "{out:?} climbs");
        if spec.path_tail == PathTail::None {
            let literal_slashes: usize = spec
                .path
                .0
                .iter()
                .map(|part| match part {
                    expr::Part::Lit(l) => l.matches('/').count(),
                    expr::Part::Expr(_) => 0,
                })
                .sum();
            assert_eq!(target.path().matches('/').count(), literal_slashes, "{out:?}: a value split a segment");
        }
    }
    let _ = spec.render_headers(&scope, |_, v| {
        assert!(!v.as_bytes().iter().any(|&b| b == b'\r' || b == b'\n' || b == 0), "{v:?} breaks a header line");
    });
}

/// A `manifest.json`, `config/requests.json`, `config/oauth_config.json` and `bearerd.yaml`,
/// separated by NUL bytes, loaded from a fresh folder: no panic, and every error names its file
/// and a JSON pointer.
pub fn loaders(data: &[u8]) {
    let p = parts(data, 4);
    let dir = std::env::temp_dir().join(format!("bearerd-fuzz-{}", std::process::id()));
    let app = dir.join("apps/demo");
    let _ = std::fs::create_dir_all(app.join("config"));
    let write = |rel: &str, text: &str| {
        let _ = std::fs::write(app.join(rel), text);
    };
    write("manifest.json", &p[0]);
    write("config/requests.json", &p[1]);
    write("config/oauth_config.json", &p[2]);
    let (_, diag) = crate::config::load_app_only(&app, &Default::default(), &Default::default());
    for e in diag.errors.iter().chain(&diag.warnings) {
        assert!(!e.file.is_empty(), "an error without a file: {e}");
        assert!(e.pointer.is_empty() || e.pointer.starts_with('/'), "not a JSON pointer: {e}");
    }
    let yaml = dir.join("bearerd.yaml");
    let _ = std::fs::write(&yaml, &p[3]);
    if let Err(errors) = crate::config::load_with_env(&yaml, &|_| None) {
        for e in &errors.0 {
            assert!(!e.file.is_empty(), "an error without a file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// Values a hostile application would try in a context.
    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "a/b",
                "..",
                ".",
                "%2F",
                "%2e%2e",
                "?x=1",
                "#f",
                "a&b=c",
                "\r\nX: y",
                "\0",
                "é",
                " ",
                "a%00",
                "/../../etc",
                "",
                "q=1",
                "a\tb",
                "\u{2028}",
            ])
            .prop_map(String::from),
            any::<String>(),
        ]
    }

    fn path_template() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/v1/",
            "<%= context.a %>",
            "<%= a %>",
            "/x",
            "<%= context.a || 'd' %>",
            "<%= iparam.x %>",
            "<%= encode(context.b) %>",
            "<%= context.a + '/' + context.b %>",
            "/",
            ".",
            "{{ b }}",
        ]);
        prop::collection::vec(piece, 1..6).prop_map(|p| format!("/{}", p.concat()))
    }

    fn join(parts: &[&str]) -> Vec<u8> {
        parts.join("\0").into_bytes()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(3000), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn context_values_stay_in_their_position(
            path in path_template(),
            query in prop::sample::select(vec!["<%= context.a %>", "x<%= b %>", "<%= context.a + context.b %>"]),
            header in prop::sample::select(vec!["Bearer <%= access_token %>", "<%= context.a %>", "v <%= b %>"]),
            a in hostile(),
            b in hostile(),
        ) {
            super::template(&join(&[&path, query, header, &a, &b]));
        }

        #[test]
        fn arbitrary_template_text_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
            super::template(&data);
        }

        #[test]
        fn mutated_app_files_load_or_are_refused_precisely(which in 0..4usize, at in any::<usize>(), byte in any::<u8>(), op in 0..3u8) {
            let mut files = [
                r#"{"platform-version": "3.0", "modules": {"common": {"requests": {"get": {}, "post": {"options": {"maxAttempts": 2}}}}}}"#.to_string(),
                r#"{"get": {"schema": {"method": "GET", "host": "api.test", "path": "/v1/<%= context.id %>", "query": {"n": 5}, "headers": {"Authorization": "Bearer <%= access_token %>"}}, "options": {"oauth": "api"}}, "post": {"schema": {"method": "POST", "host": "<%= iparam.domain || 'x.test' %>", "path": "/p?x=1"}}}"#.to_string(),
                r#"{"integrations": {"api": {"client_id": "c", "client_secret": "s", "authorize_url": "https://p.test/a", "token_url": "https://p.test/t", "options": {"scope": "r"}}}}"#.to_string(),
                "apps:\n  - name: demo\n    path: apps/demo\nstore: {file: t.json}\nrefresh: {skew: 30s}\n".to_string(),
            ];
            mutate(&mut files[which], at, byte, op);
            super::loaders(&join(&files.iter().map(String::as_str).collect::<Vec<_>>()));
        }
    }

    /// Changes one byte of `text` (kept valid UTF-8 by replacement).
    fn mutate(text: &mut String, at: usize, byte: u8, op: u8) {
        let mut bytes = std::mem::take(text).into_bytes();
        let at = at % bytes.len().max(1);
        match op {
            0 if !bytes.is_empty() => bytes[at] = byte,
            1 => bytes.insert(at.min(bytes.len()), byte),
            _ => bytes.truncate(at),
        }
        *text = String::from_utf8_lossy(&bytes).into_owned();
    }
}
