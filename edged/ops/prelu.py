"""PRELU int8 -> int8 with a constant alpha, as LiteRT's reference Prelu / BroadcastPrelu4DSlow.

An element, offset by the input zero point, is rescaled to the output by input
scale / output scale when non-negative; otherwise it is multiplied by its alpha
(offset by alpha's zero point) and rescaled by input scale * alpha scale /
output scale. Both rescalings are MultiplyByQuantizedMultiplier (ties away from
zero) with factors computed in float32 as LiteRT's Prepare does. Alpha is
broadcast to one sample of the input once, at load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import multiply_by_quantized_multiplier, quantize_multiplier
from edged.ops.base import OpContext, OutputType, same_as_input

OPCODES = ("PRELU",)


@dataclass
class PreluParams:
    alpha: np.ndarray  # int8, one sample of the input's shape (batch axis 1)
    input_offset: int  # -input zero point
    alpha_offset: int  # -alpha zero point
    output_offset: int
    identity: tuple[int, int]  # (multiplier, shift) of the non-negative side
    negative: tuple[int, int]  # (multiplier, shift) of x * alpha


def infer_output(ctx: OpContext) -> OutputType:
    return same_as_input(ctx)


def _broadcast_alpha(ctx: OpContext, alpha: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if alpha.ndim > len(shape):
        raise ctx.malformed(f"alpha {list(alpha.shape)} has more axes than the input {list(shape)}")
    padded = (1,) * (len(shape) - alpha.ndim) + alpha.shape
    if padded[0] != 1:
        raise ctx.fail(f"alpha {list(alpha.shape)} varies along the batch axis")
    try:
        return np.ascontiguousarray(np.broadcast_to(alpha.reshape(padded), (1, *shape[1:])), dtype=np.int8)
    except ValueError as exc:
        reason = f"alpha {list(alpha.shape)} does not broadcast to the input {list(shape)}"
        raise ctx.malformed(reason) from exc


def prepare(ctx: OpContext) -> PreluParams:
    x, a, y = ctx.input(0), ctx.input(1), ctx.output()
    if x is None or a is None or len(ctx.op.inputs) != 2:
        raise ctx.fail("PRELU takes an input and an alpha")
    ctx.require_int8(x, a, y)
    if x.is_constant or not a.is_constant:
        raise ctx.fail("PRELU runs natively with an activation input and a constant alpha")
    in_scale, in_zp = ctx.scale_zp(x)
    alpha_scale, alpha_zp = ctx.scale_zp(a)
    out_scale, out_zp = ctx.scale_zp(y)
    alpha = _broadcast_alpha(ctx, np.asarray(a.data, dtype=np.int8).reshape(a.shape), x.shape)
    identity = float(np.float32(in_scale) / np.float32(out_scale))
    negative = float(np.float32(in_scale) * np.float32(alpha_scale) / np.float32(out_scale))
    return PreluParams(
        alpha, -in_zp, -alpha_zp, out_zp, quantize_multiplier(identity), quantize_multiplier(negative)
    )


def reference(p: PreluParams, inputs: list[np.ndarray]) -> np.ndarray:
    v = inputs[0].astype(np.int64) + p.input_offset
    positive = multiply_by_quantized_multiplier(v, *p.identity)
    scaled_alpha = p.alpha.astype(np.int64) + p.alpha_offset
    negative = multiply_by_quantized_multiplier(v * scaled_alpha, *p.negative)
    out = np.where(v >= 0, positive, negative) + p.output_offset
    return np.clip(out, -128, 127).astype(np.int8)


def native_kind(p: PreluParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_PRELU


def pack(p: PreluParams, variant: int) -> dict:
    return {"alpha": np.ascontiguousarray(p.alpha.reshape(-1), dtype=np.int8)}


def describe(p: PreluParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address

    if shared["alpha"].size != d.in_stride[0]:
        raise ValueError(f"alpha holds {shared['alpha'].size} values for {d.in_stride[0]} per sample")
    d.count = d.in_stride[0]
    d.weights = address(shared["alpha"])
    d.input_offset, d.output_offset = p.input_offset, p.output_offset
    d.in_offset[1] = p.alpha_offset
    d.in_multiplier[0], d.in_shift[0] = p.identity
    d.in_multiplier[1], d.in_shift[1] = p.negative
    return []
