"""HARD_SWISH, SOFTMAX and DEQUANTIZE per LiteRT build (edged.model.rounding.neon_bodies).

LiteRT's aarch64 build runs NEON forms of these three ops that round
differently from its x86-64 build; ``single`` mode reproduces them. Here: the
C kernels equal the numpy spec in both modes (so the aarch64 semantics are
checked on any machine; .ci/arm64.sh checks the spec against the aarch64
LiteRT itself), properties of the NEON forms, each mode reaching the kernels,
and the C side refusing a mode it does not know.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.model.builder import GraphBuilder
from edged.model.rounding import neon_bodies
from edged.ops import hard_swish, quantize, softmax
from edged.runtime.kernels import lib
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine
from tests.singleop import OP_STRATEGIES

OPS = ("HARD_SWISH", "SOFTMAX", "QUANTIZE/DEQUANTIZE")
EVERY_BYTE = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)


def _unary(opcode: str, shape: tuple[int, ...], in_s: float, in_zp: int, out_dtype=np.int8,
           out_s: float | None = None, out_zp: int = 0, **options):
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), in_s, in_zp)
    y = b.tensor("y", out_dtype, (1, *shape), out_s, out_zp)
    b.op(opcode, [x], [y], **options)
    b.output(y)
    return b.build()


def _both_modes(graph, inputs) -> dict[str, np.ndarray]:
    """mode -> output, after checking the native engine equals the spec in that mode."""
    out = {}
    for mode in ("double", "single"):
        want = ReferenceEngine(graph, rounding=mode).run(inputs)[0]
        np.testing.assert_array_equal(NativeEngine(graph, rounding=mode).infer(inputs)[0], want)
        out[mode] = want
    return out


def test_single_mode_is_the_aarch64_build():
    assert neon_bodies("single") and not neon_bodies("double")


@pytest.mark.parametrize("mode", ["double", "single"])
@pytest.mark.parametrize("op", OPS)
def test_native_equals_the_spec_in_both_modes(op, mode):
    @given(OP_STRATEGIES[op])
    def check(case):
        graph, inputs = case
        want = ReferenceEngine(graph, rounding=mode).run(inputs)[0]
        got = NativeEngine(graph, rounding=mode).infer(inputs)[0]
        np.testing.assert_array_equal(got, want)

    check()


def test_hard_swish_modes_differ_and_split_the_flat_tensor_at_a_block_of_8():
    graph = _unary("HARD_SWISH", (256,), 0.1, 20, out_s=0.1 / 120)
    out = _both_modes(graph, [EVERY_BYTE])
    differ = np.flatnonzero(out["double"] != out["single"])
    assert differ.size > 0
    # Elements 146, 147 (inputs 18, 19) differ: as the last 3 of 259 they are the scalar tail.
    assert {146, 147} <= set(differ)
    x = np.concatenate([np.zeros((1, 3), np.int8), EVERY_BYTE], axis=1)
    tail = _both_modes(_unary("HARD_SWISH", (259,), 0.1, 20, out_s=0.1 / 120), [x[:, ::-1]])
    assert np.array_equal(tail["double"][0, -3:], tail["single"][0, -3:])
    # 1 + 4 samples of 259: the body ends inside the last sample, as in LiteRT.
    _both_modes(_unary("HARD_SWISH", (259,), 0.1, 20, out_s=0.1 / 120), [np.repeat(x, 5, axis=0)])


@given(
    st.floats(0.002, 0.5), st.integers(-128, 127), st.floats(0.002, 0.5), st.integers(-128, 127),
)
def test_hard_swish_neon_form_equals_the_scalar_one_at_and_above_the_zero_point(in_s, in_zp, out_s, out_zp):
    """Every step of the NEON form rounds differently only on negative values: x >= zero point is equal."""
    graph = _unary("HARD_SWISH", (256,), in_s, in_zp, out_s=max(out_s, in_s / 100), out_zp=out_zp)
    params = ReferenceEngine(graph, rounding="single").prepared.steps[0].params
    assert params.neon
    neon = hard_swish.reference(params, [EVERY_BYTE])
    params.neon = False
    scalar = hard_swish.reference(params, [EVERY_BYTE])
    at_or_above = np.greater_equal(EVERY_BYTE, in_zp)
    np.testing.assert_array_equal(neon[at_or_above], scalar[at_or_above])
    assert np.abs(neon.astype(int) - scalar).max() <= 1


def test_softmax_modes_differ_on_some_rows():
    graph = _unary("SOFTMAX", (40,), 0.25, 0, out_s=1 / 256, out_zp=-128, version=2, beta=1.0)
    x = np.random.default_rng(0).integers(-128, 128, (50, 40)).astype(np.int8)
    out = _both_modes(graph, [x])
    assert 0 < np.count_nonzero(out["double"] != out["single"]) < 10


def test_softmax_uint16_table_is_exp_scaled_to_uint16():
    table = softmax.uint16_exp_table(0.1, 1.0)
    assert table[255] == 65535  # exp(0)
    assert np.all(np.diff(table) >= 0)
    np.testing.assert_allclose(table, np.exp(0.1 * (np.arange(256) - 255)) * 65535, atol=1.0)


def test_softmax_uint16_with_a_degenerate_output_scale_caps_the_multiplier_in_both_engines():
    # 1 / (sum * 1e-42) overflows float32: QuantizeMultiplier's cap (shift 30, the entries
    # wrap in int32 as LiteRT's do), not a crash or an undefined conversion in C.
    graph = _unary("SOFTMAX", (20,), 0.1, 0, out_s=1e-42, out_zp=0, version=2, beta=1.0)
    x = np.random.default_rng(1).integers(-128, 128, (3, 20)).astype(np.int8)
    want = ReferenceEngine(graph, rounding="single").run([x])[0]
    np.testing.assert_array_equal(NativeEngine(graph, rounding="single").infer([x])[0], want)


@given(st.floats(0.002, 0.5), st.integers(-128, 127), st.integers(1, 40), st.integers(1, 5))
def test_dequantize_fused_body_is_the_exact_value_rounded_once(scale, zp, n, batch):
    graph = _unary("DEQUANTIZE", (n,), scale, zp, out_dtype=np.float32, out_s=None, version=2)
    x = np.random.default_rng(n).integers(-128, 128, (batch, n)).astype(np.int8)
    got = _both_modes(graph, [x])["single"].reshape(-1)
    s32 = np.float32(scale)
    offset = np.float32(-zp * float(s32))
    body = x.size - x.size % quantize.FLOAT_BLOCK
    # In float32 with an exact product: the sum then rounds once (a float64 sum of these
    # two is exact, so its rounding to float32 is the correctly rounded fused result).
    product = x.reshape(-1)[:body].astype(np.float64) * float(s32)  # 8 x 24 bits: exact
    exact = product + float(offset)
    # TwoSum's error term is zero: the float64 sum lost nothing.
    rebuilt_offset = exact - product
    assert np.all((product - (exact - rebuilt_offset)) + (float(offset) - rebuilt_offset) == 0)
    np.testing.assert_array_equal(got[:body], exact.astype(np.float32))
    # Where the product is already a float32, fusing changes nothing.
    products = x.reshape(-1)[:body].astype(np.float32) * s32
    exact_products = x.reshape(-1)[:body].astype(np.float64) * float(s32) == products
    two_roundings = products + offset
    np.testing.assert_array_equal(got[:body][exact_products], two_roundings[exact_products])


def test_dequantize_modes_differ():
    graph = _unary("DEQUANTIZE", (256,), 0.1, 3, out_dtype=np.float32, out_s=None, version=2)
    out = _both_modes(graph, [EVERY_BYTE])
    assert out["double"][0, 4] != out["single"][0, 4]  # -127 * 0.1f - 0.3f: -12.700001 vs -12.7


@pytest.mark.parametrize("op", OPS)
def test_c_refuses_an_unknown_body_mode(op):
    graph = {
        "HARD_SWISH": _unary("HARD_SWISH", (16,), 0.1, 0, out_s=0.1),
        "SOFTMAX": _unary("SOFTMAX", (16,), 0.1, 0, out_s=1 / 256, out_zp=-128, beta=1.0),
        "QUANTIZE/DEQUANTIZE": _unary("DEQUANTIZE", (16,), 0.1, 0, out_dtype=np.float32, out_s=None),
    }[op]
    executor = NativeEngine(graph, rounding="single")._executor()
    ops, count = executor.native_ops()
    assert ops[0].mode == lib.EDGED_BODY_NEON
    assert lib.edged_run(ops, count, 1) == 0
    ops[0].mode = 2
    assert lib.edged_run(ops, count, 1) == 1
