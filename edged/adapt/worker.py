"""The adaptation worker process: scoring, pruning, reconstruction and fine-tuning away from the
serving threads (and validation: edged.adapt.validation.validation_job runs here too).

Its work is numpy- and Python-heavy; in the daemon's process it would hold
the GIL against the serving threads (measured: serving p99 4.2x its steady
value during a cycle, against 1.6x from a worker process). Everything it
receives and returns is plain bytes, arrays, dicts and dataclasses.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from edged.adapt.calibration import Calibration, prunable_ops
from edged.adapt.compress import STRATEGIES, Compressor, QsaStrategy
from edged.adapt.qsa import QsaConfig
from edged.model.rounding import set_default_rounding
from edged.model.tflite import read_tflite, write_tflite


def init_worker(nice: int, threads: int, rounding: str = "auto") -> None:
    """The worker process's start: lower its priority, and cap the threads numpy's BLAS runs on
    (``threads``; 0 keeps its default, one per core). With one, a core stays free for the serving
    threads however heavy the cycle; on a loaded 2-core machine one thread was no slower than
    two (bench/adapt.py --only cycle). ``rounding`` is the daemon's ``model.rounding``: candidates
    are built and validated with the rounding the served engines use."""
    set_default_rounding(rounding)
    lower_priority(nice)
    if threads > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)  # for the rest of the process's life


def lower_priority(nice: int) -> None:
    """Raise the niceness of every thread of this process by ``nice``. Linux keeps one nice value
    per thread, and numpy's BLAS threads start when numpy is imported, before this runs: reniced
    through the main thread alone, they would do the reconstruction's and fine-tuning's matrix
    products at the daemon's priority, against the serving threads."""
    with contextlib.suppress(OSError):  # a worker at the daemon's priority still works
        os.nice(nice)
    with contextlib.suppress(OSError, AttributeError):  # no /proc or no per-thread priorities
        target = os.getpriority(os.PRIO_PROCESS, 0)
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError):  # a thread that just ended
                tid = int(task)
                if os.getpriority(os.PRIO_PROCESS, tid) < target:
                    os.setpriority(os.PRIO_PROCESS, tid, target)


def compress_job(master: bytes, calib: np.ndarray, strategy: str, blocks, kl_budget: float,
                 reconstruct: bool = False, finetune: dict | None = None) -> dict:
    """Score, allocate and prune in the worker process; returns the candidate's bytes and record.
    ``reconstruct`` solves the chosen candidate's kept weights again on ``calib`` (about 1 s for
    the bundled 64-1024-1024-10 MLP on 288 rows; pruning strategies only) and records it under
    ``"reconstruct"``.

    The retrainer gets a bounded share of the cycle: 0.4 s per layer at most. ``finetune``
    ({"time_s", "memory_bytes", "x", "y"}: labelled feedback rows, possibly none) trains the
    pruned candidate afterwards (``finetune_candidate``)."""
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
    record = _job_record(result, t1 - t0, time.perf_counter() - t1)
    if reconstruct:
        record = reconstruct_candidate(record, comp, result)
    return finetune_candidate(record, graph, calib, finetune) if finetune else record


def reconstruct_candidate(record: dict, comp: Compressor, result) -> dict:
    """Solve the kept weights of the searched candidate again (edged.adapt.reconstruct) on the
    compressor's calibration inputs, with the search's masks. Reconstructing every candidate of the
    search would cost a cycle minutes; this is one sweep per layer. The rebuilt candidate replaces
    the masked one only when its output KL to the master is lower; ``record["reconstruct"]`` says
    what happened."""
    t0 = time.perf_counter()
    comp.reconstruct = True
    try:
        rebuilt = comp.candidate({p.op_index: p.sparsity for p in result.layers})
    finally:
        comp.reconstruct = False
    kl = comp.kl(rebuilt)
    kept = kl <= record["kl"]
    record["reconstruct"] = {"kl_before": record["kl"], "kl_after": kl, "kept": kept,
                             "seconds": time.perf_counter() - t0}
    if kept:
        record.update(content=write_tflite(rebuilt), kl=kl)
    return record


def finetune_candidate(record: dict, master, calib: np.ndarray, settings: dict) -> dict:
    """Fine-tune the candidate of ``record`` (edged.train.finetune): distillation from the master on the
    collected inputs, plus cross-entropy on the labelled feedback rows ``settings["x"]``/``["y"]``
    when there are any. The record gets the new bytes and a ``finetune`` entry."""
    from edged.adapt.compress import output_probabilities
    from edged.adapt.stats import mean_row_kl
    from edged.runtime.native import NativeEngine
    from edged.train.finetune import FinetuneConfig, finetune

    t0 = time.perf_counter()
    x_l, y_l = settings.get("x"), settings.get("y")
    x, y = calib, None
    if x_l is not None and len(x_l):
        x = np.concatenate([calib, x_l])
        y = np.concatenate([np.full(len(calib), -1, np.int64), np.asarray(y_l, np.int64)])
    config = FinetuneConfig(time_budget_s=settings["time_s"], memory_budget_bytes=settings["memory_bytes"],
                            label_weight=settings["label_weight"] if y is not None else 0.5)
    tuned = finetune(read_tflite(record["content"], name="candidate"), master, x, y, config)
    out = master.output_tensors[0]

    def probs(graph) -> np.ndarray:
        values = NativeEngine(graph, layout="dense").infer([calib])[0].reshape(len(calib), -1)
        real = (values.astype(np.float64) - float(out.quant.zero_point[0])) * float(out.quant.scale[0])
        return output_probabilities(master, real)

    kl = mean_row_kl(probs(master), probs(tuned.graph))
    # Without labels the goal is the master's outputs: a tuned candidate further from them is dropped.
    # With labels it may move away on purpose, and validation on held-out labels decides.
    kept = y is not None or kl <= record["kl"]
    record["finetune"] = {"epochs": tuned.epochs, "steps": tuned.steps, "stopped": tuned.stopped,
                          "loss_before": tuned.initial_loss, "loss_after": tuned.best_loss,
                          "labelled": tuned.labelled, "kl_before": record["kl"], "kl_after": kl,
                          "kept": kept, "seconds": time.perf_counter() - t0}
    if kept:
        record.update(content=write_tflite(tuned.graph), kl=kl)
    return record


def _job_record(result, train_s: float, prune_s: float) -> dict:
    return {
        "content": write_tflite(result.graph), "sparsity": result.sparsity, "kl": result.kl,
        "pruned_kl": result.kl,
        "layers": {str(p.op_index): [str(p.block), p.sparsity] for p in result.layers},
        "layer_sparsity": {p.op_index: round(p.sparsity, 3) for p in result.layers},
        "curve": [[p.tau, p.sparsity, p.kl] for p in result.curve],
        "train_s": train_s, "prune_s": prune_s,
    }
