"""Fine-tuning under drift: the master's outputs are what went wrong, so labelled feedback alone
teaches more than labels mixed with distillation from the master, and the daemon trains that way."""

from __future__ import annotations

import numpy as np
import pytest

from edged.adapt import worker
from edged.config import AdaptSection
from edged.corruptions import corrupt
from edged.data import digits_for, load_digits_test, load_digits_train
from edged.model.tflite import write_tflite
from edged.runtime.native import NativeEngine
from edged.train import finetune as finetune_module
from edged.train.finetune import FinetuneConfig, finetune
from tests.train.test_finetune import NO_CLOCK, damaged


@pytest.fixture(scope="module")
def blurred_traffic():
    """The CNN, a pruned copy, blurred traffic with labels on 30 % of it, and blurred held-out data."""
    master, pruned = damaged("digits_cnn", 0.7)
    train, train_labels = load_digits_train()
    test, test_labels = load_digits_test()
    x = digits_for(master, corrupt(train, "blur", 1.0, 1))
    y = np.where(np.random.default_rng(0).random(len(x)) < 0.3, train_labels, -1)
    held = digits_for(master, corrupt(test, "blur", 1.0, 2))
    return master, pruned, x, y, held, test_labels


def test_labels_alone_beat_labels_mixed_with_distillation_under_drift(blurred_traffic):
    master, pruned, x, y, held, held_labels = blurred_traffic

    def accuracy(graph) -> float:
        said = np.argmax(NativeEngine(graph, layout="dense").infer([held])[0], 1)
        return float(np.mean(said == held_labels))

    def tuned(label_weight: float) -> float:
        cfg = FinetuneConfig(time_budget_s=NO_CLOCK, epochs=5, label_weight=label_weight, seed=0)
        return accuracy(finetune(pruned, master, x, y, cfg).graph)

    labels_alone, mixed = tuned(AdaptSection().label_weight), tuned(0.8)
    assert AdaptSection().label_weight == 1.0
    assert labels_alone > accuracy(master) + 0.1
    assert labels_alone > mixed + 0.04, (labels_alone, mixed)


def test_the_worker_fine_tunes_labelled_feedback_at_the_configured_weight(blurred_traffic, monkeypatch):
    master, pruned, x, y, _, _ = blurred_traffic
    seen: list[FinetuneConfig] = []
    real = finetune_module.finetune

    def spy(student, teacher, rows, labels=None, config=None, **kw):
        seen.append(config)
        return real(student, teacher, rows, labels, FinetuneConfig(time_budget_s=NO_CLOCK, epochs=1), **kw)

    monkeypatch.setattr(finetune_module, "finetune", spy)
    record = {"content": write_tflite(pruned), "kl": 1.0}
    labelled = y >= 0
    settings = {"time_s": 5.0, "memory_bytes": 256 << 20, "label_weight": 0.6,
                "x": x[labelled][:50], "y": y[labelled][:50]}
    worker.finetune_candidate(record, master, x[:100], settings)
    worker.finetune_candidate(record, master, x[:100], {**settings, "x": None, "y": None})
    assert [c.label_weight for c in seen] == [0.6, 0.5]  # without labels, distillation alone
    assert record["finetune"]["labelled"] == 0
