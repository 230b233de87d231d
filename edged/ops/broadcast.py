"""Two-operand broadcasting (MUL, ADD) as LiteRT's optimized int8 kernels lay it out.

LiteRT classifies the two shapes (ProcessBroadcastShapes): equal shapes run
as one flat loop, other broadcasts as a "fivefold" nest of loops over runs of
contiguous output: runs of y4 elements, or, when the innermost axis is the
broadcast one (y4 = 1), runs of y3 against one broadcast value. Each run
computes its first n - n % block elements in SIMD form and the rest in the
scalar reference form, which round differently. Shapes the fivefold nest
cannot express take LiteRT's slow generic path and are refused. The batch
takes part in the shapes, so the runs are computed for the batch actually run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.ir import Tensor
from edged.ops.base import OpContext, OutputType

MAX_RANK = 6
NON_BROADCAST, FIVEFOLD, GENERIC = "non-broadcast", "fivefold", "generic"


@dataclass
class Broadcast:
    """The two operands: activations first, a constant last (both ops commute)."""

    shapes: tuple[tuple[int, ...], tuple[int, ...]]  # padded to the output rank, at batch 1
    batched: tuple[bool, bool]  # the operand's leading extent is the batch
    constant: np.ndarray | None  # the second operand's data, if it is a constant

    def full_shape(self, k: int, batch: int) -> tuple[int, ...]:
        shape = self.shapes[k]
        return (shape[0] * batch, *shape[1:]) if self.batched[k] else shape

    def operands(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The two operands at the inputs' batch, as int64 arrays that broadcast."""
        batch = inputs[0].shape[0]
        values = [inputs[0], inputs[1] if self.constant is None else self.constant]
        return tuple(v.reshape(self.full_shape(k, batch)).astype(np.int64) for k, v in enumerate(values))

    def runs(self, batch: int) -> tuple[int, bool]:
        """(run length, whether a run is a scalar broadcast) at ``batch``."""
        _, run, scalar = broadcast_runs(self.full_shape(0, batch), self.full_shape(1, batch))
        return run, scalar


def _axis_fits(rule: str, da: int, db: int) -> bool:
    if rule == "same":
        return da == db
    return da == 1 if rule == "a_is_1" else db == 1


def broadcast_runs(shape0: tuple[int, ...], shape1: tuple[int, ...]) -> tuple[str, int, bool]:
    """LiteRT's ProcessBroadcastShapes for two same-rank shapes: (category, run length,
    scalar broadcast). A run is the whole tensor, y4 elements, or y3 when y4 is 1."""
    if tuple(shape0) == tuple(shape1):
        return NON_BROADCAST, int(np.prod(shape0, dtype=np.int64)), False
    first_fast = None
    for d0, d1 in zip(reversed(shape0), reversed(shape1), strict=True):
        if d0 == d1:
            continue
        if d0 == 1 or d1 == 1:
            first_fast = d0 == 1
            break
        return GENERIC, 0, False
    a, b = (shape0, shape1) if first_fast else (shape1, shape0)  # a is the broadcast one
    y = [1, 1, 1, 1, 1]
    i = len(a) - 1
    # Innermost first: y4 shared, y3 broadcast in a, y2 shared, y1 broadcast in b, y0 shared.
    for slot, rule in ((4, "same"), (3, "a_is_1"), (2, "same"), (1, "b_is_1"), (0, "same")):
        while i >= 0 and _axis_fits(rule, a[i], b[i]):
            y[slot] *= max(a[i], b[i])
            i -= 1
    if i >= 0:
        return GENERIC, 0, False
    return (FIVEFOLD, y[4], False) if y[4] > 1 else (FIVEFOLD, y[3], True)


def infer_output(ctx: OpContext) -> OutputType:
    """``infer_output`` of a two-operand elementwise op: the broadcast of its operands' shapes."""
    opcode = ctx.op.opcode
    if len(ctx.op.inputs) != 2 or ctx.input(0) is None or ctx.input(1) is None:
        raise ctx.malformed(f"{opcode} takes exactly two inputs")
    a, b = ctx.input(0), ctx.input(1)
    if a.dtype != b.dtype:
        raise ctx.malformed(f"{opcode} inputs are {a.dtype} and {b.dtype}")
    if max(len(a.shape), len(b.shape)) > MAX_RANK:
        raise ctx.fail(f"{opcode} of rank above {MAX_RANK}")
    try:
        shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    except ValueError as exc:
        raise ctx.malformed(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from exc
    return OutputType.of(shape, a.dtype)


def prepare_operands(ctx: OpContext) -> tuple[tuple[Tensor, Tensor], Broadcast]:
    """Check a two-input int8 op's operands and output; (operands in Broadcast order, Broadcast)."""
    opcode = ctx.op.opcode
    if len(ctx.op.inputs) != 2 or ctx.input(0) is None or ctx.input(1) is None:
        raise ctx.fail(f"{opcode} takes exactly two inputs")
    a, b, y = ctx.input(0), ctx.input(1), ctx.output()
    ctx.require_int8(a, b, y)
    operands = tuple(sorted((a, b), key=lambda t: t.is_constant))
    if operands[0].is_constant:
        raise ctx.fail(f"{opcode} of two constants is not supported")
    rank = len(y.shape)
    if not 1 <= rank <= MAX_RANK or any(len(t.shape) > rank for t in operands):
        raise ctx.fail(f"{opcode} of shapes {list(a.shape)} and {list(b.shape)} to {list(y.shape)}")
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
    constant = None if operands[1].data is None else operands[1].data.reshape(shapes[1])
    layout = Broadcast(shapes, batched, constant)
    for batch in (1, 2):  # every larger batch classifies like 2
        if broadcast_runs(layout.full_shape(0, batch), layout.full_shape(1, batch))[0] == GENERIC:
            raise ctx.fail(f"broadcasting {list(a.shape)} and {list(b.shape)} takes LiteRT's generic path")
    return operands, layout


def body_mask(layout: Broadcast, batch: int, out_shape: tuple[int, ...], block: int, scalar_block: int
              ) -> tuple[np.ndarray, bool]:
    """Which output elements a run's SIMD body computes, and whether runs are scalar broadcasts."""
    run, scalar = layout.runs(batch)
    b = scalar_block if scalar else block
    position = np.arange(int(np.prod(out_shape, dtype=np.int64))).reshape(out_shape) % max(run, 1)
    return position < run - run % b, scalar


def pack(layout: Broadcast | None) -> dict:
    if layout is None or layout.constant is None:
        return {}
    return {"constant": np.ascontiguousarray(layout.constant, dtype=np.int8)}


def describe(layout: Broadcast, d, shared: dict) -> None:
    """The descriptor's operand fields (kernels/ref/broadcast.c)."""
    from edged.runtime.kernels import ffi

    if layout.constant is not None:
        getattr(d, "in")[1] = ffi.cast("void *", shared["constant"].ctypes.data)
        d.in_stride[1] = 0
        d.n_in = 2
    for k in range(2):
        d.bcast_batched[k] = int(layout.batched[k])
        for axis, extent in enumerate(layout.shapes[k]):
            d.bcast_shape[k][axis] = extent
    d.bcast_rank = len(layout.shapes[0])
