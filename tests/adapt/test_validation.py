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
