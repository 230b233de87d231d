"""The kernel benchmark's machinery on a tiny grid (structure, not speed)."""

from __future__ import annotations

import numpy as np

from edged.data import default_model_path
from edged.kernel_bench import (
    fc_layer,
    format_table,
    model_layers,
    pruned_hidden_layers,
    run,
    single_op_graph,
    target_summary,
)
from edged.model.tflite import read_tflite
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine
from edged.sparse.block_csr import BlockShape


def test_tiny_grid_measures_every_cell():
    blocks = (BlockShape(1, 16), BlockShape(4, 4))
    result = run([fc_layer(64, 32)], batches=(1, 4), sparsities=(0.0, 0.9), blocks=blocks, target_s=0.002)
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 2
    for r in rows:
        assert r.native_sparse_us > 0 and r.native_dense_us > 0 and r.litert_dense_us > 0
        assert r.gbps > 0 and r.dense_equiv_gops > 0
        if r.block == "1x16":  # LiteRT ran the same weights from a sparse-encoded file, or says why not
            assert r.litert_sparse_us is not None or r.notes
    assert result["stream"]["copy_gbps"] > 0
    assert "fc 64x32" in format_table(result)
    target_summary(result)  # tolerates a grid without the target layers


def test_single_op_graph_runs_like_the_op_in_its_model():
    graph = read_tflite(default_model_path("digits_cnn"))
    layers = model_layers(graph, "cnn")
    assert [layer.name.split()[-1] for layer in layers].count("conv_2d") == 2
    one = single_op_graph(graph, 0)
    x = np.random.default_rng(0).integers(-128, 128, (2, *one.input_tensors[0].shape[1:])).astype(np.int8)
    assert np.array_equal(NativeEngine(one).infer([x])[0], ReferenceEngine(one).run([x])[0])


def test_pruning_hidden_layers_keeps_the_classifier():
    graph = read_tflite(default_model_path("digits_mlp"))
    pruned = pruned_hidden_layers(graph, BlockShape(16, 4), 0.9)
    fcs = [op for op in pruned.operators if op.opcode == "FULLY_CONNECTED"]
    sparsity = [1 - np.count_nonzero(pruned.tensors[op.inputs[1]].data) / pruned.tensors[op.inputs[1]].size
                for op in fcs]
    assert all(s >= 0.89 for s in sparsity[:-1]) and sparsity[-1] < 0.1
