"""The controller's candidate pipeline with fine-tuning: labelled feedback trains candidates and, held
out, decides whether one beats the master; without labels the fidelity gate stays."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from prometheus_client import CollectorRegistry

from edged.adapt.controller import Controller
from edged.adapt.metrics import AdaptMetrics
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite
from edged.serve.feedback import FeedbackLog
from edged.train.finetune import FinetuneConfig, finetune
from tests.adapt.test_controller import CFG, FakeDaemon, Traffic
from tests.train.test_finetune import damaged


def controller(content: bytes, feedback=None, **changes):
    daemon = FakeDaemon(content)
    metrics = AdaptMetrics(CollectorRegistry())
    ctrl = Controller(content, dataclasses.replace(CFG, **changes), current=lambda: daemon.model,
                      deploy=daemon.deploy, feedback=feedback, metrics=metrics)
    return ctrl, daemon, metrics


def test_feedback_rows_are_kept_for_training_and_bad_labels_are_counted():
    content = default_model_path("digits_mlp").read_bytes()
    log = FeedbackLog(64, keep_inputs=True)
    ctrl, _, metrics = controller(content, log)
    images, labels = load_digits_test()
    x = digits_for(ctrl.master, images[:6])
    log.record("a", "m", "1", np.zeros((4, 10), np.int8), x[:4])
    log.record("b", "m", "1", np.zeros((2, 10), np.int8), x[4:])
    log.match("a", [int(v) for v in labels[:4]])
    log.match("b", [int(labels[4]), 10])  # 10 is no class of this model
    ctrl.watch.feedback_trigger()
    assert len(ctrl.watch.labelled) == 5
    assert np.array_equal(ctrl.watch.labelled[4][0], x[4]) and ctrl.watch.labelled[4][1] == labels[4]
    assert metrics.bad_labels._value.get() == 1


def relabelled(labels: np.ndarray) -> np.ndarray:
    """A changed world: what was a 3 is now called 8 (the master never says so)."""
    return np.where(labels == 3, 8, labels)


def test_labelled_validation_accepts_only_a_candidate_better_than_the_master():
    master_graph = read_tflite(default_model_path("digits_cnn"))
    ctrl, _, _ = controller(default_model_path("digits_cnn").read_bytes())
    images, labels = load_digits_test()
    x_train, x_check = digits_for(master_graph, images[:240]), digits_for(master_graph, images[240:])
    y_train, y_check = relabelled(labels[:240]), relabelled(labels[240:])
    _, pruned = damaged("digits_cnn", 0.5)
    cfg = FinetuneConfig(time_budget_s=3600, epochs=15, lr=3e-3, label_weight=0.9, seed=0)
    adapted = finetune(pruned, master_graph, x_train, y_train, cfg).graph
    verdict = ctrl._validate(adapted, x_check, (x_check, y_check))
    assert verdict.ok and verdict.judged_by_labels, verdict
    assert verdict.numbers["accuracy"] > verdict.numbers["master_accuracy"]
    # The same candidate without labels fails the fidelity gate: it no longer answers like the master.
    assert not ctrl._validate(adapted, x_check).ok
    _, broken = damaged("digits_cnn", 0.95)
    verdict = ctrl._validate(broken, x_check, (x_check, y_check))
    assert not verdict.ok and "not above the master's" in verdict.why
    ctrl.stop()


def test_an_adaptation_trains_on_labelled_feedback_and_swaps_when_it_beats_the_master():
    """The whole cycle: traffic, labelled feedback (relabelled world), fine-tuned candidate, labelled
    validation on rows it never trained on, swap."""
    content = default_model_path("digits_mlp").read_bytes()
    log = FeedbackLog(4096, keep_inputs=True)
    ctrl, daemon, _ = controller(content, log, finetune=True, finetune_time_s=600.0, min_labelled=40,
                                 probation_s=600, fidelity_floor=0.99)
    images, labels = load_digits_test()
    x = digits_for(ctrl.master, images)
    y = relabelled(labels)
    for i in range(len(x)):
        log.record(str(i), "m", "1", np.zeros((1, 10), np.int8), x[i : i + 1])
        log.match(str(i), [int(y[i])])
    ctrl.watch.feedback_trigger()
    assert len(ctrl.watch.labelled) == len(x)
    ctrl.attach(daemon.model)
    with Traffic(daemon):
        outcome = ctrl.adapt("accuracy", "labelled feedback")
    kinds = [e.kind for e in ctrl.events]
    assert "finetuned" in kinds, [e.line() for e in ctrl.events]
    assert outcome == "swapped", [e.line() for e in ctrl.events]
    validated = next(e for e in ctrl.events if e.kind == "validated")
    assert validated.numbers["accuracy"] > validated.numbers["master_accuracy"]
    assert validated.numbers["labelled"] == 120
    assert daemon.model.content != content
    # In probation the new version disagrees with the master on every relabelled 3; fidelity to the
    # master must not roll back what the labels chose.
    with Traffic(daemon):
        for _ in range(60):
            ctrl.step()
            time.sleep(0.05)
    assert "rolled_back" not in [e.kind for e in ctrl.events]
    assert daemon.model.content != content


def test_a_drift_cycle_drops_labels_from_before_the_drift_and_a_swap_resets_the_accuracy_window():
    """Labels of rows from before an input drift describe the old world: a drift-triggered cycle must
    not train or judge on them. An accuracy-triggered cycle keeps them. After a swap, the feedback
    accuracy of the version before must not trigger again at once."""
    content = default_model_path("digits_mlp").read_bytes()
    log = FeedbackLog(4096, keep_inputs=True)
    ctrl, daemon, _ = controller(content, log, finetune=False, min_labelled=40, probation_s=600)
    images, labels = load_digits_test()
    x = digits_for(ctrl.master, images[:200])
    for i in range(len(x)):
        log.record(str(i), "m", "1", np.zeros((1, 10), np.int8), x[i : i + 1])
        log.match(str(i), [int(labels[i])])
    ctrl.watch.feedback_trigger()
    assert len(ctrl.watch.labelled) == 200 and ctrl.watch.accuracy.reading().samples > 0
    ctrl.attach(daemon.model)
    with Traffic(daemon):
        ctrl.adapt("accuracy", "feedback")
    assert len(ctrl.watch.labelled) == 200  # same inputs: the labels still hold
    with Traffic(daemon):
        outcome = ctrl.adapt("drift", "input KL")
    kinds = [e.kind for e in ctrl.events]
    assert kinds[kinds.index("trigger", kinds.index("trigger") + 1) + 1] == "labels_dropped", kinds
    assert len(ctrl.watch.labelled) == 0
    if outcome == "swapped":
        assert ctrl.watch.accuracy.reading().samples == 0
    assert "swapped" in kinds, [e.line() for e in ctrl.events]  # one of the two cycles swapped
    ctrl.stop()
