"""TANH, LEAKY_RELU, PRELU, the resizes and the strided views: the cases random drawing rarely reaches.

Every byte through the lookup and two-sided activations, the rounding ties
LiteRT resolves its own way, the slices and permutations that would lose the
batch axis (refused, naming op and index), and descriptors the C checks refuse.
"""

from __future__ import annotations

import numpy as np
import pytest

from edged.errors import ModelFormatError, UnsupportedModelError
from edged.model.builder import GraphBuilder
from edged.model.tflite import write_tflite
from edged.runtime.kernels import ffi, lib
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine

EVERY_BYTE = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)


def _all_engines_equal(graph, inputs) -> np.ndarray:
    expected = LiteRTEngine(write_tflite(graph)).infer(inputs)[0]
    np.testing.assert_array_equal(ReferenceEngine(graph).run(inputs)[0], expected)
    np.testing.assert_array_equal(NativeEngine(graph).infer(inputs)[0], expected)
    return expected


def _unary(opcode, in_q, out_q, **options):
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 256), *in_q)
    y = b.tensor("y", np.int8, (1, 256), *out_q)
    b.op(opcode, [x], [y], **options)
    b.output(y)
    return b.build()


@pytest.mark.parametrize(("in_q", "out_q"), [((0.05, 3), (1 / 128, 0)), ((0.2, -40), (0.01, 7))])
def test_tanh_every_input_byte_matches_litert(in_q, out_q):
    out = _all_engines_equal(_unary("TANH", in_q, out_q), [EVERY_BYTE])
    assert np.unique(out).size > 20


@pytest.mark.parametrize(
    ("alpha", "in_q", "out_q"),
    [
        (-0.25, (0.5, 0), (0.5, 0)),
        (-0.25, (0.1, 3), (0.05, -7)),
        (-0.5, (0.25, 0), (0.125, 0)),
        (0.2, (0.5, 0), (0.5, 0)),
    ],
)
def test_leaky_relu_ties_of_a_negative_alpha_round_like_litert(alpha, in_q, out_q):
    # Products that land exactly on .5: scaling by the negative multiplier would round -125 * -0.25
    # = 31.25 to 32 (62.5 up to 63, then 31.5 away to 32); LiteRT gives 31.
    out = _all_engines_equal(_unary("LEAKY_RELU", in_q, out_q, alpha=alpha), [EVERY_BYTE])
    if (alpha, in_q) == (-0.25, (0.5, 0)):
        assert out[0, 3] == 31  # input -125


def _prelu_graph(shape, alpha_shape, constant=True):
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), 0.05, 4)
    rng = np.random.default_rng(0)
    if constant:
        a = b.const("alpha", rng.integers(-128, 128, alpha_shape).astype(np.int8), 0.01, 0)
    else:
        a = b.input("alpha", np.int8, (1, *alpha_shape), 0.01, 0)
    y = b.tensor("y", np.int8, (1, *shape), 0.03, -9)
    b.op("PRELU", [x, a], [y])
    b.output(y)
    return b.build()


def test_prelu_alpha_shared_across_height_and_width_matches_litert():
    x = np.random.default_rng(1).integers(-128, 128, (3, 4, 5, 6)).astype(np.int8)
    _all_engines_equal(_prelu_graph((4, 5, 6), (1, 1, 6)), [x])


@pytest.mark.parametrize(
    ("alpha_shape", "constant", "error", "reason"),
    [
        ((2, 4, 5, 6), True, UnsupportedModelError, "batch axis"),
        ((4, 3, 6), True, ModelFormatError, "does not broadcast"),
        ((4, 5, 6), False, UnsupportedModelError, "constant alpha"),
    ],
)
def test_prelu_alphas_the_native_engine_cannot_run_are_refused(alpha_shape, constant, error, reason):
    graph = _prelu_graph((4, 5, 6), alpha_shape, constant)
    with pytest.raises(error, match=rf"pr.tflite: operator #0 \(PRELU\).*{reason}"):
        NativeEngine(graph, "pr.tflite")


def _resize_graph(opcode, in_hw, out_hw, c=3, **options):
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *in_hw, c), 0.1, 2)
    size = b.const("size", np.array(out_hw, np.int32))
    y = b.tensor("y", np.int8, (1, *out_hw, c), 0.1, 2)
    b.op(opcode, [x, size], [y], version=3, **options)
    b.output(y)
    return b.build()


@pytest.mark.parametrize("opcode", ["RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"])
@pytest.mark.parametrize(("in_hw", "out_hw"), [((3, 7), (40, 3)), ((17, 2), (5, 33)), ((1, 1), (9, 4))])
@pytest.mark.parametrize(("align", "half"), [(False, False), (True, False), (False, True)])
def test_resizes_up_and_down_match_litert(opcode, in_hw, out_hw, align, half):
    x = np.random.default_rng(2).integers(-128, 128, (2, *in_hw, 3)).astype(np.int8)
    graph = _resize_graph(opcode, in_hw, out_hw, align_corners=align, half_pixel_centers=half)
    _all_engines_equal(graph, [x])


def test_resize_with_both_align_corners_and_half_pixel_centers_is_malformed():
    graph = _resize_graph("RESIZE_BILINEAR", (4, 4), (8, 8), align_corners=True, half_pixel_centers=True)
    with pytest.raises(ModelFormatError, match=r"rs.tflite: operator #0 \(RESIZE_BILINEAR\).*half_pixel"):
        NativeEngine(graph, "rs.tflite")


def test_resize_descriptor_reading_outside_its_input_is_rejected_by_c():
    engine = NativeEngine(_resize_graph("RESIZE_BILINEAR", (4, 4), (8, 8), half_pixel_centers=True))
    ops, count = engine._executor().native_ops()
    assert lib.edged_validate(ops, count, 1) == 0
    # The plan's own map is read-only once planned: corrupt a copy the descriptor points to.
    assert not engine.plan.shared[0]["rows"].flags.writeable
    rows = engine.plan.shared[0]["rows"].copy()
    ops[0].rows = ffi.cast("int32_t *", rows.ctypes.data)
    saved = rows[3 * 7 + 1]
    rows[3 * 7 + 1] = 4  # the last output row's lower tap: one past the input
    assert lib.edged_validate(ops, count, 1) == 1
    rows[3 * 7 + 1] = saved
    ops[0].out_c = 4  # channels must pass through
    assert lib.edged_validate(ops, count, 1) == 1


def _view_graph(opcode, in_shape, out_shape, consts, **options):
    b = GraphBuilder()
    x = b.input("x", np.int8, in_shape, 0.1, 2)
    inputs = [x] + [b.const(f"c{k}", np.array(v, np.int32)) for k, v in enumerate(consts)]
    y = b.tensor("y", np.int8, out_shape, 0.1, 2)
    b.op(opcode, inputs, [y], version=2, **options)
    b.output(y)
    return b.build()


def test_transpose_and_strided_slice_at_batch_four_match_litert():
    x = np.random.default_rng(3).integers(-128, 128, (4, 3, 5, 2)).astype(np.int8)
    _all_engines_equal(_view_graph("TRANSPOSE", (1, 3, 5, 2), (1, 2, 3, 5), [[0, 3, 1, 2]]), [x])
    bounds = [[0, 1, -1, 0], [0, 2, -7, 2], [1, 1, -1, 1]]
    sliced = _view_graph("STRIDED_SLICE", (1, 3, 5, 2), (1, 5, 2), bounds,
                         begin_mask=1, end_mask=1, shrink_axis_mask=2, ellipsis_mask=0, new_axis_mask=0)
    out = _all_engines_equal(sliced, [x])
    np.testing.assert_array_equal(out, x[:, 1, ::-1, :])


@pytest.mark.parametrize(
    ("opcode", "in_shape", "out_shape", "consts", "options", "reason"),
    [
        ("TRANSPOSE", (1, 3, 5), (3, 1, 5), [[1, 0, 2]], {}, "moves the batch axis"),
        ("SLICE", (2, 3, 5), (1, 3, 5), [[1, 0, 0], [1, -1, -1]], {}, "whole batch"),
        ("STRIDED_SLICE", (1, 3, 5), (1, 3, 5), [[0, 0, 0], [1, 3, 5], [1, 1, 1]],
         {"begin_mask": 0, "end_mask": 0}, "whole batch"),
        ("STRIDED_SLICE", (1, 3, 5), (1, 1, 3, 5), [[0, 0, 0], [0, 3, 5], [1, 1, 1]],
         {"begin_mask": 1, "end_mask": 1, "new_axis_mask": 2}, "new-axis"),
    ],
)
def test_views_that_would_lose_the_batch_axis_are_refused(
    opcode, in_shape, out_shape, consts, options, reason
):
    graph = _view_graph(opcode, in_shape, out_shape, consts, **options)
    graph.tensors[graph.inputs[0]].shape_signature = (-1, *in_shape[1:])
    with pytest.raises(UnsupportedModelError, match=rf"v.tflite: operator #0 \({opcode}\).*{reason}"):
        NativeEngine(graph, "v.tflite")


def test_strided_view_descriptor_reaching_past_its_input_is_rejected_by_c():
    engine = NativeEngine(_view_graph("TRANSPOSE", (1, 3, 5), (1, 5, 3), [[0, 2, 1]]))
    ops, count = engine._executor().native_ops()
    assert lib.edged_validate(ops, count, 1) == 0
    ops[0].view_start = 1  # the last element would be input element 15 of 15
    assert lib.edged_validate(ops, count, 1) == 1
    ops[0].view_start = 0
    ops[0].view_stride[0] = -1  # reaches below the start
    assert lib.edged_validate(ops, count, 1) == 1


def _split_then_leaky_relu(axis: int, alpha: float = 0.1):
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 4, 6), 0.1, 2)
    axis_t = b.const("axis", np.array(axis, np.int32))
    shape = (1, 4, 3) if axis in (2, -1) else (1, 2, 6)
    parts = [b.tensor(f"p{k}", np.int8, shape, 0.1, 2) for k in range(2)]
    b.op("SPLIT", [axis_t, x], parts, version=2, num_splits=2)
    y = b.tensor("y", np.int8, shape, 0.1, 2)
    b.op("LEAKY_RELU", [parts[1]], [y], alpha=alpha)
    b.output(parts[0])
    b.output(y)
    return b.build()


def test_split_outputs_feed_later_ops_and_match_litert():
    x = np.random.default_rng(4).integers(-128, 128, (3, 4, 6)).astype(np.int8)
    graph = _split_then_leaky_relu(-1)
    expected = LiteRTEngine(write_tflite(graph)).infer([x])
    for got in (ReferenceEngine(_split_then_leaky_relu(-1)).run([x]),
                NativeEngine(_split_then_leaky_relu(-1)).infer([x])):
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(expected[0], x[:, :, :3])


def test_split_along_the_batch_axis_is_refused_naming_the_split():
    with pytest.raises(UnsupportedModelError, match=r"s.tflite: operator #0 \(SPLIT\).*batch axis"):
        NativeEngine(_split_then_leaky_relu(0), "s.tflite")


def test_operators_after_a_split_keep_their_index_in_messages():
    # The split becomes two SLICEs; LEAKY_RELU is still operator #1 of the file.
    with pytest.raises(ModelFormatError, match=r"s.tflite: operator #1 \(LEAKY_RELU\).*alpha"):
        NativeEngine(_split_then_leaky_relu(2, alpha=float("nan")), "s.tflite")
