//! What the in-process benches share: the benchmark app and its bearerd configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Writes, in a fresh temporary folder named after `name`, an app `bench` with one template
/// `root` (GET `http://{up}/` with `Authorization: Bearer <access_token>`) and an integration
/// `up` (`integration`: the JSON object's fields after client_id and client_secret), and a
/// `bearerd.yaml` serving it on 127.0.0.1:0 (`upstream`: the fields of `upstream:`). Returns the
/// folder (remove it at the end) and the configuration's path.
pub fn bench_config(name: &str, up: SocketAddr, integration: &str, upstream: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("bearerd-{name}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("app/config")).unwrap();
    std::fs::write(dir.join("app/manifest.json"), r#"{"modules": {"common": {"requests": {"root": {}}}}}"#).unwrap();
    let requests = format!(
        r#"{{"root": {{"schema": {{"method": "GET", "protocol": "http", "host": "{up}", "path": "/",
            "headers": {{"Authorization": "Bearer <%= access_token %>"}}}}, "options": {{"oauth": "up"}}}}}}"#
    );
    std::fs::write(dir.join("app/config/requests.json"), requests).unwrap();
    let oauth = format!(r#"{{"integrations": {{"up": {{"client_id": "c", "client_secret": "s", {integration}}}}}}}"#);
    std::fs::write(dir.join("app/config/oauth_config.json"), oauth).unwrap();
    let cfg = dir.join("bearerd.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nstore: {{file: t.json}}\nreload: {{watch: false}}\n\
             upstream: {{allow_http: true, allow_private_ips: true{upstream}}}\napps:\n  - {{name: bench, path: app}}\n"
        ),
    )
    .unwrap();
    (dir, cfg)
}
