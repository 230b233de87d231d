"""EDGED_HMATRIX: a FULLY_CONNECTED whose weight matrix is a hierarchical (H-) matrix.

A custom operator only edged runs (edged.adapt.hmatrix_op writes it). The
H-matrix's low-rank leaves A_l B_l and dense leaves are stored as two int8
matrices, each mostly zero blocks and stored in TFLite's sparse encoding:

* W1 [R, n]: every B_l stacked, on its leaf's input columns; per-row scales.
* W2 [m, n + R]: the dense leaves on the input columns, every A_l on its own
  R columns; per-row scales.

Inputs: x, W1, mid scales (float32 [R]), W2, bias (int32 [m], optional).
Custom options (a flexbuffer map): ``fused_activation_function``.

Integer semantics (the spec the C kernel matches bit for bit):

    mid[k] = clamp(MBQM_RHU(sum_d (x[d] - zx) * W1[k, d], s_x * s_w1[k] / s_mid[k]), -128, 127)
    y[o]   = requant_RHU(bias[o] + sum_d (x[d] - zx) * W2[o, d] + sum_k mid[k] * W2[o, n + k])

i.e. the mid features are int8 with zero point 0 and scale s_mid[k], and W2's
mid columns are quantized in units of s_x so one accumulator serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import multiply_by_quantized_multiplier_half_up, quantize_multipliers
from edged.ops.base import OpContext, OutputType, clamp_to, describe_requantization
from edged.ops.fully_connected import matmul_output

CUSTOM_CODE = "EDGED_HMATRIX"
OPCODES = (CUSTOM_CODE,)


@dataclass
class HMatrixParams:
    w1: np.ndarray  # [R, n] int8
    w2: np.ndarray  # [m, n + R] int8
    bias: np.ndarray  # [m] int32, as stored
    input_offset: int
    output_offset: int
    mid_multiplier: np.ndarray  # [R] int32
    mid_shift: np.ndarray
    multiplier: np.ndarray  # [m] int32
    shift: np.ndarray
    act_min: int
    act_max: int
    depth: int  # n
    out_shape: tuple[int, ...]

    @property
    def mid_c(self) -> int:
        return self.w1.shape[0]

    @property
    def packed_bias(self) -> np.ndarray:
        """The bias the kernel gets: the mid columns carry no zero point, while the packed stage-2
        weights subtract it from every column, so add it back on them."""
        mid = self.w2[:, self.depth :].astype(np.int64).sum(axis=1)
        return (self.bias.astype(np.int64) - self.input_offset * mid).astype(np.int32)


def options(ctx: OpContext) -> dict:
    from flatbuffers import flexbuffers

    raw = ctx.op.custom_options
    if not raw:
        return {}
    try:
        opts = flexbuffers.Loads(bytearray(raw))
    except Exception as exc:
        raise ctx.fail(f"custom options are not a flexbuffer map ({exc})") from exc
    if not isinstance(opts, dict):
        raise ctx.fail("custom options are not a flexbuffer map")
    return opts


def _per_row_scales(ctx: OpContext, t, rows: int, what: str) -> np.ndarray:
    if t is None or not t.is_constant or t.dtype != np.int8 or len(t.shape) != 2 or t.quant is None:
        raise ctx.fail(f"{what} must be a constant 2-D int8 tensor with per-row scales")
    if np.any(t.quant.zero_point != 0):
        raise ctx.fail(f"{what} must be quantized symmetrically (zero point 0)")
    scale = np.asarray(t.quant.scale, dtype=np.float64)
    if scale.size != rows or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ctx.fail(f"{what} needs {rows} positive scales, one per row")
    return scale


def infer_output(ctx: OpContext) -> OutputType:
    w1, w2 = ctx.input(1), ctx.input(3)
    if w1 is None or w2 is None or len(w1.shape) != 2 or len(w2.shape) != 2:
        raise ctx.malformed("inputs 1 and 3 must be the 2-D stage weights W1 [R, n] and W2 [m, n + R]")
    (r, n), (m, width) = w1.shape, w2.shape
    if width != n + r:
        raise ctx.fail(f"W2 is {m}x{width} but W1 is {r}x{n}: W2 must have n + R = {n + r} columns")
    x = ctx.input(0)
    # Rows of the input's last axis keep their leading axes; other inputs are flattened, as in FC.
    keep_dims = x is not None and bool(x.shape) and x.shape[-1] == w1.shape[1]
    return matmul_output(ctx, w2.shape[0], w1.shape[1], keep_dims)


def prepare(ctx: OpContext) -> HMatrixParams:
    x, w1, mid_scale, w2, y = ctx.input(0), ctx.input(1), ctx.input(2), ctx.input(3), ctx.output()
    ctx.require_int8(x, y)
    if w1 is None or w2 is None or len(w1.shape) != 2 or len(w2.shape) != 2:
        raise ctx.fail("inputs 1 and 3 must be the 2-D stage weights W1 [R, n] and W2 [m, n + R]")
    (r, n), (m, width) = w1.shape, w2.shape
    if width != n + r:
        raise ctx.fail(f"W2 is {m}x{width} but W1 is {r}x{n}: W2 must have n + R = {n + r} columns")
    s_w1 = _per_row_scales(ctx, w1, r, "W1")
    s_w2 = _per_row_scales(ctx, w2, m, "W2")
    if mid_scale is None or not mid_scale.is_constant or mid_scale.dtype != np.float32 or mid_scale.size != r:
        raise ctx.fail(f"input 2 must be the {r} float32 scales of the mid features")
    s_mid = mid_scale.data.astype(np.float64).reshape(-1)
    if not np.all(np.isfinite(s_mid)) or np.any(s_mid <= 0):
        raise ctx.fail("the mid-feature scales must be finite and positive")
    in_scale, in_zp = ctx.scale_zp(x)
    out_scale, out_zp = ctx.scale_zp(y)
    if x.size % n:
        raise ctx.fail(f"input of {x.size} elements is not a multiple of the weight depth {n}")
    act_min, act_max = ctx.activation(y, str(options(ctx).get("fused_activation_function", "NONE")))
    s_x = float(np.float32(in_scale))
    mid_mult, mid_shift = quantize_multipliers(s_x * s_w1 / s_mid)
    mult, shift = quantize_multipliers(s_x * s_w2 / float(np.float32(out_scale)))
    return HMatrixParams(
        w1=w1.data.astype(np.int8), w2=w2.data.astype(np.int8), bias=ctx.bias_at(4, m),
        input_offset=-in_zp, output_offset=out_zp, mid_multiplier=mid_mult, mid_shift=mid_shift,
        multiplier=mult, shift=shift, act_min=act_min, act_max=act_max, depth=n, out_shape=y.shape[1:],
    )


def reference(p: HMatrixParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    batch = x.shape[0]
    rows = x.reshape(-1, p.depth).astype(np.int64) + p.input_offset
    t = rows @ p.w1.astype(np.int64).T
    mid = clamp_to(multiply_by_quantized_multiplier_half_up(t, p.mid_multiplier, p.mid_shift), -128, 127)
    w2 = p.w2.astype(np.int64)
    acc = rows @ w2[:, : p.depth].T + mid.astype(np.int64) @ w2[:, p.depth :].T + p.bias
    out = multiply_by_quantized_multiplier_half_up(acc, p.multiplier, p.shift) + p.output_offset
    return clamp_to(out, p.act_min, p.act_max).reshape((batch, *p.out_shape))


def native_kind(p: HMatrixParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_HMATRIX


def matmul_weights(p: HMatrixParams) -> np.ndarray:
    """The larger of the two matrices: the planner picks one layout (dense or a block shape) for both."""
    return p.w2


def pack(p: HMatrixParams, variant: int, layout=None) -> dict:
    from edged.runtime.gemm import pack_weights

    shared = pack_weights(p.w2, p.packed_bias, p.input_offset, variant, layout)
    stage1 = pack_weights(p.w1, np.zeros(p.mid_c, np.int32), p.input_offset, variant, layout)
    shared.update(mid_packed=stage1["packed"], multiplier=p.multiplier, shift=p.shift,
                  mid_multiplier=p.mid_multiplier, mid_shift=p.mid_shift)
    return shared


def describe(p: HMatrixParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address, ffi

    d.in_h = d.in_stride[0] // p.depth
    d.in_c = p.depth
    d.out_c = p.w2.shape[0]
    d.mid_c = p.mid_c
    d.weights = address(shared["packed"])
    d.mid_weights = address(shared["mid_packed"])
    d.weight_format = shared["weight_format"]
    d.mid_multiplier = ffi.cast("int32_t *", shared["mid_multiplier"].ctypes.data)
    d.mid_shift = ffi.cast("int32_t *", shared["mid_shift"].ctypes.data)
    describe_requantization(p, d, shared)
    return []
