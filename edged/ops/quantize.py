"""QUANTIZE (float32 -> int8, int8 -> int8) and DEQUANTIZE (int8 -> float32).

LiteRT's kernels run a SIMD body over the flat tensor (batch included) and a
scalar tail that rounds differently; both are reproduced. DEQUANTIZE's body is
``float(x) * s + float(-zp * s)``: two float roundings in the x86-64 build
(NEON on SSE has no fused multiply-add), one in the aarch64 build, whose
compiler has __ARM_FEATURE_FMA and so takes ``vfmaq_f32`` (``neon``,
edged.model.rounding.neon_bodies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_half_up,
    quantize_multiplier,
    round_half_away,
    vector_body,
)
from edged.model.rounding import neon_bodies
from edged.ops.base import OpContext, OutputType, same_as_input

OPCODES = ("QUANTIZE", "DEQUANTIZE")
FLOAT_BLOCK = 8  # QUANTIZE float->int8 and DEQUANTIZE
REQUANTIZE_BLOCK = 16


@dataclass
class QuantizeParams:
    mode: str  # "quantize" | "requantize" | "dequantize"
    scale: float
    zero_point: int
    input_zero_point: int = 0
    multiplier: int = 0
    shift: int = 0
    neon: bool = False  # DEQUANTIZE: LiteRT's aarch64 build (fused multiply-add body)


def infer_output(ctx: OpContext) -> OutputType:
    # QUANTIZE's output type is the op's parameter; DEQUANTIZE always gives float32.
    return same_as_input(ctx, np.float32 if ctx.op.opcode == "DEQUANTIZE" else ctx.output().dtype)


def prepare(ctx: OpContext) -> QuantizeParams:
    x, y = ctx.input(0), ctx.output()
    if ctx.op.opcode == "DEQUANTIZE":
        ctx.require_int8(x)
        if y.dtype != np.float32:
            raise ctx.fail(f"DEQUANTIZE to {y.dtype} is not supported")
        scale, zp = ctx.scale_zp(x)
        return QuantizeParams("dequantize", scale, zp, neon=neon_bodies(ctx.rounding))
    ctx.require_int8(y)
    out_scale, out_zp = ctx.scale_zp(y)
    if x.dtype == np.float32:
        return QuantizeParams("quantize", out_scale, out_zp)
    ctx.require_int8(x)
    in_scale, in_zp = ctx.scale_zp(x)
    mult, shift = quantize_multiplier(float(np.float32(in_scale)) / float(np.float32(out_scale)))
    return QuantizeParams("requantize", out_scale, out_zp, in_zp, mult, shift)


def reference(p: QuantizeParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    flat = x.reshape(-1)
    scale = float(np.float32(p.scale))
    if p.mode == "dequantize":
        body = vector_body(flat.size, FLOAT_BLOCK)
        offset = np.float32(-p.zero_point * scale)
        if p.neon:
            # x (8 bits) times a float32 (24) plus a float32 within 2^9 of it is exact in
            # float64: its one rounding to float32 is the fused multiply-add's.
            head = (flat[:body].astype(np.float64) * scale + np.float64(offset)).astype(np.float32)
        else:
            head = flat[:body].astype(np.float32) * np.float32(scale) + offset
        tail = (scale * (flat[body:].astype(np.float64) - p.zero_point)).astype(np.float32)
        return np.concatenate([head, tail]).reshape(x.shape)
    if p.mode == "quantize":
        body = vector_body(flat.size, FLOAT_BLOCK)
        head = np.rint(flat[:body] * np.float32(1.0 / scale)).astype(np.float64)
        tail = round_half_away(flat[body:].astype(np.float64) / scale)
        q = np.clip(np.concatenate([head, tail]), -(2.0**31), 2.0**31 - 1).astype(np.int64) + p.zero_point
        return np.clip(q, -128, 127).astype(np.int8).reshape(x.shape)
    body = vector_body(flat.size, REQUANTIZE_BLOCK)
    centred = flat.astype(np.int64) - p.input_zero_point
    acc = np.concatenate(
        [
            multiply_by_quantized_multiplier_half_up(centred[:body], p.multiplier, p.shift),
            multiply_by_quantized_multiplier(centred[body:], p.multiplier, p.shift),
        ]
    )
    return np.clip(acc + p.zero_point, -128, 127).astype(np.int8).reshape(x.shape)


def native_kind(p: QuantizeParams) -> int:
    from edged.runtime.kernels import lib

    return {
        "quantize": lib.EDGED_OP_QUANTIZE,
        "requantize": lib.EDGED_OP_REQUANTIZE,
        "dequantize": lib.EDGED_OP_DEQUANTIZE,
    }[p.mode]


def describe(p: QuantizeParams, d, shared: dict) -> list:
    from edged.runtime.kernels import lib

    d.count = d.in_stride[0]
    d.mode = lib.EDGED_BODY_NEON if p.neon else lib.EDGED_BODY_X86
    d.scale = p.scale
    d.zero_point = p.zero_point
    d.output_offset = p.zero_point
    d.input_offset = -p.input_zero_point
    d.multiplier, d.shift = p.multiplier, p.shift
    return []
