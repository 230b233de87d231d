"""The adaptation worker's job: prune, reconstruct, fine-tune, as the controller runs it."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edged.adapt.compress import output_probabilities
from edged.adapt.controller import Controller
from edged.adapt.stats import mean_row_kl
from edged.adapt.worker import compress_job
from edged.config import AdaptSection
from edged.corruptions import corrupt
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite
from edged.runtime.native import NativeEngine
from edged.sparse.block_csr import BlockShape

MLP = default_model_path("digits_mlp")


def _probs(graph, x: np.ndarray) -> np.ndarray:
    out = graph.output_tensors[0]
    values = NativeEngine(graph, layout="dense").infer([x])[0].reshape(len(x), -1).astype(np.float64)
    return output_probabilities(graph, (values - float(out.quant.zero_point[0])) * float(out.quant.scale[0]))


def test_reconstruction_in_the_job_brings_held_out_outputs_closer_to_the_master():
    """The same window and the same masks (the search is deterministic): the job with reconstruction
    returns a candidate whose outputs on drifted rows it never saw are closer to the master's."""
    content = MLP.read_bytes()
    master = read_tflite(content)
    images, _ = load_digits_test()
    x = digits_for(master, corrupt(images, "noise", 1.0, seed=4))
    window, held = x[:256], x[256:]
    masked = compress_job(content, window, "magnitude", BlockShape(1, 1), 0.1, False)
    rebuilt = compress_job(content, window, "magnitude", BlockShape(1, 1), 0.1, True)
    assert "reconstruct" not in masked
    record = rebuilt["reconstruct"]
    assert record["kept"] and record["kl_after"] < record["kl_before"] / 2, record
    assert rebuilt["layers"] == masked["layers"] and rebuilt["pruned_kl"] == masked["kl"]
    assert rebuilt["sparsity"] == masked["sparsity"]
    cand_masked, cand_rebuilt = read_tflite(masked["content"]), read_tflite(rebuilt["content"])
    reference = _probs(master, held)
    kl_masked = mean_row_kl(reference, _probs(cand_masked, held))
    kl_rebuilt = mean_row_kl(reference, _probs(cand_rebuilt, held))
    assert kl_rebuilt < kl_masked / 2, (kl_rebuilt, kl_masked)


def _thread_niceness() -> dict[int, int]:
    return {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="per-thread priorities: Linux")
def test_every_thread_of_the_worker_process_runs_at_the_configured_niceness():
    """numpy's BLAS threads exist before the pool's initializer runs; they must be reniced too, or the
    worker's matrix products compete with the serving threads at full priority."""
    content = MLP.read_bytes()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    cfg = AdaptSection(enabled=True, nice=7)
    ctrl = Controller(content, cfg, current=lambda: None, deploy=lambda c, m: None)
    try:
        niceness = ctrl._pool().submit(_thread_niceness).result(timeout=60)
    finally:
        ctrl.stop()
    assert niceness and all(v >= min(base + 7, 19) for v in niceness.values()), niceness


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_the_worker_process_runs_numpy_on_the_configured_number_of_threads():
    content = MLP.read_bytes()
    ctrl = Controller(content, AdaptSection(enabled=True, worker_threads=1), current=lambda: None,
                      deploy=lambda c, m: None)
    try:
        threads = ctrl._pool().submit(_blas_threads).result(timeout=60)
    finally:
        ctrl.stop()
    assert threads and all(n == 1 for n in threads), threads


@pytest.mark.parametrize("mode", ["single", "double"])
def test_the_worker_process_rounds_as_the_daemon_is_configured(mode):
    """The worker is spawned, so it starts without the daemon's ``model.rounding``: candidates built
    and validated there must still round as the served engines do."""
    from edged.model.rounding import resolve_rounding, set_default_rounding

    content = MLP.read_bytes()
    set_default_rounding(mode)
    try:
        ctrl = Controller(content, AdaptSection(enabled=True), current=lambda: None, deploy=lambda c, m: None)
        try:
            worker_mode = ctrl._pool().submit(resolve_rounding).result(timeout=60)
        finally:
            ctrl.stop()
    finally:
        set_default_rounding("auto")
    assert worker_mode == mode
