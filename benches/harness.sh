# Sourced by the benches that run in the shared load-test harness: sets `here` (benches/),
# `root` (the project) and `perf` (the harness, $PERF_DIR or ../shared/perf), and sources its
# lib.sh, or exits 2 naming what is missing.
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
root=$(cd "$here/.." && pwd)
perf=${PERF_DIR:-$root/../shared/perf}
[ -f "$perf/lib.sh" ] || { echo "no harness at $perf (set PERF_DIR)"; exit 2; }
# shellcheck source=/dev/null
source "$perf/lib.sh"
