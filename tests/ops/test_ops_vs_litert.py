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


def _assert_same(expected: np.ndarray, got: np.ndarray, what: str) -> None:
    assert got.dtype == expected.dtype, what
    assert got.shape == expected.shape, what
    if not np.array_equal(got, expected):
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        pytest.fail(f"{what}: {int((diff > 0).sum())} of {diff.size} elements differ, max {diff.max()}")


@pytest.mark.parametrize("op", sorted(OP_STRATEGIES))
def test_reference_matches_litert(op):
    @given(OP_STRATEGIES[op])
    def check(case):
        graph, inputs = case
        content = write_tflite(graph)
        expected = LiteRTEngine(content).infer(inputs)
        got = ReferenceEngine(graph).run(inputs)
        for e, g in zip(expected, got, strict=True):
            _assert_same(e, g, f"{op} reference")

    check()


@pytest.mark.parametrize("variant", available_variants(), ids=lambda v: VARIANT_NAMES[v])
@pytest.mark.parametrize("op", sorted(OP_STRATEGIES))
def test_native_matches_litert(op, variant):
    @given(OP_STRATEGIES[op])
    def check(case):
        graph, inputs = case
        content = write_tflite(graph)
        expected = LiteRTEngine(content).infer(inputs)
        got = NativeEngine(graph, variant=variant).infer(inputs)
        for e, g in zip(expected, got, strict=True):
            _assert_same(e, g, f"{op} native/{VARIANT_NAMES[variant]}")

    check()


@pytest.mark.parametrize("variant", available_variants(), ids=lambda v: VARIANT_NAMES[v])
@pytest.mark.parametrize("op", sorted(OP_STRATEGIES))
def test_native_matches_numpy_reference(op, variant):
    """The C path against the spec directly, independent of the LiteRT build installed."""

    @given(OP_STRATEGIES[op])
    def check(case):
        graph, inputs = case
        expected = ReferenceEngine(graph).run(inputs)
        got = NativeEngine(graph, variant=variant).infer(inputs)
        for e, g in zip(expected, got, strict=True):
            _assert_same(e, g, f"{op} native/{VARIANT_NAMES[variant]} vs reference")

    check()
