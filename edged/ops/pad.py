"""PAD of an int8 tensor; padded cells hold the quantized zero."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.ops.base import OpContext, OutputType

OPCODES = ("PAD",)


@dataclass
class PadParams:
    paddings: tuple[tuple[int, int], ...]  # per axis, batch axis included
    value: int
    in_shape: tuple[int, ...]


def infer_output(ctx: OpContext) -> OutputType:
    x, pads = ctx.input(0), ctx.input(1)
    if x is None or pads is None or not pads.is_constant or pads.dtype.kind not in "iu":
        raise ctx.malformed("paddings must be a constant integer tensor")
    if pads.shape != (len(x.shape), 2):
        raise ctx.malformed(f"paddings {list(pads.shape)} must be [{len(x.shape)}, 2] for the input's rank")
    paddings = [(int(a), int(b)) for a, b in pads.data.reshape(-1, 2)]
    if any(a < 0 or b < 0 for a, b in paddings):
        raise ctx.malformed(f"negative paddings {paddings}")
    return OutputType.of([d + a + b for d, (a, b) in zip(x.shape, paddings, strict=True)], x.dtype)


def prepare(ctx: OpContext) -> PadParams:
    x, pads, y = ctx.input(0), ctx.input(1), ctx.output()
    ctx.require_int8(x, y)
    if ctx.scale_zp(x) != ctx.scale_zp(y):
        raise ctx.fail("input and output quantization must be equal for PAD")
    if pads is None or not pads.is_constant or pads.shape != (len(x.shape), 2):
        raise ctx.fail("paddings must be a constant [rank, 2] tensor")
    paddings = tuple((int(a), int(b)) for a, b in pads.data.reshape(-1, 2))
    if paddings[0] != (0, 0):
        raise ctx.fail("padding the batch axis is not supported")
    if any(a < 0 or b < 0 for a, b in paddings):
        raise ctx.fail("negative paddings are not supported")
    expected = tuple(d + a + b for d, (a, b) in zip(x.shape, paddings, strict=True))
    if expected != y.shape:
        raise ctx.fail(f"output shape {list(y.shape)} does not match padded shape {list(expected)}")
    return PadParams(paddings=paddings, value=ctx.scale_zp(y)[1], in_shape=x.shape)


def reference(p: PadParams, inputs: list[np.ndarray]) -> np.ndarray:
    return np.pad(inputs[0], p.paddings, mode="constant", constant_values=p.value)


def native_kind(p: PadParams) -> int | None:
    from edged.runtime.kernels import lib

    # The C kernel pads per-sample (h, w, c) views: rank 4 NHWC, or lower ranks right-aligned.
    return lib.EDGED_OP_PAD if len(p.paddings) <= 4 else None


def describe(p: PadParams, d, shared: dict) -> list:
    per_sample = list(p.paddings[1:])
    in_shape = list(p.in_shape[1:])
    while len(per_sample) < 3:  # right-align to (h, w, c)
        per_sample.insert(0, (0, 0))
        in_shape.insert(0, 1)
    d.in_h, d.in_w, d.in_c = in_shape
    for k, (before, after) in enumerate(per_sample):
        d.pad_before[k], d.pad_after[k] = before, after
    d.out_h, d.out_w, d.out_c = (s + a + b for s, (a, b) in zip(in_shape, per_sample, strict=True))
    d.output_offset = p.value
    return []
