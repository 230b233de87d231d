"""MAX_POOL_2D and AVERAGE_POOL_2D on int8 NHWC tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.ops.base import MAX_WINDOW, OpContext, OutputType, clamp_to, nhwc, same_padding, window_output

OPCODES = ("MAX_POOL_2D", "AVERAGE_POOL_2D")


@dataclass
class PoolParams:
    average: bool
    in_hwc: tuple[int, int, int]
    out_hwc: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    act_min: int
    act_max: int


def infer_output(ctx: OpContext) -> OutputType:
    x = ctx.input(0)
    if x is None or len(x.shape) != 4:
        raise ctx.malformed("input must be a 4-D NHWC tensor")
    n, in_h, in_w, c = x.shape
    out = []
    for axis, size, filter_key, stride_key in (("h", in_h, "filter_height", "stride_h"),
                                               ("w", in_w, "filter_width", "stride_w")):
        f = ctx.option(filter_key, 0, 1, MAX_WINDOW)
        stride = ctx.option(stride_key, 1, 1, MAX_WINDOW)
        o, pad = window_output(ctx, size, f, stride, 1, axis)
        # Every window must hold an input pixel (TFLite fails the op otherwise); the
        # first and the last window bound all the others.
        if not (f - pad > 0 and -pad < size and (o - 1) * stride - pad < size):
            raise ctx.malformed(f"a {axis} pooling window holds no input pixel")
        out.append(o)
    return OutputType.of((n, *out, c), x.dtype)


def prepare(ctx: OpContext) -> PoolParams:
    x, y = ctx.input(0), ctx.output()
    ctx.require_int8(x, y)
    if ctx.scale_zp(x) != ctx.scale_zp(y):
        raise ctx.fail("input and output quantization must be equal for pooling")
    opts = ctx.op.options
    in_h, in_w, in_c = nhwc(x.shape)
    out_h, out_w, out_c = nhwc(y.shape)
    kernel = (int(opts["filter_height"]), int(opts["filter_width"]))
    stride = (int(opts.get("stride_h", 1)), int(opts.get("stride_w", 1)))
    oh, pad_top = same_padding(in_h, kernel[0], stride[0], 1, opts.get("padding", "SAME"))
    ow, pad_left = same_padding(in_w, kernel[1], stride[1], 1, opts.get("padding", "SAME"))
    if (oh, ow, in_c) != (out_h, out_w, out_c):
        raise ctx.fail(f"output {[out_h, out_w, out_c]} does not match the computed {[oh, ow, in_c]}")
    act_min, act_max = ctx.activation(y)
    return PoolParams(
        average=ctx.op.opcode == "AVERAGE_POOL_2D",
        in_hwc=(in_h, in_w, in_c),
        out_hwc=(out_h, out_w, out_c),
        kernel=kernel,
        stride=stride,
        pad=(pad_top, pad_left),
        act_min=act_min,
        act_max=act_max,
    )


def reference(p: PoolParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].reshape((-1, *p.in_hwc)).astype(np.int32)
    n = x.shape[0]
    out_h, out_w, c = p.out_hwc
    out = np.empty((n, out_h, out_w, c), dtype=np.int32)
    for oy in range(out_h):
        y0 = oy * p.stride[0] - p.pad[0]
        ys = slice(max(y0, 0), min(y0 + p.kernel[0], p.in_hwc[0]))
        for ox in range(out_w):
            x0 = ox * p.stride[1] - p.pad[1]
            xs = slice(max(x0, 0), min(x0 + p.kernel[1], p.in_hwc[1]))
            window = x[:, ys, xs, :]
            if p.average:
                count = window.shape[1] * window.shape[2]
                total = window.sum(axis=(1, 2))
                # Round half away from zero with C's truncating division.
                num = np.where(total > 0, total + count // 2, total - count // 2)
                out[:, oy, ox, :] = np.trunc(num / count).astype(np.int32)
            else:
                out[:, oy, ox, :] = window.max(axis=(1, 2))
    return clamp_to(out, p.act_min, p.act_max)


def native_kind(p: PoolParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_AVERAGE_POOL_2D if p.average else lib.EDGED_OP_MAX_POOL_2D


def describe(p: PoolParams, d, shared: dict) -> list:
    d.in_h, d.in_w, d.in_c = p.in_hwc
    d.out_h, d.out_w, d.out_c = p.out_hwc
    d.filter_h, d.filter_w = p.kernel
    d.stride_h, d.stride_w = p.stride
    d.pad_top, d.pad_left = p.pad
    d.act_min, d.act_max = p.act_min, p.act_max
    return []
