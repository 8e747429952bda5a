//! Live reconfiguration. Three triggers, one path: the file watcher, SIGHUP and
//! `POST /admin/reload` all call [`reload`], which reads and validates everything, compiles a
//! complete new snapshot off the hot path and swaps it in whole. On failure the old snapshot keeps
//! serving. Requests in flight keep the snapshot they started with.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::hash::{Hash as _, Hasher as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::snapshot::Snapshot;
use crate::state::State;

/// Events closer together than this are one change (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A reload follows the first event of a change within this long, even while events keep coming
/// (a file that is written again and again must not postpone reloads for ever).
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// The file names a change to which may change the configuration: those of every file read,
/// the FDK file kinds (a file that appears), and the names a Kubernetes ConfigMap volume swaps
/// (`..data`) or an app folder links (`config`). Events for any other file (a log written
/// beside `bearerd.yaml`) are not a change.
fn relevant_names(config: &Config) -> BTreeSet<OsString> {
    let mut names: BTreeSet<OsString> = config.files.iter().filter_map(|f| f.file_name().map(Into::into)).collect();
    for n in ["manifest.json", "requests.json", "oauth_config.json", "iparams.json", "..data", "config"] {
        names.insert(n.into());
    }
    names
}

fn is_relevant(event: &notify::Event, names: &BTreeSet<OsString>) -> bool {
    !event.kind.is_access() && event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.contains(n)))
}

/// Reloads the configuration of a running process: serialised, and remembering what the last
/// reload read.
pub struct Reloader {
    state: Arc<State>,
    last: tokio::sync::Mutex<Option<u64>>,
    /// The outcome of the last reload, for the admin page.
    outcome: std::sync::Mutex<Option<Outcome>>,
}

/// What the last reload did: when (Unix seconds), what triggered it, and its errors (none: it
/// succeeded).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub at: u64,
    pub trigger: String,
    pub errors: Vec<String>,
}

/// What a successful reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub generation: u64,
    /// False when no file's content had changed (nothing was swapped).
    pub changed: bool,
    /// Settings that changed but need a restart, and tokens that need a new authorization.
    pub notes: Vec<String>,
}

impl Reloader {
    /// The reloader of `state`, whose configuration was made of `files` ([`inputs`]).
    pub(crate) fn new(state: Arc<State>, files: &[PathBuf]) -> Reloader {
        Reloader { state, last: tokio::sync::Mutex::new(Some(fingerprint(files))), outcome: Default::default() }
    }

    /// Reloads the configuration. `trigger` is for the log.
    pub async fn reload(&self, trigger: &str) -> Result<Reloaded, ConfigErrors> {
        let r = reload(&self.state, &self.last, trigger).await;
        let errors = match &r {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        };
        let outcome = Outcome { at: crate::token::unix_now(), trigger: trigger.to_string(), errors };
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        r
    }

    /// The last reload's outcome (`None` before the first).
    pub fn last_outcome(&self) -> Option<Outcome> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn reload(
    shared: &State,
    last: &tokio::sync::Mutex<Option<u64>>,
    trigger: &str,
) -> Result<Reloaded, ConfigErrors> {
    let mut last = last.lock().await;
    let old = shared.snapshot.load_full();
    let Some(source) = old.config.source.clone() else {
        return Err(single("", "this configuration was not read from a file"));
    };
    let loaded = tokio::task::spawn_blocking(move || {
        // The values saved through /custom_configs go under the configured ones.
        let saved = match crate::token::settings::Settings::of(&source).read() {
            Ok(s) => s,
            Err(e) => return (Err(single("", &format!("the saved installation values: {e}"))), None),
        };
        let r = crate::config::load_source(&source, &saved);
        let fp = r.as_ref().ok().map(|c| fingerprint(&inputs(c)));
        (r, fp)
    })
    .await
    .map_err(|e| single("", &format!("reload task failed: {e}")))?;
    let (mut config, fp) = match loaded {
        (Ok(c), fp) => (c, fp),
        (Err(errors), _) => return Err(failed(shared, trigger, errors)),
    };
    if fp.is_some() && fp == *last {
        // Unchanged, and valid: the last reload succeeded (even if one before it failed).
        shared.metrics.config_last_reload_successful.set(1);
        tracing::debug!(trigger, "configuration unchanged; not reloaded");
        return Ok(Reloaded { generation: old.generation, changed: false, notes: Vec::new() });
    }
    let notes = carry_over(&old, &mut config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let generation = old.generation + 1;
    // The upstream settings take effect with the snapshot (new connections use them at once).
    if let Err(e) = shared.upstream.reconfigure(&config.upstream) {
        return Err(failed(shared, trigger, single("", &e)));
    }
    let new = Snapshot::compile(config, generation, &shared.metrics, &shared.keys);
    let notes = [notes, rebound_integrations(&old, &new)].concat();
    for n in &notes {
        tracing::warn!(trigger, "{n}");
    }
    shared.snapshot.store(Arc::new(new));
    *last = fp;
    shared.metrics.config_generation.set(generation as i64);
    shared.metrics.config_reloads.with_label_values(&["ok"]).inc();
    shared.metrics.config_last_reload_successful.set(1);
    tracing::info!(trigger, generation, "configuration reloaded");
    Ok(Reloaded { generation, changed: true, notes })
}

fn single(file: &str, message: &str) -> ConfigErrors {
    ConfigErrors(vec![ConfigError { app: None, file: file.into(), pointer: String::new(), message: message.into() }])
}

fn failed(shared: &State, trigger: &str, errors: ConfigErrors) -> ConfigErrors {
    shared.metrics.config_reloads.with_label_values(&["error"]).inc();
    shared.metrics.config_last_reload_successful.set(0);
    for e in &errors.0 {
        tracing::error!(trigger, "reload refused: {e}");
    }
    tracing::error!(trigger, problems = errors.0.len(), "reload failed; the previous configuration keeps serving");
    errors
}

/// Settings a running process cannot change keep their old values; each is reported.
fn carry_over(old: &Snapshot, new: &mut Config) -> Vec<String> {
    let mut notes = Vec::new();
    if new.listen != old.config.listen {
        notes.push(format!(
            "listen changed to {}: restart bearerd to apply it (still serving on {})",
            new.listen, old.config.listen
        ));
        new.listen = old.config.listen;
    }
    if new.admin.listen != old.config.admin.listen {
        notes.push(format!(
            "admin.listen changed to {}: restart bearerd to apply it (still serving on {})",
            new.admin.listen, old.config.admin.listen
        ));
        new.admin.listen = old.config.admin.listen;
    }
    if new.store != old.config.store {
        notes.push("store changed: restart bearerd to apply it (tokens stay in the store opened at start)".into());
        new.store = old.config.store.clone();
    }
    let (was_tls, now_tls) =
        (old.config.listen_tls.as_ref().map(|t| t.address), new.listen_tls.as_ref().map(|t| t.address));
    if was_tls != now_tls {
        let shown = |a: Option<SocketAddr>| a.map_or_else(|| "none".to_string(), |a| a.to_string());
        notes.push(format!(
            "listen_tls.address changed to {}: restart bearerd to apply it (still serving on {})",
            shown(now_tls),
            shown(was_tls)
        ));
        match (&mut new.listen_tls, old.config.listen_tls.as_ref()) {
            // The new certificate is taken; the address stays.
            (Some(t), Some(was)) => t.address = was.address,
            (t, was) => *t = was.cloned(),
        }
    }
    let (was, now) = (&old.config.intercept, &mut new.intercept);
    if (&now.ca_cert, &now.ca_key) != (&was.ca_cert, &was.ca_key) {
        notes.push("intercept.ca_cert/ca_key changed: restart bearerd to apply it (the CA read at start signs)".into());
        now.ca_cert = was.ca_cert.clone();
        now.ca_key = was.ca_key.clone();
        now.generate = was.generate;
    }
    notes
}

/// Integrations whose `token_url` or `client_id` changed: their stored tokens are not used any more.
fn rebound_integrations(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let mut notes = Vec::new();
    for app in &new.apps {
        let Some(prev) = old.app(&app.name) else { continue };
        for integ in &app.config.fdk.integrations {
            if let Some((_, before)) = prev.integration_by_name(&integ.name)
                && before.binding != integ.binding
            {
                notes.push(format!(
                    "app {}: integration {}: token_url or client_id changed; its stored tokens are no longer used: authorize again at {}",
                    app.name,
                    integ.name,
                    new.authorize_url(&app.name, &integ.name, crate::token::DEFAULT_ACCOUNT)
                ));
            }
        }
    }
    notes
}

/// What a configuration was made of: its files, and the values saved through `/custom_configs`
/// (a save changes the configuration though no file of it changed).
pub(crate) fn inputs(config: &Config) -> Vec<PathBuf> {
    let mut files = config.files.clone();
    if let Some(source) = &config.source {
        files.push(crate::token::settings::Settings::of(source).path());
    }
    files
}

/// A hash of every file's path and content.
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

/// The folders to watch: those of every file read, and every app folder and its `config/`
/// (so a file that appears there is seen). Folders, not files: editors replace files by rename,
/// and Kubernetes swaps a `..data` symlink in the mounted folder.
fn watched_dirs(config: &Config) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for f in &config.files {
        if let Some(d) = f.parent() {
            dirs.insert(if d.as_os_str().is_empty() { PathBuf::from(".") } else { d.to_path_buf() });
        }
    }
    for app in &config.apps {
        dirs.insert(app.path.clone());
        dirs.insert(app.path.join("config"));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Starts watching the configuration's folders; every debounced change reloads.
pub(crate) fn spawn_watcher(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let config = |r: &Reloader| r.state.snapshot.load().config.clone();
    let names = Arc::new(std::sync::RwLock::new(relevant_names(&config(&reloader))));
    let seen = names.clone();
    let mut watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let names = seen.read().unwrap_or_else(|p| p.into_inner());
        if res.is_ok_and(|e| is_relevant(&e, &names)) {
            let _ = tx.try_send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the configuration files; reload with SIGHUP or POST /admin/reload");
            return None;
        }
    };
    let mut watching = BTreeSet::new();
    update_watches(&mut watcher, &mut watching, watched_dirs(&config(&reloader)));
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                event = rx.recv() => if event.is_none() { break },
                _ = stop.changed() => break,
            }
            let first = tokio::time::Instant::now();
            while first.elapsed() < MAX_DEBOUNCE
                && let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await
            {}
            if let Ok(r) = reloader.reload("watch").await
                && r.changed
            {
                let now = config(&reloader);
                *names.write().unwrap_or_else(|p| p.into_inner()) = relevant_names(&now);
                update_watches(&mut watcher, &mut watching, watched_dirs(&now));
            }
        }
    }))
}

fn update_watches(w: &mut notify::RecommendedWatcher, watching: &mut BTreeSet<PathBuf>, want: BTreeSet<PathBuf>) {
    for gone in watching.difference(&want) {
        let _ = w.unwatch(gone);
    }
    for new in want.difference(watching) {
        if let Err(e) = w.watch(Path::new(new), notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %new.display(), error = %e, "cannot watch");
        }
    }
    *watching = want;
}
