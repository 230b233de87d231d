"""BATCH_MATMUL of int8 tensors, as LiteRT's int8 kernel (reference BatchMatMul<int8_t, int32_t>).

Every output element is the int32 sum over the shared axis of (lhs - lhs zero
point) * (rhs - rhs zero point), scaled by lhs scale * rhs scale / output scale
(float32 product, as GetQuantizedConvolutionMultipler forms it) with
MultiplyByQuantizedMultiplier (ties away from zero), offset and clamped to
int8. adj_x / adj_y transpose the last two axes of an operand. The left side
is an activation; the right side an activation with the same leading axes, or
a constant, broadcast to one sample's matrices once, at load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import multiply_by_quantized_multiplier, quantize_multiplier, wrap_int32
from edged.ops.base import OpContext, OutputType

OPCODES = ("BATCH_MATMUL",)
MAX_RANK = 5  # LiteRT's limit


@dataclass
class BatchMatMulParams:
    matrices: int  # per sample
    rows: int  # M
    depth: int  # K
    cols: int  # P
    adj_x: bool
    adj_y: bool
    lhs_offset: int  # -lhs zero point
    rhs_offset: int  # -rhs zero point
    output_offset: int
    multiplier: int
    shift: int
    constant: np.ndarray | None  # a constant right side, [matrices, K, P] or [matrices, P, K] (adj_y)
    out_shape: tuple[int, ...]  # per sample


def _flags(ctx: OpContext) -> tuple[bool, bool]:
    flags = tuple(ctx.op.options.get(k, False) for k in ("adj_x", "adj_y"))
    if not all(isinstance(f, bool) for f in flags):
        raise ctx.malformed("adj_x and adj_y must be booleans")
    return flags


def _shapes(ctx: OpContext):
    x, z = ctx.input(0), ctx.input(1)
    if x is None or z is None or len(ctx.op.inputs) != 2:
        raise ctx.malformed("BATCH_MATMUL takes two inputs")
    if not (2 <= len(x.shape) <= MAX_RANK and 2 <= len(z.shape) <= MAX_RANK):
        raise ctx.malformed(f"operands {list(x.shape)} and {list(z.shape)} are not of rank 2 to {MAX_RANK}")
    adj_x, adj_y = _flags(ctx)
    rank = max(len(x.shape), len(z.shape))
    xs = (1,) * (rank - len(x.shape)) + tuple(x.shape)
    zs = (1,) * (rank - len(z.shape)) + tuple(z.shape)
    m, k = (xs[-1], xs[-2]) if adj_x else (xs[-2], xs[-1])
    k2, p = (zs[-1], zs[-2]) if adj_y else (zs[-2], zs[-1])
    if k != k2:
        raise ctx.malformed(f"operands {list(x.shape)} and {list(z.shape)} do not share a depth")
    lead = []
    for a, b in zip(xs[:-2], zs[:-2], strict=True):
        if a != b and 1 not in (a, b):
            raise ctx.malformed(f"operands {list(x.shape)} and {list(z.shape)} do not broadcast")
        lead.append(max(a, b))
    return xs, zs, tuple(lead), m, k, p


def infer_output(ctx: OpContext) -> OutputType:
    _, _, lead, m, _, p = _shapes(ctx)
    return OutputType.of((*lead, m, p), ctx.input(0).dtype)


def prepare(ctx: OpContext) -> BatchMatMulParams:
    x, z, y = ctx.input(0), ctx.input(1), ctx.output()
    ctx.require_int8(x, z, y)
    xs, zs, lead, m, k, p = _shapes(ctx)
    adj_x, adj_y = _flags(ctx)
    if x.is_constant or len(x.shape) < 3:
        raise ctx.fail("the left operand must be an activation with a batch axis and a matrix per sample")
    if tuple(xs[:-2]) != lead:
        raise ctx.fail(f"the left operand {list(x.shape)} is broadcast against the right")
    constant = None
    if z.is_constant:
        data = np.asarray(z.data, dtype=np.int8).reshape(zs)
        if zs[0] != 1:
            raise ctx.fail(f"the constant right operand {list(z.shape)} varies along the batch axis")
        constant = np.ascontiguousarray(np.broadcast_to(data, (1, *lead[1:], *zs[-2:])))
    elif tuple(zs[:-2]) != lead or len(z.shape) != len(x.shape):
        raise ctx.fail(f"activations {list(x.shape)} and {list(z.shape)} of different leading axes")
    (sx, zx), (sz, zz), (so, zo) = ctx.scale_zp(x), ctx.scale_zp(z), ctx.scale_zp(y)
    real = float(np.float32(sx) * np.float32(sz)) / float(np.float32(so))
    multiplier, shift = quantize_multiplier(real)
    matrices = int(np.prod(lead[1:], dtype=np.int64))
    return BatchMatMulParams(
        matrices, m, k, p, adj_x, adj_y, -zx, -zz, zo, multiplier, shift, constant, tuple(y.shape[1:])
    )


def reference(p: BatchMatMulParams, inputs: list[np.ndarray]) -> np.ndarray:
    batch = inputs[0].shape[0]
    x = inputs[0].reshape(batch, p.matrices, *((p.depth, p.rows) if p.adj_x else (p.rows, p.depth)))
    z = p.constant if p.constant is not None else inputs[1]
    right = (p.cols, p.depth) if p.adj_y else (p.depth, p.cols)
    z = np.broadcast_to(z.reshape(-1, p.matrices, *right), (batch, p.matrices, *right))
    lhs = x.astype(np.int64) + p.lhs_offset
    rhs = z.astype(np.int64) + p.rhs_offset
    if p.adj_x:
        lhs = lhs.swapaxes(-1, -2)
    if p.adj_y:
        rhs = rhs.swapaxes(-1, -2)
    total = wrap_int32(lhs @ rhs)  # LiteRT sums in int32
    out = wrap_int32(multiply_by_quantized_multiplier(total, p.multiplier, p.shift) + p.output_offset)
    out = np.clip(out, -128, 127).astype(np.int8)
    return out.reshape(batch, *p.out_shape)


def native_kind(p: BatchMatMulParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_BATCH_MATMUL


def pack(p: BatchMatMulParams, variant: int) -> dict:
    return {} if p.constant is None else {"constant": np.ascontiguousarray(p.constant.reshape(-1))}


def describe(p: BatchMatMulParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address

    if p.constant is not None:
        d.weights = address(shared["constant"])
    d.outer, d.in_h, d.in_c, d.out_c = p.matrices, p.rows, p.depth, p.cols
    # (row, depth) strides of the left matrix, (depth, column) strides of the right one
    d.view_stride[0], d.view_stride[1] = (1, p.rows) if p.adj_x else (p.depth, 1)
    d.view_stride[2], d.view_stride[3] = (1, p.depth) if p.adj_y else (p.cols, 1)
    d.input_offset, d.in_offset[1] = p.lhs_offset, p.rhs_offset
    d.multiplier, d.shift = p.multiplier, p.shift
    d.output_offset = p.output_offset
    return []
