"""`edged demo`: the whole adaptation loop, live, on the bundled model and data.

It starts `edged serve` on the bundled digits MLP with adaptation on, streams
the bundled test images as requests (sending the true label back as feedback
for a fraction of them), then switches the stream to a shifted distribution
(a washed-out, noisy, off-centre sensor). The daemon's adaptation events are
shown as they happen; every half second the demo records accuracy, fidelity
to the dense master, sparsity, input drift and latency. It ends with a
summary table and, when matplotlib is installed, a PNG plot.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edged.corruptions import corrupt
from edged.data import default_model_path, digits_input, load_digits_test
from edged.errors import EdgedError


@dataclass
class Sample:
    t: float
    phase: str
    accuracy: float  # over the last interval's requests
    p50_us: float  # client round trip, batch 8
    agreement: float | None
    sparsity: float
    drift_kl: float | None
    version: str


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("#") or " " not in line:
                continue
            head, _, value = line.rpartition(" ")
            name = head.split("{")[0]
            labels = head[len(name):]
            key = name if name in ("edged_drift_kl", "edged_fidelity_top1_agreement_ratio") else head
            try:
                out[key] = out.get(key, 0.0) + float(value) if key == head else float(value)
            except ValueError:
                continue
            if name == "edged_model_sparsity_ratio":
                out["sparsity"] = float(value)
                out["version"] = labels
    return out


def _shift(images: np.ndarray, seed: int) -> np.ndarray:
    """The demo's drift: contrast loss, then sensor noise, then a small translation."""
    x = corrupt(images, "contrast", 0.6, seed)
    x = corrupt(x, "noise", 0.4, seed + 1)
    return corrupt(x, "translate", 0.5, seed + 2)


def run_demo(clean_s: float = 12.0, shifted_s: float = 45.0, feedback_fraction: float = 0.3,
             plot: str | None = "edged-demo.png", strategy: str = "magnitude", block: str = "1x1",
             out=sys.stdout) -> Timeline:

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    work = Path(tempfile.mkdtemp(prefix="edged-demo-"))
    port, metrics_port = _free_port(), _free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    model = default_model_path("digits_mlp")
    config = work / "demo.toml"
    config.write_text(
        f'[model]\npath = "{model}"\nwarmup_runs = 1\n'
        f'[server]\nbind = "{endpoint}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        f'[store]\nstate_dir = "{work / "state"}"\n'
        f'[adapt]\nenabled = true\nstrategy = "{strategy}"\nsample_rate = 0.5\nwindow = 128\n'
        f'calib_samples = 384\nmin_interval_s = 8\nprobation_s = 5\nkl_budget = 0.1\n'
        f'fidelity_floor = 0.8\naccuracy_floor = 0.6\nblock = "{block}"\n'
        # The daemon runs its adaptation worker niced so that serving wins the CPU; on a machine
        # saturated by other work that starves the worker and a cycle outlasts any demo.
        f'nice = 0\n'
    )
    log_path = work / "daemon.log"
    env = {**os.environ, "EDGED_CACHE_DIR": os.environ.get("EDGED_CACHE_DIR", str(work / "cache"))}
    say(f"edged demo: starting the daemon on {model.name} with adaptation on ({strategy}); files in {work}")
    with open(log_path, "wb") as log_file:
        # cwd: a source checkout's edged/ (without the built kernels) must not shadow the install
        proc = subprocess.Popen([sys.executable, "-m", "edged.cli", "serve", "--config", str(config)],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=work)
    timeline = Timeline()
    try:
        _wait_ready(endpoint, proc, log_path)
        timeline = _stream(endpoint, metrics_port, log_path, clean_s, shifted_s, feedback_fraction, say)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    _summary(timeline, say)
    if plot:
        say(_plot(timeline, plot))
    return timeline


def _wait_ready(endpoint: str, proc: subprocess.Popen, log_path: Path, timeout: float = 60.0) -> None:
    from edged.serve.client import Client

    deadline = time.monotonic() + timeout
    with Client(endpoint, timeout_ms=300, retries=0) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EdgedError(f"the daemon exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            try:
                if c.health().get("ready"):
                    return
            except Exception:
                time.sleep(0.1)
    raise EdgedError(f"the daemon was not ready after {timeout:.0f} s; its log: {log_path}")


# What ends an adaptation cycle, as the daemon logs it.
OUTCOMES = ("swapped", "rejected", "kept", "aborted", "error")


def _cycle_open(timeline: Timeline, phase: str, end: float, extra_s: float) -> bool:
    """Past the drifted phase's planned end: keep streaming while a cycle that began in it has
    not ended (up to ``extra_s`` more), and for a few seconds after a swap, to show its effect.

    On a busy machine the adaptation worker shares the CPU and its cycle can outlast the
    planned phase; cutting the stream then would show the trigger and never the swap."""
    now = time.monotonic()
    if phase != "shifted" or now >= end + extra_s:
        return False
    t_end = timeline.samples[-1].t if timeline.samples else 0.0
    began = [t for t, e in timeline.events if e.startswith("trigger")]
    if not began:
        return False
    ended = [(t, e) for t, e in timeline.events if e.startswith(OUTCOMES) and t >= began[-1]]
    if not ended:
        return True
    t_out, event = ended[-1]
    return event.startswith("swapped") and t_out + AFTER_SWAP_S > t_end


AFTER_SWAP_S = 4.0  # seconds of drifted traffic shown on the swapped model


def _stream(endpoint, metrics_port, log_path, clean_s, shifted_s, feedback_fraction, say,
            extra_s: float = 60.0) -> Timeline:
    from edged.serve.client import Client

    images, labels = load_digits_test()
    rng = np.random.default_rng(0)
    timeline = Timeline()
    t0 = time.monotonic()
    seen_log = 0
    with Client(endpoint, timeout_ms=5000) as client:
        spec = client.metadata()["inputs"][0]
        scale, zp = spec["parameters"]["scale"], spec["parameters"]["zero_point"]
        shape = tuple(spec["shape"][1:])
        for phase, seconds in (("clean", clean_s), ("shifted", shifted_s)):
            say(f"\n--- {phase} data for {seconds:.0f} s "
                + ("(the bundled digits test split)" if phase == "clean" else
                   "(contrast loss + sensor noise + translation; longer while an adaptation cycle "
                   "is under way)"))
            end = time.monotonic() + seconds
            while time.monotonic() < end or _cycle_open(timeline, phase, end, extra_s):
                hits = total = 0
                times = []
                tick = time.monotonic() + 0.5
                while time.monotonic() < tick:
                    idx = rng.integers(0, len(images), 8)
                    seed = int(rng.integers(1 << 30))
                    batch = images[idx] if phase == "clean" else _shift(images[idx], seed)
                    x = digits_input(batch, np.int8, scale, zp, shape)
                    t = time.perf_counter()
                    result = client.infer(x)
                    times.append((time.perf_counter() - t) * 1e6)
                    pred = np.argmax(result.outputs[0], axis=1)
                    hits += int(np.sum(pred == labels[idx]))
                    total += len(idx)
                    if rng.random() < feedback_fraction:
                        client.feedback(result.id, [int(v) for v in labels[idx]])
                m = _metrics(metrics_port)
                sample = Sample(time.monotonic() - t0, phase, hits / max(total, 1), float(np.median(times)),
                                m.get("edged_fidelity_top1_agreement_ratio"), m.get("sparsity", 0.0),
                                m.get("edged_drift_kl"), m.get("version", ""))
                timeline.samples.append(sample)
                seen_log = _show_events(log_path, seen_log, sample.t, timeline, say)
    return timeline


def _show_events(log_path: Path, seen: int, t: float, timeline: Timeline, say) -> int:
    text = log_path.read_text(errors="replace")
    for line in text[seen:].splitlines():
        if "adapt " in line and "edged.adapt" in line:
            event = line.split("adapt ", 1)[1]
            timeline.events.append((t, event))
            say(f"  [{t:5.1f} s] {event[:160]}")
    return len(text)


def _summary(timeline: Timeline, say) -> None:
    if not timeline.samples:
        return
    say("\nsummary")
    say(f"{'phase':<8} {'model version':<28} {'accuracy':>9} {'p50 us':>8} {'sparsity':>9} {'samples':>8}")
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in timeline.samples:
        groups.setdefault((s.phase, s.version), []).append(s)
    for (phase, version), ss in groups.items():
        label = version.replace('{model="', "").replace('",version="', " v").rstrip('"}') or "?"
        say(f"{phase:<8} {label:<28} {np.mean([s.accuracy for s in ss]):>9.1%} "
            f"{np.median([s.p50_us for s in ss]):>8.0f} {ss[-1].sparsity:>9.1%} {len(ss):>8}")
    kinds = [e.split()[0] for _, e in timeline.events]
    say("adaptation events: " + (", ".join(f"{k} x{kinds.count(k)}" for k in dict.fromkeys(kinds)) or "none"))


def _plot(timeline: Timeline, path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install 'edged[demo]')"
    t = [s.t for s in timeline.samples]
    fig, axes = plt.subplots(4, 1, figsize=(8, 8), sharex=True)
    series = [
        ("accuracy", [s.accuracy for s in timeline.samples]),
        ("fidelity (top-1 agreement)", [s.agreement if s.agreement is not None else np.nan
                                        for s in timeline.samples]),
        ("sparsity", [s.sparsity for s in timeline.samples]),
        ("input drift KL", [s.drift_kl if s.drift_kl is not None else np.nan for s in timeline.samples]),
    ]
    shift_at = next((s.t for s in timeline.samples if s.phase == "shifted"), None)
    for ax, (name, values) in zip(axes, series, strict=True):
        ax.plot(t, values)
        ax.set_ylabel(name)
        if shift_at is not None:
            ax.axvline(shift_at, color="grey", linestyle="--")
        for at, event in timeline.events:
            if event.startswith("swapped") or event.startswith("rolled_back"):
                ax.axvline(at, color="green" if event.startswith("swapped") else "red", alpha=0.5)
    axes[-1].set_xlabel("seconds")
    fig.suptitle("edged demo: drift, adaptation and hot swap")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return f"plot written to {os.path.abspath(path)}"
