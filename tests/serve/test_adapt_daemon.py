"""Adaptation inside the real daemon: drifted traffic over ZeroMQ leads to a validated hot swap,
recorded in the store's lineage and in the metrics, and no request fails meanwhile."""

from __future__ import annotations

import json
import threading
import time

import numpy as np

from edged.corruptions import corrupt
from edged.data import default_model_path, digits_input, load_digits_test
from edged.model.tflite import read_tflite

MLP = default_model_path("digits_mlp")


def test_drift_leads_to_a_swap_without_failed_requests(daemons, tmp_path):
    state = tmp_path / "state"
    d = daemons(MLP, state_dir=state, sections={"adapt": {
        "enabled": True, "strategy": "magnitude", "block": "1x1", "sample_rate": 1.0, "window": 64,
        "calib_samples": 256, "min_interval_s": 0, "probation_s": 1, "fidelity_floor": 0.7,
        "kl_budget": 0.05, "collect_timeout_s": 30,
    }}).start()
    images, _ = load_digits_test()
    spec = read_tflite(MLP).input_tensors[0]
    clean = digits_input(images, spec.dtype, float(spec.quant.scale[0]), int(spec.quant.zero_point[0]),
                         spec.shape[1:])
    shifted = digits_input(corrupt(images, "contrast"), spec.dtype, float(spec.quant.scale[0]),
                           int(spec.quant.zero_point[0]), spec.shape[1:])
    errors: list[Exception] = []
    replies = 0
    stop = threading.Event()
    data = {"x": clean}

    def traffic():
        nonlocal replies
        rng = np.random.default_rng(0)
        with d.client() as c:
            while not stop.is_set():
                try:
                    c.infer(data["x"][rng.integers(0, len(clean), 8)])
                    replies += 1
                except Exception as exc:  # every failure is a test failure
                    errors.append(exc)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(3)  # clean reference windows
        data["x"] = shifted
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and d.metric("edged_adaptations_total", outcome="swapped") < 1:
            time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    log = d.log()
    assert d.metric("edged_adaptations_total", outcome="swapped") >= 1, log
    assert not errors and replies > 100
    assert d.metric("edged_drift_kl") > 0
    assert d.metric("edged_model_sparsity_ratio") > 0.3
    metas = [json.loads(p.read_text()) for p in state.rglob("*.json") if "made_by" in p.read_text()]
    adapted = [m for m in metas if m.get("made_by", {}).get("strategy") == "magnitude"]
    assert adapted and adapted[0]["made_by"]["kl"] <= 0.05 and adapted[0]["made_by"]["trigger"] == "drift"
    assert "adapt swapped" in log
