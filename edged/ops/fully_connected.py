"""FULLY_CONNECTED, int8 with per-tensor or per-channel weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edged.model.quant import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_half_up,
    multiply_by_quantized_multiplier_single,
    quantize_multiplier,
    quantize_multipliers,
)
from edged.model.rounding import rounds_once
from edged.ops.base import OpContext, OutputType, clamp_to, describe_requantization
from edged.sparse.densify import runs_sparse_in_litert

OPCODES = ("FULLY_CONNECTED",)


@dataclass
class FullyConnectedParams:
    weights: np.ndarray  # [out, depth] int8
    bias: np.ndarray  # [out] int32
    input_offset: int
    output_offset: int
    multiplier: np.ndarray  # [out] int32
    shift: np.ndarray  # [out] int32
    act_min: int
    act_max: int
    depth: int
    out_shape: tuple[int, ...]  # per sample, batch axis excluded
    # LiteRT runs weights stored in TFLite's sparse encoding with its sparse
    # kernel, which rounds ties away from zero where the dense (ruy) path
    # rounds them up; edged follows whichever path LiteRT takes for the file.
    round_away: bool = False
    # LiteRT's aarch64 build rounds the dense path once (edged.model.rounding).
    single_rounding: bool = False


def effective_scales(ctx: OpContext, input_scale: float, output_scale: float) -> np.ndarray:
    """Per output channel real multipliers, computed exactly as TFLite's Prepare does.

    Per-tensor weights go through GetQuantizedConvolutionMultipler, whose
    input*filter product is a float32 product; per-channel weights are in double.
    """
    w = ctx.input(1)
    n_out = w.shape[0]
    scales = w.quant.scale
    if scales.size == 1:
        product = np.float32(input_scale) * np.float32(scales[0])
        return np.full(n_out, float(product) / float(np.float32(output_scale)))
    if scales.size != n_out:
        raise ctx.fail(f"weights have {scales.size} scales for {n_out} output channels")
    return float(np.float32(input_scale)) * scales.astype(np.float64) / float(np.float32(output_scale))


def matmul_output(ctx: OpContext, units: int, depth: int, keep_dims: bool) -> OutputType:
    """The output of a product by a [units, depth] matrix: rows of ``depth`` inputs, ``units`` each out;
    ``keep_dims`` keeps the input's leading axes, else the rows are flattened (TFLite's keep_num_dims)."""
    x = ctx.input(0)
    if x is None or not x.shape:
        raise ctx.malformed("input 0 is missing or a scalar")
    if units < 1 or depth < 1 or math.prod(x.shape) % depth:
        raise ctx.malformed(f"input {list(x.shape)} is not made of rows of the weight depth {depth}")
    if keep_dims:
        if x.shape[-1] != depth:
            raise ctx.malformed(f"keep_num_dims needs the input's last axis to be the depth {depth}")
        return OutputType.of((*x.shape[:-1], units), x.dtype)
    return OutputType.of((math.prod(x.shape) // depth, units), x.dtype)


def infer_output(ctx: OpContext) -> OutputType:
    w = ctx.input(1)
    if w is None or len(w.shape) != 2:
        raise ctx.malformed("weights must be a 2-D [units, depth] tensor")
    return matmul_output(ctx, *w.shape, bool(ctx.op.options.get("keep_num_dims", False)))


def prepare(ctx: OpContext) -> FullyConnectedParams:
    x, w, y = ctx.input(0), ctx.input(1), ctx.output()
    ctx.require_int8(x, w, y)
    if w is None or not w.is_constant or len(w.shape) != 2:
        raise ctx.fail("weights must be a constant 2-D tensor")
    if ctx.op.options.get("weights_format", "DEFAULT") != "DEFAULT":
        raise ctx.fail("shuffled weight formats are not supported")
    if np.any(w.quant.zero_point != 0):
        raise ctx.fail("int8 weights must be quantized symmetrically (zero point 0)")
    n_out, depth = w.shape
    in_scale, in_zp = ctx.scale_zp(x)
    out_scale, out_zp = ctx.scale_zp(y)
    if x.size % depth:
        raise ctx.fail(f"input of {x.size} elements is not a multiple of the weight depth {depth}")
    bias = ctx.bias(n_out)
    reals = effective_scales(ctx, in_scale, out_scale)
    if w.quant.scale.size == 1:
        m, s = quantize_multiplier(float(reals[0]))
        mult, shift = np.full(n_out, m, np.int32), np.full(n_out, s, np.int32)
    else:
        mult, shift = quantize_multipliers(reals)
    act_min, act_max = ctx.activation(y)
    # Weights LiteRT's sparse kernel reads directly round ties away from zero, in both modes.
    round_away = runs_sparse_in_litert(ctx.graph, ctx.op.inputs[1])
    return FullyConnectedParams(
        weights=w.data.astype(np.int8),
        bias=bias,
        input_offset=-in_zp,
        output_offset=out_zp,
        multiplier=mult,
        shift=shift,
        act_min=act_min,
        act_max=act_max,
        depth=depth,
        out_shape=y.shape[1:],
        round_away=round_away,
        single_rounding=ctx.rounding == "single" and not round_away,
    )


def reference(p: FullyConnectedParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    batch = x.shape[0]
    rows = x.reshape(-1, p.depth).astype(np.int64) + p.input_offset
    acc = rows @ p.weights.astype(np.int64).T + p.bias
    # LiteRT runs dense int8 FULLY_CONNECTED through ruy, which rounds ties up.
    scale = multiply_by_quantized_multiplier if p.round_away else multiply_by_quantized_multiplier_half_up
    if p.single_rounding and rounds_once("single", rows.shape[0], p.weights.shape[0], p.depth):
        scale = multiply_by_quantized_multiplier_single
    out = scale(acc, p.multiplier, p.shift) + p.output_offset
    out = clamp_to(out, p.act_min, p.act_max)
    return out.reshape((batch, *p.out_shape))


def native_kind(p: FullyConnectedParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_FULLY_CONNECTED


def matmul_weights(p: FullyConnectedParams) -> np.ndarray:
    """The [out_c, depth] matrix the op multiplies by: what a sparse layout would store."""
    return p.weights


def pack(p: FullyConnectedParams, variant: int, layout=None) -> dict:
    from edged.runtime.gemm import pack_weights

    shared = pack_weights(p.weights, p.bias, p.input_offset, variant, layout)
    shared.update(multiplier=p.multiplier, shift=p.shift)
    return shared


def describe(p: FullyConnectedParams, d, shared: dict) -> list:
    from edged.runtime.kernels import address, lib

    d.in_h = d.in_stride[0] // p.depth  # rows per sample
    d.in_c = p.depth
    d.out_c = p.weights.shape[0]
    d.weights = address(shared["packed"])
    d.weight_format = shared["weight_format"]
    d.mode = lib.EDGED_ROUND_AWAY if p.round_away else lib.EDGED_ROUND_UP
    if p.single_rounding:
        d.mode = lib.EDGED_ROUND_SINGLE
    describe_requantization(p, d, shared)
    return []
