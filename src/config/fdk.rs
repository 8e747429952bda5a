//! An FDK app folder: `manifest.json` ([`super::manifest`]), `config/requests.json`
//! ([`super::requests`]), `config/oauth_config.json` ([`super::oauth_config`]) and
//! `config/iparams.json` ([`super::iparams`]), read as they are committed (BOMs, CRLF, the 2.3
//! and 3.x shapes) and compiled into [`TemplateSpec`]s and [`IntegrationSpec`]s. Policy for real
//! apps: SPEC 1.4.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::oauth_config::IntegrationSpec;
use super::{AppValues, Diag, UpstreamConfig, iparams, manifest, oauth_config, requests, scalar_text};
use crate::template::TemplateSpec;

pub(super) const MANIFEST: &str = "manifest.json";
pub(super) const REQUESTS: &str = "config/requests.json";
pub(super) const OAUTH: &str = "config/oauth_config.json";
pub(super) const IPARAMS: &str = "config/iparams.json";

/// The integration name given to a legacy (top-level) oauth_config.json.
pub(super) const LEGACY_INTEGRATION: &str = "default";

pub(super) const MAX_TEMPLATES: usize = 100;
pub(super) const MAX_INTEGRATIONS: usize = 3;

/// A compiled FDK app.
#[derive(Debug, Clone, Default)]
pub struct FdkApp {
    pub platform_version: Option<String>,
    /// Declared templates only: an undeclared one cannot be invoked.
    pub templates: Vec<TemplateSpec>,
    pub integrations: Vec<Arc<IntegrationSpec>>,
    /// The installation parameter values, less those `iparams.json` marks secure: what a
    /// serverless handler's `args.iparams` holds (SPEC 8).
    pub iparams: std::collections::BTreeMap<String, String>,
    /// Files that were read.
    pub files: Vec<PathBuf>,
}

/// Reads a JSON file; `Ok(None)` when it does not exist. A BOM is skipped.
fn read_json(dir: &Path, file: &str, d: &mut Diag, files: &mut Vec<PathBuf>) -> Option<Value> {
    let path = dir.join(file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            d.error(file, "", format!("cannot read: {e}"));
            return None;
        }
    };
    files.push(path);
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    match serde_json::from_slice(text) {
        Ok(v) => Some(v),
        Err(e) => {
            d.error(file, "", format!("not valid JSON: {e}"));
            None
        }
    }
}

/// Loads one app folder. Problems go to `d`; the returned app is only meaningful when `d` has
/// no errors.
pub(crate) fn load_app(dir: &Path, values: &AppValues, upstream: &UpstreamConfig, d: &mut Diag) -> FdkApp {
    let mut app = FdkApp::default();
    if !dir.is_dir() {
        d.error(&dir.display().to_string(), "", "is not a folder (an FDK app folder with manifest.json)");
        return app;
    }
    let Some(manifest) = read_json(dir, MANIFEST, d, &mut app.files) else {
        if !d.errors.iter().any(|e| e.file == MANIFEST) {
            d.error(MANIFEST, "", "is missing: an FDK app folder needs manifest.json");
        }
        return app;
    };
    let requests = read_json(dir, REQUESTS, d, &mut app.files);
    let oauth = read_json(dir, OAUTH, d, &mut app.files);
    let iparams_decl = read_json(dir, IPARAMS, d, &mut app.files);

    app.platform_version = manifest.get("platform-version").and_then(scalar_text);
    let declared = manifest::declared_templates(&manifest, d);

    let (iparams, secure) = iparams::values(iparams_decl.as_ref(), &values.iparams, d);
    app.iparams = iparams.iter().filter(|(k, _)| !secure.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();

    // Integrations first: templates refer to them.
    let (integrations, legacy) = oauth_config::load_integrations(oauth.as_ref(), values, upstream, d);
    app.integrations = integrations.into_iter().map(Arc::new).collect();

    let Some(requests) = requests else {
        // A requests.json that is there but unreadable has its own error: no follow-on ones.
        if !dir.join(REQUESTS).exists() {
            for (name, p) in &declared {
                d.error(p.file, &p.pointer, format!("template \"{name}\" is declared but {REQUESTS} is missing"));
            }
        }
        return app;
    };
    let Value::Object(requests) = requests else {
        d.error(REQUESTS, "", "must be an object of templates");
        return app;
    };
    if requests.len() > MAX_TEMPLATES {
        d.error(REQUESTS, "", format!("has {} templates; at most {MAX_TEMPLATES} are allowed", requests.len()));
    }
    for (name, p) in &declared {
        if !requests.contains_key(name) {
            d.error(p.file, &p.pointer, format!("template \"{name}\" is declared but {REQUESTS} does not define it"));
        }
    }
    let ctx = requests::TemplateCtx {
        iparams: &iparams,
        secure: &secure,
        endpoint_urls: &values.endpoint_urls,
        integrations: &app.integrations,
        legacy,
        oauth_flat: &values.oauth_iparams,
        oauth_present: oauth.is_some(),
        // There, but not readable (its own error says why): templates naming it add none.
        oauth_unreadable: oauth.is_none() && dir.join(OAUTH).exists(),
        upstream,
    };
    let mut undeclared = Vec::new();
    for (name, def) in &requests {
        let Some(decl) = declared.iter().find(|(n, _)| n == name) else {
            undeclared.push(name.as_str());
            continue;
        };
        if let Some(t) = requests::compile_template(name, def, &decl.1, &ctx, d) {
            app.templates.push(t);
        }
    }
    if !undeclared.is_empty() {
        d.warn(
            REQUESTS,
            "",
            format!("not declared in {MANIFEST}, so they cannot be invoked: {}", undeclared.join(", ")),
        );
    }
    app
}
