"""RESHAPE: the same bytes under another shape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.ops.base import OpContext

OPCODES = ("RESHAPE",)


@dataclass
class ReshapeParams:
    out_shape: tuple[int, ...]  # per sample


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
