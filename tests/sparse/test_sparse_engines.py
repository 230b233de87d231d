"""Block-sparse FULLY_CONNECTED / CONV_2D through the engines, bit for bit.

For hypothesis-drawn single-op models whose weights lose random blocks, the
native engine with the weights packed block-sparse (every block shape, every
kernel variant this CPU has, the C99 reference included) must equal the
numpy reference, and LiteRT running the same pruned weights stored dense.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.model.tflite import write_tflite
from edged.runtime.kernels import VARIANT_NAMES, available_variants, best_variant
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine
from edged.sparse.block_csr import BLOCK_SHAPES, BlockShape
from tests.singleop import conv_2d, fully_connected
from tests.sparse.test_block_csr import block_masked

SHAPES = [*BLOCK_SHAPES, BlockShape(3, 5)]


@st.composite
def pruned(draw, base):
    graph, inputs = draw(base)
    block = draw(st.sampled_from(SHAPES))
    sparsity = draw(st.sampled_from([0.5, 0.8, 0.95, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    weights = graph.tensors[graph.operators[0].inputs[1]]
    flat = weights.data.reshape(weights.data.shape[0], -1)
    mask = block_masked(rng, flat.shape, block, sparsity) != 0
    weights.data = np.where(mask, flat, np.int8(0)).reshape(weights.data.shape)
    return graph, inputs, block


CASES = {"FULLY_CONNECTED": pruned(fully_connected()), "CONV_2D": pruned(conv_2d())}


def _same(expected, got, what):
    for e, g in zip(expected, got, strict=True):
        if not np.array_equal(e, g):
            bad = int(np.count_nonzero(e != g))
            pytest.fail(f"{what}: {bad} of {e.size} outputs differ")


@pytest.mark.parametrize("variant", available_variants(), ids=lambda v: VARIANT_NAMES[v])
@pytest.mark.parametrize("op", sorted(CASES))
def test_sparse_native_equals_reference(op, variant):
    @given(CASES[op])
    def check(case):
        graph, inputs, block = case
        engine = NativeEngine(graph, variant=variant, layout=block)
        (choice,) = engine.plan.layouts.values()
        has_zeros = choice.sparsity > 0
        assert choice.layout == (block if has_zeros else None)
        what = f"{op} {block} {VARIANT_NAMES[variant]}"
        _same(ReferenceEngine(graph).run(inputs), engine.infer(inputs), what)

    check()


@pytest.mark.parametrize("op", sorted(CASES))
def test_sparse_native_equals_litert_dense(op):
    @given(CASES[op])
    def check(case):
        graph, inputs, block = case
        native = NativeEngine(graph, variant=best_variant(), layout=block)
        litert = LiteRTEngine(write_tflite(graph))
        _same(litert.infer(inputs), native.infer(inputs), f"{op} {block}")

    check()
