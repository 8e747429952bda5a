#!/usr/bin/env bash
# Side-by-side load comparison of bearerd against nginx doing the same header injection, with the
# harness in ../shared/perf (wrk -t1 pinned to CPU 1; the proxy and the upstream nginx share
# CPU 0; alternating rounds; medians and ratios). Loopback only.
#
# Then the rest of the performance targets, each with its own script: 10,000 templates and
# invoke-by-name against the one-template run (benches/variants.sh), memory idle and with 5,000
# idle connections (benches/memory.sh), and the refresh storm (cargo bench --bench storm).
#
#   benches/compare.sh                      # c=32 and c=256, 3 rounds of 10 s, c=1, then the rest
#   ROUNDS=5 DURATION=10 benches/compare.sh
#   ONLY_HARNESS=1 benches/compare.sh       # only the comparison with nginx
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
[ -n "${ONLY_HARNESS:-}" ] && exit 0
echo "== 10,000 templates over 100 apps, and invoke-by-name, against one template"
PERF_DIR="$perf" "$here/variants.sh"
echo "== memory"
"$here/memory.sh"
echo "== refresh storm"
(cd "$root" && cargo bench --locked --bench storm 2>/dev/null)
