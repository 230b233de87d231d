"""The adaptation worker process: scoring, allocation and pruning away from the serving threads.

Its work is numpy- and Python-heavy; in the daemon's process it would hold
the GIL against the serving threads (measured: serving p99 4.2x its steady
value during a cycle, against 1.6x from a worker process). Everything it
receives and returns is plain bytes, arrays and dicts.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from edged.adapt.calibration import Calibration, prunable_ops
from edged.adapt.compress import STRATEGIES, Compressor, QsaStrategy
from edged.adapt.qsa import QsaConfig
from edged.model.tflite import read_tflite, write_tflite


def lower_priority(nice: int) -> None:
    with contextlib.suppress(OSError):  # a worker at the daemon's priority still works
        os.nice(nice)


def compress_job(master: bytes, calib: np.ndarray, strategy: str, blocks, kl_budget: float,
                 reconstruct: bool = False) -> dict:
    """Score, allocate and prune in the worker process; returns the candidate's bytes and record.
    ``reconstruct`` solves the chosen candidate's kept weights again (adds one reconstruction,
    ~10-40 s for the bundled MLP on a loaded 2-core machine, to the cycle).

    The retrainer gets a bounded share of the cycle: 0.4 s per layer at most."""
    t0 = time.perf_counter()
    graph = read_tflite(master, name="master")
    if strategy == "pattern":
        from edged.adapt.patterns import PatternCompressor

        shapes = blocks if isinstance(blocks, dict) else {i: blocks for i in prunable_ops(graph)}
        comp = PatternCompressor(graph, Calibration(calib), shapes)  # the planner's block shapes
        t1 = time.perf_counter()
        result = comp.search(kl_budget=kl_budget, steps=6)
        return _job_record(result, t1 - t0, time.perf_counter() - t1)
    if strategy in ("hmatrix", "svd"):
        from edged.adapt.factorize import HMatrixCompressor, SvdCompressor

        # The daemon adapts only with the native engine, which runs the factors themselves.
        comp = (HMatrixCompressor if strategy == "hmatrix" else SvdCompressor)(graph, Calibration(calib),
                                                                              export="hmatrix")
        t1 = time.perf_counter()
        result = comp.search(kl_budget=kl_budget, steps=6)
        return _job_record(result, t1 - t0, time.perf_counter() - t1)
    if strategy == "qsa":
        scorer = QsaStrategy(QsaConfig(epochs=12, time_budget_s=0.4))
    else:
        scorer = STRATEGIES[strategy]()
    comp = Compressor(graph, Calibration(calib), scorer, blocks)
    t1 = time.perf_counter()
    result = comp.search(kl_budget=kl_budget, steps=6)
    if not reconstruct:
        return _job_record(result, t1 - t0, time.perf_counter() - t1)
    # The chosen candidate's kept weights are solved for again (edged.adapt.reconstruct); reconstructing
    # every candidate of the search would cost a cycle minutes. It is kept only when it is closer.
    comp.reconstruct = True
    rebuilt = comp.candidate({p.op_index: p.sparsity for p in result.layers})
    kl = comp.kl(rebuilt)
    if kl <= result.kl:
        result.graph, result.kl = rebuilt, kl
    return _job_record(result, t1 - t0, time.perf_counter() - t1)


def _job_record(result, train_s: float, prune_s: float) -> dict:
    return {
        "content": write_tflite(result.graph), "sparsity": result.sparsity, "kl": result.kl,
        "layers": {str(p.op_index): [str(p.block), p.sparsity] for p in result.layers},
        "layer_sparsity": {p.op_index: round(p.sparsity, 3) for p in result.layers},
        "curve": [[p.tau, p.sparsity, p.kl] for p in result.curve],
        "train_s": train_s, "prune_s": prune_s,
    }
