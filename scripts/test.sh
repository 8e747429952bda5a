#!/usr/bin/env bash
# The whole test suite. The shared-store tests start private redis-server instances, so
# redis-server (and redis-cli) are installed from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# The process tests signal bearerd with /bin/kill (procps).
# The metrics test parses the exposition with the Prometheus project's Python parser
# (python3-prometheus-client, for Debian's /usr/bin/python3).
python=python3
[ -x /usr/bin/python3 ] && python=/usr/bin/python3
# The admin page is tested in headless Chromium over WebDriver (chromium, chromium-driver).
# The README's HTTPS_PROXY recipes run with real clients: curl, Python's standard library and
# requests (python3-requests), httpx (python3-httpx), Node (nodejs, npm) with undici, which npm puts in target/npm.
packages="redis-server redis-tools procps python3-prometheus-client python3-requests python3-httpx chromium chromium-driver curl"
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 \
   || ! { [ -x /bin/kill ] || [ -x /usr/bin/kill ]; } || ! "$python" -c "import prometheus_client, requests, httpx" 2>/dev/null \
   || [ ! -x /usr/bin/chromium ] || ! command -v chromedriver >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
   || ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || packages="$packages nodejs npm"
  echo "== installing $packages (Debian packages) for the tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $packages >/dev/null
fi
if [ ! -d target/npm/node_modules/undici ]; then
  echo "== installing undici (npm) into target/npm for the Node recipe test"
  npm install --silent --no-audit --no-fund --prefix target/npm undici@6 >/dev/null
fi
# The FDK runtime (clients/fdk) has its own tests, on Node's built-in runner; the Rust tests
# in tests/fdk_code.rs run it against bearerd.
echo "== clients/fdk (node --test)"
(cd clients/fdk && node --test test/*.test.js)
exec cargo test --locked "$@"
