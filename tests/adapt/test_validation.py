"""The validation gate on counts: labels decide when held out, fidelity otherwise, latency always."""

from __future__ import annotations

import numpy as np
import pytest

from edged.adapt.validation import MAX_LATENCY_RATIO, Fidelity, LabelledRows, LabelledScore, judge

FAITHFUL = Fidelity(agreement=96, samples=96, kl=0.001)
UNFAITHFUL = Fidelity(agreement=70, samples=96, kl=0.3)


def test_without_labels_the_fidelity_gate_decides():
    assert judge(FAITHFUL, 1.0, 0.9, 0.05).ok
    low = judge(UNFAITHFUL, 1.0, 0.9, 0.05)
    assert not low.ok and "agreement lower bound" in low.why and not low.judged_by_labels
    far = judge(Fidelity(96, 96, 0.2), 1.0, 0.9, 0.05)
    assert not far.ok and "held-back KL" in far.why


@pytest.mark.parametrize(("fidelity", "ours", "theirs", "ok"), [
    (UNFAITHFUL, 90, 80, True),  # beats the master on labels: unfaithful on purpose
    (UNFAITHFUL, 80, 80, False),  # as good, and no longer answering like the master
    (FAITHFUL, 80, 80, True),  # as good and faithful
    (FAITHFUL, 79, 80, False),  # worse than the master, however faithful
])
def test_with_held_out_labels_the_candidate_must_beat_the_master(fidelity, ours, theirs, ok):
    verdict = judge(fidelity, 1.0, 0.9, 0.05, LabelledScore(ours, theirs, 100))
    assert verdict.ok is ok, verdict
    assert verdict.judged_by_labels and verdict.numbers["accuracy"] == ours / 100
    if not ok:
        assert "not above the master's" in verdict.why


def test_a_slower_candidate_is_rejected_by_either_gate():
    slow = MAX_LATENCY_RATIO + 0.1
    assert "p50" in judge(FAITHFUL, slow, 0.9, 0.05).why
    assert "p50" in judge(UNFAITHFUL, slow, 0.9, 0.05, LabelledScore(90, 80, 100)).why


def test_labelled_rows_hold_out_the_newest_third_once_there_are_enough():
    rows = LabelledRows((4,), np.int8, capacity=100)
    for i in range(50):
        rows.add(np.full(4, i, np.int8), i % 10)
    (x, _), held = rows.split(min_held=30)
    assert held is None and len(x) == 50  # 30 held out would leave fewer than 30 to train on
    for i in range(50, 100):
        rows.add(np.full(4, i, np.int8), i % 10)
    (x, _), (hx, hy) = rows.split(min_held=30)
    assert len(hx) == 33 and len(x) == 67 and hx[0, 0] == 67 and hy[-1] == 99 % 10  # the newest held out
    rows.add(np.zeros(4, np.int8), 0)  # capacity: the oldest goes
    assert len(rows) == 100 and rows[0][0][0] == 1


def test_validation_plans_the_candidate_and_the_served_version_in_the_configured_layout(monkeypatch):
    """The latency check compares the candidate with the served version as the daemon serves them
    (model.layout), not in the planner's default layout; the reference master stays dense."""
    from concurrent.futures import ThreadPoolExecutor

    import edged.runtime.native as native
    from edged.adapt.calibration import Calibration, prunable_ops
    from edged.adapt.compress import Compressor, MagnitudeStrategy
    from edged.adapt.controller import Controller
    from edged.config import AdaptSection
    from edged.data import default_model_path, digits_for, load_digits_test
    from edged.model.tflite import read_tflite, write_tflite
    from edged.sparse.block_csr import BlockShape

    built: dict[str, native.NativeEngine] = {}

    class RecordingEngine(native.NativeEngine):
        def __init__(self, graph, model="<model>", variant=None, layout="auto", rounding="auto"):
            super().__init__(graph, model, variant, layout, rounding)
            self.policy = layout
            built[model] = self

    monkeypatch.setattr(native, "NativeEngine", RecordingEngine)
    content = default_model_path("digits_mlp").read_bytes()
    master = read_tflite(content)
    images, _ = load_digits_test()
    x = digits_for(master, images[:64])
    comp = Compressor(master, Calibration(x), MagnitudeStrategy(), BlockShape(16, 4))
    candidate = write_tflite(comp.candidate({i: 0.5 for i in prunable_ops(master)}))
    ctrl = Controller(content, AdaptSection(enabled=True), current=lambda: None, deploy=lambda c, m: None,
                      layout="16x4")
    with ThreadPoolExecutor(1) as pool:  # the job runs in this process, where the engines are recorded
        ctrl._pool = lambda: pool
        ctrl._validate(candidate, x)
    forced = [c for c in built["candidate"].plan.layouts.values() if c.sparsity > 0]
    assert forced and all(c.layout == BlockShape(16, 4) and c.how == "forced" for c in forced)
    assert built["served"].policy == BlockShape(16, 4)  # the served master: no zeros to lay out
    assert all(c.layout is None for c in built["master"].plan.layouts.values())
