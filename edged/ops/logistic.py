"""LOGISTIC int8 -> int8 through a 256-entry table built like LiteRT's (LUTPopulate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edged.model.quant import round_half_away
from edged.ops.base import OpContext, OutputType, same_as_input
from edged.ops.libm import expf

OPCODES = ("LOGISTIC",)


@dataclass
class LogisticParams:
    table: np.ndarray  # int8[256] indexed by the input byte (uint8 view)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.float32(1.0) / (np.float32(1.0) + expf(-x))


def lookup_table(
    in_scale: float, in_zp: int, out_scale: float, out_zp: int,
    transform: Callable[[np.ndarray], np.ndarray] = sigmoid,
) -> np.ndarray:
    """LiteRT's LUTPopulate<int8_t>: the float32 ``transform`` of every input byte, requantized."""
    vals = np.arange(-128, 128, dtype=np.int32)
    dequantized = np.float32(in_scale) * (vals - in_zp).astype(np.float32)
    transformed = np.asarray(transform(dequantized), dtype=np.float32)
    inverse_scale = np.float32(1.0) / np.float32(out_scale)
    rescaled = round_half_away(transformed * inverse_scale)
    quantized = (rescaled + np.float32(out_zp)).astype(np.int32)
    table = np.empty(256, dtype=np.int8)
    table[vals.astype(np.int8).view(np.uint8)] = np.clip(quantized, -128, 127)
    return table


def infer_output(ctx: OpContext) -> OutputType:
    return same_as_input(ctx)


def prepare(ctx: OpContext) -> LogisticParams:
    x, y = ctx.input(0), ctx.output()
    ctx.require_int8(x, y)
    return LogisticParams(table=lookup_table(*ctx.scale_zp(x), *ctx.scale_zp(y)))


def reference(p: LogisticParams, inputs: list[np.ndarray]) -> np.ndarray:
    return p.table[inputs[0].view(np.uint8)]


def native_kind(p: LogisticParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_LOGISTIC


def pack(p: LogisticParams, variant: int) -> dict:
    return {"table": np.ascontiguousarray(p.table, dtype=np.int8)}


def describe(p: LogisticParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address

    d.count = d.in_stride[0]
    d.table = address(shared["table"])
    return []
