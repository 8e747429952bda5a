#!/usr/bin/env python3
"""Slow-body clients against bearerd with a low open-file limit (issue: 2,000 slow bodies).

Starts a plain HTTP upstream and bearerd (`ulimit -n NOFILE`), then opens CONNS connections
that each send a request head announcing a 100-byte body and only 1 byte of it, and hold them
(with --reconnect, a connection bearerd cuts is opened again at once). Meanwhile it measures,
every 250 ms: a request on a new connection, a request on a keep-alive connection opened before
the attack, and GET /healthz on the admin listener. Prints one line per 5 s window and bearerd's
descriptors, connection gauges and refusals.

    python3 benches/slow_clients.py --bearerd target/release/bearerd [--conns 2000] [--reconnect]
"""

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def upstream(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    except Exception:
        writer.close()


async def request(port, conn=None, timeout=2.0):
    """One invoke; on `conn` (reader, writer) when given, else on a new connection."""
    try:
        own = conn is None
        if own:
            conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        reader, writer = conn
        writer.write(b"POST /invoke/get HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        await asyncio.wait_for(reader.readexactly(length), timeout)
        if own:
            writer.close()
        return head.startswith(b"HTTP/1.1 200")
    except Exception:
        return False


async def healthz(port, timeout=2.0):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await writer.drain()
        out = await asyncio.wait_for(reader.read(), timeout)
        writer.close()
        return out.startswith(b"HTTP/1.1 200")
    except Exception:
        return False


async def slow_client(port, stop, reconnect, held):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /invoke/get HTTP/1.1\r\nHost: b\r\nContent-Length: 100\r\n\r\n{")
            await writer.drain()
            held[0] += 1
            try:
                await reader.read()  # until bearerd gives the connection up
            finally:
                held[0] -= 1
                writer.close()
        except Exception:
            await asyncio.sleep(0.05)
        if not reconnect:
            return


def metric(text, name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return m.group(1) if m else "-"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bearerd", required=True)
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--nofile", type=int, default=1024)
    ap.add_argument("--seconds", type=int, default=40)
    ap.add_argument("--reconnect", action="store_true")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.conns * 2 + 1024), hard))

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up = server.sockets[0].getsockname()[1]
    data, admin = free_port(), free_port()
    d = tempfile.mkdtemp()
    os.makedirs(f"{d}/apps/demo/config")
    json.dump({"platform-version": "3.0", "modules": {"common": {"requests": {"get": {}}}}},
              open(f"{d}/apps/demo/manifest.json", "w"))
    json.dump({"get": {"schema": {"method": "GET", "protocol": "http", "host": f"127.0.0.1:{up}", "path": "/ok"}}},
              open(f"{d}/apps/demo/config/requests.json", "w"))
    open(f"{d}/bearerd.yaml", "w").write(
        f"listen: 127.0.0.1:{data}\nadmin: {{listen: 127.0.0.1:{admin}}}\nstore: {{file: t.json}}\n"
        "upstream: {allow_http: true, allow_private_ips: true}\nreload: {watch: false}\n"
        "apps:\n  - {name: demo, path: apps/demo}\n")
    log = open(f"{d}/bearerd.log", "w")
    proc = subprocess.Popen(["sh", "-c", f"ulimit -n {a.nofile} && exec {a.bearerd} run --config {d}/bearerd.yaml"],
                            stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    for _ in range(100):
        if await healthz(admin, 0.2):
            break
        await asyncio.sleep(0.1)
    kept = await asyncio.open_connection("127.0.0.1", data)
    stop = asyncio.Event()
    held = [0]
    results = []  # (time, new connection ok, keep-alive ok, admin ok)
    t0 = time.monotonic()
    attack = None

    async def probe():
        while time.monotonic() - t0 < a.seconds:
            t = time.monotonic() - t0
            new, ka, adm = await asyncio.gather(request(data), request(data, kept), healthz(admin))
            results.append((t, new, ka, adm))
            await asyncio.sleep(0.25)

    probing = asyncio.create_task(probe())
    await asyncio.sleep(2)
    attack = [asyncio.create_task(slow_client(data, stop, a.reconnect, held)) for _ in range(a.conns)]
    print(f"{a.conns} slow clients from t=2s ({'reconnecting' if a.reconnect else 'one connection each'}), "
          f"bearerd ulimit -n {a.nofile}")
    print("window    new-conn  keep-alive  admin   slow held  bearerd fds  open(data)  refused(data)")
    shown = 0
    while not probing.done():
        await asyncio.sleep(5)
        rows = [r for r in results if shown <= r[0] < shown + 5]
        metrics = ""
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", admin), 1)
            w.write(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            metrics = (await asyncio.wait_for(r.read(), 2)).decode()
        except Exception:
            pass
        fds = len(os.listdir(f"/proc/{proc.pid}/fd")) if os.path.exists(f"/proc/{proc.pid}") else -1
        pct = lambda i: f"{100 * sum(r[i] for r in rows) / max(1, len(rows)):5.0f} %"
        open_data = metric(metrics, 'bearerd_open_connections{listener="data"}')
        refused = metric(metrics, 'bearerd_connections_refused_total{listener="data"}')
        print(f"{shown:3d}-{shown + 5:<3d}s  {pct(1)}   {pct(2)}    {pct(3)}  {held[0]:9d}  {fds:11d}  "
              f"{open_data:>10}  {refused:>13}")
        shown += 5
    stop.set()
    for t in attack:
        t.cancel()
    proc.terminate()
    proc.wait()
    log.close()
    accept_errors = open(f"{d}/bearerd.log").read().count("accept failed")
    print(f"'accept failed' (descriptors exhausted) log lines: {accept_errors}")


asyncio.run(main())
