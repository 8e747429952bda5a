#!/usr/bin/env bash
# bearerd against itself, with the pinning of the shared harness (wrk -t1 on CPU 1; bearerd and
# the harness upstream nginx on CPU 0), variants in alternating order, medians and ratios:
#   one       transparent mode, one template (benches/perf/bearerd.yaml)
#   10k       the same request with 10,000 templates loaded over 100 apps
#   invoke    POST /invoke/root (invoke-by-name) with the one-template configuration
# Every request names its app (x-bearerd-app: bench), as it must with several apps.
#
#   benches/variants.sh                      # c=32 and c=256, 3 rounds of 8 s
#   ROUNDS=5 DURATION=10 CONNS="32" benches/variants.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
perf=${PERF_DIR:-$root/../shared/perf}
rounds=${ROUNDS:-3}
dur=${DURATION:-8}
conns=${CONNS:-"32 256"}
variants=${VARIANTS:-"one 10k invoke"}
for tool in nginx wrk taskset curl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (benches/compare.sh installs it)"; exit 2; }
done
(cd "$root" && cargo build --release --locked --bin bearerd)
bin="$root/target/release/bearerd"

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; "$perf/servers.sh" stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$perf/servers.sh" start >/dev/null

# 100 apps of 100 templates; app 0 is the benchmark app (its template `root` first).
python3 - "$work" "$root/benches/perf/app" <<'PY'
import json, os, shutil, sys
work, bench = sys.argv[1], sys.argv[2]
apps = []
for a in range(100):
    d = os.path.join(work, "apps", f"app{a:03}")
    os.makedirs(os.path.join(d, "config"))
    reqs = {}
    if a == 0:
        reqs.update(json.load(open(os.path.join(bench, "config/requests.json"))))
        shutil.copy(os.path.join(bench, "config/oauth_config.json"), os.path.join(d, "config"))
    else:
        json.dump({"integrations": {"upstream": {"client_id": "c", "client_secret": "s",
                   "token_url": "http://localhost:18080/oauth/token", "grant_type": "client_credentials"}}},
                  open(os.path.join(d, "config/oauth_config.json"), "w"))
    for t in range(100 - len(reqs)):
        reqs[f"t{t:03}"] = {"schema": {"method": ["GET", "POST", "PUT", "DELETE"][t % 4],
            "host": f"api{a}-{t % 10}.example.com",
            "path": f"/v{t % 3}/items{t}/<%= context.id %>/sub{t % 7}",
            "headers": {"Authorization": "Bearer <%= access_token %>", "X-Item": "<%= context.id %>"}},
            "options": {"oauth": "upstream"}}
    json.dump(reqs, open(os.path.join(d, "config/requests.json"), "w"))
    json.dump({"platform-version": "3.0", "modules": {"common": {"requests": {k: {} for k in reqs}}}},
              open(os.path.join(d, "manifest.json"), "w"))
    apps.append(f"  - {{name: {'bench' if a == 0 else f'app{a:03}'}, path: apps/app{a:03}}}")
head = ("listen: 127.0.0.1:18090\nadmin: {listen: 127.0.0.1:18091}\nstore: {file: " + work + "/tokens.json}\n"
        "upstream: {allow_http: true, allow_private_ips: true}\nreload: {watch: false}\n")
open(os.path.join(work, "10k.yaml"), "w").write(head + "apps:\n" + "\n".join(apps) + "\n")
open(os.path.join(work, "one.yaml"), "w").write(head + "apps:\n  - {name: bench, path: " + bench + "}\n")
PY
cat > "$work/invoke.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/invoke/root"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
LUA

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # variant conns -> "rps cpu_us_per_req p50 p99"
  local v=$1 c=$2 cfg=one script=()
  [ "$v" = 10k ] && cfg=10k
  [ "$v" = invoke ] && script=(-s "$work/invoke.lua")
  setsid taskset -c 0 "$bin" run --config "$work/$cfg.yaml" >"$work/$v.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do curl -s -o /dev/null -H 'Host: localhost:18080' -H 'x-bearerd-app: bench' http://127.0.0.1:18090/ && break; sleep 0.1; done
  taskset -c 1 wrk -t1 -c"$c" -d1s "${script[@]}" -H 'Host: localhost:18080' -H 'x-bearerd-app: bench' http://127.0.0.1:18090/ >/dev/null
  local t0 t1 out n
  t0=$(ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c"$c" -d"${dur}s" --latency "${script[@]}" -H 'Host: localhost:18080' -H 'x-bearerd-app: bench' http://127.0.0.1:18090/)
  t1=$(ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  n=$(echo "$out" | awk '/requests in/{print $1}')
  if echo "$out" | grep -q "Non-2xx"; then echo "$v c=$c: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  echo "$out" | awk -v n="$n" -v d="$dur" -v t="$((t1 - t0))" '
    function us(x) { if (x ~ /us$/) return x+0; if (x ~ /ms$/) return x*1000; return x*1000000 }
    /^ +50%/ {p50=us($2)} /^ +99%/ {p99=us($2)}
    END {printf "%.0f %.2f %.0f %.0f\n", n/d, t*10000/n, p50, p99}'
}

echo "== variants: $variants; c = $conns; $rounds rounds of $dur s, alternating"
declare -A res
for r in $(seq "$rounds"); do
  for c in $conns; do
    order=$variants
    [ $((r % 2)) = 0 ] && order=$(echo "$variants" | tr ' ' '\n' | tac | tr '\n' ' ')
    for v in $order; do
      line=$(run "$v" "$c")
      res["$v,$c"]+="$line;"
      echo "round $r c=$c $v: $line"
    done
  done
done
echo
printf "%-8s %5s %9s %8s %8s %8s %9s %9s\n" variant c "req/s" cpu/req p50us p99us "req/s÷one" "cpu÷one"
for c in $conns; do
  base=""
  for v in $variants; do
    med=$(echo "${res[$v,$c]}" | tr ';' '\n' | grep . | python3 -c '
import sys, statistics
rows = [list(map(float, l.split())) for l in sys.stdin]
print(" ".join(str(statistics.median(col)) for col in zip(*rows)))')
    read -r rps cpu p50 p99 <<<"$med"
    [ -z "$base" ] && base="$rps $cpu"
    read -r brps bcpu <<<"$base"
    printf "%-8s %5s %9.0f %8.2f %8.0f %8.0f %9.3f %9.3f\n" "$v" "$c" "$rps" "$cpu" "$p50" "$p99" \
      "$(python3 -c "print($rps/$brps)")" "$(python3 -c "print($cpu/$bcpu)")"
  done
done
