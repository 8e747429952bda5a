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
  cargo fuzz run -s none -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done|==|thread|.*panicked)" || true
  # grep hides libFuzzer's progress lines; the exit status is cargo fuzz's.
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz target $t found a failure (see fuzz/artifacts/$t)"; exit 1; }
done
