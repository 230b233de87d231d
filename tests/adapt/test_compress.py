"""The compressor: sensitivity-driven allocation, KL-budget search, candidates bit-exact on LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from edged.adapt.calibration import Calibration, load_calibration
from edged.adapt.compress import (
    Compressor,
    MagnitudeStrategy,
    WandaStrategy,
    float_bytes,
    score_mask,
    served_bytes,
)
from edged.data import default_model_path, digits_for, load_digits_test
from edged.errors import EdgedError
from edged.model.builder import GraphBuilder
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.sparse.block_csr import BlockShape

UNSTRUCTURED = BlockShape(1, 1)


@pytest.fixture(scope="module")
def mlp():
    graph = read_tflite(default_model_path("digits_mlp"))
    images, labels = load_digits_test()
    x = digits_for(graph, images)
    return graph, Calibration(x[:120], labels[:120])


def test_target_sparsity_is_reached_with_per_layer_allocation(mlp):
    graph, calib = mlp
    comp = Compressor(graph, calib, MagnitudeStrategy(), UNSTRUCTURED)
    result = comp.search(sparsity=0.6, steps=8)
    assert result.sparsity >= 0.6 - 1e-9
    assert {p.op_index for p in result.layers} == {0, 1, 2}
    assert all(p.sensitivity[0.0] == 0.0 for p in result.layers)
    assert result.curve and all(pt.kl >= 0 for pt in result.curve)
    assert comp.accuracy(result.graph) >= comp.accuracy(graph) - 0.05
    assert float_bytes(graph) / served_bytes(result.graph) > float_bytes(graph) / served_bytes(graph)
    x = calib.x
    expected = LiteRTEngine(write_tflite(result.graph)).infer([x])[0]
    assert np.array_equal(NativeEngine(result.graph).infer([x])[0], expected)


def test_kl_budget_is_respected_and_more_budget_prunes_more(mlp):
    graph, calib = mlp
    comp = Compressor(graph, calib, WandaStrategy(), UNSTRUCTURED)
    tight = comp.search(kl_budget=0.01, steps=8)
    loose = comp.search(kl_budget=0.2, steps=8)
    assert tight.kl <= 0.01 and loose.kl <= 0.2
    assert loose.sparsity >= tight.sparsity > 0


def test_masks_come_from_the_master_not_the_previous_candidate(mlp):
    graph, calib = mlp
    comp = Compressor(graph, calib, MagnitudeStrategy(), UNSTRUCTURED, layers=[1])
    pruned = comp.candidate({1: 0.9})
    back = comp.candidate({1: 0.3})
    w = back.tensors[back.operators[1].inputs[1]].data
    assert 1 - np.count_nonzero(w) / w.size == pytest.approx(0.3, abs=0.02)
    assert np.count_nonzero(pruned.tensors[pruned.operators[1].inputs[1]].data) < np.count_nonzero(w)


def test_score_mask_prunes_lowest_blocks():
    scores = np.arange(32, dtype=float).reshape(4, 8)
    keep = score_mask(scores, BlockShape(2, 4), 0.5)
    assert keep.sum() == 16 and keep[2:, 4:].all() and not keep[:2, :4].any()


def test_bad_requests_are_refused(mlp, tmp_path):
    graph, calib = mlp
    comp = Compressor(graph, calib, MagnitudeStrategy(), UNSTRUCTURED, layers=[2])
    with pytest.raises(ValueError, match="exactly one"):
        comp.search()
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        comp.search(sparsity=1.5)
    with pytest.raises(ValueError, match="no allocation reaches"):
        Compressor(graph, calib, MagnitudeStrategy(), UNSTRUCTURED, layers=[2]).search(sparsity=0.99)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 4), 0.1, 0)
    y = b.tensor("y", np.int8, (1, 4), 0.1, 0)
    b.op("SOFTMAX", [x], [y], beta=1.0)
    b.output(y)
    with pytest.raises(ValueError, match="no prunable layers"):
        Compressor(b.build(), Calibration(np.zeros((2, 4), np.int8)), MagnitudeStrategy())
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.zeros((3, 8, 8), np.int8))
    with pytest.raises(EdgedError, match="the model takes"):
        load_calibration(path, graph)
    np.savez(path, x=calib.x, y=np.zeros(2, np.int64))
    with pytest.raises(EdgedError, match="integer labels"):
        load_calibration(path, graph)
    np.savez(path, y=np.zeros(2))
    with pytest.raises(EdgedError, match="no 'x'"):
        load_calibration(path, graph)


def test_qsa_strategy_scores_with_the_trained_importance(mlp):
    from edged.adapt.compress import QsaStrategy
    from edged.adapt.qsa import QsaConfig

    graph, calib = mlp
    strategy = QsaStrategy(QsaConfig(epochs=5, time_budget_s=1.0))
    comp = Compressor(graph, calib, strategy, UNSTRUCTURED, layers=[1])
    result = strategy.results[1]
    assert result.importance.shape == (1024,) and result.epochs >= 1
    candidate = comp.candidate({1: 0.5})
    expected = LiteRTEngine(write_tflite(candidate)).infer([calib.x])[0]
    assert np.array_equal(NativeEngine(candidate).infer([calib.x])[0], expected)


def test_hmatrix_and_svd_candidates_run_bit_exactly_and_respect_the_budget(mlp):
    from edged.adapt.factorize import HMatrixCompressor, SvdCompressor

    graph, calib = mlp
    for cls in (HMatrixCompressor, SvdCompressor):
        comp = cls(graph, calib)
        assert comp.layers == [0, 1, 2]
        result = comp.search(kl_budget=0.05, steps=6)
        assert result.kl <= 0.05 and 0 <= result.sparsity < 1
        expected = LiteRTEngine(write_tflite(result.graph)).infer([calib.x])[0]
        assert np.array_equal(NativeEngine(result.graph).infer([calib.x])[0], expected)
    assert comp.form(1, 0.3).nbytes < 1024 * 1024  # the byte count is of the int8 factors
