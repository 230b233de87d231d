"""CONV_2D and DEPTHWISE_CONV_2D, int8 with per-channel weights (NHWC)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_half_up,
    multiply_by_quantized_multiplier_single,
    quantize_multipliers,
    vector_body,
)
from edged.model.rounding import rounds_once
from edged.ops.base import (
    MAX_WINDOW,
    OpContext,
    OutputType,
    clamp_to,
    describe_requantization,
    nhwc,
    same_padding,
    window_output,
)

OPCODES = ("CONV_2D", "DEPTHWISE_CONV_2D")
# LiteRT's depthwise kernel requantizes channels in SIMD blocks of 8 (ties up)
# and the remaining channels with the scalar form (ties away from zero).
DEPTHWISE_BLOCK = 8


@dataclass
class ConvParams:
    depthwise: bool
    weights: np.ndarray  # CONV_2D: [out_c, kh, kw, in_c]; DEPTHWISE: [1, kh, kw, out_c]
    bias: np.ndarray  # [out_c] int32
    input_offset: int
    output_offset: int
    multiplier: np.ndarray
    shift: np.ndarray
    act_min: int
    act_max: int
    in_hwc: tuple[int, int, int]
    out_hwc: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]  # top, left
    depth_multiplier: int
    # CONV_2D: LiteRT's aarch64 build rounds once (edged.model.rounding); depthwise never does.
    single_rounding: bool = False


def infer_output(ctx: OpContext) -> OutputType:
    x, w = ctx.input(0), ctx.input(1)
    if x is None or w is None or len(x.shape) != 4 or len(w.shape) != 4:
        raise ctx.malformed("input and filter must be 4-D (NHWC, and [out, h, w, in] or [1, h, w, out])")
    n, in_h, in_w, in_c = x.shape
    if ctx.op.opcode == "DEPTHWISE_CONV_2D":
        one, kh, kw, out_c = w.shape
        if one != 1 or out_c % in_c:
            raise ctx.malformed(f"depthwise filter {list(w.shape)} does not fit {in_c} input channels")
        ctx.option("depth_multiplier", 0, 0)
    else:
        out_c, kh, kw, filter_in = w.shape
        if filter_in != in_c:
            raise ctx.malformed(f"filter {list(w.shape)} does not fit {in_c} input channels")
    stride = ctx.option("stride_h", 1, 1, MAX_WINDOW), ctx.option("stride_w", 1, 1, MAX_WINDOW)
    dilation = (ctx.option("dilation_h_factor", 1, 1, MAX_WINDOW),
                ctx.option("dilation_w_factor", 1, 1, MAX_WINDOW))
    out_h, _ = window_output(ctx, in_h, kh, stride[0], dilation[0], "h")
    out_w, _ = window_output(ctx, in_w, kw, stride[1], dilation[1], "w")
    return OutputType.of((n, out_h, out_w, out_c), x.dtype)


def prepare(ctx: OpContext) -> ConvParams:
    x, w, y = ctx.input(0), ctx.input(1), ctx.output()
    ctx.require_int8(x, w, y)
    depthwise = ctx.op.opcode == "DEPTHWISE_CONV_2D"
    if w is None or not w.is_constant or len(w.shape) != 4:
        raise ctx.fail("filter must be a constant 4-D tensor")
    if np.any(w.quant.zero_point != 0):
        raise ctx.fail("int8 filters must be quantized symmetrically (zero point 0)")
    in_h, in_w, in_c = nhwc(x.shape)
    out_h, out_w, out_c = nhwc(y.shape)
    opts = ctx.op.options
    stride = (int(opts.get("stride_h", 1)), int(opts.get("stride_w", 1)))
    dilation = (int(opts.get("dilation_h_factor", 1)), int(opts.get("dilation_w_factor", 1)))
    padding = opts.get("padding", "SAME")
    if depthwise:
        _, kh, kw, filter_c = w.shape
        dm = int(opts.get("depth_multiplier", 0)) or out_c // in_c
        if filter_c != out_c or in_c * dm != out_c:
            raise ctx.fail(f"depthwise filter {list(w.shape)} does not match {in_c} -> {out_c} channels")
        quant_axis_ok = w.quant.scale.size in (1, out_c) and (w.quant.scale.size == 1 or w.quant.axis == 3)
    else:
        filter_c, kh, kw, filter_in = w.shape
        dm = 1
        if filter_c != out_c or filter_in != in_c:
            raise ctx.fail(f"filter {list(w.shape)} does not match {in_c} -> {out_c} channels")
        quant_axis_ok = w.quant.scale.size in (1, out_c) and (w.quant.scale.size == 1 or w.quant.axis == 0)
    if not quant_axis_ok:
        raise ctx.fail("filter scales must be per tensor or per output channel")
    oh, pad_top = same_padding(in_h, kh, stride[0], dilation[0], padding)
    ow, pad_left = same_padding(in_w, kw, stride[1], dilation[1], padding)
    if (oh, ow) != (out_h, out_w):
        raise ctx.fail(f"output {out_h}x{out_w} does not match the computed {oh}x{ow}")
    in_scale, in_zp = ctx.scale_zp(x)
    out_scale, out_zp = ctx.scale_zp(y)
    # PopulateConvolutionQuantizationParams: double arithmetic, per tensor broadcast.
    filter_scales = np.broadcast_to(w.quant.scale.astype(np.float64), (out_c,))
    reals = float(np.float32(in_scale)) * filter_scales / float(np.float32(out_scale))
    mult, shift = quantize_multipliers(reals)
    bias = ctx.bias(out_c)
    act_min, act_max = ctx.activation(y)
    return ConvParams(
        depthwise=depthwise,
        weights=w.data.astype(np.int8),
        bias=bias,
        input_offset=-in_zp,
        output_offset=out_zp,
        multiplier=mult,
        shift=shift,
        act_min=act_min,
        act_max=act_max,
        in_hwc=(in_h, in_w, in_c),
        out_hwc=(out_h, out_w, out_c),
        kernel=(kh, kw),
        stride=stride,
        dilation=dilation,
        pad=(pad_top, pad_left),
        depth_multiplier=dm,
        single_rounding=ctx.rounding == "single" and not depthwise,
    )


def im2col_patches(p: ConvParams, x: np.ndarray) -> np.ndarray:
    """[batch, out_h, out_w, kh, kw, in_c] windows of (x - zp), zero outside the input."""
    n = x.shape[0]
    in_h, in_w, in_c = p.in_hwc
    out_h, out_w, _ = p.out_hwc
    kh, kw = p.kernel
    xs = x.astype(np.int64) + p.input_offset
    rows = np.arange(out_h)[:, None] * p.stride[0] - p.pad[0] + np.arange(kh)[None, :] * p.dilation[0]
    cols = np.arange(out_w)[:, None] * p.stride[1] - p.pad[1] + np.arange(kw)[None, :] * p.dilation[1]
    valid_r = (rows >= 0) & (rows < in_h)
    valid_c = (cols >= 0) & (cols < in_w)
    gathered = xs[:, np.clip(rows, 0, in_h - 1)][:, :, :, np.clip(cols, 0, in_w - 1)]
    # gathered: [n, out_h, kh, out_w, kw, in_c]
    mask = valid_r[:, :, None, None] & valid_c[None, None, :, :]
    gathered = gathered * mask[None, :, :, :, :, None]
    return gathered.transpose(0, 1, 3, 2, 4, 5).reshape(n, out_h, out_w, kh, kw, in_c)


def reference(p: ConvParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].reshape((-1, *p.in_hwc))
    patches = im2col_patches(p, x)
    w = p.weights.astype(np.int64)
    if p.depthwise:
        # output channel oc = ic * depth_multiplier + m reads input channel ic.
        in_of_out = np.arange(p.out_hwc[2]) // p.depth_multiplier
        acc = np.einsum("nhwijc,ijc->nhwc", patches[..., in_of_out], w[0])
    else:
        acc = np.einsum("nhwijc,oijc->nhwo", patches, w)
    acc = acc + p.bias
    rows = acc.size // p.out_hwc[2]  # output pixels of the whole batch: the GEMM's rows
    if p.single_rounding and rounds_once("single", rows, p.out_hwc[2], w[0].size):
        out = multiply_by_quantized_multiplier_single(acc, p.multiplier, p.shift)
        return clamp_to(out + p.output_offset, p.act_min, p.act_max)
    out = multiply_by_quantized_multiplier_half_up(acc, p.multiplier, p.shift)
    if p.depthwise:
        tail = slice(vector_body(p.out_hwc[2], DEPTHWISE_BLOCK), None)
        out[..., tail] = multiply_by_quantized_multiplier(acc[..., tail], p.multiplier[tail], p.shift[tail])
    return clamp_to(out + p.output_offset, p.act_min, p.act_max)


def native_kind(p: ConvParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_DEPTHWISE_CONV_2D if p.depthwise else lib.EDGED_OP_CONV_2D


def matmul_weights(p: ConvParams) -> np.ndarray | None:
    """CONV_2D's filter as the [out_c, kh*kw*in_c] matrix its im2col GEMM uses; None for depthwise."""
    return None if p.depthwise else p.weights.reshape(p.weights.shape[0], -1)


def pack(p: ConvParams, variant: int, layout=None) -> dict:
    shared = {"multiplier": p.multiplier, "shift": p.shift}
    if p.depthwise:
        shared["weights"] = np.ascontiguousarray(p.weights)
        shared["bias"] = np.ascontiguousarray(p.bias, dtype=np.int32)
    else:
        from edged.runtime.gemm import pack_weights

        shared.update(pack_weights(matmul_weights(p), p.bias, p.input_offset, variant, layout))
    return shared


def describe(p: ConvParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address, ffi, lib

    d.in_h, d.in_w, d.in_c = p.in_hwc
    d.out_h, d.out_w, d.out_c = p.out_hwc
    d.filter_h, d.filter_w = p.kernel
    d.stride_h, d.stride_w = p.stride
    d.dilation_h, d.dilation_w = p.dilation
    d.pad_top, d.pad_left = p.pad
    d.depth_multiplier = p.depth_multiplier
    d.mode = lib.EDGED_ROUND_SINGLE if p.single_rounding else lib.EDGED_ROUND_UP
    if p.depthwise:
        d.weights = address(shared["weights"])
        d.bias = ffi.cast("int32_t *", shared["bias"].ctypes.data)
    else:
        d.weights = address(shared["packed"])
        d.weight_format = shared["weight_format"]
    describe_requantization(p, d, shared)
    return []
