"""MUL of two int8 tensors, with broadcasting, as LiteRT's optimized int8 kernel runs it.

The runs of contiguous output come from edged.ops.broadcast. In each run the
first n - n % 16 elements take the NEON(-on-SSE) form (the product shifted
left, a high multiply, a rounding shift, saturation to int16 and an int16 add
of the zero point that wraps), the rest the scalar reference form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    srdhm_half_up,
    wrap_int32,
)
from edged.ops import broadcast
from edged.ops.base import OpContext

OPCODES = ("MUL",)
infer_output = broadcast.infer_output
BLOCK = 16


@dataclass
class MulParams:
    offsets: tuple[int, int]  # -zero point of each operand, in Broadcast order
    output_offset: int
    multiplier: int
    shift: int
    act_min: int
    act_max: int
    layout: broadcast.Broadcast


def prepare(ctx: OpContext) -> MulParams:
    (a, b), layout = broadcast.prepare_operands(ctx)
    (sa, za), (sb, zb) = ctx.scale_zp(a), ctx.scale_zp(b)
    so, zo = ctx.scale_zp(ctx.output())
    # mul.cc: input1 scale * input2 scale / output scale, in float.
    multiplier, shift = quantize_multiplier(float(np.float32(sa) * np.float32(sb) / np.float32(so)))
    act_min, act_max = ctx.activation(ctx.output())
    return MulParams((-za, -zb), zo, multiplier, shift, act_min, act_max, layout)


def _vector_form(p: MulParams, product: np.ndarray) -> np.ndarray:
    left, right = max(p.shift, 0), max(-p.shift, 0)
    scaled = rounding_divide_by_pot(srdhm_half_up(wrap_int32(product << left), p.multiplier), right)
    narrowed = np.clip(scaled, -(2**15), 2**15 - 1)  # vqmovn_s32
    offset = ((narrowed + p.output_offset + 2**15) % 2**16) - 2**15  # int16 add wraps
    return np.clip(offset, -128, 127)


def _reference_form(p: MulParams, product: np.ndarray) -> np.ndarray:
    return wrap_int32(multiply_by_quantized_multiplier(product, p.multiplier, p.shift) + p.output_offset)


def reference(p: MulParams, inputs: list[np.ndarray]) -> np.ndarray:
    x0, x1 = p.layout.operands(inputs)
    product = (x0 + p.offsets[0]) * (x1 + p.offsets[1])
    in_body, _ = broadcast.body_mask(p.layout, inputs[0].shape[0], product.shape, BLOCK, BLOCK)
    out = np.where(in_body, _vector_form(p, product), _reference_form(p, product))
    return np.clip(out, p.act_min, p.act_max).astype(np.int8)


def native_kind(p: MulParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_MUL


def pack(p: MulParams, variant: int) -> dict:
    return broadcast.pack(p.layout)


def describe(p: MulParams, d, shared: dict) -> list:
    broadcast.describe(p.layout, d, shared)
    for k in range(2):
        d.in_offset[k] = p.offsets[k]
    d.multiplier, d.shift = p.multiplier, p.shift
    d.output_offset = p.output_offset
    d.act_min, d.act_max = p.act_min, p.act_max
    return []
