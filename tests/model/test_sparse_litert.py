"""LiteRT on sparse-encoded FULLY_CONNECTED weights: its sparse kernel's rounding, the layouts it
mishandles, and the native engine following whichever path LiteRT takes."""

from __future__ import annotations

import numpy as np
import pytest

from edged.model.quant import multiply_by_quantized_multiplier, multiply_by_quantized_multiplier_half_up
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.prepared import prepare_graph
from edged.sparse.tflite_encoding import DENSE, SPARSE_CSR, encode
from tests.model.test_sparse_encoding import _block_sparse_matrix, _fc_graph, _sparse_copy


def _litert(content: bytes, x: np.ndarray) -> np.ndarray:
    from edged.runtime.litert import LiteRTEngine

    return LiteRTEngine(content).infer([x])[0]


def _requantized(graph, x: np.ndarray, half_up: bool) -> np.ndarray:
    """The FC output computed in int64 with either of LiteRT's two roundings."""
    p = prepare_graph(graph).steps[0].params
    acc = (x.reshape(-1, p.depth).astype(np.int64) + p.input_offset) @ p.weights.astype(np.int64).T + p.bias
    scale = multiply_by_quantized_multiplier_half_up if half_up else multiply_by_quantized_multiplier
    return np.clip(scale(acc, p.multiplier, p.shift) + p.output_offset, p.act_min, p.act_max).reshape(
        (x.shape[0], *p.out_shape)
    )


@pytest.mark.parametrize(
    "per_channel, bias, rows", [(True, True, 1), (False, True, 1), (True, False, 3), (False, False, 3)]
)
def test_litert_sparse_fc_equals_dense_up_to_its_tie_rounding(per_channel, bias, rows):
    pytest.importorskip("ai_edge_litert")
    rng = np.random.default_rng(5)
    graph = _fc_graph(_block_sparse_matrix(rng, 96, 256, 0.5), per_channel=per_channel, bias=bias, rows=rows)
    dense = write_tflite(graph)
    sparse = _sparse_copy(dense)
    x = rng.integers(-128, 128, (16, 256) if rows == 1 else (16, rows, 256)).astype(np.int8)
    from_dense, from_sparse = _litert(dense, x), _litert(sparse, x)
    half_up, away = _requantized(graph, x, True), _requantized(graph, x, False)
    assert np.array_equal(from_dense, half_up)
    assert np.array_equal(from_sparse, away)
    assert np.array_equal(from_dense != from_sparse, half_up != away)
    assert np.abs(from_dense.astype(int) - from_sparse).max() <= 1


def test_litert_sparse_fc_rounds_negative_ties_away_from_zero():
    """With a real multiplier of exactly 1/4 many accumulators scale to ties."""
    pytest.importorskip("ai_edge_litert")
    rng = np.random.default_rng(6)
    w = np.sign(_block_sparse_matrix(rng, 32, 64, 0.5)).astype(np.int8)
    graph = _fc_graph(w, per_channel=False, bias=False, scales=(0.5, 0.25, 0.5), zero_points=(0, 0))
    dense = write_tflite(graph)
    x = rng.integers(-3, 4, (8, 64)).astype(np.int8)
    acc = x.astype(np.int64) @ w.astype(np.int64).T
    diff = _litert(_sparse_copy(dense), x).astype(int) - _litert(dense, x)
    assert np.array_equal(diff, _requantized(graph, x, False) - _requantized(graph, x, True))
    # The sparse kernel is one step lower, only ever at negative accumulators.
    assert np.isin(diff, [-1, 0]).all() and (acc[diff != 0] < 0).all()
    assert np.count_nonzero(diff) > diff.size // 10


@pytest.mark.parametrize("ties", [False, True])
def test_native_engine_follows_litert_on_dense_and_sparse_files(ties):
    """On each file the native engine takes the arithmetic LiteRT takes: ruy's for
    dense weights, the sparse kernel's (ties away from zero) for sparse ones."""
    pytest.importorskip("ai_edge_litert")
    from edged.runtime.native import NativeEngine
    from edged.runtime.reference import ReferenceEngine
    from edged.sparse.block_csr import BlockShape

    rng = np.random.default_rng(7)
    if ties:  # a real multiplier of 1/4: many accumulators scale to exact ties
        w = np.sign(_block_sparse_matrix(rng, 32, 64, 0.5)).astype(np.int8)
        graph = _fc_graph(w, per_channel=False, bias=False, scales=(0.5, 0.25, 0.5), zero_points=(0, 0))
        x = rng.integers(-3, 4, (8, 64)).astype(np.int8)
    else:
        graph = _fc_graph(_block_sparse_matrix(rng, 64, 128, 0.9))
        x = rng.integers(-128, 128, (8, 128)).astype(np.int8)
    dense = write_tflite(graph)
    sparse = _sparse_copy(dense)
    for content in (dense, sparse):
        expected = _litert(content, x)
        for layout in ("dense", BlockShape(1, 16), BlockShape(16, 4)):
            assert np.array_equal(NativeEngine.from_bytes(content, layout=layout).infer([x])[0], expected)
        assert np.array_equal(ReferenceEngine(read_tflite(content)).run([x])[0], expected)
    if ties:
        assert not np.array_equal(_litert(dense, x), _litert(sparse, x))


def test_litert_engine_refuses_sparse_layouts_it_would_crash_on_or_misread():
    pytest.importorskip("ai_edge_litert")
    from edged.errors import UnsupportedModelError
    from edged.runtime.litert import LiteRTEngine

    rng = np.random.default_rng(8)
    graph = _fc_graph(_block_sparse_matrix(rng, 32, 64, 0.5))
    w = graph.tensors[graph.operators[0].inputs[1]]
    # The 1x16 block layout traversed column-first: valid, and LiteRT segfaults on it.
    _, w.sparsity = encode(w.data, (1, 0, 2), (DENSE, SPARSE_CSR, DENSE), (1,), (16,))
    content = write_tflite(graph, densify_ops=False)
    with pytest.raises(UnsupportedModelError, match="traversal order"):
        LiteRTEngine(content)
    from edged.runtime.native import NativeEngine

    x = rng.integers(-128, 128, (4, 64)).astype(np.int8)
    assert NativeEngine.from_bytes(content).infer([x])[0].shape == (4, 32)
    # As edged writes it, a DENSIFY op decodes the weights first, and LiteRT's dense kernel runs.
    guarded = write_tflite(graph)
    assert "DENSIFY" in [op.opcode for op in read_tflite(guarded, keep_densify=True).operators]
    assert np.array_equal(LiteRTEngine(guarded).infer([x])[0], NativeEngine.from_bytes(guarded).infer([x])[0])


def test_litert_engine_drops_xnnpack_for_sparse_weights():
    pytest.importorskip("ai_edge_litert")
    from edged.runtime.litert import LiteRTEngine

    rng = np.random.default_rng(9)
    sparse = _sparse_copy(write_tflite(_fc_graph(_block_sparse_matrix(rng, 32, 64, 0.5))))
    x = rng.integers(-128, 128, (4, 64)).astype(np.int8)
    with_delegate = LiteRTEngine(sparse, delegates=True).infer([x])[0]
    assert np.array_equal(with_delegate, LiteRTEngine(sparse).infer([x])[0])
