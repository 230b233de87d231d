"""The daemon's operations paths under hostile clients, measured in one run.

    python bench/ops.py [--connections 200] [--scrapes 50] [--requests 3000]

1. ``edged serve`` threads with no client, then with --connections idle TCP
   connections to the metrics endpoint (the unit's TasksMax is 64).
2. Scrape time of /metrics (median of --scrapes, interleaved rounds) alone and
   while --connections clients trickle a never-ending request head; the ratio.
3. CURVE ``health`` round trips through an in-process server with and without
   the check that refuses removed client keys (``PeerGuard``), interleaved;
   the ratio of the medians is what the per-message check costs.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edged.serve.client import Client  # noqa: E402

MODEL = ROOT / "tests" / "fixtures" / "converter" / "conv8x8_int8io.tflite"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def scrape_s(port: int) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        r.read()
    return time.perf_counter() - t


def daemon_part(connections: int, scrapes: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="edged-ops-"))
    port, metrics_port = free_port(), free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    (work / "c.toml").write_text(
        f'[model]\npath = "{MODEL}"\nwarmup_runs = 1\n[server]\nbind = "{endpoint}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    )
    cmd = [sys.executable, "-m", "edged.cli", "serve", "--config", str(work / "c.toml")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Client(endpoint, timeout_ms=500, retries=60) as c:
            c.health()
        base = threads_of(proc.pid)
        idle = [socket.create_connection(("127.0.0.1", metrics_port)) for _ in range(connections)]
        time.sleep(1.0)
        print(f"threads: {base} with no client, {threads_of(proc.pid)} with {connections} idle connections")
        for s in idle:
            s.close()
        time.sleep(0.5)
        alone, trickled = [], []
        stop = threading.Event()
        socks: list[socket.socket] = []

        def trickle() -> None:
            while not stop.wait(0.2):
                for s in socks:
                    with contextlib.suppress(OSError):
                        s.sendall(b"X")

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        for _ in range(scrapes):  # interleaved: alone, then under trickling clients
            alone.append(scrape_s(metrics_port))
            socks[:] = [socket.create_connection(("127.0.0.1", metrics_port)) for _ in range(connections)]
            for s in socks:
                s.sendall(b"GET /metrics HTTP/1.1\r\n")
            time.sleep(0.05)
            trickled.append(scrape_s(metrics_port))
            for s in socks:
                s.close()
            socks.clear()
            time.sleep(0.05)  # the server sees those closes before the next scrape alone
        stop.set()
        t.join()
        a, b = np.median(alone) * 1e3, np.median(trickled) * 1e3
        print(
            f"scrape p50: {a:.2f} ms alone, {b:.2f} ms with {connections} trickling clients "
            f"(ratio {b / a:.2f}, max {max(trickled) * 1e3:.1f} ms)"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def curve_part(requests: int) -> None:
    if not zmq.has("curve"):
        print("CURVE: libzmq without CURVE, skipped")
        return
    from edged.config import ServerSection
    from edged.metrics import Metrics
    from edged.serve.auth import Authenticator, generate_keys, load_keypair
    from edged.serve.served import load_model
    from edged.serve.server import Server

    work = Path(tempfile.mkdtemp(prefix="edged-ops-curve-"))
    ctx = zmq.Context()
    generate_keys(work / "keys", "server")
    generate_keys(work / "allowed", "client")
    auth = Authenticator(ctx, work / "allowed")
    auth.start()
    model = load_model(MODEL.read_bytes(), name="m", version="1", engine="native", workers=2, max_batch=4,
                       warmup_runs=1)
    settings = ServerSection(bind="tcp://127.0.0.1:*", workers=1)
    server = Server(model, settings, Metrics(), context=ctx,
                    curve_keys=load_keypair(work / "keys" / "server.key_secret"))
    server.start()
    server.ready = True
    client_keys = load_keypair(work / "allowed" / "client.key_secret")
    server_key = load_keypair(work / "keys" / "server.key_secret")[0]
    times: dict[str, list[float]] = {"unguarded": [], "guarded": []}
    try:
        with Client(server.endpoint, timeout_ms=2000, server_public_key=server_key,
                    client_keys=client_keys, context=ctx) as c:
            c.health()
            rounds = 10
            for r in range(rounds * 2):  # interleaved rounds
                mode = "guarded" if r % 2 else "unguarded"
                server.peer_guard = auth.guard if mode == "guarded" else None
                for _ in range(requests // rounds):
                    t = time.perf_counter()
                    c.health()
                    times[mode].append(time.perf_counter() - t)
    finally:
        server.close(timeout_s=1)
        auth.stop()
        ctx.term()
        shutil.rmtree(work, ignore_errors=True)
    a, b = (np.median(times[m]) * 1e6 for m in ("unguarded", "guarded"))
    print(f"CURVE health round trip p50: {a:.1f} us without the key check, {b:.1f} us with it "
          f"(ratio {b / a:.3f}, {len(times['guarded'])} requests each)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--scrapes", type=int, default=50)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    daemon_part(args.connections, args.scrapes)
    curve_part(args.requests)


if __name__ == "__main__":
    main()
