"""HARD_SWISH and MUL: the cases random drawing rarely reaches, and MobileNetV3 blocks.

HARD_SWISH is checked on every input byte for scales that take each branch
of its fixed point (left / right reluish shifts, output shifts of 16 bits
and more). MUL is checked where LiteRT's vector and scalar forms disagree
(the vector form saturates to int16 and wraps when adding the zero point),
so a run split at the wrong element cannot pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from edged.errors import UnsupportedModelError
from edged.model.builder import GraphBuilder
from edged.model.tflite import write_tflite
from edged.ops import hard_swish, mul
from edged.runtime.kernels import ffi, lib
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine


def _all_engines_equal(graph, inputs) -> np.ndarray:
    expected = LiteRTEngine(write_tflite(graph)).infer(inputs)[0]
    np.testing.assert_array_equal(ReferenceEngine(graph).run(inputs)[0], expected)
    np.testing.assert_array_equal(NativeEngine(graph).infer(inputs)[0], expected)
    return expected


def _hard_swish_graph(in_s, in_zp, out_s, out_zp):
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 256), in_s, in_zp)
    y = b.tensor("y", np.int8, (1, 256), out_s, out_zp)
    b.op("HARD_SWISH", [x], [y])
    b.output(y)
    return b.build()


@pytest.mark.parametrize(
    ("in_s", "in_zp", "out_s", "out_zp"),
    [
        (0.05, -10, 0.03, -100),  # typical MobileNetV3 activations
        (0.5, 0, 0.3, 5),  # reluish multiplier > 1: left shifts that saturate
        (0.002, 127, 0.5, -128),  # output shift of 16 bits and more (int16 mask all ones)
        (0.0005, -128, 0.004, 3),  # reluish multiplier < 1/2: right shift
        (0.1, 20, 0.1 / 120, 0),  # output multiplier just below 1
    ],
)
def test_hard_swish_every_input_byte_matches_litert(in_s, in_zp, out_s, out_zp):
    graph = _hard_swish_graph(in_s, in_zp, out_s, out_zp)
    every_byte = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    # 256 elements are computed one by one, 288 and more through a table of all 256 inputs
    _all_engines_equal(graph, [every_byte])
    _all_engines_equal(graph, [np.concatenate([every_byte, every_byte[:, ::-1]])])


def test_hard_swish_output_scale_litert_refuses_is_refused():
    with pytest.raises(UnsupportedModelError, match=r"operator #0 \(HARD_SWISH\).*input scale / 128"):
        NativeEngine(_hard_swish_graph(0.5, 0, 0.001, 0), "hs.tflite")


def _mul_graph(a_shape, c_shape, constant=None, scales=(0.5, 0.5, 0.002), zps=(3, -7, 100), act="NONE"):
    b = GraphBuilder()
    a = b.input("a", np.int8, (1, *a_shape), scales[0], zps[0])
    if constant is not None:
        c = b.const("c", constant, scales[1], zps[1])
    else:
        c = b.input("c", np.int8, (1, *c_shape), scales[1], zps[1])
    out_shape = np.broadcast_shapes((1, *a_shape), (1, *c_shape) if constant is None else constant.shape)
    y = b.tensor("y", np.int8, tuple(out_shape), scales[2], zps[2])
    b.op("MUL", [a, c], [y], fused_activation_function=act)
    b.output(y)
    return b.build()


@pytest.mark.parametrize(
    ("a_shape", "c_shape", "runs"),
    [
        ((4, 4, 20), (4, 4, 20), "flat"),  # one run over the whole batch
        ((4, 4, 20), (1, 1, 20), "per pixel"),  # squeeze-excite scaling: runs of 20
        ((3, 5, 18), (3, 5, 1), "per pixel, inner broadcast"),  # runs of y3
        ((4, 1, 17), (1, 5, 17), "both operands broadcast"),  # y1 and y3 both > 1
    ],
)
def test_mul_vector_and_scalar_forms_differ_and_both_match_litert(a_shape, c_shape, runs):
    # A large multiplier (125) and a positive output zero point: the vector form saturates
    # to int16 and wraps when adding the zero point, the scalar form clamps to 127.
    graph = _mul_graph(a_shape, c_shape)
    rng = np.random.default_rng(1)
    batch = 3
    inputs = [rng.integers(-128, 128, (batch, *s)).astype(np.int8) for s in (a_shape, c_shape)]
    assert runs
    _all_engines_equal(graph, inputs)
    params = ReferenceEngine(graph).prepared.steps[0].params
    product = np.int64(100) * 90
    assert mul._vector_form(params, product) != mul._reference_form(params, product)


def test_mul_by_a_constant_scalar_splits_the_flat_batch_like_litert():
    # A scalar constant is one MulSimpleBroadcast over the flat tensor, batch included:
    # which elements fall in the scalar tail depends on the batch size.
    graph = _mul_graph((3, 3, 3), (), constant=np.array(-90, np.int8))
    rng = np.random.default_rng(2)
    for batch in (1, 2, 7):
        _all_engines_equal(graph, [rng.integers(-128, 128, (batch, 3, 3, 3)).astype(np.int8)])


def test_mul_shapes_litert_runs_generically_are_refused_with_op_and_index():
    graph = _mul_graph((4, 1, 3), (1, 5, 1))
    with pytest.raises(UnsupportedModelError, match=r"m.tflite: operator #0 \(MUL\).*generic"):
        NativeEngine(graph, "m.tflite")
    constant_with_its_own_batch = _mul_graph((2, 4), (), constant=np.ones((2, 1, 4), np.int8))
    with pytest.raises(UnsupportedModelError, match=r"operator #0 \(MUL\)"):
        NativeEngine(constant_with_its_own_batch, "m.tflite")


def test_mul_descriptor_with_a_stride_that_does_not_match_its_shape_is_rejected_by_c():
    engine = NativeEngine(_mul_graph((4, 4, 20), (1, 1, 20)))
    executor = engine._executor()
    ops, count = executor.native_ops()
    assert lib.edged_run(ops, count, 1) == 0
    ops[0].in_stride[1] = 320  # claims the broadcast operand is a full tensor
    assert lib.edged_run(ops, count, 1) == 1
    ops[0].in_stride[1] = 20
    ops[0].bcast_shape[1][2] = 3  # 3 against 4: not broadcastable
    assert lib.edged_run(ops, count, 1) == 1
    assert ffi.sizeof("edged_op") > 0


def _conv(b, x, cin, cout, h, w, act, rng, name):
    y = b.tensor(name, np.int8, (1, h, w, cout), 0.04, -20)
    wq = rng.integers(-127, 128, (cout, 1, 1, cin)).astype(np.int8)
    w_scale = rng.uniform(0.002, 0.01, cout)
    f = b.const(name + "/w", wq, w_scale, 0, axis=0)
    bias = b.const(name + "/b", rng.integers(-3000, 3000, cout).astype(np.int32), np.float32(0.05) * w_scale)
    b.op("CONV_2D", [x, f, bias], [y], padding="SAME", stride_h=1, stride_w=1,
         dilation_h_factor=1, dilation_w_factor=1, fused_activation_function=act)
    return y


def test_mobilenet_v3_block_conv_hard_swish_squeeze_excite_runs_natively_bit_exact():
    """conv -> HARD_SWISH -> squeeze-excite (MEAN, conv RELU, conv RELU6, MUL by 1/6, MUL), as
    the converter writes MobileNetV3's blocks (its hard sigmoid's +3 is folded into the bias)."""
    rng = np.random.default_rng(3)
    h, w, c = 6, 6, 24
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, h, w, 8), 0.05, -3)
    expanded = _conv(b, x, 8, c, h, w, "NONE", rng, "expand")
    act = b.tensor("hswish", np.int8, (1, h, w, c), 0.03, -110)
    b.op("HARD_SWISH", [expanded], [act])
    pooled = b.tensor("pooled", np.int8, (1, 1, 1, c), 0.03, -110)
    b.op("MEAN", [act, b.const("axes", np.array([1, 2], np.int32))], [pooled], keep_dims=True)
    squeezed = _conv(b, pooled, c, 8, 1, 1, "RELU", rng, "squeeze")
    excited = _conv(b, squeezed, 8, c, 1, 1, "RELU6", rng, "excite")
    sixth = b.tensor("hsigmoid", np.int8, (1, 1, 1, c), 1 / 256, -128)
    b.op("MUL", [excited, b.const("one_sixth", np.array(127, np.int8), 1 / 6 / 127, 0)], [sixth])
    scaled = b.tensor("scaled", np.int8, (1, h, w, c), 0.03, -110)
    b.op("MUL", [act, sixth], [scaled])
    b.output(scaled)
    graph = b.build()
    engine = NativeEngine(graph)
    assert engine.plan.native_fraction() == 1.0
    for batch in (1, 4):
        inputs = [rng.integers(-128, 128, (batch, h, w, 8)).astype(np.int8)]
        out = _all_engines_equal(graph, inputs)
        assert len(np.unique(out)) > 20  # a real spread of values, not a saturated block


def test_hard_swish_multipliers_are_rounded_to_q15_like_litert():
    # DownScaleInt32ToInt16Multiplier: round to nearest, saturating just below 2^31.
    assert hard_swish.downscale_multiplier(2**31 - 1) == 2**15 - 1
    assert hard_swish.downscale_multiplier(2**31 - 2**15 - 1) == 2**15 - 1
    assert hard_swish.downscale_multiplier((1 << 30) + (1 << 15)) == (1 << 14) + 1
    assert hard_swish.downscale_multiplier((1 << 30) + (1 << 15) - 1) == 1 << 14
