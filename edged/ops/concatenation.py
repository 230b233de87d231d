"""CONCATENATION of int8 tensors that share the output's quantization."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.ops.base import OpContext, OutputType

OPCODES = ("CONCATENATION",)
MAX_INPUTS = 8


@dataclass
class ConcatParams:
    axis: int  # of the full shape, batch axis included (>= 1)
    out_shape: tuple[int, ...]
    axis_sizes: tuple[int, ...]


def infer_output(ctx: OpContext) -> OutputType:
    inputs = [ctx.input(k) for k in range(len(ctx.op.inputs))]
    if not inputs or any(t is None for t in inputs):
        raise ctx.malformed("an input is missing")
    first = inputs[0]
    rank = len(first.shape)
    axis = ctx.option("axis", 0, -rank, rank - 1) % rank
    for t in inputs:
        if t.dtype != first.dtype or len(t.shape) != rank:
            raise ctx.malformed(f"input '{t.name}' {t.dtype} {list(t.shape)} does not stack on "
                                f"'{first.name}' {first.dtype} {list(first.shape)}")
        if any(d != e for k, (d, e) in enumerate(zip(t.shape, first.shape, strict=True)) if k != axis):
            raise ctx.malformed(f"input '{t.name}' {list(t.shape)} differs from {list(first.shape)} "
                                f"off the concatenation axis {axis}")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in inputs)
    return OutputType.of(shape, first.dtype)


def prepare(ctx: OpContext) -> ConcatParams:
    inputs = [ctx.input(k) for k in range(len(ctx.op.inputs))]
    y = ctx.output()
    ctx.require_int8(*inputs, y)
    if not 1 <= len(inputs) <= MAX_INPUTS:
        raise ctx.fail(f"{len(inputs)} inputs; the native engine concatenates up to {MAX_INPUTS}")
    if ctx.op.fused_activation != "NONE":
        raise ctx.fail("fused activations on CONCATENATION are not supported")
    out_q = ctx.scale_zp(y)
    for t in inputs:
        # TFLite's int8 CONCATENATION copies bytes; the converter gives every
        # input the output's scale and zero point.
        if ctx.scale_zp(t) != out_q:
            raise ctx.fail(f"input '{t.name}' is quantized differently from the output")
        if t.is_constant:
            raise ctx.fail("constant inputs to CONCATENATION are not supported")
    rank = len(y.shape)
    axis = int(ctx.op.options.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis < rank:
        raise ctx.fail(f"concatenation axis {axis} must not be the batch axis")
    return ConcatParams(axis=axis, out_shape=y.shape, axis_sizes=tuple(t.shape[axis] for t in inputs))


def reference(p: ConcatParams, inputs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(inputs, axis=p.axis)


def native_kind(p: ConcatParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_CONCATENATION


def describe(p: ConcatParams, d, shared: dict) -> list:
    # Per sample, the output is (outer, sum(axis_sizes), inner).
    d.outer = int(np.prod(p.out_shape[1 : p.axis]))
    d.inner = int(np.prod(p.out_shape[p.axis + 1 :]))
    for k, size in enumerate(p.axis_sizes):
        d.axis_size[k] = size
    return []
