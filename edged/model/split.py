"""Load-time rewrite of SPLIT and SPLIT_V into one SLICE per output.

The native engine runs single-output operators; a split is one slice per
output (LiteRT copies the values, without requantizing), so each becomes a
SLICE of its input along the split axis, at the split's place in the graph.
The split itself is checked first, so a bad one is named as what the file
holds: ``operator #i (SPLIT)``. Returns, per operator after the rewrite, the
index it had before, for messages about the rewritten graph.
"""

from __future__ import annotations

import numpy as np

from edged.model.ir import Graph, Operator, Tensor
from edged.ops.base import OpContext

SPLIT_OPCODES = ("SPLIT", "SPLIT_V")


def _scalar_axis(ctx: OpContext, k: int, rank: int) -> int:
    t = ctx.input(k)
    if t is None or not t.is_constant or t.dtype != np.int32 or t.size != 1:
        raise ctx.fail("the split axis must be a constant int32 scalar")
    axis = int(np.asarray(t.data).reshape(-1)[0])
    if not -rank <= axis < rank:
        raise ctx.malformed(f"axis {axis} is outside the input's {rank} axes")
    return axis + rank if axis < 0 else axis


def _parts(ctx: OpContext) -> tuple[int, list[int]]:
    """(axis, extent of every output along it), checked against the file."""
    op = ctx.op
    data_k = 1 if op.opcode == "SPLIT" else 0
    x = ctx.input(data_k)
    if x is None or len(op.inputs) != (2 if op.opcode == "SPLIT" else 3):
        raise ctx.malformed(f"{op.opcode} has {len(op.inputs)} inputs")
    ctx.require_int8(x, *(ctx.output(k) for k in range(len(op.outputs))))
    if x.is_constant:
        raise ctx.fail("splitting a constant is not supported")
    axis = _scalar_axis(ctx, 0 if op.opcode == "SPLIT" else 2, len(x.shape))
    if axis == 0:
        raise ctx.fail("the split is along the batch axis")
    n = ctx.option("num_splits", len(op.outputs), 1)
    if n != len(op.outputs):
        raise ctx.malformed(f"num_splits {n} but {len(op.outputs)} outputs")
    dim = x.shape[axis]
    if op.opcode == "SPLIT":
        if dim % n:
            raise ctx.malformed(f"axis {axis} ({dim}) does not split into {n} equal parts")
        sizes = [dim // n] * n
    else:
        t = ctx.input(1)
        if t is None or not t.is_constant or t.dtype not in (np.int32, np.int64) or t.size != n:
            raise ctx.fail("size_splits must be a constant integer vector, one entry per output")
        sizes = [int(v) for v in np.asarray(t.data).reshape(-1)]
        if sizes.count(-1) == 1:
            sizes[sizes.index(-1)] = dim - (sum(sizes) + 1)
        if any(s < 0 for s in sizes) or sum(sizes) != dim:
            raise ctx.malformed(f"size_splits {sizes} do not add up to axis {axis} ({dim})")
    for k, size in enumerate(sizes):
        expected = (*x.shape[:axis], size, *x.shape[axis + 1 :])
        if ctx.output(k).shape != expected:
            raise ctx.malformed(f"output {k} is declared {list(ctx.output(k).shape)}, not {list(expected)}")
        if size == 0:
            raise ctx.fail(f"output {k} is empty")
    return axis, sizes


def expand_splits(graph: Graph, model: str) -> list[int]:
    """Rewrite every SPLIT / SPLIT_V of ``graph`` in place; the pre-rewrite index of every operator."""
    operators: list[Operator] = []
    origin: list[int] = []
    for i, op in enumerate(graph.operators):
        if op.opcode not in SPLIT_OPCODES:
            operators.append(op)
            origin.append(i)
            continue
        ctx = OpContext(graph, op, i, model)
        axis, sizes = _parts(ctx)
        x = op.inputs[1 if op.opcode == "SPLIT" else 0]
        rank = len(graph.tensors[x].shape)
        offset = 0
        for k, size in enumerate(sizes):
            begin, extent = [0] * rank, [-1] * rank
            begin[axis], extent[axis] = offset, size
            name = f"{graph.tensors[op.outputs[k]].name}/split"
            b = graph.add_tensor(Tensor(f"{name}/begin", np.int32, (rank,), data=np.array(begin, np.int32)))
            s = graph.add_tensor(Tensor(f"{name}/size", np.int32, (rank,), data=np.array(extent, np.int32)))
            operators.append(Operator("SLICE", [x, b, s], [op.outputs[k]], version=2))
            origin.append(i)
            offset += size
    graph.operators = operators
    return origin
