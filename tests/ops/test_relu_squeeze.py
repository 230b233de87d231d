"""Standalone RELU family and SQUEEZE / EXPAND_DIMS: the cases random drawing rarely reaches."""

from __future__ import annotations

import numpy as np
import pytest

from edged.errors import ModelFormatError, UnsupportedModelError
from edged.model.builder import GraphBuilder
from edged.model.tflite import write_tflite
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine


def _all_engines_equal(graph, inputs) -> np.ndarray:
    expected = LiteRTEngine(write_tflite(graph)).infer(inputs)[0]
    np.testing.assert_array_equal(ReferenceEngine(graph).run(inputs)[0], expected)
    np.testing.assert_array_equal(NativeEngine(graph).infer(inputs)[0], expected)
    return expected


@pytest.mark.parametrize("opcode", ["RELU", "RELU6", "RELU_N1_TO_1"])
def test_relu_rescaling_ties_round_away_from_zero_like_litert(opcode):
    # Output scale 4x the input's (multiplier 2^30, shift -1): inputs 2 mod 4 land on a tie of
    # the final rounding shift, negative ones too (RELU_N1_TO_1 keeps them), where ties-up and
    # ties-away rounding differ.
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 256), 0.01, 0)
    y = b.tensor("y", np.int8, (1, 256), 0.04, 0)
    b.op(opcode, [x], [y])
    b.output(y)
    every_byte = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    out = _all_engines_equal(b.build(), [every_byte])
    if opcode == "RELU_N1_TO_1":
        assert out[0, 128 - 6] == -2  # -1.5 steps rounds away from zero, not up to -1


def _squeeze_graph(in_shape, out_shape, squeeze_dims):
    b = GraphBuilder()
    x = b.input("x", np.int8, in_shape, 0.1, 2)
    y = b.tensor("y", np.int8, out_shape, 0.1, 2)
    b.op("SQUEEZE", [x], [y], squeeze_dims=squeeze_dims)
    b.output(y)
    return b.build()


def test_squeeze_keeps_the_batch_and_runs_at_any_batch():
    graph = _squeeze_graph((1, 1, 1, 7), (1, 7), [1, 2])
    x = np.random.default_rng(0).integers(-128, 128, (4, 1, 1, 7)).astype(np.int8)
    np.testing.assert_array_equal(_all_engines_equal(graph, [x]), x.reshape(4, 7))


@pytest.mark.parametrize(
    ("in_shape", "out_shape", "dims", "error", "reason"),
    [
        ((1, 1, 1, 7), (7,), [], UnsupportedModelError, "drop the batch axis"),
        ((1, 1, 1, 7), (1, 1, 7), [0], UnsupportedModelError, "axis 0 is the batch"),
        # no valid file squeezes an axis of extent 2
        ((1, 2, 1, 7), (1, 1, 7), [1], ModelFormatError, "cannot squeeze"),
    ],
)
def test_squeezes_that_would_lose_the_batch_axis_are_refused(in_shape, out_shape, dims, error, reason):
    with pytest.raises(error, match=rf"sq.tflite: operator #0 \(SQUEEZE\).*{reason}"):
        NativeEngine(_squeeze_graph(in_shape, out_shape, dims), "sq.tflite")


def test_expand_dims_in_front_of_the_batch_is_refused():
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 5), 0.1, 2)
    y = b.tensor("y", np.int8, (1, 1, 5), 0.1, 2)
    b.op("EXPAND_DIMS", [x, b.const("axis", np.array([0], np.int32))], [y])
    b.output(y)
    with pytest.raises(UnsupportedModelError, match=r"operator #0 \(EXPAND_DIMS\).*batch"):
        NativeEngine(b.build(), "ex.tflite")
