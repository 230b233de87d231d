"""LEAKY_RELU int8 -> int8, as LiteRT's QuantizeLeakyRelu.

Each element, offset by the input zero point, is rescaled to the output by
input scale / output scale when it is non-negative and by input scale * alpha
/ output scale otherwise (MultiplyByQuantizedMultiplier, ties away from zero),
then offset and clamped to int8. Both factors are computed in float32, as
LiteRT's Prepare does, before QuantizeMultiplier. A negative alpha scales as
the negation of the scaling by |alpha|: that is what LiteRT's builtin kernel
computes (it differs from scaling by the negative multiplier on ties, where
the rounding direction depends on the product's sign; see
tests/ops/test_views_resize_activations.py for the measured cases).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import multiply_by_quantized_multiplier, quantize_multiplier, wrap_int32
from edged.ops.base import OpContext, OutputType, same_as_input

OPCODES = ("LEAKY_RELU",)


@dataclass
class LeakyReluParams:
    input_offset: int  # -input zero point
    output_offset: int
    identity: tuple[int, int]  # (multiplier, shift) of the non-negative side
    alpha: tuple[int, int]  # (multiplier >= 0, shift) of the negative side, by |alpha|
    negate: bool  # alpha < 0: the negative side's result changes sign


def infer_output(ctx: OpContext) -> OutputType:
    return same_as_input(ctx)


def prepare(ctx: OpContext) -> LeakyReluParams:
    x, y = ctx.input(0), ctx.output()
    if x is None or len(ctx.op.inputs) != 1:
        raise ctx.fail("LEAKY_RELU takes exactly one input")
    ctx.require_int8(x, y)
    alpha = ctx.op.options.get("alpha", 0.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not np.isfinite(alpha):
        raise ctx.malformed(f"option alpha = {alpha!r} is not a finite number")
    in_scale, in_zp = ctx.scale_zp(x)
    out_scale, out_zp = ctx.scale_zp(y)
    identity = float(np.float32(in_scale) / np.float32(out_scale))
    negative = float(np.float32(in_scale) * np.float32(alpha) / np.float32(out_scale))
    if not np.isfinite(negative):
        raise ctx.fail(f"alpha {alpha} rescales beyond float32 range")
    return LeakyReluParams(
        -in_zp, out_zp, quantize_multiplier(identity), quantize_multiplier(abs(negative)), negative < 0
    )


def reference(p: LeakyReluParams, inputs: list[np.ndarray]) -> np.ndarray:
    v = inputs[0].astype(np.int64) + p.input_offset
    positive = multiply_by_quantized_multiplier(v, *p.identity)
    negative = multiply_by_quantized_multiplier(v, *p.alpha)
    if p.negate:
        negative = wrap_int32(-negative)
    out = wrap_int32(np.where(v >= 0, positive, negative) + p.output_offset)
    return np.clip(out, -128, 127).astype(np.int8)


def native_kind(p: LeakyReluParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_LEAKY_RELU


def describe(p: LeakyReluParams, d, shared: dict) -> list:
    d.count = d.in_stride[0]
    d.input_offset, d.output_offset = p.input_offset, p.output_offset
    d.in_multiplier[0], d.in_shift[0] = p.identity
    d.in_multiplier[1], d.in_shift[1] = p.alpha
    d.mode = 1 if p.negate else 0
    return []
