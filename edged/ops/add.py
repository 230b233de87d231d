"""ADD of two int8 tensors with TFLite's two-input rescaling (left shift 20).

LiteRT's optimized kernel computes the flat tensor (batch included) in SIMD
blocks of 16 with a merged input shift and ties rounded up, and the remaining
elements with the reference arithmetic; both are reproduced here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    srdhm_half_up,
    vector_body,
    wrap_int32,
)
from edged.ops.base import OpContext, OutputType, clamp_to

OPCODES = ("ADD",)
LEFT_SHIFT = 20
BLOCK = 16


@dataclass
class AddParams:
    input_offsets: tuple[int, int]
    input_multipliers: tuple[int, int]
    input_shifts: tuple[int, int]
    output_multiplier: int
    output_shift: int
    output_offset: int
    act_min: int
    act_max: int
    out_shape: tuple[int, ...]  # per sample


def infer_output(ctx: OpContext) -> OutputType:
    a, b = ctx.input(0), ctx.input(1)
    if a is None or b is None:
        raise ctx.malformed("ADD needs two inputs")
    if a.shape != b.shape:
        raise ctx.fail(f"broadcasting ADD ({list(a.shape)} + {list(b.shape)}) is not supported")
    if a.dtype != b.dtype:
        raise ctx.malformed(f"inputs are {a.dtype} and {b.dtype}")
    return OutputType.of(a.shape, a.dtype)


def prepare(ctx: OpContext) -> AddParams:
    a, b, y = ctx.input(0), ctx.input(1), ctx.output()
    ctx.require_int8(a, b, y)
    if a.is_constant or b.is_constant:
        raise ctx.fail("ADD with a constant operand is not supported")
    if a.shape != b.shape or a.shape != y.shape:
        raise ctx.fail(f"broadcasting ADD ({list(a.shape)} + {list(b.shape)}) is not supported")
    sa, za = ctx.scale_zp(a)
    sb, zb = ctx.scale_zp(b)
    so, zo = ctx.scale_zp(y)
    # PrepareInt8 in add.cc: 2 * max(float, float) is a float, the rest double.
    twice_max = float(np.float32(2) * np.float32(max(sa, sb)))
    m1, s1 = quantize_multiplier(float(np.float32(sa)) / twice_max)
    m2, s2 = quantize_multiplier(float(np.float32(sb)) / twice_max)
    mo, shift_o = quantize_multiplier(twice_max / float(np.float32((1 << LEFT_SHIFT) * np.float32(so))))
    act_min, act_max = ctx.activation(y)
    return AddParams(
        input_offsets=(-za, -zb),
        input_multipliers=(m1, m2),
        input_shifts=(s1, s2),
        output_multiplier=mo,
        output_shift=shift_o,
        output_offset=zo,
        act_min=act_min,
        act_max=act_max,
        out_shape=y.shape[1:],
    )


def _reference_form(p: AddParams, xs: list[np.ndarray]) -> np.ndarray:
    scaled = [
        multiply_by_quantized_multiplier(
            (x + p.input_offsets[k]) * (1 << LEFT_SHIFT), p.input_multipliers[k], p.input_shifts[k]
        )
        for k, x in enumerate(xs)
    ]
    return multiply_by_quantized_multiplier(scaled[0] + scaled[1], p.output_multiplier, p.output_shift)


def _vector_form(p: AddParams, xs: list[np.ndarray]) -> np.ndarray:
    scaled = [
        srdhm_half_up(_shift(x + p.input_offsets[k], LEFT_SHIFT + p.input_shifts[k]), p.input_multipliers[k])
        for k, x in enumerate(xs)
    ]
    total = srdhm_half_up(scaled[0] + scaled[1], p.output_multiplier)
    out = rounding_divide_by_pot(total, -p.output_shift)
    # The SIMD code narrows to int16 by truncation and adds the offset in
    # int16 before saturating to int8, so far out-of-range sums wrap.
    return np.clip(_wrap_int16(_wrap_int16(out) + p.output_offset), -128, 127)


def _shift(x: np.ndarray, s: int) -> np.ndarray:
    """NEON vshl: a wrapping left shift, or for a negative count a flooring right shift."""
    return wrap_int32(x << s) if s >= 0 else x >> min(-s, 31)


def _wrap_int16(x: np.ndarray) -> np.ndarray:
    return ((x + 2**15) % 2**16) - 2**15


def reference(p: AddParams, inputs: list[np.ndarray]) -> np.ndarray:
    shape = inputs[0].shape
    xs = [x.reshape(-1).astype(np.int64) for x in inputs]
    body = vector_body(xs[0].size, BLOCK)
    head = _vector_form(p, [x[:body] for x in xs])
    tail = _reference_form(p, [x[body:] for x in xs]) + p.output_offset
    return clamp_to(np.concatenate([head, tail]), p.act_min, p.act_max).reshape(shape)


def native_kind(p: AddParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_ADD


def describe(p: AddParams, d, shared: dict) -> list:
    d.count = int(np.prod(p.out_shape))
    d.left_shift = LEFT_SHIFT
    for k in range(2):
        d.in_offset[k] = p.input_offsets[k]
        d.in_multiplier[k] = p.input_multipliers[k]
        d.in_shift[k] = p.input_shifts[k]
    d.multiplier, d.shift = p.output_multiplier, p.output_shift
    d.output_offset = p.output_offset
    d.act_min, d.act_max = p.act_min, p.act_max
    return []
