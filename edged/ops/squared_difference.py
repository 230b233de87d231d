"""SQUARED_DIFFERENCE of int8 tensors, as LiteRT's scalar int8 kernel.

Each operand, offset by its zero point and shifted left by 7, is scaled by its
scale / (2 * the larger input scale); the difference is squared in int32 and
scaled by (2 * the larger scale)^2 / (2^14 * output scale), every scaling
MultiplyByQuantizedMultiplier (ties away from zero). The square does not
depend on the operands' order, so the native kernel takes the activation
first. Operands of equal shapes, or one constant operand (broadcast to a
sample once, at load); two activations of different shapes are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import multiply_by_quantized_multiplier, quantize_multiplier, wrap_int32
from edged.ops.base import OpContext, OutputType
from edged.ops.broadcast import infer_output as broadcast_output

OPCODES = ("SQUARED_DIFFERENCE",)
LEFT_SHIFT = 7


@dataclass
class SquaredDifferenceParams:
    offsets: tuple[int, int]  # -zero point of operand 0 and 1
    scalings: tuple[tuple[int, int], tuple[int, int]]  # (multiplier, shift) of operand 0 and 1
    output: tuple[int, int]  # (multiplier, shift) of the squared difference
    output_offset: int
    constant: np.ndarray | None  # the constant operand, one sample of the output's shape
    constant_index: int  # which operand (0 or 1) is constant, -1 for none


def infer_output(ctx: OpContext) -> OutputType:
    return broadcast_output(ctx)


def prepare(ctx: OpContext) -> SquaredDifferenceParams:
    a, b, y = ctx.input(0), ctx.input(1), ctx.output()
    ctx.require_int8(a, b, y)
    constants = [k for k, t in enumerate((a, b)) if t.is_constant]
    if len(constants) == 2:
        raise ctx.fail("SQUARED_DIFFERENCE of two constants is not supported")
    constant = None
    if constants:
        t = (a, b)[constants[0]]
        padded = (1,) * (len(y.shape) - len(t.shape)) + tuple(t.shape)
        if padded[0] != 1:
            raise ctx.fail(f"the constant operand {list(t.shape)} varies along the batch axis")
        data = np.asarray(t.data, dtype=np.int8).reshape(padded)
        constant = np.ascontiguousarray(np.broadcast_to(data, (1, *y.shape[1:])))
    elif a.shape != b.shape:
        raise ctx.fail(f"operands {list(a.shape)} and {list(b.shape)} of different shapes are not supported")
    activation = (a, b)[1 - constants[0]] if constants else a
    if activation.shape != y.shape:
        raise ctx.fail(f"the activation {list(activation.shape)} is broadcast to {list(y.shape)}")
    (s1, zp1), (s2, zp2), (so, zpo) = ctx.scale_zp(a), ctx.scale_zp(b), ctx.scale_zp(y)
    twice_max = float(np.float32(2) * max(np.float32(s1), np.float32(s2)))
    real_output = twice_max * twice_max / float(np.float32(1 << (2 * LEFT_SHIFT)) * np.float32(so))
    if not 0.0 < real_output < 1.0:
        # LiteRT's QuantizeMultiplierSmallerThanOneExp aborts the process on such a file.
        raise ctx.fail(f"the output rescaling {real_output:g} is not in (0, 1), which LiteRT requires")
    scalings = tuple(quantize_multiplier(float(np.float32(s)) / twice_max) for s in (s1, s2))
    return SquaredDifferenceParams(
        (-zp1, -zp2),
        scalings,
        quantize_multiplier(real_output),
        zpo,
        constant,
        constants[0] if constants else -1,
    )


def _scaled(x: np.ndarray, offset: int, scaling: tuple[int, int]) -> np.ndarray:
    shifted = wrap_int32((x.astype(np.int64) + offset) * (1 << LEFT_SHIFT))
    return multiply_by_quantized_multiplier(shifted, *scaling)


def reference(p: SquaredDifferenceParams, inputs: list[np.ndarray]) -> np.ndarray:
    operands = list(inputs)
    if p.constant_index >= 0:
        operands.insert(p.constant_index, np.broadcast_to(p.constant, inputs[0].shape))
    first, second = (_scaled(operands[k], p.offsets[k], p.scalings[k]) for k in (0, 1))
    diff = wrap_int32(first - second)
    out = wrap_int32(multiply_by_quantized_multiplier(wrap_int32(diff * diff), *p.output) + p.output_offset)
    return np.clip(out, -128, 127).astype(np.int8)


def native_kind(p: SquaredDifferenceParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_SQUARED_DIFFERENCE


def pack(p: SquaredDifferenceParams, variant: int) -> dict:
    return {} if p.constant is None else {"constant": np.ascontiguousarray(p.constant.reshape(-1))}


def describe(p: SquaredDifferenceParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address

    # The activation goes first (in[0]); the square is the same in either order.
    first = 1 if p.constant_index == 0 else 0
    order = (first, 1 - first)
    d.count = d.in_stride[0]
    if p.constant is not None:
        if shared["constant"].size != d.in_stride[0]:
            raise ValueError(f"the constant holds {shared['constant'].size} values for {d.in_stride[0]}")
        d.weights = address(shared["constant"])
    for slot, k in enumerate(order):
        d.in_offset[slot] = p.offsets[k]
        d.in_multiplier[slot], d.in_shift[slot] = p.scalings[k]
    d.left_shift = LEFT_SHIFT
    d.multiplier, d.shift = p.output
    d.output_offset = p.output_offset
    return []
