//! Micro-benches of the per-request hot path: route matching at 10 / 1,000 / 10,000 templates,
//! rendering a template, the token lookup of a fresh token; and of interception: the TLS
//! settings for a CONNECT host minted cold (a new host each time) and taken from the cache.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bearerd::secret::Secret;
use bearerd::template::expr::{self, Allow, Bindings, Parts, Syntax};
use bearerd::template::route::Router;
use bearerd::template::{Context, RequestScope};
use bearerd::template::{PathTail, TemplateSpec};
use bearerd::token::{FileStore, Token, TokenKey, Tokens};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderName, Method};

fn bind(src: &str) -> Parts<expr::Bound> {
    let iparams: HashMap<String, String> = [("tenant".to_string(), "acme".to_string())].into();
    let empty = HashMap::new();
    let b = Bindings {
        iparams: &iparams,
        oauth_iparams: &empty,
        endpoint_urls: &empty,
        allow: Allow { context: true, iparam: true, oauth_iparams: true, access_token: true },
    };
    expr::parse(src, Syntax::Erb).unwrap().bind(&b).unwrap()
}

fn template(i: usize, hosts: usize) -> TemplateSpec {
    let path = bind(&format!("/v1/r{i}/<%= context.id %>/items"));
    TemplateSpec {
        name: format!("t{i}"),
        method: Method::GET,
        https: true,
        host: bind(&format!("h{}.api.example.com", i % hosts)),
        path_tail: PathTail::of(&path),
        path,
        path_query: bind("page=<%= context.page %>"),
        query: vec![("tenant".into(), bind("<%= iparam.tenant %>"))],
        headers: vec![(HeaderName::from_static("authorization"), bind("Bearer <%= access_token %>"))],
        sensitive: vec![true],
        integration: None,
        max_attempts: 1,
        retry_delay: Duration::ZERO,
    }
}

fn route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for n in [10usize, 1_000, 10_000] {
        let templates: Vec<TemplateSpec> = (0..n).map(|i| template(i, (n / 100).max(1))).collect();
        let router = Router::new(&templates);
        let last = n - 1;
        let host = format!("h{}.api.example.com", last % (n / 100).max(1));
        let path = format!("/v1/r{last}/42/items");
        g.bench_function(format!("match_{n}"), |b| {
            b.iter(|| black_box(router.find(&Method::GET, black_box(&host), black_box(&path)).map(|m| m.template)))
        });
    }
    g.finish();
}

fn render(c: &mut Criterion) {
    let t = template(7, 1);
    let mut ctx = Context::default();
    ctx.insert("id", "42");
    ctx.insert("page", "2");
    let scope = RequestScope { context: &ctx, token: Some("tok-abcdef0123456789") };
    let mut out = String::with_capacity(256);
    c.bench_function("render_path_query_headers", |b| {
        b.iter(|| {
            out.clear();
            out.push_str("https://");
            out.push_str(&t.render_host(&scope, &[]).unwrap());
            t.render_path_and_query(&scope, None, &mut out).unwrap();
            let mut n = 0;
            t.render_headers(&scope, |_, v| n += v.len()).unwrap();
            black_box((&out, n));
        })
    });
}

fn token_lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("bearerd-bench-{}", std::process::id()));
    let tokens = rt.block_on(async {
        let store = Arc::new(FileStore::open(&dir.join("t.json"), None).unwrap());
        let tokens = Tokens::open(store).await.unwrap();
        for i in 0..1000 {
            let t = Token::new(Secret::new(format!("at-{i}")));
            tokens.put(&TokenKey::new("app", &format!("i{i}"), "default"), t).await.unwrap();
        }
        tokens
    });
    let key = TokenKey::new("app", "i500", "default");
    c.bench_function("token_lookup_fresh", |b| b.iter(|| black_box(tokens.get(black_box(&key)).map(|t| t.version))));
    let _ = std::fs::remove_dir_all(&dir);
}

fn certificates(c: &mut Criterion) {
    use bearerd::intercept::{Authority, Certificates};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("bearerd-bench-ca-{}", std::process::id()));
    let ca = Arc::new(Authority::open(&bearerd::config::InterceptConfig::beside(&dir)).unwrap());
    let issued = prometheus::IntCounter::new("issued", "certificates minted").unwrap();
    // Cold: a new Certificates (empty cache) for each mint, so the cache's evictions do not count.
    let mut n = 0u64;
    c.bench_function("certificate_mint_cold", |b| {
        b.iter(|| {
            n += 1;
            let certs = Certificates::new(ca.clone(), issued.clone());
            black_box(rt.block_on(certs.server_config(&format!("h{n}.example.com"))).unwrap())
        })
    });
    let certs = Certificates::new(ca.clone(), issued.clone());
    rt.block_on(certs.server_config("api.example.com")).unwrap();
    c.bench_function("certificate_cached", |b| {
        b.iter(|| black_box(rt.block_on(certs.server_config(black_box("api.example.com"))).unwrap()))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, route, render, token_lookup, certificates);
criterion_main!(benches);
