#!/usr/bin/env python3
"""Cold start of bearerd as a Lambda extension (SPEC 7): from exec to its first
`GET /extension/event/next` (listeners bound, configuration compiled, registered), which is
when Lambda can start the function's init.

A minimal Extensions API (standard library only) answers `register`, records the time of the
first `event/next` and answers it with SHUTDOWN, so each run ends at once. Each run starts in an
empty state folder, as a new execution environment's /tmp is: the intercept CA is created every
time. The app has 10 templates, two integrations.

    benches/coldstart.py [BINARY] [RUNS]     default target/release/bearerd, 30 runs
"""
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/bearerd"
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30


class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    first_next = None

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        if self.path.endswith("/register"):
            self.answer(200, {"functionName": "bench"}, [("Lambda-Extension-Identifier", "bench-id")])
        else:
            Api.errors.append(self.path)
            self.answer(202, {})

    def do_GET(self):
        if Api.first_next is None:
            Api.first_next = time.perf_counter()
        deadline = int(time.time() * 1000) + 1000
        self.answer(200, {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": deadline})


Api.errors = []


def app(root):
    apps = os.path.join(root, "apps", "bench", "config")
    os.makedirs(apps)
    requests = {}
    for i in range(10):
        requests[f"t{i}"] = {
            "schema": {
                "method": "POST" if i % 2 else "GET",
                "host": "api.example.com",
                "path": f"/v1/items/<%= context.id %>/part{i}",
                "headers": {"Authorization": "Bearer <%= access_token %>", "Content-Type": "application/json"},
                "query": {"page": "<%= context.page %>"},
            },
            "options": {"oauth": "api" if i % 3 else "other"},
        }
    oauth = {"integrations": {
        name: {"client_id": "cid", "client_secret": "secret", "authorize_url": "https://auth.example.com/authorize",
               "token_url": "https://auth.example.com/token", "options": {"scope": "read"}, "token_type": "account"}
        for name in ("api", "other")}}
    with open(os.path.join(apps, "requests.json"), "w") as f:
        json.dump(requests, f)
    with open(os.path.join(apps, "oauth_config.json"), "w") as f:
        json.dump(oauth, f)
    with open(os.path.join(root, "apps", "bench", "manifest.json"), "w") as f:
        json.dump({"platform-version": "3.0", "modules": {"common": {"requests": {f"t{i}": {} for i in range(10)}}}}, f)
    with open(os.path.join(root, "bearerd.yaml"), "w") as f:
        f.write("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nstore: {file: state/tokens.json}\n"
                "reload: {watch: false}\napps:\n  - {name: bench, path: apps/bench}\n")


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = tempfile.mkdtemp(prefix="bearerd-coldstart-")
    app(root)
    env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_port}",
               BEARERD_CONFIG=os.path.join(root, "bearerd.yaml"), RUST_LOG="warn")
    times = []
    try:
        for _ in range(runs):
            shutil.rmtree(os.path.join(root, "state"), ignore_errors=True)
            Api.first_next = None
            t0 = time.perf_counter()
            p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, err = p.communicate(timeout=20)
            if p.returncode != 0 or Api.first_next is None:
                sys.exit(f"run failed (exit {p.returncode}): {err.decode(errors='replace')}")
            times.append((Api.first_next - t0) * 1000)
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    if Api.errors:
        sys.exit(f"bearerd reported errors: {Api.errors}")
    times.sort()
    p90 = times[int(len(times) * 0.9) - 1]
    size = os.path.getsize(binary)
    print(f"{binary}: {size} bytes ({size / 1048576:.1f} MiB)")
    print(f"exec to first event/next over {runs} runs: median {statistics.median(times):.2f} ms, "
          f"p90 {p90:.2f} ms, min {times[0]:.2f} ms, max {times[-1]:.2f} ms")


main()
