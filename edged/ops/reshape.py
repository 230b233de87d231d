"""RESHAPE: the same bytes under another shape."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edged.ops.base import OpContext, OutputType

OPCODES = ("RESHAPE",)


@dataclass
class ReshapeParams:
    out_shape: tuple[int, ...]  # per sample


def infer_output(ctx: OpContext) -> OutputType:
    x, shape_t, y = ctx.input(0), ctx.input(1), ctx.output()
    if x is None:
        raise ctx.malformed("input 0 is missing")
    if shape_t is not None and shape_t.is_constant:
        if shape_t.dtype.kind not in "iu":
            raise ctx.malformed(f"the shape tensor is {shape_t.dtype}, not integers")
        target = [int(v) for v in shape_t.data.reshape(-1)]
    elif ctx.op.options.get("new_shape"):
        target = [int(v) for v in ctx.op.options["new_shape"]]
    else:
        target = list(y.shape)  # a computed shape: only the element count can be checked
    known = math.prod(d for d in target if d != -1)
    if target.count(-1) > 1 or any(d < -1 for d in target) or (-1 in target and known == 0):
        raise ctx.malformed(f"new shape {target} is not a shape")
    if -1 in target:
        target[target.index(-1)] = math.prod(x.shape) // known
    if math.prod(target) != math.prod(x.shape):
        raise ctx.malformed(f"cannot reshape {list(x.shape)} to {target}")
    return OutputType.of(target, x.dtype)


def prepare(ctx: OpContext) -> ReshapeParams:
    x, y = ctx.input(0), ctx.output()
    if x.size != y.size:
        raise ctx.fail(f"cannot reshape {list(x.shape)} to {list(y.shape)}")
    if x.dtype != y.dtype or (x.quant and y.quant and ctx.scale_zp(x) != ctx.scale_zp(y)):
        raise ctx.fail("RESHAPE must keep dtype and quantization")
    return ReshapeParams(out_shape=y.shape[1:])


def reference(p: ReshapeParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    return x.reshape((x.shape[0], *p.out_shape))
