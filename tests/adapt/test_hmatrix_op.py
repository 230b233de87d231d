"""EDGED_HMATRIX: the H-matrix layer the native engine runs, against its numpy spec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.adapt.calibration import Calibration
from edged.adapt.compress import served_bytes
from edged.adapt.factorize import HMatrixCompressor
from edged.adapt.hmatrix import build_hmatrix
from edged.adapt.hmatrix_op import hmatrix_options, to_hmatrix_ops
from edged.adapt.requantize import float_weights, set_float_weights
from edged.data import default_model_path, digits_for, load_digits_test
from edged.errors import UnsupportedModelError
from edged.model.tflite import read_tflite, write_tflite
from edged.ops.hmatrix import CUSTOM_CODE
from edged.runtime.kernels import VARIANT_NAMES, available_variants
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine
from edged.sparse.block_csr import BlockShape
from tests.singleop import fully_connected

LAYOUTS = ["dense", *(BlockShape(r, c) for r, c in [(16, 4), (4, 4), (1, 16), (1, 4), (1, 1)])]


@st.composite
def hmatrix_layers(draw):
    """A single FULLY_CONNECTED whose weights are smooth (low-rank off-diagonal blocks, so the
    H-matrix has several leaves of both kinds), turned into EDGED_HMATRIX."""
    graph, inputs = draw(fully_connected())
    m, n = graph.tensors[graph.operators[0].inputs[1]].shape
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    rows, cols = np.linspace(0, 1, m)[:, None], np.linspace(0, 1, n)[None, :]
    w = 0.05 / (1.0 + 20 * np.abs(rows - cols)) + 0.002 * rng.normal(size=(m, n))
    if draw(st.booleans()):  # hide the locality; the reordering finds it again
        w = w[rng.permutation(m)][:, rng.permutation(n)]
    set_float_weights(graph, 0, w)
    form = build_hmatrix(float_weights(graph, 0), draw(st.sampled_from([0.05, 0.2, 0.5])),
                         min_block=draw(st.sampled_from([2, 4, 16])), reorder=draw(st.booleans()))
    calib = np.concatenate([inputs[0], rng.integers(-128, 128, (8, *inputs[0].shape[1:])).astype(np.int8)])
    h, layers = to_hmatrix_ops(graph, calib, {0: form}, min_saving=-10.0)
    return h, inputs, form, layers


@pytest.mark.parametrize("variant", available_variants(), ids=lambda v: VARIANT_NAMES[v])
@settings(max_examples=25, deadline=None)
@given(hmatrix_layers(), st.sampled_from(LAYOUTS))
def test_native_equals_the_numpy_spec(variant, case, layout):
    h, inputs, _, layers = case
    if not layers:  # no low-rank leaf at all: the layer stays a FULLY_CONNECTED
        assert all(op.opcode == "FULLY_CONNECTED" for op in h.operators)
        return
    assert h.operators[0].custom_code == CUSTOM_CODE
    again = read_tflite(write_tflite(h))  # the file round trip keeps every stored bit
    expected = ReferenceEngine(again).run(inputs)[0]
    got = NativeEngine(again, variant=variant, layout=layout).infer(inputs)[0]
    assert np.array_equal(expected, got), f"{int(np.sum(expected != got))} outputs differ"


@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_hierarchical_layers_export_as_standard_pieces_litert_runs_bit_exactly(eps):
    from edged.adapt.lowrank_export import split_hmatrix
    from edged.kernel_bench import fc_layer
    from edged.sparse.tflite_encoding import sparsify_fc_weights

    layer = fc_layer(256, 256)
    t = np.linspace(0, 1, 256)
    set_float_weights(layer.graph, 0, 0.05 * np.exp(-60 * np.abs(t[:, None] - t[None, :])))
    form = build_hmatrix(float_weights(layer.graph, 0), eps, min_block=32)
    counts = form.counts()
    assert counts["low_rank"] > 1 and (counts["dense"] > 0) == (eps < 0.05)  # both export shapes
    x = np.random.default_rng(0).integers(-128, 128, (64, 256)).astype(np.int8)
    if counts["dense"]:  # the dense leaves' FC pays only with its zero blocks stored away
        assert split_hmatrix(layer.graph, x, {0: form})[1] == []
    g, (split,) = split_hmatrix(layer.graph, x, {0: form}, sparse_storage=True)
    assert [op.opcode for op in g.operators].count("FULLY_CONNECTED") == (3 if counts["dense"] else 2)
    assert split.factor_bytes < 0.8 * 256 * 256
    native = NativeEngine(g).infer([x])[0]
    assert np.array_equal(native, LiteRTEngine(write_tflite(g)).infer([x])[0])
    encoded = sparsify_fc_weights(g)  # LiteRT's sparse kernel, and its rounding, on every piece
    assert len(encoded) == len(g.operators) - (1 if counts["dense"] else 0)
    assert np.array_equal(NativeEngine(g).infer([x])[0], LiteRTEngine(write_tflite(g)).infer([x])[0])
    op_form = NativeEngine(to_hmatrix_ops(layer.graph, x, {0: form})[0]).infer([x])[0]
    dense = NativeEngine(layer.graph).infer([x])[0].astype(int)
    for out in (native, op_form):  # both forms stay close to the layer they replace
        assert np.abs(out.astype(int) - dense).mean() < 3


def test_mlp_as_hmatrix_ops_is_smaller_faithful_and_refused_by_litert():
    graph = read_tflite(default_model_path("digits_mlp"))
    images, labels = load_digits_test()
    x = digits_for(graph, images)
    comp = HMatrixCompressor(graph, Calibration(x[:200], labels[:200]), export="hmatrix")
    result = comp.search(kl_budget=0.05, steps=5)
    ops = [op for op in result.graph.operators if op.custom_code == CUSTOM_CODE]
    assert ops and result.kl <= 0.05
    assert served_bytes(result.graph) < 0.5 * served_bytes(graph)
    content = write_tflite(result.graph)
    engine = NativeEngine(read_tflite(content))
    out = engine.infer([x])[0]
    assert np.array_equal(out, ReferenceEngine(result.graph).run([x])[0])
    accuracy = float(np.mean(out.argmax(1) == labels))
    base = float(np.mean(NativeEngine(graph).infer([x])[0].argmax(1) == labels))
    assert accuracy >= base - 0.02
    with pytest.raises(UnsupportedModelError, match=r"EDGED_HMATRIX.*--engine native"):
        LiteRTEngine(content)


def _one_layer():
    graph = read_tflite(default_model_path("digits_mlp"))
    x = digits_for(graph, load_digits_test()[0][:50])
    h, _ = to_hmatrix_ops(graph, x, {2: build_hmatrix(float_weights(graph, 2), 0.3)})
    (k,) = [i for i, op in enumerate(h.operators) if op.custom_code == CUSTOM_CODE]
    return h, k


@pytest.mark.parametrize("corrupt, message", [
    (lambda g, op: setattr(op, "custom_options", b"\x01\x02"), "flexbuffer"),
    (lambda g, op: g.tensors[op.inputs[2]].data.__setitem__(0, -1.0), "finite and positive"),
    (lambda g, op: op.inputs.__setitem__(3, op.inputs[1]), "n \\+ R"),
    (lambda g, op: setattr(g.tensors[op.inputs[1]].quant, "zero_point",
                           np.ones_like(g.tensors[op.inputs[1]].quant.zero_point)), "symmetrically"),
])
def test_malformed_hmatrix_ops_get_a_precise_error(corrupt, message):
    h, k = _one_layer()
    corrupt(h, h.operators[k])
    with pytest.raises(UnsupportedModelError, match=f"operator #{k} \\(CUSTOM\\).*{message}"):
        NativeEngine(h)


def test_fused_activation_is_read_from_the_custom_options():
    h, k = _one_layer()
    h.operators, h.outputs = h.operators[: k + 1], list(h.operators[k].outputs)  # the layer's own output
    x = digits_for(h, load_digits_test()[0][:50])
    plain = NativeEngine(h).infer([x])[0]
    h.operators[k].custom_options = hmatrix_options("RELU")
    relu = NativeEngine(h).infer([x])[0]
    zp = int(h.tensors[h.operators[k].outputs[0]].quant.zero_point[0])
    assert np.array_equal(relu, np.maximum(plain, zp)) and not np.array_equal(relu, plain)
