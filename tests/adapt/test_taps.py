"""Activation taps: the right tensors, sampled, capped, equal to what the layers consumed."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edged.adapt.calibration import layer_inputs
from edged.adapt.taps import Ring, Taps, default_taps
from edged.data import default_model_path
from edged.model.tflite import read_tflite
from edged.runtime.native import NativeEngine


def test_ring_keeps_the_newest_rows_in_order():
    ring = Ring(4, 2)
    for k in range(6):
        ring.push(np.full((1, 2), k, np.int8))
    assert ring.latest().tolist() == [[2, 2], [3, 3], [4, 4], [5, 5]]
    ring.push(np.arange(20, dtype=np.int8).reshape(10, 2))  # more than fits: the last 4 stay
    assert ring.latest(2).tolist() == [[16, 17], [18, 19]] and ring.total == 16


def test_taps_capture_the_inputs_of_prunable_layers():
    graph = read_tflite(default_model_path("digits_cnn"))
    specs = default_taps(graph)
    engine = NativeEngine(graph)
    engine.taps = Taps(specs, sample_rate=1.0, memory_bytes=1 << 20, seed=0)
    x = np.random.default_rng(0).integers(-128, 128, (5, 8, 8, 1)).astype(np.int8)
    engine.infer([x])
    expected = layer_inputs(graph, x)
    for op_index, value in expected.items():
        t = graph.operators[op_index].inputs[0]
        assert np.array_equal(engine.taps.window(t), value.reshape(5, -1))


def test_sampling_rate_and_memory_cap():
    graph = read_tflite(default_model_path("digits_mlp"))
    taps = Taps(default_taps(graph), sample_rate=0.2, memory_bytes=64 * 1024, seed=1)
    assert taps.memory_bytes <= 64 * 1024
    engine = NativeEngine(graph)
    engine.taps = taps
    x = np.zeros((1, 64), np.int8)
    for _ in range(1000):
        engine.infer([x])
    assert taps.seen == 1000 and 140 <= taps.sampled <= 260
    with pytest.raises(ValueError, match="cannot hold one sample"):
        Taps(default_taps(graph), memory_bytes=100)
    with pytest.raises(ValueError, match="sample rate"):
        Taps(default_taps(graph), sample_rate=2)


def test_taps_under_concurrent_serving_threads():
    graph = read_tflite(default_model_path("digits_mlp"))
    engine = NativeEngine(graph)
    engine.taps = Taps(default_taps(graph), sample_rate=1.0, memory_bytes=1 << 20, seed=2)
    errors = []

    def serve(value):
        try:
            x = np.full((1, 64), value, np.int8)
            for _ in range(200):
                engine.infer([x])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(v,)) for v in (3, -7, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    first = graph.operators[0].inputs[0]
    rows = engine.taps.window(first)
    assert {int(r[0]) for r in rows} <= {3, -7, 11}
    assert all((r == r[0]).all() for r in rows)  # no torn rows
