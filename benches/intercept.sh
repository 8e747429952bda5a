#!/usr/bin/env bash
# HTTPS interception (SPEC 2.1) against nginx doing the same work: nginx with one worker, an
# `ssl` listener (ECDSA P-256 certificate, as bearerd mints) and `proxy_set_header
# Authorization`, against bearerd answering `CONNECT localhost:18080`, terminating TLS with a
# certificate from its intercept CA and injecting the token. Both proxy to the harness upstream
# (../shared/perf, plain HTTP with keep-alive) and share CPU 0 with it; the load client
# (benches/tls_load.rs: wrk cannot CONNECT) runs alone on CPU 1. Rounds alternate; medians and
# ratios (bearerd / nginx) at the end. Loopback only.
#
#   benches/intercept.sh                 # c=32 and c=256 keep-alive, handshakes, idle memory,
#                                        # then instructions per request under callgrind
#   ROUNDS=5 SECS=10 benches/intercept.sh
#   CONNS="32" MODES="keepalive" benches/intercept.sh
set -euo pipefail
# shellcheck source=benches/harness.sh
source "$(dirname "$0")/harness.sh"
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
CONNS=${CONNS:-"32 256"}
MODES=${MODES:-"keepalive handshakes idle callgrind"}
IDLE=${IDLE:-1000}

for tool in nginx openssl taskset; do
  command -v "$tool" >/dev/null 2>&1 || { echo "== installing nginx, openssl, util-linux"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx openssl util-linux >/dev/null; break; }
done

echo "== building bearerd (release) and the load client"
(cd "$root" && cargo build --release --locked --bin bearerd)
client=$(cd "$root" && cargo bench --locked --bench tls_load --no-run 2>&1 | grep -o 'target/release/deps/tls_load-[0-9a-f]*' | head -1)
[ -n "$client" ] || { echo "cannot find the tls_load bench binary"; exit 1; }
client="$root/$client"

state=$(mktemp -d)
mkdir -p "$RUN_DIR"
cleanup() {
  stop_pidfile "$RUN_DIR/nginx-ssl.pid" nginx-ssl || true
  if [ -n "${bearerd_pid:-}" ]; then kill "$bearerd_pid" 2>/dev/null; wait "$bearerd_pid" 2>/dev/null || true; fi
  if [ -n "${own_upstream:-}" ]; then stop_pidfile "$RUN_DIR/upstream.pid" upstream.nginx.conf || true; fi
  [ -n "${KEEP_STATE:-}" ] && echo "state kept in $state" || rm -rf "$state"
}
trap cleanup EXIT

pid_alive "$RUN_DIR/upstream.pid" || own_upstream=1
start_upstream
export BEARERD_BENCH_STATE="$state/tokens.json"
port_open 127.0.0.1:18092 && die "127.0.0.1:18092 is in use (a bearerd still draining?)"
port_open 127.0.0.1:18443 && die "127.0.0.1:18443 is in use"
# setsid and taskset exec bearerd: $! is bearerd's own pid (for its CPU time, its memory, and
# the end). Its own session, as nginx has by daemonizing: with autogroup scheduling, a process in
# this script's session shares one CPU weight with the load client on the other CPU, and the
# upstream on its CPU then preempts it more often than it preempts nginx.
bearerd_cmd=("$root/target/release/bearerd" run --config "$here/perf/intercept.yaml")
[ -n "$SERVER_CPUS" ] && bearerd_cmd=(taskset -c "$SERVER_CPUS" "${bearerd_cmd[@]}")
RUST_LOG=${RUST_LOG:-warn} setsid "${bearerd_cmd[@]}" > "$state/bearerd.log" 2>&1 < /dev/null &
bearerd_pid=$!
wait_port 127.0.0.1:18092 100 || { cat "$state/bearerd.log"; die "bearerd did not open 127.0.0.1:18092"; }

# nginx's certificate: ECDSA P-256 for localhost, signed by bearerd's intercept CA (generated
# beside the token file), so that both present the same kind of chain.
p="$(_nginx_prefix nginx-ssl)"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$p/key.pem" -out "$state/nginx.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
  > "$state/leaf.ext"
openssl x509 -req -in "$state/nginx.csr" -CA "$state/ca.pem" -CAkey "$state/ca-key.pem" -CAcreateserial \
  -days 2 -extfile "$state/leaf.ext" -out "$p/cert.pem" 2>/dev/null
cp "$here/perf/nginx-ssl.conf" "$p/nginx.conf"
pin "$SERVER_CPUS" nginx -p "$p/" -e "$p/logs/error.log" -c "$p/nginx.conf" -g "pid $RUN_DIR/nginx-ssl.pid;"
wait_port 127.0.0.1:18443 || die "nginx ssl did not open 127.0.0.1:18443"
nginx_pid=$(cat "$RUN_DIR/nginx-ssl.pid")
ca="$state/ca.pem"

# csw PID... -> "voluntary involuntary" context switches of the pids' threads and their children's
csw() {
  local p c v=0 n=0 a b
  for p in "$@"; do
    for c in "$p" $(pgrep -P "$p" 2>/dev/null); do
      read -r a b < <(cat /proc/"$c"/task/*/status 2>/dev/null | awk '
        /^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {print v+0, n+0}')
      v=$((v + a)); n=$((n + b))
    done
  done
  echo "$v $n"
}

# run NAME CONNS [client args] -> "rps cpu_us_per_req" (the proxy's own CPU time per request).
# Also printed: context switches per request, voluntary/involuntary, of the proxy and of the
# upstream that shares its CPU (an upstream woken by the request preempts the proxy).
run() {
  local name=$1 conns=$2; shift 2
  local pid args out t0 t1 req rps s0 s1 u0 u1 up ut0 ut1 c0 c1 st0 st1 sa0 sa1 _
  if [ "$name" = nginx ]; then pid=$nginx_pid; args=(--target 127.0.0.1:18443)
  else pid=$bearerd_pid; args=(--proxy 127.0.0.1:18092); fi
  wait_quiet >/dev/null || true
  up=$(cat "$RUN_DIR/upstream.pid")
  s0=$(csw "$pid"); u0=$(csw "$up"); ut0=$(tree_ticks "$up")
  read -r c0 st0 < <(sys_ticks "$LOADGEN_CPUS"); read -r _ sa0 < <(sys_ticks)
  t0=$(tree_ticks "$pid")
  out=$(pin "$LOADGEN_CPUS" "$client" "${args[@]}" --host localhost:18080 --ca "$ca" --conns "$conns" --secs "$SECS" "$@")
  t1=$(tree_ticks "$pid")
  s1=$(csw "$pid"); u1=$(csw "$up"); ut1=$(tree_ticks "$up")
  read -r c1 st1 < <(sys_ticks "$LOADGEN_CPUS"); read -r _ sa1 < <(sys_ticks)
  req=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")
  rps=$(sed -n 's/.*rps=\([0-9]*\).*/\1/p' <<<"$out")
  echo "  $name c=$conns $out cpu_us/req=$(( (t1 - t0) * 10000 / (req > 0 ? req : 1) ))" \
    "$(awk -v a="$s0 $u0" -v b="$s1 $u1" -v r="$req" 'BEGIN{split(a, x); split(b, y); r = (r > 0 ? r : 1)
      printf "csw/req proxy %.2f/%.2f upstream %.2f/%.2f", (y[1]-x[1])/r, (y[2]-x[2])/r, (y[3]-x[3])/r, (y[4]-x[4])/r}')" \
    "upstream_cpu_us/req=$(( (ut1 - ut0) * 10000 / (req > 0 ? req : 1) ))" \
    "client_cpu=$(( (c1 - c0) / SECS ))% steal=$(( (sa1 - sa0) / SECS ))%" >&2
  grep -q "non2xx=0 errors=0" <<<"$out" || echo "  ^ non-2xx answers or errors" >&2
  echo "$rps $(( (t1 - t0) * 10000 * 100 / (req > 0 ? req : 1) ))"
}

median() { sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

compare() {  # compare LABEL CONNS [client args]
  local label=$1 conns=$2; shift 2
  local n_rps=() n_cpu=() b_rps=() b_cpu=() r
  for ((i = 1; i <= ROUNDS; i++)); do
    read -r r c < <(run nginx "$conns" "$@"); n_rps+=("$r"); n_cpu+=("$c")
    read -r r c < <(run bearerd "$conns" "$@"); b_rps+=("$r"); b_cpu+=("$c")
  done
  local nr nc br bc
  nr=$(printf '%s\n' "${n_rps[@]}" | median); nc=$(printf '%s\n' "${n_cpu[@]}" | median)
  br=$(printf '%s\n' "${b_rps[@]}" | median); bc=$(printf '%s\n' "${b_cpu[@]}" | median)
  awk -v l="$label" -v c="$conns" -v nr="$nr" -v nc="$nc" -v br="$br" -v bc="$bc" 'BEGIN{
    printf "%-11s c=%-4s nginx %7.0f req/s %6.1f cpu_us/req | bearerd %7.0f req/s %6.1f cpu_us/req | ratio req/s %.3f cpu/req %.3f\n",
      l, c, nr, nc/100, br, bc/100, (nr > 0 ? br/nr : 0), (nc > 0 ? bc/nc : 0) }' | tee -a "$state/summary"
}

rss_kib() {  # rss_kib PID -> resident KiB of the process and its children (nginx's worker)
  local t=0 p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
    t=$(( t + $(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0) ))
  done
  echo "$t"
}

idle_memory() {  # memory per idle connection (TLS done; through CONNECT for bearerd)
  for name in nginx bearerd; do
    local pid args before after
    if [ "$name" = nginx ]; then pid=$nginx_pid; args=(--target 127.0.0.1:18443)
    else pid=$bearerd_pid; args=(--proxy 127.0.0.1:18092); fi
    before=$(rss_kib "$pid")
    mkfifo "$state/hold"
    pin "$LOADGEN_CPUS" "$client" "${args[@]}" --host localhost:18080 --ca "$ca" --idle "$IDLE" < "$state/hold" > "$state/idle.out" &
    local holder=$!
    exec 9>"$state/hold"
    for _ in $(seq 1 200); do grep -q idle= "$state/idle.out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    after=$(rss_kib "$pid")
    exec 9>&-
    wait "$holder" || true
    rm -f "$state/hold"
    awk -v n="$name" -v b="$before" -v a="$after" -v c="$IDLE" 'BEGIN{
      printf "idle        %-7s %d connections: RSS %d -> %d KiB, %.1f KiB per connection\n", n, c, b, a, (a-b)/c }' | tee -a "$state/summary"
    sleep 2
  done
}

# Instructions per request under callgrind (steady where the machine's load moves req/s): each
# proxy alone under valgrind, c=32 keep-alive for CG_SECS after a warm-up, counting requests on
# open connections only. Stops the servers above, so it runs last.
callgrind_compare() {
  stop_pidfile "$RUN_DIR/nginx-ssl.pid" nginx-ssl || true
  kill "$bearerd_pid" 2>/dev/null; wait "$bearerd_pid" 2>/dev/null || true; bearerd_pid=
  for _ in $(seq 1 100); do port_open 127.0.0.1:18092 || break; sleep 0.1; done
  local name vpid args n ir
  for name in nginx bearerd; do
    if [ "$name" = nginx ]; then
      args=(--target 127.0.0.1:18443)
      valgrind --tool=callgrind ${CG_OPTS:-} --instr-atstart=no --callgrind-out-file="$state/cg-$name.%p" \
        nginx -p "$p/" -e "$p/logs/error.log" -c "$p/nginx.conf" -g "pid $p/cg.pid; daemon off; master_process off;" \
        > "$state/cg-$name.log" 2>&1 &
      vpid=$!; wait_port 127.0.0.1:18443 300 || die "nginx under valgrind did not listen"
    else
      args=(--proxy 127.0.0.1:18092)
      RUST_LOG=warn valgrind --tool=callgrind ${CG_OPTS:-} --instr-atstart=no --callgrind-out-file="$state/cg-$name.%p" \
        "$root/target/release/bearerd" run --config "$here/perf/intercept.yaml" > "$state/cg-$name.log" 2>&1 &
      vpid=$!; wait_port 127.0.0.1:18092 300 || die "bearerd under valgrind did not listen"
    fi
    "$client" "${args[@]}" --host localhost:18080 --ca "$ca" --conns "${CG_CONNS:-32}" --secs 2 > /dev/null   # warm-up
    # --gate: the counted window holds requests only (the 32 handshakes before it, the closes after).
    rm -f "$state/gate"; mkfifo "$state/gate"
    "$client" "${args[@]}" --host localhost:18080 --ca "$ca" --conns "${CG_CONNS:-32}" --secs "${CG_SECS:-6}" --gate \
      < "$state/gate" > "$state/gate.out" &
    local gated=$!
    exec 8>"$state/gate"
    for _ in $(seq 1 600); do grep -q ready "$state/gate.out" && break; sleep 0.1; done
    callgrind_control -i on "$vpid" > /dev/null 2>&1
    echo go >&8
    for _ in $(seq 1 600); do grep -q requests= "$state/gate.out" && break; sleep 0.1; done
    callgrind_control -d "$vpid" > /dev/null 2>&1
    exec 8>&-
    wait "$gated" || true
    n=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' "$state/gate.out")
    kill "$vpid" 2>/dev/null; wait "$vpid" 2>/dev/null || true
    ir=$(cat "$state"/cg-"$name".*.1 2>/dev/null | awk '/^summary:/ {s += $2} END {print s+0}')
    awk -v l="$name" -v c="${CG_CONNS:-32}" -v i="$ir" -v n="$n" 'BEGIN{printf "callgrind   %-7s c=%s %.0f instructions/request (%d requests)\n", l, c, (n > 0 ? i/n : 0), n}' \
      | tee -a "$state/summary"
  done
}

echo "== HTTPS interception against nginx ssl: ${ROUNDS} rounds of ${SECS} s, alternating"
for mode in $MODES; do
  case $mode in
    keepalive) for c in $CONNS; do compare keepalive "$c"; done ;;
    handshakes) compare handshakes 32 --handshakes ;;
    idle) idle_memory ;;
    callgrind) callgrind_compare ;;
  esac
done
echo "== summary"
cat "$state/summary"
