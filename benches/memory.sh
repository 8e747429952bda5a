#!/usr/bin/env bash
# Resident memory of bearerd: idle with the example configuration, then with N (default 5,000)
# idle keep-alive client connections, each of which has carried one request and answer.
# Loopback only; needs python3 and a release build (built here when missing).
#
#   benches/memory.sh            # 5,000 connections
#   CONNS=10000 benches/memory.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
conns=${CONNS:-5000}
bin="$root/target/release/bearerd"
[ -x "$bin" ] || (cd "$root" && cargo build --release --locked --bin bearerd)

state=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$state"' EXIT
ulimit -n $((conns + 1024)) 2>/dev/null || { echo "cannot raise the open-file limit to $((conns + 1024))"; exit 2; }
cd "$root/config"
BEARERD_STORE_FILE="$state/tokens.json" RUST_LOG=warn "$bin" run --config bearerd.yaml >"$state/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -s -o /dev/null http://127.0.0.1:10001/readyz && break
  sleep 0.1
done
sleep 1
rss() { awk '/^VmRSS/{print $2}' "/proc/$pid/status"; }
idle=$(rss)
echo "idle RSS with config/bearerd.yaml: $((idle / 1024)) MiB ($idle KiB)"

# Open the connections, send one request on each (answered 403 by bearerd itself: no template
# matches), read the answer, keep the connection open, and report RSS while they are all idle.
python3 - "$conns" "$pid" "$idle" <<'PY'
import socket, sys, time
n, pid, idle = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
req = b"GET /x HTTP/1.1\r\nHost: unknown.example\r\n\r\n"
socks = []
t0 = time.time()
for i in range(n):
    s = socket.create_connection(("127.0.0.1", 10080))
    s.sendall(req)
    socks.append(s)
got = 0
for s in socks:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    if buf.startswith(b"HTTP/1.1 403"):
        got += 1
elapsed = time.time() - t0
time.sleep(1)
rss = int([l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0])
per = (rss - idle) / n
print(f"{n} keep-alive connections open ({got} answered 403) after {elapsed:.1f} s: RSS {rss // 1024} MiB, "
      f"+{(rss - idle) / 1024:.1f} MiB over idle ({per:.1f} KiB per connection)")
for s in socks:
    s.close()
PY
