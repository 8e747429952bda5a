//! The deployment examples in deploy/ carry configurations that bearerd must load as they are:
//! the Kubernetes ConfigMap (mounted at the paths the Deployment gives its keys) and the
//! compose example's folder, with the environment their Secret and .env provide.
//! (scripts/validate-deploy.sh checks the manifests themselves against their schemas.)

mod support;

use std::path::Path;

use serde_json::Value;
use support::TempDir;

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The environment the examples' Secret and .env give, with a valid store key.
fn env(name: &str) -> Option<String> {
    match name {
        "BEARERD_STORE_KEY" => Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()),
        "BEARERD_REDIS_URL" => Some("redis://redis:6379/0".into()),
        "BEARERD_ADMIN_TOKEN" | "GITHUB_CLIENT_ID" | "GITHUB_CLIENT_SECRET" => Some(format!("example-{name}")),
        _ => None,
    }
}

#[test]
fn the_kubernetes_configmap_loads_where_the_deployment_mounts_it() {
    let data = yaml("deploy/kubernetes/configmap.yaml")["data"].clone();
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap().clone();
    let items =
        volumes.iter().find(|v| v["name"] == "config").unwrap()["configMap"]["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), data.as_object().unwrap().len(), "every key is mounted");
    let dir = TempDir::new();
    for item in &items {
        let key = item["key"].as_str().unwrap();
        dir.write(item["path"].as_str().unwrap(), data[key].as_str().unwrap());
    }
    let config = bearerd::config::load_with_env(&dir.path().join("bearerd.yaml"), &env)
        .unwrap_or_else(|e| panic!("the ConfigMap's configuration does not load:\n{e}"));
    assert_eq!(config.apps[0].fdk.templates.len(), 2);
    assert!(config.admin.token.is_some() && !config.admin.listen.ip().is_loopback());
    // The sidecar's BEARERD_CONFIG is where the config volume puts bearerd.yaml.
    let init = &deployment["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["restartPolicy"], "Always", "a native sidecar");
    let mount = init["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "config").unwrap();
    let config_env = init["env"].as_array().unwrap().iter().find(|e| e["name"] == "BEARERD_CONFIG").unwrap();
    assert_eq!(config_env["value"], format!("{}/bearerd.yaml", mount["mountPath"].as_str().unwrap()));
}

#[test]
fn the_compose_configuration_loads() {
    let config = bearerd::config::load_with_env(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose/config/bearerd.yaml"),
        &env,
    )
    .unwrap_or_else(|e| panic!("the compose example's configuration does not load:\n{e}"));
    assert_eq!(config.apps[0].fdk.templates.len(), 4);
    let compose = yaml("deploy/compose/compose.yaml");
    assert_eq!(compose["services"]["bearerd"]["network_mode"], "service:app");
}
