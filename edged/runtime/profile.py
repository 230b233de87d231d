"""Where a native run spends its time: each C kernel timed on its own, in place.

After one whole run has filled the arena with real activations, every
descriptor is run alone (``edged_execute`` on one descriptor, which the
executor validated when it wrote it) ``runs`` times and
its median kept, less the cost of an empty call from Python. Descriptors read
and write the same arena slots as in a whole run, so each kernel sees the
data and cache footprint it sees there;
what a whole run adds (the Python call, copies in and out) is the difference
between the sum and the whole-run time, reported as ``overhead``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edged.runtime.kernels import lib
from edged.runtime.native import NativeEngine


@dataclass(frozen=True)
class OpTime:
    index: int  # operator index in the model file
    opcode: str
    output_shape: tuple[int, ...]
    p50_us: float


@dataclass(frozen=True)
class RunProfile:
    ops: list[OpTime]
    total_p50_us: float  # a whole run through the engine, same batch

    @property
    def overhead_us(self) -> float:
        return self.total_p50_us - sum(o.p50_us for o in self.ops)


def _median_us(fn, runs: int) -> float:
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times)) / 1e3


def profile_run(engine: NativeEngine, inputs: list[np.ndarray], runs: int = 200) -> RunProfile:
    """Per-kernel median times of one batch through ``engine``; ops run in Python are left out."""
    if runs < 1:
        raise ValueError("runs must be at least 1")
    engine.validate(inputs)
    batch = inputs[0].shape[0]
    if engine.plan.per_sample and batch > 1:
        raise ValueError("this model runs sample by sample: profile it at batch 1")
    ex = engine._executor()
    for _ in range(3):  # warm the arena, the caches and any lazily packed weights
        ex.run(inputs)
    total = _median_us(lambda: ex.run(inputs), runs)
    # The cost of a call from Python that runs nothing, taken off each kernel's time.
    call_us = _median_us(lambda: lib.edged_execute(ex._ops, 0, batch), runs)
    graph = engine.plan.prepared.graph
    ops: list[OpTime] = []
    for k, step in enumerate(ex.descriptor_steps):
        descriptor = ex._ops + k

        def one(d=descriptor, index=step.index) -> None:
            if lib.edged_execute(d, 1, batch) != 0:
                raise RuntimeError(f"the kernel of operator {index} rejected its descriptor")

        shape = (batch, *graph.tensors[step.output].shape[1:])
        ops.append(OpTime(step.index, step.opcode, shape, max(0.0, _median_us(one, runs) - call_us)))
    return RunProfile(ops, total)
