"""Latency of engines on one model, measured interleaved in one run.

Interleaving (A, B, A, B, ...) exposes both engines to the same machine noise,
so their ratio is meaningful even on a busy board; medians resist outliers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edged.runtime.engine import Engine


@dataclass
class LatencyStats:
    p50_us: float
    p99_us: float
    per_s: float
    runs: int

    def as_dict(self) -> dict[str, float]:
        return {
            "p50_us": round(self.p50_us, 2),
            "p99_us": round(self.p99_us, 2),
            "per_s": round(self.per_s, 1),
        }


def sample_inputs(engine: Engine, batch: int = 1, seed: int = 0) -> list[np.ndarray]:
    """Random valid inputs for an engine's model."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in engine.inputs:
        shape = (batch, *spec.shape)
        if spec.dtype.kind == "f":
            out.append(rng.uniform(0, 1, shape).astype(spec.dtype))
        else:
            info = np.iinfo(spec.dtype)
            out.append(rng.integers(info.min, int(info.max) + 1, shape).astype(spec.dtype))
    return out


def measure(
    engines: dict[str, Engine], inputs: list[np.ndarray], runs: int = 200, warmup: int = 20
) -> dict[str, LatencyStats]:
    """Per-call latency of each engine, calls interleaved round-robin."""
    if runs < 1:
        raise ValueError("runs must be at least 1")
    for _ in range(warmup):
        for engine in engines.values():
            engine.infer(inputs)
    times: dict[str, list[int]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            t0 = time.perf_counter_ns()
            engine.infer(inputs)
            times[name].append(time.perf_counter_ns() - t0)
    batch = inputs[0].shape[0]
    stats = {}
    for name, ns in times.items():
        us = np.asarray(ns, dtype=np.float64) / 1e3
        stats[name] = LatencyStats(
            p50_us=float(np.percentile(us, 50)),
            p99_us=float(np.percentile(us, 99)),
            per_s=batch * 1e6 / float(np.median(us)),
            runs=runs,
        )
    return stats
