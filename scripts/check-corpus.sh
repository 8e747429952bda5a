#!/usr/bin/env bash
# Runs `bearerd check --app` over every folder of an FDK corpus with the values and the expected
# outcome from scripts/fdk-corpus.tsv; fails on any folder whose outcome differs, and on any
# corpus folder the table does not mention.
# Usage: scripts/check-corpus.sh CORPUS_DIR [BEARERD_BINARY]
set -uo pipefail
corpus=${1:?usage: scripts/check-corpus.sh CORPUS_DIR [BEARERD_BINARY]}
here=$(cd "$(dirname "$0")" && pwd)
bin=${2:-$here/../target/debug/bearerd}
table=$here/fdk-corpus.tsv
[ -x "$bin" ] || { echo "no bearerd binary at $bin (cargo build first)"; exit 2; }
pass=0; fail=0; declare -A seen
while IFS=$'\t' read -r folder expect args; do
  [[ -z "$folder" || "$folder" == \#* ]] && continue
  seen[$folder]=1
  dir=$corpus/$folder
  if [ ! -d "$dir" ]; then echo "MISSING $folder"; fail=$((fail+1)); continue; fi
  # shellcheck disable=SC2086
  out=$("$bin" check --app "$dir" $args 2>&1); rc=$?
  case "$expect" in
    loads) if [ $rc -eq 0 ]; then ok=1; else ok=0; fi ;;
    fails:*) want=${expect#fails:}
       if [ $rc -eq 1 ] && grep -qF -- "$want" <<<"$out"; then ok=1; else ok=0; fi ;;
    *) echo "bad expectation '$expect' for $folder"; ok=0 ;;
  esac
  if [ $ok -eq 1 ]; then
    pass=$((pass+1)); echo "ok      $folder ($expect)"
  else
    fail=$((fail+1)); echo "FAILED  $folder: expected $expect, exit $rc"; sed 's/^/        /' <<<"$out"
  fi
done < "$table"
for d in "$corpus"/*/; do
  f=$(basename "$d")
  [ -n "${seen[$f]:-}" ] || { echo "FAILED  $f: not in $table"; fail=$((fail+1)); }
done
echo "corpus: $pass passed, $fail failed"
[ $fail -eq 0 ]
