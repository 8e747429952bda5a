//! `bearerd.yaml` as it is written: serde types that mirror the file, `${ENV}` expansion, and the
//! parsing of durations and sizes. [`super::load`] turns these into validated internal types.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Open connections the data listener keeps at most (default: from the open-file limit).
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub admin: AdminFile,
    pub apps: Vec<AppFile>,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub refresh: RefreshFile,
    #[serde(default)]
    pub upstream: UpstreamFile,
    #[serde(default)]
    pub reload: ReloadFile,
    #[serde(default)]
    pub shutdown: ShutdownFile,
    #[serde(default)]
    pub intercept: InterceptFile,
    /// The data plane over TLS (SPEC 2.2).
    #[serde(default)]
    pub listen_tls: Option<super::callers::ListenTlsFile>,
    /// Who may use the data plane (SPEC 2.2).
    #[serde(default)]
    pub callers: Vec<super::callers::CallerFile>,
}

/// `intercept`: HTTPS through CONNECT (SPEC 2.1).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InterceptFile {
    #[serde(default)]
    pub ca_cert: Option<String>,
    #[serde(default)]
    pub ca_key: Option<String>,
    #[serde(default)]
    pub tunnel_hosts: Vec<String>,
}

/// `shutdown`: what SIGTERM does (SPEC 4).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShutdownFile {
    #[serde(default = "default_drain_delay")]
    pub drain_delay: String,
    #[serde(default = "default_grace")]
    pub grace: String,
}

impl Default for ShutdownFile {
    fn default() -> Self {
        ShutdownFile { drain_delay: default_drain_delay(), grace: default_grace() }
    }
}

fn default_drain_delay() -> String {
    "5s".into()
}

fn default_grace() -> String {
    "30s".into()
}

fn default_listen() -> String {
    "127.0.0.1:10080".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFile {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    #[serde(default = "default_public_url")]
    pub public_url: String,
    #[serde(default)]
    pub token: Option<String>,
    /// Open connections the admin listener keeps at most.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            listen: default_admin_listen(),
            public_url: default_public_url(),
            token: None,
            max_connections: default_admin_max_connections(),
        }
    }
}

pub(crate) fn default_admin_listen() -> String {
    "127.0.0.1:10001".into()
}

fn default_admin_max_connections() -> usize {
    64
}

fn default_public_url() -> String {
    "http://localhost:10001".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppFile {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub iparams: BTreeMap<String, serde_json::Value>,
    /// Either `{key: value}` for every integration, or `{integration: {key: value}}`.
    #[serde(default)]
    pub oauth_iparams: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default)]
    pub endpoint_urls: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreFile {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub redis: Option<String>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub encryption_key: Option<String>,
    /// A file holding the key (base64), instead of `encryption_key`.
    #[serde(default)]
    pub encryption_key_file: Option<String>,
}

fn default_prefix() -> String {
    "bearerd:".into()
}

impl Default for StoreFile {
    fn default() -> Self {
        StoreFile { file: None, redis: None, prefix: default_prefix(), encryption_key: None, encryption_key_file: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshFile {
    #[serde(default = "default_skew")]
    pub skew: String,
    #[serde(default = "default_on_status")]
    pub on_status: Vec<u16>,
    #[serde(default = "default_replay_buffer")]
    pub replay_buffer: String,
}

impl Default for RefreshFile {
    fn default() -> Self {
        RefreshFile { skew: default_skew(), on_status: default_on_status(), replay_buffer: default_replay_buffer() }
    }
}

fn default_skew() -> String {
    "60s".into()
}
fn default_on_status() -> Vec<u16> {
    vec![401]
}
fn default_replay_buffer() -> String {
    "64KiB".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamFile {
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default)]
    pub allow_private_ips: bool,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            connect_timeout: default_connect_timeout(),
            timeout: default_timeout(),
            ca_file: None,
            allow_http: false,
            allow_private_ips: false,
        }
    }
}

fn default_connect_timeout() -> String {
    "5s".into()
}
fn default_timeout() -> String {
    "15s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReloadFile {
    #[serde(default = "default_true")]
    pub watch: bool,
}

impl Default for ReloadFile {
    fn default() -> Self {
        ReloadFile { watch: true }
    }
}

fn default_true() -> bool {
    true
}

/// Replaces `${NAME}` in every string of `value` with the environment variable NAME
/// (`${NAME:-default}` when it may be unset); `$${` stands for a literal `${`. Every unset variable is reported with its JSON path.
pub(crate) fn expand_env(
    value: &mut serde_json::Value,
    pointer: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) {
    match value {
        serde_json::Value::String(s) => match expand_str(s, env) {
            Ok(Some(new)) => *s = new,
            Ok(None) => {}
            Err(msg) => errors.push((pointer.clone(), msg)),
        },
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                expand_env(item, pointer, env, errors);
                pointer.truncate(len);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                expand_env(item, pointer, env, errors);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// Expands one string; `Ok(None)` when it has nothing to expand.
fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err("unterminated `${` (write `$${` for a literal `${`)".into());
            };
            let (name, default) = match after[..end].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&after[..end], None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("`${{{name}}}` is not a valid environment variable name"));
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// Parses `60s`, `500ms`, `2m`, `1h` (or a bare number of seconds).
/// A clearer message for what serde says of a value of the wrong kind where a duration or a
/// size is expected (`timeout: 15`).
pub(crate) fn explain(pointer: &str, message: &str) -> String {
    const DURATIONS: [&str; 5] =
        ["/refresh/skew", "/upstream/connect_timeout", "/upstream/timeout", "/shutdown/drain_delay", "/shutdown/grace"];
    if message.starts_with("invalid type") {
        if DURATIONS.contains(&pointer) {
            let kind = kind_of(message);
            return format!("must be a duration like 15s (a number needs a unit: ms, s, m or h), not {kind}");
        }
        if pointer == "/refresh/replay_buffer" {
            return format!("must be a size like 64KiB, not {}", kind_of(message));
        }
    }
    message.to_string()
}

/// "invalid type: integer `15`, expected a string" -> "integer `15`".
fn kind_of(message: &str) -> &str {
    message.trim_start_matches("invalid type: ").split(", expected").next().unwrap_or(message)
}

pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (examples: 500ms, 5s, 2m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}` is not a duration (examples: 500ms, 5s, 2m)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Parses `64KiB`, `1MiB`, `512B`, `10kB` (or a bare number of bytes).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size (examples: 64KiB, 1MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        _ => return Err(format!("`{s}` is not a size (examples: 64KiB, 1MiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |k: &str| (k == "A").then(|| "va".to_string());
        let mut v = serde_json::json!({"x": "pre-${A}-post", "y": ["$${A}", "${B}"], "z": "$5 a$b", "d": "${B:-dflt}"});
        let mut errors = Vec::new();
        expand_env(&mut v, &mut String::new(), &env, &mut errors);
        assert_eq!(v["x"], "pre-va-post");
        assert_eq!(v["y"][0], "${A}");
        assert_eq!(v["z"], "$5 a$b");
        assert_eq!(v["d"], "dflt");
        assert_eq!(errors, vec![("/y/1".to_string(), "environment variable B is not set".to_string())]);
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("60s").unwrap().as_secs(), 60);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert!(parse_size("lots").is_err());
    }
}
