#!/usr/bin/env bash
# What callers (SPEC 2.2) cost on the plain path: instructions per request under callgrind, the
# same keep-alive load through bearerd without callers, with a secret caller (the proxy URL's
# password, as HTTP_PROXY clients send it: Proxy-Authorization: Basic) and with a JWT caller
# (Proxy-Authorization: Bearer, an ES256 token verified against a JWKS file), each run alone
# under valgrind in front of the harness upstream (../shared/perf); without callers also with the
# same Basic header, which then only names the app. With BASE_BIN, an earlier build is measured
# first without callers (with and without that header), in the same run. Loopback only.
#
#   benches/callers.sh [CONNS=32] [SECS=6]
#   BASE_BIN=/tmp/bd-base/target/release/bearerd benches/callers.sh 32 6
#   CG_OUT=/tmp/cg benches/callers.sh   # keep the callgrind files, for callgrind_annotate
set -euo pipefail
# shellcheck source=benches/harness.sh
source "$(dirname "$0")/harness.sh"
conns=${1:-32}; secs=${2:-6}; warm=${CG_WARMUP:-2}
for tool in valgrind wrk nginx openssl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (benches/compare.sh installs nginx and wrk)"; exit 2; }
done
bin=${BIN:-$root/target/release/bearerd}
[ -x "$bin" ] || (cd "$root" && cargo build --release --locked --bin bearerd)

work=$(mktemp -d)
own_upstream=0; pid_alive "$RUN_DIR/upstream.pid" || own_upstream=1
cleanup() {
  [[ -n ${vpid:-} ]] && kill "$vpid" 2>/dev/null
  (( own_upstream )) && stop_pidfile "$RUN_DIR/upstream.pid" nginx
  rm -rf "$work"
}
trap cleanup EXIT
start_upstream

# A P-256 key, its JWKS, and a token for it (openssl signs; the DER signature becomes r || s).
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ec.pem" 2>/dev/null
openssl ec -in "$work/ec.pem" -pubout -outform DER -out "$work/ec.pub.der" 2>/dev/null
read -r jwt < <(python3 - "$work" <<'PY'
import base64, json, subprocess, sys, time
work = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
point = open(f"{work}/ec.pub.der", "rb").read()[-65:]
jwk = {"kty": "EC", "crv": "P-256", "kid": "bench", "x": b64(point[1:33]), "y": b64(point[33:])}
json.dump({"keys": [jwk]}, open(f"{work}/jwks.json", "w"))
header = b64(json.dumps({"alg": "ES256", "kid": "bench"}).encode())
claims = b64(json.dumps({"iss": "https://issuer.bench", "aud": "bearerd", "exp": int(time.time()) + 3600}).encode())
data = f"{header}.{claims}".encode()
der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/ec.pem"], input=data, capture_output=True, check=True).stdout
# SEQUENCE { INTEGER r, INTEGER s } -> 32-byte r || 32-byte s
i = 2 + (der[1] & 0x80 and der[1] & 0x7f)
def integer(i):
    n = der[i + 1]
    return der[i + 2:i + 2 + n], i + 2 + n
r, i = integer(i)
s, _ = integer(i)
sig = r.lstrip(b"\0").rjust(32, b"\0") + s.lstrip(b"\0").rjust(32, b"\0")
print(f"{header}.{claims}.{b64(sig)}")
PY
)

# The bench configuration (benches/perf/bearerd.yaml) with its app folder, and with each caller.
cp -r "$here/perf/app" "$work/app"
sed "s|\${BEARERD_BENCH_STATE:-/tmp/bearerd-bench/tokens.json}|$work/tokens.json|" "$here/perf/bearerd.yaml" > "$work/none.yaml"
cp "$work/none.yaml" "$work/secret.yaml"
cat >> "$work/secret.yaml" <<'EOF'
callers:
  - {name: bench, secret: bench-secret-0123456789, apps: [bench]}
EOF
cp "$work/none.yaml" "$work/jwt.yaml"
cat >> "$work/jwt.yaml" <<EOF
callers:
  - {name: bench, jwt: {issuer: "https://issuer.bench", audience: bearerd, jwks_file: $work/jwks.json}, apps: [bench]}
EOF
basic="Basic $(printf 'bench:bench-secret-0123456789' | base64 -w0)"

measure() {  # measure NAME BIN CONFIG [HEADER] -> "NAME instructions/request requests"
  local name=$1 b=$2 cfg=$3 extra=${4:-}
  local hdr=(-H "Host: localhost:18080"); [[ -n $extra ]] && hdr+=(-H "$extra")
  RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/$name.%p" \
    "$b" run --config "$cfg" >"$work/$name.log" 2>&1 &
  vpid=$!
  wait_port 127.0.0.1:18090 300 || { cat "$work/$name.log"; die "$name did not start"; }
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' "${hdr[@]}" http://127.0.0.1:18090/)
  [[ $code == 200 ]] || die "$name answers $code (see $work/$name.log)"
  wrk -t1 -c"$conns" -d"${warm}s" "${hdr[@]}" http://127.0.0.1:18090/ >/dev/null 2>&1 || true
  callgrind_control -i on "$vpid" >/dev/null 2>&1
  local res n ir bad
  res=$(wrk -t1 -c"$conns" -d"${secs}s" "${hdr[@]}" http://127.0.0.1:18090/ 2>&1)
  callgrind_control -d "$vpid" >/dev/null 2>&1
  kill "$vpid" 2>/dev/null; wait "$vpid" 2>/dev/null || true; vpid=
  n=$(awk '/requests in/ {print $1}' <<< "$res")
  bad=$(awk '/Non-2xx/ {print $NF}' <<< "$res")
  ir=$(cat "$work/$name".*.1 2>/dev/null | awk '/^summary:/ {s += $2} END {print s+0}')
  if [[ -n ${CG_OUT:-} ]]; then mkdir -p "$CG_OUT"; mv "$work/$name".*.1 "$CG_OUT/" 2>/dev/null || true; fi
  rm -f "$work/$name".*
  printf '%-16s %8.0f instructions/request  (%s requests, non-2xx %s)\n' "$name" "$(awk -v i="$ir" -v n="$n" 'BEGIN {print (n > 0 ? i / n : 0)}')" "$n" "${bad:-0}"
}

echo "# benches/callers.sh c=$conns secs=$secs warm-up=${warm}s bin=$bin"
# Without callers, with and without the header that names the app (what a client sends either way).
if [[ -n ${BASE_BIN:-} ]]; then
  measure base-no-header "$BASE_BIN" "$work/none.yaml"
  measure base-app-header "$BASE_BIN" "$work/none.yaml" "Proxy-Authorization: $basic"
fi
measure no-callers "$bin" "$work/none.yaml"
measure app-header "$bin" "$work/none.yaml" "Proxy-Authorization: $basic"
measure secret-caller "$bin" "$work/secret.yaml" "Proxy-Authorization: $basic"
measure jwt-caller "$bin" "$work/jwt.yaml" "Proxy-Authorization: Bearer $jwt"
