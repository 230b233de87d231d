"""TANH int8 -> int8: LiteRT's builtin kernel looks every byte up in a table of tanhf.

The table is built exactly as LOGISTIC's (LUTPopulate) and runs on the same
table-lookup kernel.
"""

from __future__ import annotations

from edged.ops.base import OpContext, OutputType, same_as_input
from edged.ops.libm import tanhf
from edged.ops.logistic import LogisticParams, describe, lookup_table, native_kind, pack, reference

OPCODES = ("TANH",)
__all__ = ["describe", "infer_output", "native_kind", "pack", "prepare", "reference"]


def infer_output(ctx: OpContext) -> OutputType:
    return same_as_input(ctx)


def prepare(ctx: OpContext) -> LogisticParams:
    x, y = ctx.input(0), ctx.output()
    if x is None or len(ctx.op.inputs) != 1:
        raise ctx.fail("TANH takes exactly one input")
    ctx.require_int8(x, y)
    return LogisticParams(table=lookup_table(*ctx.scale_zp(x), *ctx.scale_zp(y), transform=tanhf))

