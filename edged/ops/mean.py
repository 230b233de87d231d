"""MEAN of an int8 tensor over some of its axes.

Two LiteRT paths are reproduced: the optimized one (NHWC, axes H and W,
keep_dims) with float-derived bias and multiplier, SIMD blocks of 16 channels
rounding ties up; and the reference one for every other case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import (
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_half_up,
    quantize_multiplier,
    vector_body,
)
from edged.ops.base import OpContext, OutputType

OPCODES = ("MEAN",)
BLOCK = 16


@dataclass
class MeanParams:
    optimized: bool
    axes: tuple[int, ...]  # resolved, of the full shape (batch axis 0 never reduced)
    in_shape: tuple[int, ...]  # per sample
    count: int  # elements reduced into each output
    multiplier: int
    shift: int
    bias: int  # optimized path: added after scaling
    input_zero_point: int
    output_zero_point: int
    out_shape: tuple[int, ...]  # per sample


def infer_output(ctx: OpContext) -> OutputType:
    x, axes = ctx.input(0), ctx.input(1)
    if x is None or axes is None or not axes.is_constant or axes.dtype.kind not in "iu":
        raise ctx.malformed("reduction axes must be a constant integer tensor")
    rank = len(x.shape)
    values = [int(a) for a in axes.data.reshape(-1)]
    if not values or any(not -rank <= a < rank for a in values):
        raise ctx.malformed(f"axes {values} are not axes of a rank-{rank} tensor")
    reduced = {a % rank for a in values}
    if ctx.op.options.get("keep_dims", False):
        shape = tuple(1 if a in reduced else d for a, d in enumerate(x.shape))
    else:
        shape = tuple(d for a, d in enumerate(x.shape) if a not in reduced)
    return OutputType.of(shape, x.dtype)


def prepare(ctx: OpContext) -> MeanParams:
    x, axes, y = ctx.input(0), ctx.input(1), ctx.output()
    ctx.require_int8(x, y)
    if axes is None or not axes.is_constant:
        raise ctx.fail("reduction axes must be constant")
    rank = len(x.shape)
    resolved = tuple(sorted({int(a) + rank if int(a) < 0 else int(a) for a in axes.data.reshape(-1)}))
    if not resolved or any(not 1 <= a < rank for a in resolved):
        raise ctx.fail(
            f"MEAN over axes {list(resolved)} of a rank-{rank} tensor (the batch axis cannot be reduced)"
        )
    in_scale, in_zp = ctx.scale_zp(x)
    out_scale, out_zp = ctx.scale_zp(y)
    count = int(np.prod([x.shape[a] for a in resolved]))
    keep_dims = bool(ctx.op.options.get("keep_dims", False))
    optimized = keep_dims and rank == 4 and resolved == (1, 2)
    f32 = np.float32
    if optimized:
        # optimized_integer_ops::Mean: float bias rounded half away, float scale.
        temp = f32(f32(in_zp) * f32(in_scale)) / f32(out_scale)
        temp = temp + f32(0.5) if temp > 0 else temp - f32(0.5)
        bias = out_zp - int(temp)
        real_scale = f32(in_scale) / f32(f32(count) * f32(out_scale))
        mult, shift = quantize_multiplier(float(real_scale))
    else:
        # QuantizedMeanOrSum: fold 1/count into the multiplier by integer division.
        base_mult, base_shift = quantize_multiplier(float(f32(in_scale)) / float(f32(out_scale)))
        shift_n = min(count.bit_length() - 1, 32, 31 + base_shift)
        mult = (base_mult << shift_n) // count
        shift = base_shift - shift_n
        bias = 0
    return MeanParams(
        optimized=optimized,
        axes=resolved,
        in_shape=x.shape[1:],
        count=count,
        multiplier=int(mult),
        shift=int(shift),
        bias=bias,
        input_zero_point=in_zp,
        output_zero_point=out_zp,
        out_shape=y.shape[1:],
    )


def reference(p: MeanParams, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.int64)
    total = x.sum(axis=p.axes)
    if p.optimized:
        # total: [batch, channels]
        body = vector_body(total.shape[-1], BLOCK)
        out = multiply_by_quantized_multiplier_half_up(total, p.multiplier, p.shift)
        out[:, body:] = multiply_by_quantized_multiplier(total[:, body:], p.multiplier, p.shift)
        out = out + p.bias
    else:
        out = multiply_by_quantized_multiplier(total - p.input_zero_point * p.count, p.multiplier, p.shift)
        out = out + p.output_zero_point
    return np.clip(out, -128, 127).astype(np.int8).reshape((x.shape[0], *p.out_shape))


def _view(p: MeanParams) -> tuple[int, int, int] | None:
    """(outer, reduced, inner) per-sample view, if the reduced axes are contiguous."""
    first, last = p.axes[0], p.axes[-1]
    if list(p.axes) != list(range(first, last + 1)):
        return None
    dims = (1, *p.in_shape)  # index by full-shape axis
    prod = lambda axes: int(np.prod([dims[a] for a in axes], dtype=np.int64))  # noqa: E731
    return prod(range(1, first)), prod(range(first, last + 1)), prod(range(last + 1, len(dims)))


def native_kind(p: MeanParams) -> int | None:
    from edged.runtime.kernels import lib

    # Non-contiguous reductions (e.g. axes 1 and 3) run the reference.
    return lib.EDGED_OP_MEAN if _view(p) is not None else None


def describe(p: MeanParams, d, shared: dict) -> list:
    from edged.runtime.kernels import lib

    outer, reduced, inner = _view(p)
    d.outer, d.in_h, d.in_w, d.in_c, d.out_c = outer, reduced, 1, inner, inner
    d.multiplier, d.shift = p.multiplier, p.shift
    if p.optimized:
        d.mode = lib.EDGED_MEAN_OPTIMIZED
        d.output_offset = p.bias
    else:
        d.mode = lib.EDGED_MEAN_REFERENCE
        d.input_offset = -p.input_zero_point
        d.output_offset = p.output_zero_point
    return []
