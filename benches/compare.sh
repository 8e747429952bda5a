#!/usr/bin/env bash
# Side-by-side load comparison of bearerd against nginx doing the same header injection, with the
# harness in ../shared/perf (wrk -t1 pinned to CPU 1; the proxy and the upstream nginx share
# CPU 0; alternating rounds; medians and ratios). Loopback only.
#
#   benches/compare.sh                      # c=32 and c=256, 3 rounds of 10 s, then c=1 latency
#   ROUNDS=5 DURATION=10 benches/compare.sh
#   PERF_DIR=/path/to/perf benches/compare.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
perf=${PERF_DIR:-$root/../shared/perf}
[ -x "$perf/compare.sh" ] || { echo "no harness at $perf (set PERF_DIR)"; exit 2; }

missing=()
for tool in nginx wrk haproxy taskset curl python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx wrk haproxy util-linux curl python3 >/dev/null
fi

echo "== building bearerd (release)"
(cd "$root" && cargo build --release --locked --bin bearerd)

state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
export BEARERD_BENCH_STATE="$state/tokens.json"
export RUST_LOG=${RUST_LOG:-warn}      # nginx runs with access_log off: so does bearerd's access log
export CANDIDATE=127.0.0.1:18090
export CANDIDATE_HOST=localhost:18080  # transparent mode: the template matches this Host
export CANDIDATE_CMD="$root/target/release/bearerd run --config $root/benches/perf/bearerd.yaml"

echo "== throughput and CPU per request"
TARGETS=${TARGETS:-"direct nginx-w1 candidate"} CONNS=${CONNS:-"32 256"} "$perf/compare.sh"
echo "== added latency at one connection"
TARGETS=${TARGETS:-"direct nginx-w1 candidate"} CONNS=1 "$perf/compare.sh"
