"""MAXIMUM and MINIMUM of two int8 tensors, with broadcasting.

LiteRT compares the raw int8 values (it expects, but does not check, equal
quantization of inputs and output), so the result is exact whatever path it
takes; broadcasts LiteRT would run generically are refused like MUL's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.ops import broadcast
from edged.ops.base import OpContext

OPCODES = ("MAXIMUM", "MINIMUM")
infer_output = broadcast.infer_output


@dataclass
class MaximumMinimumParams:
    maximum: bool
    layout: broadcast.Broadcast


def prepare(ctx: OpContext) -> MaximumMinimumParams:
    _, layout = broadcast.prepare_operands(ctx)
    return MaximumMinimumParams(ctx.op.opcode == "MAXIMUM", layout)


def reference(p: MaximumMinimumParams, inputs: list[np.ndarray]) -> np.ndarray:
    x0, x1 = p.layout.operands(inputs)
    return (np.maximum(x0, x1) if p.maximum else np.minimum(x0, x1)).astype(np.int8)


def native_kind(p: MaximumMinimumParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_MAXIMUM_MINIMUM


def pack(p: MaximumMinimumParams, variant: int) -> dict:
    return broadcast.pack(p.layout)


def describe(p: MaximumMinimumParams, d, shared: dict) -> list:
    from edged.runtime.kernels import lib

    broadcast.describe(p.layout, d, shared)
    d.mode = lib.EDGED_MAXIMUM if p.maximum else lib.EDGED_MINIMUM
    return []
