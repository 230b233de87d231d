"""Every op, on hypothesis-drawn single-op models: edged == LiteRT, bit for bit.

Both the numpy reference (the spec) and the native engine (C kernels, with
every GEMM variant this CPU has) are checked against LiteRT's builtin kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from edged.model.tflite import write_tflite
from edged.runtime.kernels import VARIANT_NAMES, available_variants
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine
from tests.singleop import OP_STRATEGIES
from tests.singleop_more import MORE_STRATEGIES

STRATEGIES = {**OP_STRATEGIES, **MORE_STRATEGIES}


def _assert_same(expected: np.ndarray, got: np.ndarray, what: str) -> None:
    assert got.dtype == expected.dtype, what
    assert got.shape == expected.shape, what
    if not np.array_equal(got, expected):
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        pytest.fail(f"{what}: {int((diff > 0).sum())} of {diff.size} elements differ, max {diff.max()}")


def _litert(graph):
    return LiteRTEngine(write_tflite(graph)).infer


def _reference(graph):
    return ReferenceEngine(graph).run


def _native(variant):
    return lambda graph: NativeEngine(graph, variant=variant).infer


# (name, engine under test, name, engine it must equal): each builds a runner from a graph.
PAIRS = [("reference", _reference, "litert", _litert)]
for _v in available_variants():
    PAIRS.append((f"native/{VARIANT_NAMES[_v]}", _native(_v), "litert", _litert))
    # The C path against the spec directly, independent of the LiteRT build installed.
    PAIRS.append((f"native/{VARIANT_NAMES[_v]}", _native(_v), "reference", _reference))


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-vs-{p[2]}")
@pytest.mark.parametrize("op", sorted(STRATEGIES))
def test_engines_agree(op, pair):
    name, engine, expected_name, expected_engine = pair

    @given(STRATEGIES[op])
    def check(case):
        graph, inputs = case
        expected = expected_engine(graph)(inputs)
        got = engine(graph)(inputs)
        for e, g in zip(expected, got, strict=True):
            _assert_same(e, g, f"{op} {name} vs {expected_name}")

    check()
