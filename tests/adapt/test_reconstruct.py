"""One-shot reconstruction after pruning: less output error than masking, masks in block shape."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.adapt.calibration import prunable_ops
from edged.adapt.reconstruct import (
    CalibrationError,
    gram,
    inverse_cholesky,
    prune_and_reconstruct,
    reconstruct_graph,
    relative_error,
)
from edged.data import default_model_path, digits_for, load_digits_test
from edged.errors import EdgedError
from edged.model.tflite import read_tflite
from edged.runtime.native import NativeEngine
from edged.sparse.block_csr import BlockShape, block_view

SHAPES = [BlockShape(1, 1), BlockShape(1, 16), BlockShape(16, 4), BlockShape(8, 4), BlockShape(4, 4)]


@settings(max_examples=25, deadline=None)
@given(out=st.integers(8, 40), depth=st.integers(16, 80), block=st.sampled_from(SHAPES),
       sparsity=st.floats(0.1, 0.95), seed=st.integers(0, 2**16), fixed=st.booleans())
def test_reconstruction_beats_masking_and_keeps_the_mask(out, depth, block, sparsity, seed, fixed):
    rng = np.random.default_rng(seed)
    # Correlated inputs, as layer inputs are; the sweep is a greedy approximation (a compensation
    # moved onto a column pruned later is lost), so adversarially conditioned X is left out.
    x = rng.normal(size=(3 * depth, depth)) + 0.5 * rng.normal(size=(3 * depth, 1)) + rng.normal(size=depth)
    w = rng.normal(size=(out, depth))
    upper = inverse_cholesky(gram(x, with_bias=False), damping=1e-9)  # the guarantee is for H itself
    keep_in = None
    if fixed:
        keep_in = np.repeat(np.repeat(rng.random((-(-out // block.rows), -(-depth // block.cols))) > sparsity,
                                      block.rows, 0), block.cols, 1)[:out, :depth]
    new, keep = prune_and_reconstruct(w, upper, block, None if fixed else sparsity, keep_in)
    if fixed:
        assert np.array_equal(keep, keep_in)
    else:  # the mask is whole blocks, shared by the rows of a block, at the asked share of blocks
        occupied = block_view(keep.astype(np.int8), block).any(axis=(1, 3))
        full = block_view(np.ones_like(keep, dtype=np.int8), block)
        assert np.array_equal(block_view(keep.astype(np.int8), block), full * occupied[:, None, :, None])
        assert abs((~occupied).sum() - sparsity * occupied.size) <= 1 + occupied.shape[1] / 32
    assert np.all(new[~keep] == 0)  # pruned stays pruned
    if not fixed:
        # The sweep is greedy, so it can end a little worse than masking (seen: 2.6 % worse at
        # 19 % sparsity in 8x4 blocks); reconstruct_layer then keeps the masked weights.
        assert relative_error(x, w, new) <= 1.1 * relative_error(x, w, w * keep) + 1e-9


def test_reconstructed_mlp_at_90_percent_beats_masking():
    images, labels = load_digits_test()
    graph = read_tflite(default_model_path("digits_mlp"))
    x = digits_for(graph, images)
    calib, held, y = x[:240], x[240:], labels[240:]
    ops = prunable_ops(graph)
    one = BlockShape(1, 1)
    plan = {ops[0]: (one, 0.5), ops[1]: (one, 0.92), ops[2]: (one, 0.9)}
    from edged.adapt.compress import BlockRanking, MagnitudeStrategy
    from edged.adapt.requantize import float_weights, requantize_layer

    masked = read_tflite(default_model_path("digits_mlp"))
    for i, (block, s) in plan.items():
        scores = MagnitudeStrategy().scores(float_weights(masked, i), None)
        requantize_layer(masked, i, BlockRanking.of(scores, block).mask(s))
    rebuilt, layers = reconstruct_graph(graph, calib, plan)

    def accuracy(g):
        return float(np.mean(np.argmax(NativeEngine(g, layout="dense").infer([held])[0], axis=1) == y))

    w = rebuilt.tensors[rebuilt.operators[ops[1]].inputs[1]].data
    assert abs((1 - np.count_nonzero(w) / w.size) - 0.92) < 0.01
    assert all(r.error_reconstructed < r.error_masked for r in layers)
    assert accuracy(rebuilt) >= accuracy(masked) + 0.03
    assert accuracy(rebuilt) >= accuracy(graph) - 0.03


@pytest.mark.parametrize("bad", [np.zeros((4, 63), np.int8), np.zeros((4, 64), np.float32),
                                 np.zeros((64,), np.int8)])
def test_bad_calibration_data_is_a_clear_error(bad):
    graph = read_tflite(default_model_path("digits_mlp"))
    with pytest.raises(CalibrationError, match="the model takes") as info:
        reconstruct_graph(graph, bad, {prunable_ops(graph)[1]: (BlockShape(1, 1), 0.5)})
    assert isinstance(info.value, EdgedError)


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_compress_sparsity_is_the_written_sparsity(tmp_path, capsys, target):
    from edged.cli import main

    images, labels = load_digits_test()
    model = default_model_path("digits_mlp")
    graph = read_tflite(model)
    np.savez(tmp_path / "calib.npz", x=digits_for(graph, images[:120]), y=labels[:120])
    out = tmp_path / "pruned.tflite"
    assert main(["compress", str(model), "--sparsity", str(target), "--block", "1x1", "--no-reconstruct",
                 "--calib", str(tmp_path / "calib.npz"), "-o", str(out)]) == 0
    assert "file: " in capsys.readouterr().out
    written = read_tflite(out)
    weights = [written.tensors[written.operators[i].inputs[1]].data for i in prunable_ops(written)]
    zeros = sum(w.size - np.count_nonzero(w) for w in weights)
    assert abs(zeros / sum(w.size for w in weights) - target) < 0.005


def test_a_layer_never_ends_worse_than_its_mask(monkeypatch):
    """Where the sweep loses to masking on the calibration features, the masked weights are kept."""
    import edged.adapt.reconstruct as rec
    from edged.adapt.requantize import float_weights

    graph = read_tflite(default_model_path("digits_mlp"))
    x = digits_for(graph, load_digits_test()[0][:200])
    op = prunable_ops(graph)[2]
    features = rec.layer_features(graph, x, op)
    honest = rec.prune_and_reconstruct

    def worse(dense, upper, block, sparsity, keep, prunable):
        new, kept = honest(dense, upper, block, sparsity, keep, prunable=prunable)
        new[:, :prunable] += 0.5 * kept * np.abs(dense[:, :prunable]).max()  # far off the target
        return new, kept

    monkeypatch.setattr(rec, "prune_and_reconstruct", worse)
    layer = rec.reconstruct_layer(graph, op, features, BlockShape(1, 1), 0.5)
    assert layer.error_reconstructed == layer.error_masked
    w = float_weights(graph, op)
    original = float_weights(read_tflite(default_model_path("digits_mlp")), op)
    kept = w != 0
    np.testing.assert_allclose(w[kept], original[kept], atol=np.abs(original).max() / 100)
