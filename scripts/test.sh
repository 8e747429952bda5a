#!/usr/bin/env bash
# The whole test suite. The shared-store tests start private redis-server instances, so
# redis-server (and redis-cli) are installed from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# The process tests signal bearerd with /bin/kill (procps).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 \
   || ! { [ -x /bin/kill ] || [ -x /usr/bin/kill ]; }; then
  echo "== installing redis-server and procps (Debian packages) for the tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools procps >/dev/null
fi
exec cargo test --locked "$@"
