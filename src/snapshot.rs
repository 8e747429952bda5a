//! One immutable, compiled configuration: apps, templates, routers, integrations, per-template
//! metric handles and answer header lines. Held in an `ArcSwap`; a request loads it once and
//! keeps it to the end, so a reload never mixes two configurations inside one request.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use prometheus::{Histogram, IntCounter};

use crate::caller::{Callers, Keys};
use crate::config::{AppConfig, Config, IntegrationSpec};
use crate::fasthash::FastMap;
use crate::http::write::put_header;
use crate::metrics::Metrics;
use crate::template::TemplateSpec;
use crate::template::route::Router;
use crate::token::Token;

/// The template that served a request: on every answer.
pub(crate) const X_TEMPLATE: HeaderName = HeaderName::from_static("x-bearerd-template");
/// How many times the request was sent upstream: on every answer.
pub(crate) const X_ATTEMPTS: HeaderName = HeaderName::from_static("x-bearerd-attempts");

/// A compiled configuration.
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) config: Arc<Config>,
    pub(crate) apps: Vec<App>,
    by_name: FastMap<Box<str>, usize>,
    /// Who may use the data plane (empty: anyone who reaches it, on loopback).
    pub(crate) callers: Callers,
}

pub(crate) struct App {
    pub(crate) name: Arc<str>,
    pub config: AppConfig,
    pub by_name: FastMap<Box<str>, usize>,
    pub router: Router,
    /// Integration names, shared with token keys.
    pub integrations: Vec<Arc<str>>,
    /// Per-template handles, resolved here so the hot path does no label hashing for them.
    pub template_metrics: Vec<TemplateMetrics>,
    /// The `x-bearerd-template` value of each template.
    pub template_headers: Vec<http::HeaderValue>,
    /// Per template: [`answer_lines`] for an answer after one attempt.
    pub answer_lines: Vec<Bytes>,
    /// Per template: its headers as last rendered with a token (see [`HeaderCache`]).
    pub header_cache: Vec<HeaderCache>,
}

/// A template's headers rendered with one token, kept for the next request with the same token.
/// Only for templates with an integration whose headers read no `context` value: their headers
/// are then a function of the token alone. The token is held (an `Arc`), and compared by
/// identity: a refreshed, replaced or rotated token is a different `Arc`, so it is never served
/// another token's headers.
pub(crate) struct HeaderCache(Option<ArcSwapOption<RenderedHeaders>>);

pub(crate) struct RenderedHeaders {
    pub token: Arc<Token>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl HeaderCache {
    fn for_template(t: &TemplateSpec) -> HeaderCache {
        let cacheable = t.integration.is_some() && t.headers.iter().all(|(_, v)| !v.uses_context());
        HeaderCache(cacheable.then(ArcSwapOption::empty))
    }

    /// The headers rendered with exactly this token, if they are cached.
    pub(crate) fn get(&self, token: &Arc<Token>) -> Option<Arc<RenderedHeaders>> {
        self.0.as_ref()?.load().as_ref().filter(|r| Arc::ptr_eq(&r.token, token)).cloned()
    }

    /// Keeps `headers` as rendered with `token`, when this template's headers may be cached.
    pub(crate) fn put(&self, token: &Arc<Token>, headers: Vec<(http::HeaderName, http::HeaderValue)>) {
        if let Some(slot) = &self.0 {
            slot.store(Some(Arc::new(RenderedHeaders { token: token.clone(), headers })));
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.0.is_some()
    }
}

/// Status codes whose `requests_total` series a template keeps a handle to; others are looked up.
const COMMON_CODES: [u16; 16] = [200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 409, 422, 429, 500, 502];

/// A template's metric handles. Series for a status code are created on first use.
pub(crate) struct TemplateMetrics {
    duration: Histogram,
    requests: [OnceLock<IntCounter>; COMMON_CODES.len()],
}

impl TemplateMetrics {
    fn new(metrics: &Metrics, app: &str, template: &str) -> Self {
        TemplateMetrics { duration: metrics.duration.with_label_values(&[app, template]), requests: Default::default() }
    }

    /// Counts one request and observes its duration.
    pub(crate) fn record(&self, metrics: &Metrics, app: &str, template: &str, status: http::StatusCode, secs: f64) {
        self.duration.observe(secs);
        let code = status.as_u16();
        match COMMON_CODES.iter().position(|&c| c == code) {
            Some(i) => self.requests[i]
                .get_or_init(|| metrics.requests.with_label_values(&[app, template, status.as_str()]))
                .inc(),
            None => metrics.requests.with_label_values(&[app, template, status.as_str()]).inc(),
        }
    }
}

impl App {
    pub(crate) fn templates(&self) -> &[TemplateSpec] {
        &self.config.fdk.templates
    }

    pub(crate) fn integration(&self, i: usize) -> &Arc<IntegrationSpec> {
        &self.config.fdk.integrations[i]
    }

    pub(crate) fn integration_by_name(&self, name: &str) -> Option<(usize, &Arc<IntegrationSpec>)> {
        self.config.fdk.integrations.iter().enumerate().find(|(_, i)| i.name == name)
    }
}

impl Snapshot {
    /// Compiles `config`; `keys` holds the JWKS of `jwt` callers across snapshots.
    pub(crate) fn compile(config: Config, generation: u64, metrics: &Metrics, keys: &Keys) -> Snapshot {
        let apps: Vec<App> = config
            .apps
            .iter()
            .map(|a| {
                let templates = &a.fdk.templates;
                // Template names are letters, digits, `_` and `-`: always a valid value.
                let template_headers: Vec<_> = templates
                    .iter()
                    .map(|t| http::HeaderValue::from_str(&t.name).unwrap_or(http::HeaderValue::from_static("invalid")))
                    .collect();
                let answer_lines = template_headers.iter().map(|v| answer_lines(v, 1)).collect();
                for i in &a.fdk.integrations {
                    metrics.integration_known(&a.name, &i.name);
                }
                App {
                    name: a.name.as_str().into(),
                    by_name: templates.iter().enumerate().map(|(i, t)| (t.name.as_str().into(), i)).collect(),
                    router: Router::new(templates),
                    integrations: a.fdk.integrations.iter().map(|i| i.name.as_str().into()).collect(),
                    template_metrics: templates
                        .iter()
                        .map(|t| TemplateMetrics::new(metrics, &a.name, &t.name))
                        .collect(),
                    template_headers,
                    answer_lines,
                    header_cache: templates.iter().map(HeaderCache::for_template).collect(),
                    config: a.clone(),
                }
            })
            .collect();
        let by_name = apps.iter().enumerate().map(|(i, a)| (a.name.as_ref().into(), i)).collect();
        let callers = Callers::compile(&config, keys, metrics);
        Snapshot { generation, config: Arc::new(config), apps, by_name, callers }
    }

    pub(crate) fn app(&self, name: &str) -> Option<&App> {
        self.by_name.get(name).map(|&i| &self.apps[i])
    }

    pub(crate) fn app_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The URL that starts authorization of an integration for an account.
    pub(crate) fn authorize_url(&self, app: &str, integration: &str, account: &str) -> String {
        let mut u = format!("{}/auth/authorize/{app}/{integration}", self.config.admin.public_url);
        if account != crate::token::DEFAULT_ACCOUNT {
            u.push_str("?account=");
            let mut enc = String::new();
            let _ = crate::template::escape::query_value(account, &mut enc);
            u.push_str(&enc);
        }
        u
    }
}

/// The `x-bearerd-attempts` value, without allocating for the usual counts.
pub(crate) fn attempts_value(n: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// `x-bearerd-template` and `x-bearerd-attempts` as header lines, for an answer whose other
/// lines pass on raw. `template` is the template's `x-bearerd-template` value.
pub(crate) fn answer_lines(template: &HeaderValue, attempts: u32) -> Bytes {
    let mut w = Vec::with_capacity(64 + template.len());
    put_header(&mut w, X_TEMPLATE.as_str().as_bytes(), template.as_bytes());
    put_header(&mut w, X_ATTEMPTS.as_str().as_bytes(), attempts_value(attempts).as_bytes());
    Bytes::from(w)
}

/// Whether `name` is in bearerd's own namespace (`x-bearerd-*`): an upstream's lines of it never
/// reach the application, which must be able to trust `x-bearerd-template`, `-attempts` and
/// `-error`.
#[inline]
pub(crate) fn is_bearerd_header(name: &[u8]) -> bool {
    const PREFIX: &[u8] = b"x-bearerd-";
    // Most names do not start with x: one comparison for them.
    matches!(name.first(), Some(b'x' | b'X'))
        && name.len() >= PREFIX.len()
        && name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
}
