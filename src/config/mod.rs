//! Configuration: `bearerd.yaml` ([`file`]) and the FDK app folders it names ([`fdk`]: one file
//! per FDK file kind, [`manifest`], [`requests`], [`oauth_config`], [`iparams`]), read,
//! validated and converted into the types below. Loading never panics and never stops at the
//! first problem: it returns every error, each with its file and JSON path. The compiled
//! template type is [`crate::template::TemplateSpec`]; configuration knows nothing that serves.

pub(crate) mod callers;
pub(crate) mod fdk;
pub(crate) mod file;
pub mod install;
mod iparams;
mod manifest;
mod oauth_config;
pub(crate) mod requests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;
use crate::template::escape::HostPattern;

pub use callers::{CallerConfig, TlsListen};
pub use fdk::FdkApp;
pub use install::{AppSource, Saved};
pub use oauth_config::{Grant, IntegrationSpec, TokenAuth};

/// One problem in the configuration, located by file and JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The app the file belongs to, if any.
    pub app: Option<String>,
    /// The file, as the user would name it (relative to the app folder for app files).
    pub file: String,
    /// JSON pointer (`/name/options/oauth`), empty for the whole file.
    pub pointer: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(app) = &self.app {
            write!(f, "app {app}: ")?;
        }
        write!(f, "{}: ", self.file)?;
        if !self.pointer.is_empty() {
            write!(f, "{}: ", self.pointer)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found while loading; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors and warnings for one file scope.
#[derive(Debug, Default)]
pub struct Diag {
    pub app: Option<String>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl Diag {
    pub(crate) fn for_app(app: &str) -> Self {
        Diag { app: Some(app.to_string()), ..Default::default() }
    }

    pub fn error(&mut self, file: &str, pointer: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            app: self.app.clone(),
            file: file.to_string(),
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, file: &str, pointer: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            app: self.app.clone(),
            file: file.to_string(),
            pointer: pointer.into(),
            message: message.into(),
        });
    }
}

/// Escapes one JSON pointer token.
pub(crate) fn ptr(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Where a configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A `bearerd.yaml`.
    File(PathBuf),
    /// One FDK app folder, `bearerd run --app` (SPEC 8).
    App(Box<AppSource>),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (None for `check --app`): a reload reads it again.
    pub source: Option<Source>,
    pub listen: SocketAddr,
    /// The data listener's connection cap; `None`: derived from the open-file limit at start.
    pub max_connections: Option<usize>,
    pub admin: AdminConfig,
    pub apps: Vec<AppConfig>,
    pub store: StoreConfig,
    pub refresh: RefreshConfig,
    pub upstream: UpstreamConfig,
    pub reload_watch: bool,
    pub shutdown: ShutdownConfig,
    pub intercept: InterceptConfig,
    /// The data plane over TLS as well (SPEC 2.2).
    pub listen_tls: Option<TlsListen>,
    /// Who may use the data plane; empty: anyone who reaches it (loopback only).
    pub callers: Vec<CallerConfig>,
    /// The key that encrypts tokens at rest.
    pub store_key: Option<StoreKey>,
    /// Every file read to build this configuration (what a watcher must watch).
    pub files: Vec<PathBuf>,
    pub warnings: Vec<ConfigError>,
}

/// The 32-byte key that encrypts tokens at rest. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// A key given as base64 of 32 bytes.
    pub(crate) fn from_base64(text: &str) -> Result<StoreKey, String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "store.encryption_key must be base64 of 32 random bytes".to_string())?;
        let n = bytes.len();
        bytes.try_into().map(StoreKey).map_err(|_| format!("store.encryption_key must be 32 bytes; it has {n}"))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(...)")
    }
}

/// What SIGTERM does (SPEC 4): `/readyz` answers 503 at once and the data listener keeps
/// serving for `drain_delay`; then it stops accepting and in-flight requests get `grace`.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
    pub drain_delay: Duration,
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { drain_delay: Duration::from_secs(5), grace: Duration::from_secs(30) }
    }
}

/// HTTPS through CONNECT (SPEC 2.1): the CA that signs the certificates bearerd presents, and
/// the hosts CONNECT may reach as a blind tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptConfig {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// Whether bearerd creates the CA when neither file exists (the default location); a CA
    /// the configuration names must exist.
    pub generate: bool,
    /// Hosts (`api.example.com`, `*.example.com`, with `:port` for a port other than 443).
    pub tunnel_hosts: Vec<HostPattern>,
}

impl InterceptConfig {
    /// The default: a CA generated in `dir` (beside the token file).
    pub fn beside(dir: &Path) -> InterceptConfig {
        InterceptConfig {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            generate: true,
            tunnel_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Base URL without a trailing slash.
    pub public_url: String,
    pub token: Option<Secret>,
    /// The admin listener's connection cap.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub path: PathBuf,
    pub allow_hosts: Vec<HostPattern>,
    pub fdk: FdkApp,
    /// Required values the app still lacks (`run --app` before `/custom_configs` is filled in):
    /// while there are any, it serves no request and starts no authorization.
    pub missing: Vec<String>,
    /// The fields whose values the configuration itself gives (`bearerd.yaml`, the command
    /// line), by [`install::field_id`]: `/custom_configs` shows them as given, not to be changed.
    pub given: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    File(PathBuf),
    /// The URL (it may hold a password) and the key prefix.
    Redis {
        url: Secret,
        prefix: String,
    },
}

#[derive(Debug, Clone)]
pub struct RefreshConfig {
    pub skew: Duration,
    pub on_status: Vec<u16>,
    pub replay_buffer: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub allow_http: bool,
    pub allow_private_ips: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            ca_file: None,
            allow_http: false,
            allow_private_ips: false,
        }
    }
}

/// Installation values for one app, as given in bearerd.yaml or on the `check --app` line.
#[derive(Debug, Clone, Default)]
pub struct AppValues {
    pub iparams: HashMap<String, String>,
    /// Values for every integration.
    pub oauth_iparams: HashMap<String, String>,
    /// Values for one integration, over the shared ones.
    pub oauth_iparams_by_integration: HashMap<String, HashMap<String, String>>,
    pub endpoint_urls: HashMap<String, String>,
    /// By integration: `client_id` and `client_secret` where `oauth_config.json` leaves them
    /// empty (saved through `/custom_configs`).
    pub clients: HashMap<String, BTreeMap<String, String>>,
}

/// Loads and validates bearerd.yaml and every app it names.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &|k| std::env::var(k).ok())
}

/// [`load`] with an explicit environment (tests).
pub fn load_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    load_file(path, env, &Saved::default())
}

/// Loads a configuration from where it comes from, with the installation values saved through
/// `/custom_configs` under the given ones.
pub fn load_source(source: &Source, saved: &Saved) -> Result<Config, ConfigErrors> {
    match source {
        Source::File(path) => load_file(path, &|k| std::env::var(k).ok(), saved),
        Source::App(app) => load_app_source(app, saved),
    }
}

fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>, saved: &Saved) -> Result<Config, ConfigErrors> {
    let shown = path.display().to_string();
    let mut d = Diag::default();
    let (value, env_errors) = match read_yaml(path, env) {
        Ok(v) => v,
        Err(e) => {
            d.error(&shown, "", e);
            return Err(ConfigErrors(d.errors));
        }
    };
    for (p, m) in env_errors {
        d.error(&shown, p, m);
    }
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let state = default_state_dir(&base, env);
    let mut config = load_value(d, &shown, &base, &state, value, saved)?;
    config.files.insert(0, path.to_path_buf());
    config.source = Some(Source::File(path.to_path_buf()));
    Ok(config)
}

/// `run --app`: the app folder with FDK's defaults. Required values it still lacks are given a
/// placeholder and named in the app's `missing`, so that it starts and `/custom_configs` can ask
/// for them.
fn load_app_source(app: &AppSource, saved: &Saved) -> Result<Config, ConfigErrors> {
    // The given values, the saved ones under them, placeholders for what is still missing: all
    // in the YAML this stands for, but client IDs and secrets, which no bearerd.yaml field holds
    // and so go in as saved values.
    let mut values = app.values.clone();
    if let Some(s) = saved.apps.get(&app.name()) {
        s.under(&mut values);
    }
    let missing = install::fill_unset(&install::form(&app.dir), &mut values);
    let clients = install::SavedApp {
        clients: values.clients.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ..Default::default()
    };
    let clients = Saved { apps: [(app.name(), clients)].into() };
    let shown = app.dir.display().to_string();
    let mut config = load_value(Diag::default(), &shown, &app.dir, &app.state_dir(), app.as_yaml(&values), &clients)?;
    if let Some(a) = config.apps.first_mut() {
        a.missing = missing;
        a.given = install::given_ids(&app.values);
    }
    config.source = Some(Source::App(Box::new(app.clone())));
    Ok(config)
}

/// A configuration from its `bearerd.yaml` as a value (its `${NAME}`s expanded; their problems
/// already in `d`); relative paths are relative to `base`.
/// The variable Lambda sets for its extensions and runtimes (the Extensions API's `host:port`):
/// where it is set, bearerd runs as a Lambda extension (SPEC 7).
pub const LAMBDA_RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";
/// The configuration in Lambda when `$BEARERD_CONFIG` is not set (a layer's `bearerd/` folder).
pub const LAMBDA_CONFIG: &str = "/opt/bearerd/bearerd.yaml";
/// The only writable folder of a Lambda sandbox is `/tmp`: bearerd's default state goes here.
pub const LAMBDA_STATE_DIR: &str = "/tmp/bearerd";

/// The folder of bearerd's own state where the configuration names none (a token file, the
/// intercept CA, values saved through `/custom_configs`): `.bearerd/` beside `bearerd.yaml`, or
/// in an AWS Lambda sandbox, where only `/tmp` is writable, `/tmp/bearerd` (SPEC 7).
fn default_state_dir(base: &Path, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if env(LAMBDA_RUNTIME_API).is_some_and(|v| !v.trim().is_empty()) {
        PathBuf::from(LAMBDA_STATE_DIR)
    } else {
        base.join(".bearerd")
    }
}

/// `base`: the folder relative paths are read from; `state`: [`default_state_dir`].
fn load_value(
    mut d: Diag,
    shown: &str,
    base: &Path,
    state: &Path,
    mut value: serde_json::Value,
    saved: &Saved,
) -> Result<Config, ConfigErrors> {
    let shown = shown.to_string();
    let fail = |d: Diag| Err(ConfigErrors(d.errors));
    // Every problem, not only the first: each one found is reported, its key taken out, and
    // the file read again (a key that cannot be taken out, such as a missing `apps`, ends it).
    let parsed: file::FileConfig = loop {
        match serde_path_to_error::deserialize::<_, file::FileConfig>(value.clone()) {
            Ok(c) => break c,
            Err(e) => {
                let segments: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|s| match s {
                        serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                        serde_path_to_error::Segment::Unknown => None,
                    })
                    .collect();
                let pointer: String = segments.iter().map(|s| format!("/{}", ptr(s))).collect();
                d.error(&shown, &pointer, file::explain(&pointer, &e.into_inner().to_string()));
                let removed = match segments.split_last() {
                    Some((last, parent)) if d.errors.len() < 100 => {
                        let parent: String = parent.iter().map(|s| format!("/{}", ptr(s))).collect();
                        match value.pointer_mut(&parent) {
                            Some(serde_json::Value::Object(m)) => m.remove(last).is_some(),
                            _ => false,
                        }
                    }
                    _ => false,
                };
                if !removed {
                    return fail(d);
                }
            }
        }
    };
    // The checks below run even after type errors (each bad key was taken out and its default
    // used), so that every problem is reported at once.
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base.to_path_buf() };
    let mut files = Vec::new();

    let listen = parse_addr(&mut d, &shown, "/listen", &parsed.listen);
    let admin_listen = parse_addr(&mut d, &shown, "/admin/listen", &parsed.admin.listen);
    let public_url = parsed.admin.public_url.trim_end_matches('/').to_string();
    match public_url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {}
        _ => d.error(&shown, "/admin/public_url", format!("`{public_url}` is not an http(s) URL")),
    }
    let token = parsed.admin.token.filter(|t| !t.is_empty()).map(Secret::new);
    if let (Some(addr), None) = (admin_listen, &token)
        && !addr.ip().is_loopback()
    {
        d.error(
            &shown,
            "/admin/token",
            format!("admin.listen {addr} is not a loopback address: admin.token is required"),
        );
    }
    if parsed.max_connections == Some(0) {
        d.error(&shown, "/max_connections", "must be at least 1");
    }
    if parsed.admin.max_connections == 0 {
        d.error(&shown, "/admin/max_connections", "must be at least 1");
    }
    if let (Some(a), Some(b)) = (listen, admin_listen)
        && a == b
        && a.port() != 0
    {
        d.error(&shown, "/admin/listen", "admin.listen must differ from listen");
    }

    let store = match (&parsed.store.file, &parsed.store.redis) {
        (Some(_), Some(_)) => {
            d.error(&shown, "/store", "store.file and store.redis are exclusive");
            None
        }
        (_, Some(url)) => {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                d.error(&shown, "/store/redis", "must be a redis:// or rediss:// URL");
            }
            Some(StoreConfig::Redis { url: Secret::new(url.clone()), prefix: parsed.store.prefix.clone() })
        }
        (Some(f), None) => Some(StoreConfig::File(base.join(f))),
        (None, None) => Some(StoreConfig::File(state.join("tokens.json"))),
    };
    let intercept = intercept(&mut d, &shown, &base, state, &parsed.intercept, store.as_ref());
    let store_key = match (&parsed.store.encryption_key, &parsed.store.encryption_key_file) {
        (Some(_), Some(_)) => {
            d.error(&shown, "/store", "store.encryption_key and store.encryption_key_file are exclusive");
            None
        }
        (Some(k), None) => Some((k.clone(), "/store/encryption_key")),
        (None, Some(f)) => match std::fs::read_to_string(base.join(f)) {
            Ok(k) => Some((k, "/store/encryption_key_file")),
            Err(e) => {
                d.error(&shown, "/store/encryption_key_file", format!("cannot read {}: {e}", base.join(f).display()));
                None
            }
        },
        (None, None) => None,
    };
    let store_key = store_key.and_then(|(k, p)| match StoreKey::from_base64(&k) {
        Ok(k) => Some(k),
        Err(e) => {
            d.error(&shown, p, e);
            None
        }
    });

    let skew = duration(&mut d, &shown, "/refresh/skew", &parsed.refresh.skew);
    let shutdown = ShutdownConfig {
        drain_delay: duration(&mut d, &shown, "/shutdown/drain_delay", &parsed.shutdown.drain_delay),
        grace: duration(&mut d, &shown, "/shutdown/grace", &parsed.shutdown.grace),
    };
    let replay_buffer = match file::parse_size(&parsed.refresh.replay_buffer) {
        Ok(n) if n <= 16 << 20 => n as usize,
        Ok(_) => {
            d.error(&shown, "/refresh/replay_buffer", "at most 16MiB");
            0
        }
        Err(e) => {
            d.error(&shown, "/refresh/replay_buffer", e);
            0
        }
    };
    for (i, s) in parsed.refresh.on_status.iter().enumerate() {
        if !(400..=599).contains(s) {
            d.error(&shown, format!("/refresh/on_status/{i}"), format!("{s} is not an error status (400-599)"));
        }
    }
    let connect_timeout = duration(&mut d, &shown, "/upstream/connect_timeout", &parsed.upstream.connect_timeout);
    let timeout = duration(&mut d, &shown, "/upstream/timeout", &parsed.upstream.timeout);
    let ca_file = parsed.upstream.ca_file.as_ref().map(|f| base.join(f));
    if let Some(ca) = &ca_file {
        match std::fs::metadata(ca) {
            Ok(_) => files.push(ca.clone()),
            Err(e) => d.error(&shown, "/upstream/ca_file", format!("cannot read {}: {e}", ca.display())),
        }
    }
    let upstream = UpstreamConfig {
        connect_timeout,
        timeout,
        ca_file,
        allow_http: parsed.upstream.allow_http,
        allow_private_ips: parsed.upstream.allow_private_ips,
    };

    if parsed.apps.is_empty() {
        d.error(&shown, "/apps", "at least one app is required");
    }
    let mut apps = Vec::new();
    let mut seen = HashMap::new();
    for (i, app) in parsed.apps.iter().enumerate() {
        let p = format!("/apps/{i}");
        if app.name.is_empty()
            || !app.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            d.error(&shown, format!("{p}/name"), format!("app name `{}` must match [a-z0-9_-]+", app.name));
        }
        if let Some(prev) = seen.insert(app.name.clone(), i) {
            d.error(&shown, format!("{p}/name"), format!("app name `{}` is already used by /apps/{prev}", app.name));
        }
        let mut values = app_values(&mut d, &shown, &p, app);
        let given = install::given_ids(&values);
        if let Some(s) = saved.apps.get(&app.name) {
            s.under(&mut values);
        }
        let allow_hosts = app.allow_hosts.iter().map(|h| HostPattern::new(h)).collect();
        let dir = base.join(&app.path);
        let mut ad = Diag::for_app(&app.name);
        let fdk = fdk::load_app(&dir, &values, &upstream, &mut ad);
        files.extend(fdk.files.iter().cloned());
        d.errors.append(&mut ad.errors);
        d.warnings.append(&mut ad.warnings);
        apps.push(AppConfig { name: app.name.clone(), path: dir, allow_hosts, fdk, missing: Vec::new(), given });
    }

    let listen_tls = parsed.listen_tls.as_ref().and_then(|t| callers::listen_tls(&mut d, &shown, &base, t, &mut files));
    let app_names: Vec<String> = parsed.apps.iter().map(|a| a.name.clone()).collect();
    let client_ca = listen_tls.as_ref().is_some_and(|t| t.client_ca);
    let callers = callers::callers(&mut d, &shown, &base, &parsed.callers, &app_names, client_ca, &mut files);
    // On loopback inside a pod the network namespace is the boundary; anywhere else whoever
    // reaches the port could spend every token.
    let exposed = listen.filter(|a| !a.ip().is_loopback()).map(|a| ("listen", a)).or_else(|| {
        listen_tls.as_ref().map(|t| t.address).filter(|a| !a.ip().is_loopback()).map(|a| ("listen_tls.address", a))
    });
    if let Some((field, addr)) = exposed
        && parsed.callers.is_empty()
    {
        d.error(
            &shown,
            "/callers",
            format!(
                "{field} {addr} is not a loopback address: callers are required, or anyone who reaches the port                  could spend every token (SPEC 2.2)"
            ),
        );
    }
    if let (Some(t), Some(a), Some(b)) = (&listen_tls, listen, admin_listen)
        && (t.address == a || t.address == b)
        && t.address.port() != 0
    {
        d.error(&shown, "/listen_tls/address", "listen_tls.address must differ from listen and admin.listen");
    }

    if !d.errors.is_empty() {
        return fail(d);
    }
    let (Some(listen), Some(admin_listen), Some(store)) = (listen, admin_listen, store) else {
        return fail(d);
    };
    Ok(Config {
        source: None,
        listen,
        max_connections: parsed.max_connections,
        admin: AdminConfig { listen: admin_listen, public_url, token, max_connections: parsed.admin.max_connections },
        apps,
        store,
        refresh: RefreshConfig { skew, on_status: parsed.refresh.on_status, replay_buffer },
        upstream,
        reload_watch: parsed.reload.watch,
        shutdown,
        intercept,
        listen_tls,
        callers,
        store_key,
        files,
        warnings: d.warnings,
    })
}

/// `intercept`: the CA's files (both or neither; by default beside the token file) and the
/// blind-tunnel hosts.
fn intercept(
    d: &mut Diag,
    shown: &str,
    base: &Path,
    state: &Path,
    file: &file::InterceptFile,
    store: Option<&StoreConfig>,
) -> InterceptConfig {
    let default_dir = match store {
        Some(StoreConfig::File(f)) => f.parent().map(Path::to_path_buf).unwrap_or_else(|| base.to_path_buf()),
        _ => state.to_path_buf(),
    };
    let mut config = InterceptConfig::beside(&default_dir);
    match (&file.ca_cert, &file.ca_key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            config.ca_cert = base.join(cert);
            config.ca_key = base.join(key);
            config.generate = false;
            for (path, pointer) in [(&config.ca_cert, "/intercept/ca_cert"), (&config.ca_key, "/intercept/ca_key")] {
                if let Err(e) = std::fs::metadata(path) {
                    d.error(shown, pointer, format!("cannot read {}: {e}", path.display()));
                }
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            d.error(shown, "/intercept", "intercept.ca_cert and intercept.ca_key go together: give both or neither");
        }
    }
    for (i, h) in file.tunnel_hosts.iter().enumerate() {
        match tunnel_host(h) {
            Ok(()) => config.tunnel_hosts.push(HostPattern::new(h)),
            Err(e) => d.error(shown, format!("/intercept/tunnel_hosts/{i}"), format!("`{h}`: {e}")),
        }
    }
    config
}

/// A `tunnel_hosts` entry: a host name, or `*.` and a domain, with an optional `:port`.
fn tunnel_host(h: &str) -> Result<(), &'static str> {
    if h.contains('/') {
        return Err("must be a host name (`api.example.com` or `*.example.com`), without scheme or path");
    }
    let (name, port) = crate::template::escape::split_port(h);
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err("the port must be 1-65535");
    }
    let name = name.strip_prefix("*.").unwrap_or(name);
    // The rule of a template's host: any host a template can name can be a tunnel host.
    if name.contains([':', '[', ']']) || !crate::template::escape::valid_authority(name) {
        return Err("must be a host name (`api.example.com` or `*.example.com`), without scheme or path");
    }
    if name.parse::<std::net::IpAddr>().is_ok() || name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("must be a host name, not an IP address");
    }
    Ok(())
}

/// A duration as `bearerd.yaml` writes them (`15s`, `500ms`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    file::parse_duration(s)
}

/// Where a configuration keeps its state besides tokens (the values saved through
/// `/custom_configs`): beside the token file, or with `store.redis` in the
/// [`default_state_dir`]; and the key that seals it (`store.encryption_key`, if one is configured). Read
/// without loading the apps: the saved values must be read before the configuration they
/// complete loads.
pub fn state_of(source: &Source) -> (PathBuf, Option<StoreKey>) {
    let path = match source {
        Source::App(app) => return (app.state_dir(), None),
        Source::File(path) => path,
    };
    let base =
        path.parent().filter(|b| !b.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let env = |name: &str| std::env::var(name).ok();
    let state = default_state_dir(&base, &env);
    let Ok((value, _)) = read_yaml(path, &env) else {
        return (state, None);
    };
    let text = |p: &str| value.pointer(p).and_then(|v| v.as_str()).map(str::to_string);
    let dir = match (text("/store/file"), text("/store/redis")) {
        (Some(f), _) => base.join(f).parent().map(Path::to_path_buf).unwrap_or_else(|| base.clone()),
        _ => state,
    };
    let key = text("/store/encryption_key")
        .or_else(|| text("/store/encryption_key_file").and_then(|f| std::fs::read_to_string(base.join(f)).ok()))
        .and_then(|k| StoreKey::from_base64(&k).ok());
    (dir, key)
}

/// The admin listener's address as `bearerd.yaml` gives it, read without loading the apps (for
/// `bearerd healthcheck`: a probe must not fail because an app folder changed on disk).
pub fn admin_listen(path: &Path) -> Result<SocketAddr, String> {
    let shown = path.display();
    let (value, errors) = read_yaml(path, &|name| std::env::var(name).ok()).map_err(|e| format!("{shown}: {e}"))?;
    let listen = value.pointer("/admin/listen").and_then(|v| v.as_str()).map(str::to_string);
    if let Some((pointer, message)) = errors.into_iter().find(|(p, _)| p == "/admin/listen") {
        return Err(format!("{shown}: {pointer}: {message}"));
    }
    let listen = listen.unwrap_or_else(file::default_admin_listen);
    listen.parse().map_err(|_| format!("{shown}: /admin/listen: `{listen}` is not an address"))
}

/// `bearerd.yaml` read (a BOM skipped), parsed and its `${NAME}`s expanded, with the expansion's
/// problems as (JSON pointer, message).
fn read_yaml(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(serde_json::Value, Vec<(String, String)>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut value: serde_json::Value =
        serde_saphyr::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut errors = Vec::new();
    file::expand_env(&mut value, &mut String::new(), env, &mut errors);
    Ok((value, errors))
}

/// Loads one FDK app folder on its own (for `bearerd check --app`).
pub fn load_app_only(dir: &Path, values: &AppValues, upstream: &UpstreamConfig) -> (FdkApp, Diag) {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let mut d = Diag::for_app(&name);
    let app = fdk::load_app(dir, values, upstream, &mut d);
    (app, d)
}

fn parse_addr(d: &mut Diag, file: &str, pointer: &str, s: &str) -> Option<SocketAddr> {
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            d.error(file, pointer, format!("`{s}` is not an address (ip:port)"));
            None
        }
    }
}

fn duration(d: &mut Diag, file: &str, pointer: &str, s: &str) -> Duration {
    file::parse_duration(s).unwrap_or_else(|e| {
        d.error(file, pointer, e);
        Duration::ZERO
    })
}

/// Renders a YAML scalar as the string a template would substitute.
pub(crate) fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn app_values(d: &mut Diag, file: &str, p: &str, app: &file::AppFile) -> AppValues {
    let mut v = AppValues::default();
    for (k, val) in &app.iparams {
        match scalar_text(val) {
            Some(s) => {
                v.iparams.insert(k.clone(), s);
            }
            None => d.error(file, format!("{p}/iparams/{}", ptr(k)), "null is not a value"),
        }
    }
    for (k, val) in &app.oauth_iparams {
        match val {
            serde_json::Value::Object(map) => {
                let mut m = HashMap::new();
                for (k2, v2) in map {
                    match scalar_text(v2) {
                        Some(s) => {
                            m.insert(k2.clone(), s);
                        }
                        None => {
                            d.error(file, format!("{p}/oauth_iparams/{}/{}", ptr(k), ptr(k2)), "null is not a value")
                        }
                    }
                }
                v.oauth_iparams_by_integration.insert(k.clone(), m);
            }
            other => match scalar_text(other) {
                Some(s) => {
                    v.oauth_iparams.insert(k.clone(), s);
                }
                None => d.error(file, format!("{p}/oauth_iparams/{}", ptr(k)), "null is not a value"),
            },
        }
    }
    v.endpoint_urls = app
        .endpoint_urls
        .iter()
        .map(|(k, u)| (k.clone(), endpoint_host(u)))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    v
}

/// `https://acme.myfreshworks.com/` and `acme.myfreshworks.com` both give the host.
pub fn endpoint_host(u: &str) -> String {
    let s = u.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    s.trim_end_matches('/').to_string()
}
