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

/// The documents of a multi-document YAML file.
fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    text.split("\n---\n").map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{path}: {e}"))).collect()
}

#[test]
fn the_gateway_loads_with_its_callers_where_the_deployment_mounts_it() {
    let data = yaml("deploy/kubernetes/gateway/configmap.yaml")["data"].clone();
    let docs = yaml_docs("deploy/kubernetes/gateway/deployment.yaml");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let mount_of =
        |volume: &str| mounts.iter().find(|m| m["name"] == volume).unwrap()["mountPath"].as_str().unwrap().to_string();
    let config_dir = mount_of("config");
    let dir = TempDir::new();
    let at = |mount: &str, file: &str| {
        let rel = mount.strip_prefix(&config_dir).unwrap().trim_start_matches('/');
        format!("{rel}/{file}").trim_start_matches('/').to_string()
    };
    let items = volumes.iter().find(|v| v["name"] == "config").unwrap()["configMap"]["items"].as_array().unwrap();
    assert_eq!(items.len(), data.as_object().unwrap().len(), "every key is mounted");
    for item in items {
        dir.write(item["path"].as_str().unwrap(), data[item["key"].as_str().unwrap()].as_str().unwrap());
    }
    // What the Secrets and the cluster's CA ConfigMap put beside it, as their volumes mount them.
    let ca = support::test_ca();
    dir.write(&at(&mount_of("tls"), "tls.crt"), &ca.leaf_pem);
    dir.write(&at(&mount_of("tls"), "tls.key"), &ca.leaf_key_pem);
    dir.write(&at(&mount_of("cluster-ca"), "ca.crt"), &ca.ca_pem);
    let made = TempDir::new();
    bearerd::intercept::Authority::open(&bearerd::config::InterceptConfig::beside(made.path())).unwrap();
    let read = |f: &str| std::fs::read_to_string(made.path().join(f)).unwrap();
    dir.write(&at(&mount_of("intercept-ca"), "ca.crt"), &read("ca.pem"));
    dir.write(&at(&mount_of("intercept-ca"), "ca.key"), &read("ca-key.pem"));
    let config = bearerd::config::load_with_env(&dir.path().join("bearerd.yaml"), &env)
        .unwrap_or_else(|e| panic!("the gateway's configuration does not load:\n{e}"));
    assert!(!config.listen.ip().is_loopback() && config.callers.len() == 2, "callers guard the open listener");
    assert!(config.listen_tls.as_ref().is_some_and(|t| !t.address.ip().is_loopback()));
    assert!(matches!(config.store, bearerd::config::StoreConfig::Redis { .. }));
    // The Service exposes the data ports, never the admin port.
    let service = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    let ports: Vec<i64> =
        service["spec"]["ports"].as_array().unwrap().iter().map(|p| p["port"].as_i64().unwrap()).collect();
    assert_eq!(ports, vec![10080, 10443]);
    // The example client's projected token is for the audience the callers accept.
    let client = yaml_docs("deploy/kubernetes/gateway/client-example.yaml");
    let pod = &client.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"];
    let source = &pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(source["audience"], "bearerd");
    assert!(data["bearerd.yaml"].as_str().unwrap().contains("system:serviceaccount:shop:checkout"));
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

/// The Lambda layer's configuration, laid out as scripts/lambda-layer.sh packs it (the layer is
/// /opt: bearerd/bearerd.yaml beside bearerd/apps/), loads in Lambda's environment with the
/// variables deploy/lambda/template.yaml gives the function; the function's proxy and CA
/// variables point where bearerd listens and writes its CA.
#[test]
fn the_lambda_layer_configuration_loads_with_the_templates_environment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = std::fs::read_to_string(root.join("deploy/lambda/template.yaml")).unwrap();
    let variable = |name: &str| -> Option<String> {
        template.lines().find_map(|l| l.trim().strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_string()))
    };
    let opt = TempDir::new();
    let layer = opt.path().join("bearerd");
    std::fs::create_dir_all(&layer).unwrap();
    std::fs::copy(root.join("deploy/lambda/bearerd.yaml"), layer.join("bearerd.yaml")).unwrap();
    let copy = |from: &Path, to: &Path| {
        let status = std::process::Command::new("cp").arg("-r").arg(from).arg(to).status().unwrap();
        assert!(status.success());
    };
    copy(&root.join("config/apps"), &layer.join("apps"));
    let lambda_env = |name: &str| match name {
        "AWS_LAMBDA_RUNTIME_API" => Some("127.0.0.1:9001".into()),
        // Only what the template sets reaches bearerd.
        n if variable(n).is_some() => env(n),
        _ => None,
    };
    let config = bearerd::config::load_with_env(&layer.join("bearerd.yaml"), &lambda_env)
        .unwrap_or_else(|e| panic!("the Lambda layer's configuration does not load:\n{e}"));
    assert!(matches!(config.store, bearerd::config::StoreConfig::Redis { .. }));
    assert!(config.store_key.is_some(), "tokens are sealed in the shared Redis");
    assert_eq!(config.intercept.ca_cert, Path::new("/tmp/bearerd/ca.pem"));
    assert_eq!(variable("NODE_EXTRA_CA_CERTS").as_deref(), Some("/tmp/bearerd/ca.pem"));
    let proxy = format!("http://{}", config.listen);
    assert_eq!(variable("HTTP_PROXY"), Some(proxy.clone()));
    assert_eq!(variable("HTTPS_PROXY"), Some(proxy));
    assert!(template.contains(&format!("http://{}/invoke/getRepo", config.listen)));
    assert!(template.contains("ContentUri: ../../target/lambda/bearerd-layer-x86_64.zip"));
    let script = std::fs::read_to_string(root.join("scripts/lambda-layer.sh")).unwrap();
    assert!(script.contains("out=${1:-target/lambda/bearerd-layer-x86_64.zip}"));
}
