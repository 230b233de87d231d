"""MUL of two int8 tensors, with broadcasting, as LiteRT's optimized int8 kernel runs it.

LiteRT classifies the two shapes (ProcessBroadcastShapes): equal shapes run
as one flat loop, other broadcasts as a "fivefold" nest of loops over runs of
contiguous output (runs of y4 elements, or of y3 when the innermost axis is
the broadcast one). Each run computes its first len - len % 16 elements in the
NEON(-on-SSE) form and the rest in the scalar reference form, which round and
saturate differently. Shapes the fivefold nest cannot express take LiteRT's
slow generic path and are refused here. The batch takes part in the shapes,
so the runs are computed for the batch actually run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.quant import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    srdhm_half_up,
    wrap_int32,
)
from edged.ops.base import OpContext

OPCODES = ("MUL",)
BLOCK = 16
MAX_RANK = 6

NON_BROADCAST, FIVEFOLD, GENERIC = "non-broadcast", "fivefold", "generic"


@dataclass
class MulParams:
    offsets: tuple[int, int]  # -zero point of each operand: activations first, a constant last
    output_offset: int
    multiplier: int
    shift: int
    act_min: int
    act_max: int
    shapes: tuple[tuple[int, ...], tuple[int, ...]]  # each operand padded to the output rank, batch 1
    batched: tuple[bool, bool]  # the operand's leading extent is the batch
    constant: np.ndarray | None  # the constant operand (second), if any


def broadcast_runs(shape0: tuple[int, ...], shape1: tuple[int, ...]) -> tuple[str, int]:
    """LiteRT's ProcessBroadcastShapes for two same-rank shapes: (category, run length).

    The run length is how many contiguous output elements one inner call
    computes: the whole tensor, y4, or y3 when y4 is 1.
    """
    if tuple(shape0) == tuple(shape1):
        return NON_BROADCAST, int(np.prod(shape0, dtype=np.int64))
    first_fast = None
    for d0, d1 in zip(reversed(shape0), reversed(shape1), strict=True):
        if d0 == d1:
            continue
        if d0 == 1 or d1 == 1:
            first_fast = d0 == 1
            break
        return GENERIC, 0
    a, b = (shape0, shape1) if first_fast else (shape1, shape0)  # a is the broadcast one
    y = [1, 1, 1, 1, 1]
    i = len(a) - 1
    # Innermost first: y4 shared, y3 broadcast in a, y2 shared, y1 broadcast in b, y0 shared.
    for slot, rule in ((4, "same"), (3, "a_is_1"), (2, "same"), (1, "b_is_1"), (0, "same")):
        while i >= 0 and _axis_fits(rule, a[i], b[i]):
            y[slot] *= max(a[i], b[i])
            i -= 1
    if i >= 0:
        return GENERIC, 0
    return FIVEFOLD, y[4] if y[4] > 1 else y[3]


def _axis_fits(rule: str, da: int, db: int) -> bool:
    if rule == "same":
        return da == db
    return da == 1 if rule == "a_is_1" else db == 1


def _full_shape(p: MulParams, k: int, batch: int) -> tuple[int, ...]:
    shape = p.shapes[k]
    return (shape[0] * batch, *shape[1:]) if p.batched[k] else shape


def prepare(ctx: OpContext) -> MulParams:
    if len(ctx.op.inputs) != 2 or ctx.input(0) is None or ctx.input(1) is None:
        raise ctx.fail("MUL takes exactly two inputs")
    a, b, y = ctx.input(0), ctx.input(1), ctx.output()
    ctx.require_int8(a, b, y)
    operands = sorted((a, b), key=lambda t: t.is_constant)  # the product commutes
    if operands[0].is_constant:
        raise ctx.fail("MUL of two constants is not supported")
    rank = len(y.shape)
    if not 1 <= rank <= MAX_RANK or any(len(t.shape) > rank for t in operands):
        raise ctx.fail(f"MUL of shapes {list(a.shape)} x {list(b.shape)} to {list(y.shape)}")
    shapes = tuple((1,) * (rank - len(t.shape)) + tuple(t.shape) for t in operands)
    batched = tuple(not t.is_constant for t in operands)
    for t, shape, is_batched in zip(operands, shapes, batched, strict=True):
        if shape[0] != 1 or (is_batched and len(t.shape) != rank):
            raise ctx.fail(f"operand '{t.name}' {list(t.shape)} does not share the output's batch axis")
    try:
        broadcast = np.broadcast_shapes(*shapes)
    except ValueError as exc:
        raise ctx.fail(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from exc
    if tuple(broadcast) != tuple(y.shape):
        raise ctx.fail(f"output shape {list(y.shape)} is not the broadcast shape {list(broadcast)}")
    (sa, za), (sb, zb) = (ctx.scale_zp(t) for t in operands)
    so, zo = ctx.scale_zp(y)
    params = MulParams(
        offsets=(-za, -zb),
        output_offset=zo,
        # mul.cc: input1 scale * input2 scale / output scale, in float.
        multiplier=0,
        shift=0,
        act_min=0,
        act_max=0,
        shapes=shapes,
        batched=batched,
        constant=None if operands[1].data is None else operands[1].data.reshape(shapes[1]),
    )
    for batch in (1, 2):
        if broadcast_runs(_full_shape(params, 0, batch), _full_shape(params, 1, batch))[0] == GENERIC:
            raise ctx.fail(f"broadcasting {list(a.shape)} x {list(b.shape)} takes LiteRT's generic path")
    params.multiplier, params.shift = quantize_multiplier(
        float(np.float32(sa) * np.float32(sb) / np.float32(so))
    )
    params.act_min, params.act_max = ctx.activation(y)
    return params


def _vector_form(p: MulParams, product: np.ndarray) -> np.ndarray:
    left, right = max(p.shift, 0), max(-p.shift, 0)
    scaled = rounding_divide_by_pot(srdhm_half_up(wrap_int32(product << left), p.multiplier), right)
    narrowed = np.clip(scaled, -(2**15), 2**15 - 1)  # vqmovn_s32
    offset = ((narrowed + p.output_offset + 2**15) % 2**16) - 2**15  # int16 add wraps
    return np.clip(offset, -128, 127)


def _reference_form(p: MulParams, product: np.ndarray) -> np.ndarray:
    return wrap_int32(multiply_by_quantized_multiplier(product, p.multiplier, p.shift) + p.output_offset)


def reference(p: MulParams, inputs: list[np.ndarray]) -> np.ndarray:
    batch = inputs[0].shape[0]
    operands = [inputs[0], inputs[1] if p.constant is None else p.constant]
    full = [_full_shape(p, k, batch) for k in range(2)]
    x0, x1 = (x.reshape(shape).astype(np.int64) + p.offsets[k] for k, (x, shape) in enumerate(
        zip(operands, full, strict=True)))
    product = x0 * x1
    _, run = broadcast_runs(full[0], full[1])
    position = np.arange(product.size).reshape(product.shape) % max(run, 1)
    in_body = position < run - run % BLOCK
    out = np.where(in_body, _vector_form(p, product), _reference_form(p, product))
    return np.clip(out, p.act_min, p.act_max).astype(np.int8).reshape((batch, *product.shape[1:]))


def native_kind(p: MulParams) -> int:
    from edged.runtime.kernels import lib

    return lib.EDGED_OP_MUL


def pack(p: MulParams, variant: int) -> dict:
    return {} if p.constant is None else {"constant": np.ascontiguousarray(p.constant, dtype=np.int8)}


def describe(p: MulParams, d, shared: dict) -> list:
    from edged.runtime.kernels import ffi

    if p.constant is not None:
        getattr(d, "in")[1] = ffi.cast("void *", shared["constant"].ctypes.data)
        d.in_stride[1] = 0
        d.n_in = 2
    for k in range(2):
        d.in_offset[k] = p.offsets[k]
        d.bcast_batched[k] = int(p.batched[k])
        for axis, extent in enumerate(p.shapes[k]):
            d.bcast_shape[k][axis] = extent
    d.bcast_rank = len(p.shapes[0])
    d.multiplier, d.shift = p.multiplier, p.shift
    d.output_offset = p.output_offset
    d.act_min, d.act_max = p.act_min, p.act_max
    return []
