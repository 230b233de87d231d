"""Fine-tuning: it repairs a damaged pruned model on held-out data, reproducibly, within its budgets."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from edged.adapt.compress import BlockRanking, MagnitudeStrategy
from edged.adapt.reconstruct import CalibrationError
from edged.adapt.requantize import float_weights, requantize_layer
from edged.adapt.stats import mean_row_kl
from edged.data import default_model_path, digits_for, load_digits_test
from edged.errors import EdgedError
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.native import NativeEngine
from edged.sparse.block_csr import BlockShape
from edged.train.finetune import BudgetError, FinetuneConfig, LabelError, finetune

NO_CLOCK = 3600.0  # budgets that never bind: results depend on the seed only, not on machine speed


def damaged(name: str = "digits_mlp", sparsity: float = 0.9):
    """The master, and a copy magnitude-pruned to ``sparsity`` in 16x4 blocks with no reconstruction."""
    master = read_tflite(default_model_path(name))
    pruned = read_tflite(default_model_path(name))
    for i, op in enumerate(pruned.operators):
        if op.opcode in ("FULLY_CONNECTED", "CONV_2D"):
            scores = MagnitudeStrategy().scores(float_weights(pruned, i), None)
            requantize_layer(pruned, i, BlockRanking.of(scores, BlockShape(16, 4)).mask(sparsity))
    return master, pruned


def probabilities(graph, x: np.ndarray) -> np.ndarray:
    out = NativeEngine(graph, layout="dense").infer([x])[0].astype(np.float64) + 128
    return np.maximum(out, 0.5) / np.maximum(out, 0.5).sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def split():
    images, labels = load_digits_test()
    return images[:240], labels[:240], images[240:], labels[240:]


def test_finetuning_improves_a_damaged_pruned_model_on_held_out_data(split):
    """Distillation alone (no labels) brings the pruned model closer to the master on images it never saw."""
    train_images, _, held_images, held_labels = split
    master, pruned = damaged("digits_mlp", 0.8)
    x, held = digits_for(master, train_images), digits_for(master, held_images)
    cfg = FinetuneConfig(time_budget_s=NO_CLOCK, epochs=8, lr=2e-3, seed=0)
    result = finetune(pruned, master, x, config=cfg)
    assert result.improved and result.stopped == "epochs"
    reference = probabilities(master, held)
    kl_before = mean_row_kl(reference, probabilities(pruned, held))
    kl_after = mean_row_kl(reference, probabilities(result.graph, held))
    assert kl_after < 0.5 * kl_before

    def accuracy(g):
        return np.mean(np.argmax(NativeEngine(g, layout="dense").infer([held])[0], 1) == held_labels)

    assert accuracy(result.graph) > accuracy(pruned) + 0.1
    for i, op in enumerate(pruned.operators):  # pruned weights stayed pruned
        if op.opcode == "FULLY_CONNECTED":
            before = pruned.tensors[op.inputs[1]].data
            assert np.all(result.graph.tensors[result.graph.operators[i].inputs[1]].data[before == 0] == 0)


def test_labels_teach_what_distillation_alone_does_not(split):
    """With the master's own answers as the target nothing improves on a class the master gets wrong;
    labels for that class do (supervised mixed with distillation)."""
    train_images, train_labels, held_images, held_labels = split
    master, pruned = damaged("digits_cnn", 0.5)
    x, held = digits_for(master, train_images), digits_for(master, held_images)
    # Pretend the world changed: class 3 is now called 8 (the master never says so).
    relabel = np.where(train_labels == 3, 8, train_labels)
    cfg = FinetuneConfig(time_budget_s=NO_CLOCK, epochs=15, lr=3e-3, label_weight=0.9, seed=0)
    tuned = finetune(pruned, master, x, relabel, cfg).graph
    said = np.argmax(NativeEngine(tuned, layout="dense").infer([held])[0], 1)
    assert np.mean(said[held_labels == 3] == 8) > 0.5


def test_same_seed_same_model(split):
    train_images, train_labels, _, _ = split
    master, pruned = damaged("digits_cnn", 0.7)
    x = digits_for(master, train_images)
    cfg = FinetuneConfig(time_budget_s=NO_CLOCK, epochs=2, seed=7)
    labels = np.where(np.arange(len(x)) % 3 == 0, train_labels, -1)
    first = write_tflite(finetune(pruned, master, x, labels, cfg).graph)
    assert write_tflite(finetune(pruned, master, x, labels, cfg).graph) == first


def test_a_stop_request_returns_the_model_it_was_given(split):
    train_images, _, held_images, _ = split
    master, pruned = damaged("digits_cnn", 0.7)
    stop = threading.Event()
    stop.set()
    result = finetune(pruned, master, digits_for(master, train_images), stop=stop,
                      config=FinetuneConfig(time_budget_s=NO_CLOCK))
    assert result.stopped == "stop" and result.steps == 0 and result.best_loss == result.initial_loss
    held = digits_for(master, held_images)
    assert np.array_equal(NativeEngine(result.graph).infer([held])[0], NativeEngine(pruned).infer([held])[0])


def test_bad_inputs_are_refused_with_reasons(split):
    train_images, train_labels, _, _ = split
    master, pruned = damaged("digits_cnn", 0.5)
    x = digits_for(master, train_images)
    with pytest.raises(CalibrationError, match="the model takes int8"):
        finetune(pruned, master, x.reshape(len(x), -1))
    with pytest.raises(CalibrationError, match="float32"):
        finetune(pruned, master, x.astype(np.float32))
    bad = train_labels.copy()
    bad[5] = 10
    with pytest.raises(LabelError, match="label 10 is out of range"):
        finetune(pruned, master, x, bad)
    with pytest.raises(LabelError, match="one per row"):
        finetune(pruned, master, x, train_labels[:-1])
    with pytest.raises(BudgetError, match="memory budget"):
        finetune(pruned, master, x, config=FinetuneConfig(memory_budget_bytes=1000))
    with pytest.raises(EdgedError):
        finetune(pruned, master, x, config=FinetuneConfig(time_budget_s=0))


def test_pseudo_labels_and_a_tight_memory_budget(split):
    """Unlabelled rows the master is sure of become labelled; a budget that holds only a few rows of
    activations makes the batches smaller instead of failing."""
    train_images, _, _, _ = split
    master, pruned = damaged("digits_cnn", 0.5)
    x = digits_for(master, train_images)
    cfg = FinetuneConfig(time_budget_s=NO_CLOCK, epochs=1, pseudo_threshold=0.9, seed=0)
    result = finetune(pruned, master, x, config=cfg)
    assert 0 < result.pseudo <= len(x) and result.labelled > 0
    from edged.train.graph import TrainGraph

    model = TrainGraph(pruned)
    fixed = 5 * model.parameter_bytes() + x.nbytes + len(x) * 10 * 4
    tight = dataclasses.replace(cfg, pseudo_threshold=None,
                                memory_budget_bytes=fixed + 5 * model.activation_bytes_per_row())
    assert finetune(pruned, master, x, config=tight).batch == 5
