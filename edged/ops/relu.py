"""RELU, RELU6 and RELU_N1_TO_1 as standalone int8 ops: rescale to the output, then clamp.

LiteRT's QuantizedReluX rescales every element by input scale / output scale
(MultiplyByQuantizedMultiplier, ties away from zero) and clamps to the
activation's range on the output scale, rounded with roundf in float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import multiply_by_quantized_multiplier, quantize_multiplier, round_half_away
from edged.ops.base import OpContext, same_as_input

OPCODES = ("RELU", "RELU6", "RELU_N1_TO_1")
infer_output = same_as_input
RANGES = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}


@dataclass
class ReluParams:
    input_offset: int  # -input zero point
    output_offset: int
    multiplier: int
    shift: int
    act_min: int
    act_max: int


def _quantized_bound(value: float, scale: float, zero_point: int) -> int:
    return zero_point + int(round_half_away(np.float32(value) / np.float32(scale)))


def prepare(ctx: OpContext) -> ReluParams:
    x, y = ctx.input(0), ctx.output()
    if x is None or len(ctx.op.inputs) != 1:
        raise ctx.fail(f"{ctx.op.opcode} takes exactly one input")
    ctx.require_int8(x, y)
    if x.is_constant:
        raise ctx.fail(f"{ctx.op.opcode} of a constant is not supported")
    if x.shape != y.shape:
        raise ctx.fail(f"output shape {list(y.shape)} differs from input shape {list(x.shape)}")
    in_scale, in_zp = ctx.scale_zp(x)
    out_scale, out_zp = ctx.scale_zp(y)
    low, high = RANGES[ctx.op.opcode]
    multiplier, shift = quantize_multiplier(float(np.float32(in_scale) / np.float32(out_scale)))
    act_min = max(-128, _quantized_bound(low, out_scale, out_zp))
    act_max = 127 if high is None else min(127, _quantized_bound(high, out_scale, out_zp))
    if act_min > act_max:
        raise ctx.fail(f"the output quantization leaves an empty {ctx.op.opcode} range")
    return ReluParams(-in_zp, out_zp, multiplier, shift, act_min, act_max)


def reference(p: ReluParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.int64) + p.input_offset
    out = multiply_by_quantized_multiplier(x, p.multiplier, p.shift) + p.output_offset
    return np.clip(out, p.act_min, p.act_max).astype(np.int8)


def native_kind(p: ReluParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_RELU


def describe(p: ReluParams, d, shared: dict) -> list:
    d.count = d.in_stride[0]
    d.input_offset, d.output_offset = p.input_offset, p.output_offset
    d.multiplier, d.shift = p.multiplier, p.shift
    d.act_min, d.act_max = p.act_min, p.act_max
    return []
