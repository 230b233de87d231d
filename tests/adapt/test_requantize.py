"""Re-quantizing pruned layers: exact zeros, tighter scales, bias correction, bit-exact engines."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from edged.adapt.requantize import requantize_layer
from edged.data import default_model_path, digits_input, load_digits_test
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine
from edged.sparse.block_csr import BlockShape
from edged.sparse.masks import block_magnitude_mask


def _digits(engine):
    images, labels = load_digits_test()
    spec = engine.inputs[0]
    return digits_input(images, spec.dtype, spec.scale, spec.zero_point, spec.shape), labels


def _prune(graph, sparsity, requantize=True, correct=False, x=None):
    g = copy.deepcopy(graph)
    fcs = [i for i, op in enumerate(g.operators) if op.opcode == "FULLY_CONNECTED"][:-1]
    means = {}
    if correct:
        from edged.runtime.prepared import prepare_graph

        # Inputs of each layer on the calibration batch, from the dense model.
        acts = {}
        prepared = prepare_graph(graph)
        tensors = {graph.inputs[0]: x}
        for step in prepared.steps:
            args = [tensors[t] for t in step.activation_inputs]
            tensors[step.output] = step.module.reference(step.params, args)
            acts[step.index] = args[0]
        for i in fcs:
            t = graph.tensors[graph.operators[i].inputs[0]]
            deq = (acts[i].astype(np.float64) - t.quant.zero_point[0]) * t.quant.scale[0]
            means[i] = deq.reshape(-1, deq.shape[-1]).mean(axis=0)
    for i in fcs:
        w = g.tensors[g.operators[i].inputs[1]]
        keep = block_magnitude_mask(w.data, BlockShape(16, 4), sparsity)
        if requantize:
            requantize_layer(g, i, keep, means.get(i))
        else:
            w.data = np.where(keep, w.data, np.int8(0))
    return g


def test_zeros_stay_exact_and_scales_shrink():
    graph = read_tflite(default_model_path())
    g = _prune(graph, 0.9)
    op = g.operators[1]
    w = g.tensors[op.inputs[1]]
    old = graph.tensors[graph.operators[1].inputs[1]]
    assert 1 - np.count_nonzero(w.data) / w.data.size >= 0.9
    assert np.all(w.quant.zero_point == 0) and np.all(w.quant.scale <= old.quant.scale * (1 + 1e-6))
    assert np.abs(w.data).max() == 127  # the largest surviving weight uses the full range again


@pytest.mark.parametrize("correct", [False, True])
def test_requantized_model_runs_bit_exactly_everywhere(correct):
    graph = read_tflite(default_model_path())
    x, _ = _digits(NativeEngine(graph))
    g = _prune(graph, 0.9, correct=correct, x=x)
    litert = LiteRTEngine(write_tflite(g)).infer([x])[0]
    assert np.array_equal(NativeEngine(g).infer([x])[0], litert)
    assert np.array_equal(ReferenceEngine(g).run([x])[0], litert)


def test_bias_correction_recentres_each_channel():
    """Its contract: the per-channel mean output of the pruned layer moves back toward the
    dense layer's. (Whether that helps accuracy is an empirical question: bench/adapt.py.)"""
    from edged.runtime.prepared import prepare_graph

    graph = read_tflite(default_model_path())
    x, _ = _digits(NativeEngine(graph))

    def first_layer(g):
        step = prepare_graph(g).steps[0]
        return step.module.reference(step.params, [x]).astype(np.float64).mean(axis=0)

    dense = first_layer(graph)
    plain = np.abs(first_layer(_prune(graph, 0.7)) - dense).mean()
    corrected = np.abs(first_layer(_prune(graph, 0.7, correct=True, x=x)) - dense).mean()
    assert corrected < 0.8 * plain


def test_bad_masks_and_ops_are_rejected():
    graph = read_tflite(default_model_path())
    with pytest.raises(ValueError, match="mask shape"):
        requantize_layer(graph, 0, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="can be pruned"):
        requantize_layer(graph, len(graph.operators) - 1, np.ones((1,), bool))
