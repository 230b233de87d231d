"""RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR on int8 NHWC, as LiteRT's int8 kernels.

Both copy or blend raw int8 values (the output keeps the input's quantization
in every converter-made model; LiteRT never rescales). All coordinate
arithmetic is done once, here, per output row and column:

* nearest, neither align_corners nor half_pixel_centers: LiteRT's optimized
  8-bit kernel, 16-bit fixed point: ``min((i * ((in << 16) // out + 1)) >> 16, in - 1)``;
* nearest otherwise: reference GetNearestNeighbor in float32 (``floor``, or
  ``round`` with align_corners; half-pixel centres add 0.5 and clamp at 0);
* bilinear: reference ResizeBilinearInteger, 10 fractional bits, C integer
  division, the blend rounded half away from zero (``(v ± 2^19) / 2^20``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import round_half_away
from edged.ops.base import MAX_DIM, OpContext, OutputType

OPCODES = ("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR")


@dataclass
class ResizeParams:
    bilinear: bool
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    rows: np.ndarray  # int32 [out_h] (nearest) or [out_h, 3] (y0, y1, dy)
    cols: np.ndarray  # int32 [out_w] or [out_w, 3]


def _size(ctx: OpContext) -> tuple[int, int]:
    x, size = ctx.input(0), ctx.input(1)
    if x is None or size is None or len(ctx.op.inputs) != 2:
        raise ctx.malformed("a resize takes an input and a size")
    if len(x.shape) != 4:
        raise ctx.malformed(f"the input {list(x.shape)} is not 4-D (NHWC)")
    if not size.is_constant or size.dtype != np.int32 or size.size != 2:
        raise ctx.fail("the output size must be a constant int32 pair")
    h, w = (int(v) for v in size.data.reshape(-1))
    if not (1 <= h <= MAX_DIM and 1 <= w <= MAX_DIM):
        raise ctx.malformed(f"output size {[h, w]} is not positive")
    return h, w


def infer_output(ctx: OpContext) -> OutputType:
    x = ctx.input(0)
    h, w = _size(ctx)
    return OutputType.of((x.shape[0], h, w, x.shape[3]), x.dtype)


def _flags(ctx: OpContext) -> tuple[bool, bool]:
    align = ctx.op.options.get("align_corners", False)
    half = ctx.op.options.get("half_pixel_centers", False)
    if not isinstance(align, bool) or not isinstance(half, bool):
        raise ctx.malformed("align_corners and half_pixel_centers must be booleans")
    if align and half:
        raise ctx.malformed("half_pixel_centers requires align_corners to be false")
    return align, half


def nearest_map(in_size: int, out_size: int, align: bool, half: bool) -> np.ndarray:
    """The input index of every output index along one axis."""
    i = np.arange(out_size, dtype=np.int64)
    if not align and not half:
        scale = (in_size << 16) // out_size + 1
        return np.minimum((i * scale) >> 16, in_size - 1)
    if align and out_size > 1:
        scale = np.float32(in_size - 1) / np.float32(out_size - 1)
    else:
        scale = np.float32(in_size) / np.float32(out_size)
    offset = np.float32(0.5 if half else 0.0)
    pos = (i.astype(np.float32) + offset) * scale
    index = round_half_away(pos) if align else np.floor(pos)
    index = np.minimum(index.astype(np.int64), in_size - 1)
    return np.maximum(index, 0) if half else index


def _c_div(a: np.ndarray, b: int) -> np.ndarray:
    """C's integer division (truncating toward zero)."""
    return np.sign(a) * (np.abs(a) // b)


def bilinear_map(in_size: int, out_size: int, align: bool, half: bool) -> np.ndarray:
    """(lo, hi, frac) per output index along one axis, ResizeBilinearInteger's 10-bit coordinates."""
    if align and out_size > 1:
        scale = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    else:
        scale = ((1 << 10) * in_size + out_size // 2) // out_size
    i = np.arange(out_size, dtype=np.int64)
    scaled = i * scale + (scale // 2 - (1 << 9) if half else 0)
    lo = np.maximum(_c_div(scaled, 1 << 10), 0)
    hi = np.minimum(_c_div(scaled + (1 << 10) - 1, 1 << 10), in_size - 1)
    return np.stack([lo, hi, scaled - (1 << 10) * lo], axis=1)


def _largest_coordinate(in_size: int, out_size: int, bilinear: bool, align: bool, half: bool) -> int:
    """The largest intermediate LiteRT's integer coordinate arithmetic (int32) reaches on an axis."""
    if bilinear:
        return (out_size - 1) * ((1 << 10) * in_size + out_size) + (1 << 10) * (in_size + 1)
    if not align and not half:
        return (out_size - 1) * ((in_size << 16) // out_size + 1)
    return 0  # float coordinates


def prepare(ctx: OpContext) -> ResizeParams:
    x, y = ctx.input(0), ctx.output()
    ctx.require_int8(x, y)
    if x.is_constant:
        raise ctx.fail("resizing a constant is not supported")
    align, half = _flags(ctx)
    out_h, out_w = _size(ctx)
    in_h, in_w = x.shape[1], x.shape[2]
    bilinear = ctx.op.opcode == "RESIZE_BILINEAR"
    maps = []
    for in_size, out_size, axis in ((in_h, out_h, "height"), (in_w, out_w, "width")):
        if _largest_coordinate(in_size, out_size, bilinear, align, half) >= 2**31:
            raise ctx.fail(f"the {axis} ({in_size} -> {out_size}) overflows LiteRT's int32 coordinates")
        m = (bilinear_map if bilinear else nearest_map)(in_size, out_size, align, half)
        index = m[:, :2] if bilinear else m
        if np.any(index < 0) or np.any(index >= in_size):
            raise ctx.fail(f"the {axis} mapping {in_size} -> {out_size} reads outside the input")
        maps.append(np.ascontiguousarray(m, dtype=np.int32))
    return ResizeParams(bilinear, (in_h, in_w), (out_h, out_w), maps[0], maps[1])


def reference(p: ResizeParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    if not p.bilinear:
        return x[:, p.rows][:, :, p.cols]
    v = x.astype(np.int64)
    y0, y1, dy = (p.rows[:, k].astype(np.int64) for k in range(3))
    x0, x1, dx = (p.cols[:, k].astype(np.int64) for k in range(3))
    wy1, wy0 = dy[None, :, None, None], (1024 - dy)[None, :, None, None]
    wx1, wx0 = dx[None, None, :, None], (1024 - dx)[None, None, :, None]
    top, bottom = v[:, y0], v[:, y1]
    total = (top[:, :, x0] * wy0 * wx0 + bottom[:, :, x0] * wy1 * wx0
             + top[:, :, x1] * wy0 * wx1 + bottom[:, :, x1] * wy1 * wx1)
    rounded = _c_div(total + np.where(total > 0, 1 << 19, -(1 << 19)), 1 << 20)
    return rounded.astype(np.int8)  # static_cast<int8_t>: wraps


def native_kind(p: ResizeParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_RESIZE


def pack(p: ResizeParams, variant: int) -> dict:
    return {
        "rows": np.ascontiguousarray(p.rows.reshape(-1)),
        "cols": np.ascontiguousarray(p.cols.reshape(-1)),
    }


def describe(p: ResizeParams, d, shared: dict) -> list:
    from edged.runtime.kernels import ffi, lib

    d.mode = lib.EDGED_RESIZE_BILINEAR if p.bilinear else lib.EDGED_RESIZE_NEAREST
    channels = d.in_stride[0] // (p.in_hw[0] * p.in_hw[1])
    d.in_h, d.in_w, d.in_c = p.in_hw[0], p.in_hw[1], channels
    d.out_h, d.out_w, d.out_c = p.out_hw[0], p.out_hw[1], channels
    d.rows = ffi.cast("int32_t *", shared["rows"].ctypes.data)
    d.cols = ffi.cast("int32_t *", shared["cols"].ctypes.data)
    return []
