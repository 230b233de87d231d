"""SOFTMAX int8 -> int8 over the last axis, via LiteRT's float exp table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import round_half_away
from edged.ops.base import OpContext, OutputType, same_as_input
from edged.ops.libm import expf

OPCODES = ("SOFTMAX",)


@dataclass
class SoftmaxParams:
    table: np.ndarray  # float32[256]: table[255 - v] = expf(-input_scale * beta * v)
    output_scale: float
    output_zero_point: int
    depth: int


def exp_table(input_scale: float, beta: float) -> np.ndarray:
    """PopulateSoftmaxLookupTable: float32 exp of every non-positive int8 distance."""
    scale = np.float32(-np.float32(input_scale) * np.float32(beta))
    vals = np.arange(256, dtype=np.float32)
    table = np.empty(256, dtype=np.float32)
    table[255 - np.arange(256)] = expf(scale * vals)
    return table


def infer_output(ctx: OpContext) -> OutputType:
    beta = ctx.op.options.get("beta", 1.0)
    if not isinstance(beta, (int, float)) or not np.isfinite(beta) or beta <= 0:
        raise ctx.malformed(f"beta {beta!r} must be finite and positive")
    return same_as_input(ctx)


def prepare(ctx: OpContext) -> SoftmaxParams:
    x, y = ctx.input(0), ctx.output()
    ctx.require_int8(x, y)
    in_scale, _ = ctx.scale_zp(x)
    out_scale, out_zp = ctx.scale_zp(y)
    beta = float(ctx.op.options.get("beta", 1.0))
    return SoftmaxParams(
        table=exp_table(in_scale, beta),
        output_scale=out_scale,
        output_zero_point=out_zp,
        depth=x.shape[-1],
    )


def reference(p: SoftmaxParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    rows = x.reshape(-1, p.depth).astype(np.int32)
    max_val = rows.max(axis=1, keepdims=True)
    e = p.table[255 - max_val + rows]  # float32 [rows, depth]
    # Sequential float32 sum, as the C++ loop adds (numpy's sum is pairwise).
    total = np.add.accumulate(e, axis=1, dtype=np.float32)[:, -1:]
    inv = np.float32(1.0) / (total * np.float32(p.output_scale))
    q = round_half_away(e * inv).astype(np.int32) + p.output_zero_point
    return np.clip(q, -128, 127).astype(np.int8).reshape(x.shape)


def native_kind(p: SoftmaxParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_SOFTMAX


def pack(p: SoftmaxParams, variant: int) -> dict:
    return {"table": np.ascontiguousarray(p.table, dtype=np.float32)}


def describe(p: SoftmaxParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address

    d.in_c = d.out_c = p.depth
    d.count = d.in_stride[0]
    d.table = address(shared["table"])
    d.scale = p.output_scale
    d.output_offset = d.zero_point = p.output_zero_point
    return []
