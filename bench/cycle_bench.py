"""Adaptation cycles of the wide MLP inside a real `edged serve`, under steady ZeroMQ traffic.

    python bench/adapt.py --only cycle [--cycles N] [--rate R] [--strategy S] [--nice N]

The daemon serves the bundled 64-1024-1024-10 int8 MLP with adaptation on (the
configured defaults: prune -> reconstruct -> fine-tune -> validate -> swap).
Clients in this process send batch-1 requests over ZeroMQ, each at ``rate``
requests per second (0: back to back, saturating), all the time. The traffic
switches between clean and noisy digits; each switch is a drift, and the
daemon adapts. For every cycle (trigger .. swapped/rejected in the daemon's
log, timestamps from the log): the wall time of each phase and the total, and
the serving p50/p99 during the cycle against the steady p50/p99 of the quiet
stretch before it (no cycle, no probation). Medians over the cycles are the
numbers to read; the ratio is within one run, on the same machine load.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edged.corruptions import corrupt
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite

PHASES = ("collect", "score", "prune", "reconstruct", "finetune", "worker_other", "validate", "swap")
STAGES = ("collect", "worker", "validate", "swap")  # p99 is also read per stage
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO edged\.adapt: "
                   r"adapt (\w+)\s+\[(\w+)\] (.*)$")
_NUMBER = re.compile(r"(\w+)=(-?[0-9.]+(?:e[-+]?\d+)?|inf|nan|True|False)")


@dataclass
class CycleRecord:
    outcome: str
    total_s: float
    phases: dict[str, float]
    steady_p50_us: float
    steady_p99_us: float
    during_p50_us: float
    during_p99_us: float
    steady_requests: int
    during_requests: int
    stage_p99_us: dict[str, float]  # collect, worker (score .. fine-tune), validate, swap
    events: list[str] = field(default_factory=list)

    @property
    def p99_ratio(self) -> float:
        return self.during_p99_us / self.steady_p99_us


@dataclass
class _Event:
    at: float  # time.time() from the log's timestamp
    kind: str
    text: str
    numbers: dict[str, float]


def _events(log_text: str) -> list[_Event]:
    out = []
    for line in log_text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        numbers = {}
        for k, v in _NUMBER.findall(m.group(4)):
            numbers[k] = {"True": 1.0, "False": 0.0}.get(v) if v in ("True", "False") else float(v)
        out.append(_Event(stamp, m.group(2), f"{m.group(2)} {m.group(4)}", numbers))
    return out


class Load:
    """Client threads sending batch-1 requests from ``data["x"]``; latencies stamped by send time."""

    def __init__(self, endpoint: str, data: dict, clients: int, rate: float) -> None:
        self.endpoint, self.data, self.rate = endpoint, data, rate
        self.samples: list[tuple[float, float]] = []  # (time.time() at send, latency in us)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run(self, seed: int) -> None:
        from edged.serve.client import Client

        rng = np.random.default_rng(seed)
        period = 1.0 / self.rate if self.rate > 0 else 0.0
        next_send = time.perf_counter()
        with Client(self.endpoint, timeout_ms=5000) as c:
            while not self._stop.is_set():
                if period:
                    wait = next_send - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    next_send = max(next_send + period, time.perf_counter() - period)
                x = self.data["x"]
                row = x[rng.integers(0, len(x), 1)]
                sent, t = time.time(), time.perf_counter()
                try:
                    c.infer(row)
                except Exception as exc:  # counted and reported; the run goes on
                    self.errors.append(repr(exc))
                self.samples.append((sent, (time.perf_counter() - t) * 1e6))

    def between(self, t0: float, t1: float) -> np.ndarray:
        return np.array([v for s, v in list(self.samples) if t0 <= s <= t1])


def _config(work: Path, endpoint: str, strategy: str, nice: int) -> Path:
    path = work / "c.toml"
    path.write_text(
        f'[model]\npath = "{default_model_path("digits_mlp")}"\n[server]\nbind = "{endpoint}"\n'
        f'[metrics]\nlisten = ""\n[store]\nstate_dir = "{work / "state"}"\n'
        f'[adapt]\nenabled = true\nstrategy = "{strategy}"\nblock = "1x1"\nsample_rate = 0.5\n'
        'window = 128\ncalib_samples = 384\nmin_interval_s = 0\nprobation_s = 3\nkl_budget = 0.1\n'
        f'fidelity_floor = 0.8\nnice = {nice}\n'
    )
    return path


def run_cycles(cycles: int = 3, clients: int = 2, rate: float = 300.0, strategy: str = "magnitude",
               nice: int = 10, quiet_s: float = 6.0, timeout_s: float = 120.0) -> dict:
    """``cycles`` drift-triggered adaptations; see the module docstring."""
    from edged.demo import _free_port, _wait_ready

    images, _ = load_digits_test()
    graph = read_tflite(default_model_path("digits_mlp"))
    clean, noisy = digits_for(graph, images), digits_for(graph, corrupt(images, "noise", 1.0, seed=4))
    work = Path(tempfile.mkdtemp(prefix="edged-cycle-"))
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    log_path = work / "daemon.log"
    with open(log_path, "wb") as log_file:
        config = _config(work, endpoint, strategy, nice)
        cmd = [sys.executable, "-m", "edged.cli", "serve", "--config", str(config)]
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=work)
    data = {"x": clean}
    records: list[CycleRecord] = []
    try:
        _wait_ready(endpoint, proc, log_path)
        reference = clean  # what the daemon's drift monitor takes as normal
        with Load(endpoint, data, clients, rate) as load:
            for n in range(cycles):
                data["x"] = reference  # a rejected cycle leaves the old reference: drift clears first
                quiet_from = time.time()
                time.sleep(quiet_s)  # the steady stretch this cycle is compared with
                data["x"] = drifted = noisy if reference is clean else clean
                record = _next_cycle(log_path, load, quiet_from, timeout_s)
                if record is None:
                    print(f"cycle {n + 1}: no cycle ended within {timeout_s:.0f} s", flush=True)
                    break
                records.append(record)
                if record.outcome == "swapped":  # the monitor rebases on the swapped version's traffic
                    reference = drifted
                _print_cycle(n + 1, record)
            errors, requests = len(load.errors), len(load.samples)
    finally:
        proc.terminate()
        proc.wait(30)
    return _summary(records, requests, errors, clients, rate, strategy, nice)


def _next_cycle(log_path: Path, load: Load, quiet_from: float, timeout_s: float) -> CycleRecord | None:
    """Wait for the next trigger and its end (and probation after a swap); measure it."""
    deadline = time.time() + timeout_s
    trigger = end = None
    while time.time() < deadline:
        time.sleep(0.2)
        events = [e for e in _events(log_path.read_text(errors="replace")) if e.at >= quiet_from]
        trigger = next((e for e in events if e.kind == "trigger"), None)
        if trigger is None:
            continue
        after = events[events.index(trigger):]
        end = next((e for e in after if e.kind in ("swapped", "rejected", "aborted", "error")), None)
        if end is None:
            continue
        if end.kind == "swapped" and not any(e.kind in ("kept", "rolled_back") for e in after):
            continue  # probation still runs: the next quiet stretch starts after it
        break
    else:
        return None
    steady = load.between(quiet_from, trigger.at)
    during = load.between(trigger.at, end.at)
    cycle_events = events[events.index(trigger): events.index(end) + 1]
    stage_p99 = {}
    bounds = list(zip(STAGES, ("collected", "trained", "validated", "swapped"), strict=True))
    start = trigger.at
    for stage, closing in bounds:
        stop = next((e.at for e in cycle_events if e.kind == closing), None)
        if stop is None:
            break
        rows = load.between(start, stop)
        if len(rows):
            stage_p99[stage] = float(np.percentile(rows, 99))
        start = stop
    return CycleRecord(
        outcome=end.kind, total_s=end.numbers.get("cycle_s", end.at - trigger.at),
        phases={p: end.numbers[f"{p}_s"] for p in PHASES if f"{p}_s" in end.numbers},
        steady_p50_us=float(np.percentile(steady, 50)), steady_p99_us=float(np.percentile(steady, 99)),
        during_p50_us=float(np.percentile(during, 50)), during_p99_us=float(np.percentile(during, 99)),
        steady_requests=len(steady), during_requests=len(during), stage_p99_us=stage_p99,
        events=[e.text[:160] for e in cycle_events])


def _print_cycle(n: int, r: CycleRecord) -> None:
    phases = ", ".join(f"{k} {v:.2f}" for k, v in r.phases.items())
    print(f"cycle {n}: {r.outcome} in {r.total_s:.2f} s ({phases}); p50 {r.steady_p50_us:.0f} -> "
          f"{r.during_p50_us:.0f} us, p99 {r.steady_p99_us:.0f} -> {r.during_p99_us:.0f} us "
          f"({r.p99_ratio:.2f}x; {r.steady_requests} steady, {r.during_requests} during; p99 by stage "
          + ", ".join(f"{k} {v:.0f}" for k, v in r.stage_p99_us.items()) + ")", flush=True)
    for line in r.events:
        print(f"    {line}")


def _summary(records: list[CycleRecord], requests: int, errors: int, clients: int, rate: float,
             strategy: str, nice: int) -> dict:
    def median(values) -> float | None:
        values = [v for v in values if v is not None]
        return float(np.median(values)) if values else None

    out = {"clients": clients, "rate_per_client": rate, "strategy": strategy, "nice": nice,
           "requests": requests, "errors": errors, "cycles": [asdict(r) | {"p99_ratio": r.p99_ratio}
                                                              for r in records]}
    if not records:
        return out
    out["median"] = {
        "total_s": median(r.total_s for r in records),
        "phases_s": {p: median(r.phases.get(p) for r in records) for p in PHASES},
        "steady_p50_us": median(r.steady_p50_us for r in records),
        "steady_p99_us": median(r.steady_p99_us for r in records),
        "during_p50_us": median(r.during_p50_us for r in records),
        "during_p99_us": median(r.during_p99_us for r in records),
        "p99_ratio": median(r.p99_ratio for r in records),
        "stage_p99_ratio": {k: median(r.stage_p99_us[k] / r.steady_p99_us for r in records
                                      if k in r.stage_p99_us) for k in STAGES},
    }
    m = out["median"]
    phases = ", ".join(f"{p} {v:.2f}" for p, v in m["phases_s"].items() if v is not None)
    print(f"\nmedian of {len(records)} cycles (digits_mlp, {strategy}, {clients} clients x "
          f"{rate:g} req/s at batch 1, worker nice {nice}): total {m['total_s']:.2f} s ({phases}); "
          f"p50 steady {m['steady_p50_us']:.0f} us, during {m['during_p50_us']:.0f} us; "
          f"p99 steady {m['steady_p99_us']:.0f} us, during {m['during_p99_us']:.0f} us; "
          f"p99 ratio {m['p99_ratio']:.2f}x (by stage: "
          + ", ".join(f"{k} {v:.2f}x" for k, v in m["stage_p99_ratio"].items() if v is not None)
          + f"); {requests} requests, {errors} failed")
    return out
