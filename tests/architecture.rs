//! The import layers of DESIGN.md, checked on the source: every `crate::<module>` path in
//! `src/` is an edge between top-level modules, and edges only go down the layers
//!
//!   server > admin > {proxy, reload} > state > snapshot > {token, intercept, caller} > upstream
//!   > config > template > {http, jose, metrics, secret, fasthash, reuse}
//!
//! so there is no cycle, token never reaches proxy, server or admin, caller never reaches
//! proxy, server or token, proxy never reaches admin,
//! config and template never reach anything that serves, and `http` knows nothing of bearerd.
//! A new top-level module must be given its layer here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer: an import must go to a strictly lower one.
const LAYERS: &[(&str, u32)] = &[
    // The parser checks behind the fuzz targets (feature `fuzzing`): beside the process, on top.
    ("fuzzing", 10),
    ("server", 9),
    ("admin", 8),
    ("proxy", 7),
    ("reload", 7),
    ("state", 6),
    ("snapshot", 5),
    ("token", 4),
    ("intercept", 4),
    ("caller", 4),
    ("upstream", 3),
    ("config", 2),
    ("template", 1),
    ("http", 0),
    ("jose", 0),
    ("metrics", 0),
    ("secret", 0),
    ("fasthash", 0),
    ("reuse", 0),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments (doc links are not imports).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.trim_start();
            if l.starts_with("//") { "" } else { l.split(" // ").next().unwrap_or(l) }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names: `crate::m`, `crate::{m, n::x}`, and
/// `super::super::m` from a file two levels down.
fn imports(code: &str, depth: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            out.insert(ident(after));
        }
        rest = after;
    }
    if depth >= 2 {
        let mut rest = code;
        while let Some(i) = rest.find("super::super::") {
            let after = &rest[i + "super::super::".len()..];
            out.insert(ident(after));
            rest = after;
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// Every edge between different top-level modules, with a file that makes it.
fn edges() -> BTreeMap<(String, String), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let module = parts[0].trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for to in imports(&code(&text), parts.len()) {
            if to != module {
                edges.entry((module.clone(), to)).or_insert_with(|| rel.display().to_string());
            }
        }
    }
    edges
}

#[test]
fn imports_flow_one_way_down_the_layers() {
    let edges = edges();
    assert!(edges.len() > 20, "the scan found too few edges to be reading the source: {edges:?}");
    let mut wrong = Vec::new();
    for ((from, to), file) in &edges {
        match (layer(from), layer(to)) {
            (Some(a), Some(b)) if b < a => {}
            (None, _) => wrong.push(format!("{file}: module `{from}` has no layer in tests/architecture.rs")),
            (_, None) => wrong.push(format!("{file}: `{to}` is not a top-level module with a layer")),
            _ => wrong.push(format!("{file}: {from} -> {to} goes against the layers")),
        }
    }
    assert!(wrong.is_empty(), "import layers broken:\n{}", wrong.join("\n"));
}

#[test]
fn there_is_no_import_cycle_between_top_level_modules() {
    let edges = edges();
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
    }
    // Depth-first search; a node met again while on the stack closes a cycle.
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = stack.iter().position(|s| *s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n);
            return Some(cycle);
        }
        if !done.insert(n) {
            return None;
        }
        stack.push(n);
        for &m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for &n in graph.keys() {
        let cycle = visit(n, &graph, &mut Vec::new(), &mut done);
        assert!(cycle.is_none(), "import cycle: {}", cycle.unwrap_or_default().join(" -> "));
    }
}

#[test]
fn the_scanner_sees_every_form_of_import() {
    let code = code(
        "use crate::{http::x, metrics};\nlet a = crate::token::Token::new(); // crate::admin\n/// [`crate::server`]\nuse super::super::proxy::X;",
    );
    let found = imports(&code, 2);
    let want: BTreeSet<String> = ["http", "metrics", "token", "proxy"].iter().map(|s| s.to_string()).collect();
    assert_eq!(found, want);
    assert!(!imports(&code, 1).contains("proxy"), "super::super from a top-level file is not crate");
}
