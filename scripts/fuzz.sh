#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 15), coverage-guided (libFuzzer via
# cargo fuzz, on the stable toolchain without a sanitizer: bearerd forbids unsafe code), from
# the seeds in fuzz/seeds/<target>. A finding fails the run and leaves its input in
# fuzz/artifacts/<target>/; add it to the regression inputs of src/http/oracle.rs or
# src/fuzzing.rs. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-15}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(request_framing answer_framing template loaders)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
cargo fuzz build -s none -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${seconds}s"
  log="corpus/$t.log"
  status=0
  cargo fuzz run -s none -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  # libFuzzer's progress lines stay in the log; its summary and any finding are shown.
  grep -a -E "^(stat::number_of_executed_units|stat::new_units_added|Done)" "$log" || true
  grep -a -A3 "panicked" "$log" | cut -c1-400 || true
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $t found a failure (input in fuzz/artifacts/$t, log in fuzz/$log)"
    exit 1
  fi
done
