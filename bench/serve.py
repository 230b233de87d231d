"""Round trips through the daemon vs a bare pyzmq + LiteRT loop and an echo server, and a soak.

    python bench/serve.py [--model M] [--engine native|litert] [--seconds 5]
                          [--clients 1,8] [--soak-requests 200000] [--swaps 50]
                          [--json OUT.json]

One run measures, at each client count (one process per client, DEALER
sockets, one request in flight per client, batch 1), round-trip p50/p99 and
throughput of three servers that speak the same framing (tag, JSON header,
tensor frames):

- ``echo``: a pyzmq ROUTER that echoes the input; no model.
- ``baseline``: a pyzmq ROUTER loop around a LiteRT interpreter with its
  default XNNPACK delegate (``baseline_server``, about 30 lines): what serving
  the model costs with no validation, queue, batching, metrics or deadlines.
- ``edged``: `edged serve` on the model with the chosen engine.

The servers are measured in interleaved rounds (echo, baseline, edged; then
again) and each row is the median round. Each row also gives the server
process's CPU time per request (all its threads, from /proc), which a loaded
machine disturbs far less than wall-clock rates. In-process inference time (batch 1)
is measured in this process for comparison. Then a soak: --soak-requests
requests from 4 clients while the model is hot-swapped --swaps times, with the
daemon's RSS before and after. Targets: edged p50 <= 1.3 x baseline p50 and
edged throughput >= 0.8 x baseline, at 1 and 8 clients; RSS growth < 5 %.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edged.benchmark import measure, sample_inputs  # noqa: E402
from edged.runtime.engine import load_engine  # noqa: E402
from edged.serve.client import Client  # noqa: E402

TAG = b"EDGED1"
CLIENTS = (1, 8)
ROUNDS = 3
FALLBACK_MODEL = ROOT / "tests" / "fixtures" / "converter" / "conv8x8_int8io.tflite"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- echo server


def echo_server(endpoint: str) -> None:
    """Same framing as edged, no model: the reply echoes the input tensors."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        frames = sock.recv_multipart(copy=False)
        split = 2 if len(frames) > 1 and len(frames[1]) == 0 else 1
        header = json.loads(frames[split + 1].bytes)
        reply = {
            "id": header["id"],
            "status": "ok",
            "model_name": "echo",
            "model_version": "0",
            "outputs": header.get("inputs", []),
            "timing_us": {},
        }
        sock.send_multipart(
            [*frames[:split], TAG, json.dumps(reply).encode(), *frames[split + 2 :]], copy=False
        )


def baseline_server(endpoint: str, model: str) -> None:
    """The reference: ROUTER + LiteRT (default resolver, so XNNPACK), batch 1, no checks."""
    from ai_edge_litert.interpreter import Interpreter

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    interp = Interpreter(model_path=model)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    datatype = {np.dtype(np.int8): "INT8", np.dtype(np.uint8): "UINT8"}.get(np.dtype(out["dtype"]), "FP32")
    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        frames = sock.recv_multipart()
        split = 2 if len(frames) > 1 and len(frames[1]) == 0 else 1
        header = json.loads(frames[split + 1])
        x = np.frombuffer(frames[split + 2], dtype=inp["dtype"]).reshape(inp["shape"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        reply = {
            "id": header["id"],
            "status": "ok",
            "model_name": "baseline",
            "model_version": "0",
            "outputs": [{"name": out["name"], "datatype": datatype, "shape": list(y.shape)}],
            "timing_us": {},
        }
        sock.send_multipart([*frames[:split], TAG, json.dumps(reply).encode(), y.tobytes()])


# ---------------------------------------------------------------- load clients


def client_proc(
    endpoint: str, x: np.ndarray, start_at: float, stop_at: float, count: int, out: mp.Queue
) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    meta = [{"datatype": "INT8" if x.dtype == np.int8 else "FP32", "shape": list(x.shape)}]
    payload = x.tobytes()
    lat: list[int] = []
    errors = 0
    i = 0

    def one() -> None:
        nonlocal i, errors
        i += 1
        header = json.dumps({"id": f"{os.getpid()}-{i}", "op": "infer", "inputs": meta}).encode()
        t0 = time.perf_counter_ns()
        sock.send_multipart([TAG, header, payload], copy=False)
        if not sock.poll(10_000):
            raise TimeoutError("no reply in 10 s")
        frames = sock.recv_multipart()
        lat.append(time.perf_counter_ns() - t0)
        if b'"status": "ok"' not in frames[1]:
            errors += 1

    for _ in range(50):  # warm-up, not measured
        one()
    lat.clear()
    while time.time() < start_at:
        time.sleep(0.001)
    if count:
        for _ in range(count):
            one()
    else:
        while time.time() < stop_at:
            one()
    out.put((np.asarray(lat, dtype=np.int64), errors))
    sock.close()
    ctx.term()


def run_clients(
    endpoint: str, x: np.ndarray, n: int, seconds: float, count: int = 0, during=None, server_pid: int = 0
) -> dict:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    start_at = time.time() + 2.0 + 0.1 * n  # after every process has imported and warmed up
    procs = [
        ctx.Process(target=client_proc, args=(endpoint, x, start_at, start_at + seconds, count, q))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    if during is not None:
        during(procs)
    results = [q.get(timeout=seconds + 600) for _ in procs]
    cpu1 = cpu_seconds(server_pid) if server_pid else 0.0
    wall = max(seconds, 1e-9) if not count else None
    for p in procs:
        p.join(10)
    lat = np.concatenate([r[0] for r in results]) / 1e3
    errors = sum(r[1] for r in results)
    if wall is None:  # count mode: throughput from the sum of latencies per client
        wall = max(float(r[0].sum()) / 1e9 for r in results) or 1e-9
    empty = lat.size == 0  # no request completed in the window: report NaN, do not crash
    return {
        "clients": n,
        "requests": int(lat.size),
        "errors": errors,
        "p50_us": float("nan") if empty else float(np.percentile(lat, 50)),
        "p99_us": float("nan") if empty else float(np.percentile(lat, 99)),
        "per_s": lat.size / wall,
        # Server CPU per request: steadier than wall-clock rates on a shared machine.
        "server_cpu_us": (cpu1 - cpu0) * 1e6 / lat.size if server_pid and not empty else float("nan"),
    }


# ---------------------------------------------------------------- daemon


def variant_bytes(path: Path, k: int) -> bytes:
    """The model with one weight changed: same I/O, different bytes (a new version)."""
    from edged.model.tflite import read_tflite, write_tflite

    graph = read_tflite(path)
    t = max((t for t in graph.tensors if t.data is not None and t.dtype == np.int8), key=lambda t: t.size)
    flat = t.data.reshape(-1).copy()
    flat[k % flat.size] = np.int8((int(flat[k % flat.size]) + 1 + k) % 256 - 128)
    t.data = flat.reshape(t.shape)
    return write_tflite(graph)


def start_daemon(model: Path, engine: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "edged.cli",
        "serve",
        "--model",
        str(model),
        "--engine",
        engine,
        "--bind",
        endpoint,
        "--metrics",
        f"127.0.0.1:{free_port()}",
    ]
    log = open(workdir / "daemon.log", "wb")  # noqa: SIM115 - lives as long as the daemon
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    with Client(endpoint, timeout_ms=500, retries=0) as c:
        for _ in range(120):
            try:
                if c.health().get("ready"):
                    return proc, endpoint
            except Exception:
                time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"daemon did not become ready; see {workdir / 'daemon.log'}")


def pick_model(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    try:
        from edged.data import default_model_path

        return Path(default_model_path("digits_cnn"))
    except Exception:
        return FALLBACK_MODEL


def pick_engine(arg: str | None, model: Path) -> str:
    if arg:
        return arg
    try:
        e = load_engine(model, "native")
        e.infer(sample_inputs(e))
        return "native"
    except Exception:
        return "litert"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--engine", choices=("native", "litert"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="client counts, e.g. 1,8")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds per row (median)")
    parser.add_argument("--soak-requests", type=int, default=200_000)
    parser.add_argument("--swaps", type=int, default=50)
    parser.add_argument("--json")
    parser.add_argument("--echo-server", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-server", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return 0
    if args.baseline_server:
        baseline_server(*args.baseline_server)
        return 0
    clients = [int(c) for c in args.clients.split(",")]
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    source = pick_model(args.model)
    engine = pick_engine(args.engine, source)
    model = work / "model.tflite"
    model.write_bytes(source.read_bytes())
    eng = load_engine(model, engine)
    x = sample_inputs(eng, batch=1)[0]
    inproc = measure({engine: eng}, [x], runs=2000)[engine]
    del eng

    echo_ep = f"tcp://127.0.0.1:{free_port()}"
    base_ep = f"tcp://127.0.0.1:{free_port()}"
    echo = subprocess.Popen([sys.executable, __file__, "--echo-server", echo_ep], cwd=ROOT)
    base = subprocess.Popen([sys.executable, __file__, "--baseline-server", base_ep, str(model)], cwd=ROOT)
    daemon, daemon_ep = start_daemon(model, engine, work)
    rows = []
    try:
        time.sleep(0.5)
        rss_start = rss_bytes(daemon.pid)
        for n in clients:
            rounds: dict[str, list[dict]] = {"echo": [], "baseline": [], "edged": []}
            for _ in range(args.rounds):
                servers = (("echo", echo_ep, echo.pid), ("baseline", base_ep, base.pid),
                           ("edged", daemon_ep, daemon.pid))
                for name, ep, pid in servers:
                    r = run_clients(ep, x, n, args.seconds, server_pid=pid)
                    rounds[name].append(r)
                    print(
                        f"{name:<8} {n:>2} clients: p50 {r['p50_us']:8.1f} us  p99 {r['p99_us']:8.1f} us  "
                        f"{r['per_s']:9.0f}/s  server CPU {r['server_cpu_us']:6.1f} us/req  "
                        f"errors {r['errors']}",
                        flush=True,
                    )
            for name, rs in rounds.items():
                rows.append({"server": name, **median_round(rs)})
        rss_served = rss_bytes(daemon.pid)
        soak = None
        if args.soak_requests:
            soak = soak_run(daemon, daemon_ep, model, source, x, args.soak_requests, args.swaps)
    finally:
        daemon.send_signal(signal.SIGTERM)
        echo.send_signal(signal.SIGTERM)
        base.send_signal(signal.SIGTERM)
        daemon.wait(30)
        echo.wait(10)
        base.wait(10)

    results = summarize(rows, clients, inproc.p50_us, source, engine, rss_start, rss_served, soak)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def soak_run(
    daemon: subprocess.Popen, endpoint: str, model: Path, source: Path, x: np.ndarray, total: int, swaps: int
) -> dict:
    clients = 4
    variants = [source.read_bytes(), variant_bytes(source, 1)]
    done = {"swaps": 0}

    def swapper(procs) -> None:
        # Swaps while the clients run; returns so that their results can be collected
        # (a client process cannot exit before its result is read from the queue).
        while done["swaps"] < swaps:
            tmp = model.with_suffix(".tmp")
            tmp.write_bytes(variants[(done["swaps"] + 1) % 2])
            os.replace(tmp, model)
            daemon.send_signal(signal.SIGHUP)
            done["swaps"] += 1
            time.sleep(0.25)

    r0 = rss_bytes(daemon.pid)
    result = run_clients(endpoint, x, clients, 0, count=total // clients, during=swapper)
    time.sleep(1.0)
    r1 = rss_bytes(daemon.pid)
    return {
        "requests": result["requests"],
        "errors": result["errors"],
        "swaps": done["swaps"],
        "rss_before": r0,
        "rss_after": r1,
        "growth": (r1 - r0) / r0,
        "p50_us": result["p50_us"],
        "p99_us": result["p99_us"],
    }


def median_round(rounds: list[dict]) -> dict:
    """Per field, the median over rounds (NaN-safe: rounds with no sample are left out)."""
    out = dict(rounds[0])
    for key in ("p50_us", "p99_us", "per_s", "server_cpu_us"):
        values = [r[key] for r in rounds if r[key] == r[key]]
        out[key] = float(np.median(values)) if values else float("nan")
    out["requests"] = sum(r["requests"] for r in rounds)
    out["errors"] = sum(r["errors"] for r in rounds)
    return out


def summarize(rows, clients, inproc_us, model, engine, rss_start, rss_served, soak) -> dict:
    by = {(r["server"], r["clients"]): r for r in rows}
    ratios = {
        n: {
            "p50": by[("edged", n)]["p50_us"] / by[("baseline", n)]["p50_us"],
            "throughput": by[("edged", n)]["per_s"] / max(by[("baseline", n)]["per_s"], 1e-9),
        }
        for n in clients
    }
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "model": str(model),
        "engine": engine,
        "inproc_p50_us": inproc_us,
        "rows": rows,
        "vs_baseline": ratios,
        "rss_start_mb": rss_start / 2**20,
        "rss_served_mb": rss_served / 2**20,
        "soak": soak,
    }


def print_table(res: dict) -> None:
    print(
        f"\nmodel {res['model']} ({res['engine']}), in-process batch-1 p50 {res['inproc_p50_us']:.1f} us, "
        f"{res['machine']} x{res['cpus']}, Python {res['python']}\n"
    )
    print("| server | clients | p50 us | p99 us | req/s | server CPU us/req | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in res["rows"]:
        print(
            f"| {r['server']} | {r['clients']} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['per_s']:.0f} "
            f"| {r['server_cpu_us']:.1f} | {r['errors']} |"
        )
    print("\n| clients | edged / baseline p50 (<= 1.3) | edged / baseline throughput (>= 0.8) |")
    print("| ---: | ---: | ---: |")
    for n, r in res["vs_baseline"].items():
        print(f"| {n} | {r['p50']:.2f} | {r['throughput']:.2f} |")
    print(f"RSS: {res['rss_start_mb']:.1f} MB after start, {res['rss_served_mb']:.1f} MB after the runs")
    s = res["soak"]
    if s:
        print(
            f"soak: {s['requests']} requests, {s['errors']} errors, {s['swaps']} swaps; RSS "
            f"{s['rss_before'] / 2**20:.1f} -> {s['rss_after'] / 2**20:.1f} MB "
            f"({s['growth'] * 100:+.2f} %, target < 5 %); "
            f"p50 {s['p50_us']:.1f} us, p99 {s['p99_us']:.1f} us"
        )


if __name__ == "__main__":
    sys.exit(main())
