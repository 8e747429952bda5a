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
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 \
   || ! { [ -x /bin/kill ] || [ -x /usr/bin/kill ]; } || ! "$python" -c "import prometheus_client" 2>/dev/null \
   || [ ! -x /usr/bin/chromium ] || ! command -v chromedriver >/dev/null 2>&1; then
  echo "== installing redis-server, procps, python3-prometheus-client, chromium and chromium-driver (Debian packages) for the tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools procps \
    python3-prometheus-client chromium chromium-driver >/dev/null
fi
exec cargo test --locked "$@"
