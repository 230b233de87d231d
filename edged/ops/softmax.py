"""SOFTMAX int8 -> int8 over the last axis, as LiteRT's x86-64 or aarch64 build computes it.

x86-64 (optimized_ops::Softmax): a float32 exp table, a sequential float sum
and ``round()`` of each probability. aarch64 (SoftmaxInt8LUT, which LiteRT's
clang-built aarch64 kernels use): a table of ``exp`` scaled to uint16, an
integer sum, and each entry scaled by ``QuantizeMultiplier(1 / (sum *
output_scale))`` with the scalar fixed-point multiply (its NEON body rounds
ties up, the scalar tail away from zero: they differ only where a left shift
of an entry wraps past int32, at output scales below 1 / the row's sum).
``neon`` selects the second (edged.model.rounding.neon_bodies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_half_up,
    quantize_multiplier,
    round_half_away,
    vector_body,
)
from edged.model.rounding import neon_bodies
from edged.ops.base import OpContext, OutputType, same_as_input
from edged.ops.libm import expf

OPCODES = ("SOFTMAX",)
UINT16_MAX = 2**16 - 1
NEON_BLOCK = 16  # SoftmaxInt8LUT's body, per row


@dataclass
class SoftmaxParams:
    # float32[256]: table[255 - v] = expf(-input_scale * beta * v); neon: int32 (uint16_exp_table)
    table: np.ndarray
    output_scale: float
    output_zero_point: int
    depth: int
    neon: bool = False  # LiteRT's aarch64 build: the uint16 table kernel


def exp_table(input_scale: float, beta: float) -> np.ndarray:
    """PopulateSoftmaxLookupTable: float32 exp of every non-positive int8 distance."""
    scale = np.float32(-np.float32(input_scale) * np.float32(beta))
    vals = np.arange(256, dtype=np.float32)
    table = np.empty(256, dtype=np.float32)
    table[255 - np.arange(256)] = expf(scale * vals)
    return table


def uint16_exp_table(input_scale: float, beta: float) -> np.ndarray:
    """PopulateSoftmaxUInt8LookupTable: table[v] = int(expf(scale * (v - 255)) * 65535 + 0.5), capped.

    The product is float32 (an int times a float), the + 0.5 double, the
    conversion truncates; LiteRT stores the high and low bytes apart."""
    scale = np.float32(input_scale) * np.float32(beta)
    distance = (np.arange(256) - 255).astype(np.float32)
    scaled = expf(scale * distance) * np.float32(UINT16_MAX)
    return np.minimum(np.floor(scaled.astype(np.float64) + 0.5), UINT16_MAX).astype(np.int32)


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
    neon = neon_bodies(ctx.rounding)
    return SoftmaxParams(
        table=uint16_exp_table(in_scale, beta) if neon else exp_table(in_scale, beta),
        output_scale=out_scale,
        output_zero_point=out_zp,
        depth=x.shape[-1],
        neon=neon,
    )


def _reference_uint16(p: SoftmaxParams, rows: np.ndarray) -> np.ndarray:
    max_val = rows.max(axis=1, keepdims=True)
    e = p.table[255 - max_val + rows].astype(np.int64)
    # The sum is an int32; float(sum) * scale, then 1 / that, all in float32.
    totals = e.sum(axis=1).astype(np.int32).astype(np.float32)
    inv = np.float32(1.0) / (totals * np.float32(p.output_scale))
    body = vector_body(p.depth, NEON_BLOCK)
    out = np.empty_like(e)
    for r, row in enumerate(e):
        # An infinite reciprocal (a degenerate output scale) takes QuantizeMultiplier's cap.
        multiplier, shift = quantize_multiplier(float(inv[r])) if np.isfinite(inv[r]) else (2**31 - 1, 30)
        out[r, :body] = multiply_by_quantized_multiplier_half_up(row[:body], multiplier, shift)
        out[r, body:] = multiply_by_quantized_multiplier(row[body:], multiplier, shift)
    return out + p.output_zero_point


def reference(p: SoftmaxParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    rows = x.reshape(-1, p.depth).astype(np.int32)
    if p.neon:
        return np.clip(_reference_uint16(p, rows), -128, 127).astype(np.int8).reshape(x.shape)
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
    return {"table": np.ascontiguousarray(p.table, dtype=np.int32 if p.neon else np.float32)}


def describe(p: SoftmaxParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address, lib

    d.in_c = d.out_c = p.depth
    d.count = d.in_stride[0]
    d.table = address(shared["table"])
    d.scale = p.output_scale
    d.output_offset = d.zero_point = p.output_zero_point
    d.mode = lib.EDGED_BODY_NEON if p.neon else lib.EDGED_BODY_X86
    return []
