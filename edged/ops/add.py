"""ADD (and SUB) of two int8 tensors with TFLite's two-input rescaling (left shift 20).

SUB is LiteRT's reference SubElementwise: the same rescaling, the second
input's scaled value subtracted, the reference form for every element (no
SIMD body, so out-of-range results saturate).

LiteRT's optimized kernel computes the flat tensor (batch included) in SIMD
blocks of 16 with a merged input shift and ties rounded up, and the remaining
elements with the reference arithmetic; both are reproduced here. Broadcasts
(and constant operands) run in the runs of edged.ops.broadcast: runs against
a single broadcast value take another SIMD form, in blocks of 8, which shifts
each input after its high multiply instead of before.
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
from edged.ops import broadcast
from edged.ops.base import OpContext, clamp_to

OPCODES = ("ADD", "SUB")
LEFT_SHIFT = 20
BLOCK = 16
SCALAR_BROADCAST_BLOCK = 8


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
    layout: broadcast.Broadcast | None = None  # None: two activations of one shape
    subtracted: int | None = None  # SUB: which operand (in this order) is subtracted


infer_output = broadcast.infer_output


def prepare(ctx: OpContext) -> AddParams:
    a, b, y = ctx.input(0), ctx.input(1), ctx.output()
    layout = None
    if a is None or b is None or a.is_constant or b.is_constant or a.shape != b.shape:
        (a, b), layout = broadcast.prepare_operands(ctx)
    ctx.require_int8(a, b, y)
    if layout is None and a.shape != y.shape:
        raise ctx.fail(f"output shape {list(y.shape)} differs from the inputs' {list(a.shape)}")
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
        layout=layout,
        subtracted=_subtrahend(ctx, layout) if ctx.op.opcode == "SUB" else None,
    )


def _subtrahend(ctx: OpContext, layout: broadcast.Broadcast | None) -> int:
    """The file's second input, in the operand order (a constant first in the file comes last)."""
    swapped = layout is not None and ctx.input(0).is_constant and not ctx.input(1).is_constant
    return 0 if swapped else 1


def _reference_form(p: AddParams, xs: list[np.ndarray]) -> np.ndarray:
    scaled = [
        multiply_by_quantized_multiplier(
            (x + p.input_offsets[k]) * (1 << LEFT_SHIFT), p.input_multipliers[k], p.input_shifts[k]
        )
        for k, x in enumerate(xs)
    ]
    if p.subtracted is not None:
        scaled[p.subtracted] = -scaled[p.subtracted]
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


def _scalar_broadcast_form(p: AddParams, xs: list[np.ndarray]) -> np.ndarray:
    """AddScalarBroadcast's SIMD form: each input's left shift before, its own shift after
    the high multiply (a flooring shift); the output as in the elementwise form."""
    scaled = [
        _shift(srdhm_half_up(wrap_int32((x + p.input_offsets[k]) << LEFT_SHIFT), p.input_multipliers[k]),
               p.input_shifts[k])
        for k, x in enumerate(xs)
    ]
    total = srdhm_half_up(wrap_int32(scaled[0] + scaled[1]), p.output_multiplier)
    out = rounding_divide_by_pot(total, -p.output_shift)
    return np.clip(_wrap_int16(_wrap_int16(out) + p.output_offset), -128, 127)


def reference(p: AddParams, inputs: list[np.ndarray]) -> np.ndarray:
    if p.layout is not None:
        return _broadcast_reference(p, inputs)
    shape = inputs[0].shape
    xs = [x.reshape(-1).astype(np.int64) for x in inputs]
    body = vector_body(xs[0].size, BLOCK) if p.subtracted is None else 0
    head = _vector_form(p, [x[:body] for x in xs])
    tail = _reference_form(p, [x[body:] for x in xs]) + p.output_offset
    return clamp_to(np.concatenate([head, tail]), p.act_min, p.act_max).reshape(shape)


def _broadcast_reference(p: AddParams, inputs: list[np.ndarray]) -> np.ndarray:
    xs = list(np.broadcast_arrays(*p.layout.operands(inputs)))
    batch = inputs[0].shape[0]
    in_body, scalar = broadcast.body_mask(p.layout, batch, xs[0].shape, BLOCK, SCALAR_BROADCAST_BLOCK)
    in_body &= p.subtracted is None
    vector = _scalar_broadcast_form(p, xs) if scalar else _vector_form(p, xs)
    out = np.where(in_body, vector, wrap_int32(_reference_form(p, xs) + p.output_offset))
    return clamp_to(out, p.act_min, p.act_max)


def native_kind(p: AddParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_ADD


def pack(p: AddParams, variant: int) -> dict:
    return broadcast.pack(p.layout)


def describe(p: AddParams, d, shared: dict) -> list:
    if p.layout is not None:
        broadcast.describe(p.layout, d, shared)
    d.count = int(np.prod(p.out_shape))
    d.left_shift = LEFT_SHIFT
    for k in range(2):
        d.in_offset[k] = p.input_offsets[k]
        d.in_multiplier[k] = p.input_multipliers[k]
        d.in_shift[k] = p.input_shifts[k]
    d.multiplier, d.shift = p.output_multiplier, p.output_shift
    d.output_offset = p.output_offset
    d.act_min, d.act_max = p.act_min, p.act_max
    from edged.runtime.kernels import lib

    d.mode = {None: lib.EDGED_ADD, 0: lib.EDGED_SUB_FIRST, 1: lib.EDGED_SUB_SECOND}[p.subtracted]
    return []
