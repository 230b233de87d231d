"""SUB, MAXIMUM and MINIMUM: the cases random drawing rarely reaches."""

from __future__ import annotations

import numpy as np
import pytest

from edged.model.builder import GraphBuilder
from edged.model.tflite import write_tflite
from edged.ops import add
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine


def _all_engines_equal(graph, inputs) -> np.ndarray:
    expected = LiteRTEngine(write_tflite(graph)).infer(inputs)[0]
    np.testing.assert_array_equal(ReferenceEngine(graph).run(inputs)[0], expected)
    np.testing.assert_array_equal(NativeEngine(graph).infer(inputs)[0], expected)
    return expected


def _binary(opcode, a_shape, c_shape, constant=None, constant_first=False, scales=(0.5, 0.5, 0.002)):
    b = GraphBuilder()
    a = b.input("a", np.int8, (1, *a_shape), scales[0], 3)
    if constant is not None:
        c = b.const("c", constant, scales[1], -7)
    else:
        c = b.input("c", np.int8, (1, *c_shape), scales[1], -7)
    y = b.tensor("y", np.int8, (1, *a_shape), scales[2], 100)
    options = {} if opcode in ("MAXIMUM", "MINIMUM") else {"fused_activation_function": "NONE"}
    b.op(opcode, [c, a] if constant_first else [a, c], [y], **options)
    b.output(y)
    return b.build()


def test_sub_saturates_where_add_wraps():
    # Out-of-range differences: LiteRT's ADD body wraps them through int16, its SUB
    # (the reference form for every element) saturates.
    graph = _binary("SUB", (40,), (40,))
    rng = np.random.default_rng(0)
    inputs = [rng.integers(-128, 128, (3, 40)).astype(np.int8) for _ in range(2)]
    out = _all_engines_equal(graph, inputs)
    assert ReferenceEngine(graph).prepared.steps[0].params.subtracted == 1
    assert {-128, 127} <= set(np.unique(out).tolist())


@pytest.mark.parametrize("constant_first", [False, True])
def test_sub_of_a_constant_keeps_the_operand_order(constant_first):
    # x - c and c - x: the file's second input is subtracted, whichever is the constant.
    graph = _binary("SUB", (3, 5), (), constant=np.array(40, np.int8), constant_first=constant_first,
                    scales=(0.05, 0.05, 0.1))
    x = np.arange(-128, 127, 17, dtype=np.int8)[:15].reshape(1, 3, 5).repeat(2, axis=0)
    out = _all_engines_equal(graph, [x])
    params = ReferenceEngine(graph).prepared.steps[0].params
    assert isinstance(params, add.AddParams)
    assert params.subtracted == (0 if constant_first else 1)  # operands: activation, constant
    assert (out[0, 0, 0] < out[0, 2, 4]) != constant_first


@pytest.mark.parametrize("opcode", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum_compare_raw_values_with_a_broadcast_constant(opcode):
    graph = _binary(opcode, (4, 6), (6,), constant=np.arange(-60, 60, 20, dtype=np.int8))
    x = np.random.default_rng(1).integers(-128, 128, (5, 4, 6)).astype(np.int8)
    out = _all_engines_equal(graph, [x])
    pick = np.maximum if opcode == "MAXIMUM" else np.minimum
    np.testing.assert_array_equal(out, pick(x, np.arange(-60, 60, 20, dtype=np.int8)))


def test_sub_subtracts_the_scaled_value_rather_than_adding_a_negated_multiplier():
    # Every pair of int8 values: rounding the subtrahend's scaled value and negating it differs,
    # at ties, from rounding with a negated multiplier (ties round up, not symmetrically).
    b = GraphBuilder()
    a = b.input("a", np.int8, (1, 256, 256), 0.5, 0)
    c = b.input("c", np.int8, (1, 256, 256), 1 / 3, 0)
    y = b.tensor("y", np.int8, (1, 256, 256), 1 / 3, 0)
    b.op("SUB", [a, c], [y], fused_activation_function="NONE")
    b.output(y)
    values = np.arange(-128, 128, dtype=np.int8)
    inputs = [np.broadcast_to(values[:, None], (1, 256, 256)).copy(),
              np.broadcast_to(values[None, :], (1, 256, 256)).copy()]
    graph = b.build()
    out = _all_engines_equal(graph, inputs)
    params = ReferenceEngine(graph).prepared.steps[0].params
    xs = [x.reshape(-1).astype(np.int64) for x in inputs]
    m1, m2 = params.input_multipliers
    negated = add.AddParams(**{**vars(params), "subtracted": None, "input_multipliers": (m1, -m2)})
    as_addition = np.clip(add._reference_form(negated, xs) + params.output_offset, -128, 127)
    assert not np.array_equal(as_addition, out.reshape(-1))


@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize(
    ("shape", "batch"),
    [
        ((23, 23, 3), 1),  # 1587 elements: a tail of 3 past the 16-element body
        ((23, 23, 3), 2),  # the run spans the batch: a tail of 6
        ((7, 7, 12), 1),  # 588 = 36 x 16 + 12: ADD's 8-element blocks reach into the last 16
        ((8, 8, 8), 1),  # 512: no tail
        ((5, 5, 20), 1),  # 500: below the table's threshold, computed directly
    ],
)
def test_long_runs_against_a_constant_scalar_match_litert(opcode, shape, batch):
    # Runs of 512 elements and more against one broadcast value go through a
    # 256-entry table (body) plus the run's own arithmetic (tail); a rescaling
    # layer at a model's input is such a run.
    scales = (0.5, 0.5, 0.002) if opcode == "MUL" else (0.02, 0.01, 0.03)
    graph = _binary(opcode, shape, (), constant=np.array(-90, np.int8), scales=scales)
    rng = np.random.default_rng(3)
    every = np.resize(np.arange(-128, 128, dtype=np.int8), (batch, *shape))
    _all_engines_equal(graph, [rng.permuted(every, axis=-1)])
