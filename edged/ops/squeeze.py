"""SQUEEZE and EXPAND_DIMS: the same bytes under another shape, the batch axis kept.

Both only drop or insert unit axes. edged treats the leading axis of every
activation as the batch, so an op that would squeeze it away (a batch of 1)
or insert an axis in front of it is refused. They run as a byte copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.ops.base import OpContext, OutputType

OPCODES = ("SQUEEZE", "EXPAND_DIMS")


@dataclass
class SqueezeParams:
    out_shape: tuple[int, ...]  # per sample
    count: int  # elements per sample
    itemsize: int


def _squeezed_axes(ctx: OpContext, rank: int) -> list[int]:
    dims = [int(d) for d in ctx.op.options.get("squeeze_dims") or []]
    if not dims:
        # No axes listed: LiteRT drops every unit axis, the batch's too at batch 1.
        raise ctx.fail("SQUEEZE without squeeze_dims would drop the batch axis")
    if any(not -rank <= d < rank for d in dims):
        raise ctx.fail(f"squeeze_dims {dims} out of range for rank {rank}")
    return sorted({d % rank for d in dims})


def _expanded_axis(ctx: OpContext, rank: int) -> int:
    axis = ctx.input(1)
    if axis is None or not axis.is_constant or axis.size != 1 or axis.dtype.kind != "i":
        raise ctx.fail("the EXPAND_DIMS axis must be one constant integer")
    a = int(axis.data.reshape(-1)[0])
    if not -(rank + 1) <= a <= rank:
        raise ctx.fail(f"axis {a} out of range for rank {rank}")
    return a % (rank + 1)


def infer_output(ctx: OpContext) -> OutputType:
    x = ctx.input(0)
    if x is None:
        raise ctx.malformed("input 0 is missing")
    rank = len(x.shape)
    if ctx.op.opcode == "SQUEEZE":
        axes = _squeezed_axes(ctx, rank)
        if any(x.shape[a] != 1 for a in axes):
            raise ctx.malformed(f"cannot squeeze axes {axes} of {list(x.shape)}: not of extent 1")
        return OutputType.of([d for i, d in enumerate(x.shape) if i not in axes], x.dtype)
    axis = _expanded_axis(ctx, rank)
    return OutputType.of((*x.shape[:axis], 1, *x.shape[axis:]), x.dtype)


def prepare(ctx: OpContext) -> SqueezeParams:
    x, y = ctx.input(0), ctx.output()
    if x is None or x.is_constant:
        raise ctx.fail(f"{ctx.op.opcode} needs an activation input")
    if x.dtype != y.dtype or (x.quant is None) != (y.quant is None):
        raise ctx.fail(f"{ctx.op.opcode} must keep dtype and quantization")
    if x.quant is not None and ctx.scale_zp(x) != ctx.scale_zp(y):
        raise ctx.fail(f"{ctx.op.opcode} must keep dtype and quantization")
    rank = len(x.shape)
    if ctx.op.opcode == "SQUEEZE":
        axes = _squeezed_axes(ctx, rank)
        if 0 in axes or any(x.shape[a] != 1 for a in axes):
            raise ctx.fail(f"cannot squeeze axes {axes} of {list(x.shape)} (axis 0 is the batch)")
        expected = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    else:
        axis = _expanded_axis(ctx, rank)
        if axis == 0:
            raise ctx.fail("EXPAND_DIMS in front of the batch axis is not supported")
        expected = (*x.shape[:axis], 1, *x.shape[axis:])
    if tuple(y.shape) != expected:
        raise ctx.fail(f"output shape {list(y.shape)} is not {list(expected)}")
    return SqueezeParams(out_shape=expected[1:], count=int(np.prod(expected[1:], dtype=np.int64)),
                         itemsize=x.dtype.itemsize)


def reference(p: SqueezeParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    return x.reshape((x.shape[0], *p.out_shape))


def native_kind(p: SqueezeParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_COPY


def describe(p: SqueezeParams, d, shared: dict) -> list:
    d.count = p.count
    d.elem_size = p.itemsize
    return []
