"""Weights stored in the smallest sparse layout: smaller files that the native engine and LiteRT both run."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.native import NativeEngine
from edged.sparse.storage import check_litert, store_weights, weight_tensors
from tests.model.test_sparse_encoding import _block_sparse_matrix, _fc_graph


def _opcodes(content: bytes) -> list[str]:
    return [op.opcode for op in read_tflite(content, keep_densify=True).operators]


def _pruned_cnn(keep: float, seed: int = 0):
    """The bundled CNN with ``1 - keep`` of every weight tensor's entries zeroed at random."""
    graph = read_tflite(default_model_path("digits_cnn"))
    rng = np.random.default_rng(seed)
    for i in weight_tensors(graph):
        t = graph.tensors[i]
        t.data = np.where(rng.random(t.shape) < keep, t.data, 0).astype(np.int8)
    return graph


def test_block_zeros_of_fc_weights_go_to_litert_sparse_kernel():
    rng = np.random.default_rng(1)
    graph = _fc_graph(_block_sparse_matrix(rng, 64, 256, 0.8))
    dense = write_tflite(graph)
    [stored] = store_weights(graph)
    assert (stored.layout, stored.litert) == ("1x16 blocks", "sparse kernel")
    assert stored.stored_bytes < 0.35 * stored.dense_bytes
    content = write_tflite(graph)
    assert "DENSIFY" not in _opcodes(content) and len(content) < len(dense) - 0.6 * stored.dense_bytes
    back = read_tflite(content)
    w_index = graph.operators[0].inputs[1]
    assert np.array_equal(back.tensors[back.operators[0].inputs[1]].data, graph.tensors[w_index].data)
    # The bias keeps no quantization parameters of its own: int8 kernels derive its scale.
    assert back.tensors[back.operators[0].inputs[2]].quant is None
    x = rng.integers(-128, 128, (8, 256)).astype(np.int8)
    # Equal up to the sparse kernel's rounding of ties, which the native engine follows.
    sparse_out = NativeEngine.from_bytes(content).infer([x])[0].astype(int)
    diff = sparse_out - NativeEngine.from_bytes(dense).infer([x])[0]
    assert np.abs(diff).max() <= 1


def test_scattered_zeros_are_stored_unstructured_behind_densify_and_both_engines_agree():
    pytest.importorskip("ai_edge_litert")
    graph = _pruned_cnn(keep=0.2)
    source = write_tflite(graph)
    stored = store_weights(graph)
    assert {s.layout for s in stored if s.dense_bytes > 2000} == {"unstructured"}
    content = write_tflite(graph)
    assert len(content) < 0.75 * len(source)
    assert _opcodes(content).count("DENSIFY") == sum(s.layout != "dense" for s in stored)
    # Read back, the DENSIFY ops are folded into the constants, which keep their layout.
    back = read_tflite(content)
    assert "DENSIFY" not in [op.opcode for op in back.operators]
    for i in weight_tensors(back):
        assert np.array_equal(back.tensors[i].data, graph.tensors[i].data)
    assert write_tflite(back) == content
    images, _ = load_digits_test()
    x = digits_for(graph, images[:20])
    same = NativeEngine.from_bytes(source, layout="dense").infer([x])[0]
    assert np.array_equal(NativeEngine.from_bytes(content).infer([x])[0], same)
    check = check_litert(content, x)
    assert check.runs and check.detail.startswith("20/20 calibration outputs bit-identical"), check.detail


def test_weights_without_zeros_or_with_too_few_stay_dense():
    graph = _pruned_cnn(keep=0.97)
    before = write_tflite(graph)
    stored = store_weights(graph)
    assert all(s.layout == "dense" and s.stored_bytes == s.dense_bytes for s in stored)
    assert write_tflite(graph) == before


def test_storage_modes():
    rng = np.random.default_rng(2)
    graph = _fc_graph(_block_sparse_matrix(rng, 32, 64, 0.8))
    assert [s.layout for s in store_weights(copy.deepcopy(graph), "dense")] == ["dense"]
    assert [s.litert for s in store_weights(copy.deepcopy(graph), "litert-kernel")] == ["sparse kernel"]
    with pytest.raises(ValueError, match="unknown weight storage"):
        store_weights(graph, "zip")
