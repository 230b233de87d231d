"""Sparse constants behind TFLite's DENSIFY operator, so LiteRT runs any sparse layout.

LiteRT's kernels read a sparse weight in one case only: the int8
FULLY_CONNECTED kernel, with 1x16 blocks along the input depth. Any other
layout makes its FULLY_CONNECTED fail ("Unsupported sparse fully-connected
weight format") and its CONV_2D silently read the value buffer as if it were
dense. TFLite's own answer is the DENSIFY operator: it decodes a sparse
constant once, at the first run, and the consuming kernel sees a dense
tensor (`python bench/sparse_storage.py` measures both).

edged keeps every weight dense in memory, so the graph IR has no use for
DENSIFY: the reader folds it away (:func:`fold_densify`), keeping the sparse
layout on the constant, and the writer puts it back in front of every sparse
constant LiteRT cannot read directly (:func:`with_densify_ops`). Which
constants those are is decided by one rule, :func:`runs_sparse_in_litert`,
which also tells the native FULLY_CONNECTED which of LiteRT's two rounding
paths (sparse kernel or dense) to follow.
"""

from __future__ import annotations

import copy
import dataclasses

from edged.model.ir import Graph, Operator, Tensor
from edged.sparse.tflite_encoding import _fc_problem

DENSIFY = "DENSIFY"


def runs_sparse_in_litert(graph: Graph, index: int, consumers: dict[int, list[int]] | None = None) -> bool:
    """True if tensor ``index`` is stored sparse in a layout LiteRT's sparse int8
    FULLY_CONNECTED kernel reads directly (1x16 blocks), by every operator reading it."""
    t = graph.tensors[index]
    if t.sparsity is None or not t.is_constant or not t.sparsity.is_fc_block_1x16:
        return False
    consumers = graph.consumers() if consumers is None else consumers
    readers = consumers.get(index, [])
    return bool(readers) and all(
        graph.operators[r].opcode == "FULLY_CONNECTED"
        and graph.operators[r].inputs[1] == index
        and _fc_problem(graph, r, consumers) is None
        for r in readers
    )


def fold_densify(graph: Graph) -> int:
    """Replace DENSIFY of a constant by the constant itself, in place; returns how many were folded.

    The constant keeps its sparse layout (the writer stores it so again),
    except where LiteRT would read that layout directly: there the file had
    LiteRT densify a tensor its sparse kernel could have read, i.e. run the
    dense kernel and its rounding, so the constant is kept dense to match.
    """
    folded: list[int] = []
    outputs = set(graph.outputs)
    for op in list(graph.operators):
        if op.opcode != DENSIFY or len(op.inputs) != 1 or len(op.outputs) != 1:
            continue
        src, dst = op.inputs[0], op.outputs[0]
        if src < 0 or not graph.tensors[src].is_constant or dst in outputs:
            continue
        graph.operators.remove(op)
        for other in graph.operators:
            other.inputs = [src if t == dst else t for t in other.inputs]
        folded.append(src)
    if folded:
        consumers = graph.consumers()
        for i in folded:
            if runs_sparse_in_litert(graph, i, consumers):
                graph.tensors[i].sparsity = None
        graph.drop_unused_tensors()
    return len(folded)


def with_densify_ops(graph: Graph) -> Graph:
    """``graph`` with a DENSIFY in front of each sparse constant LiteRT cannot read directly.

    Returns ``graph`` itself when there is none; otherwise a copy (the tensors
    and operators that change are copied, constant data is shared).
    """
    consumers = graph.consumers()
    behind = [
        i for i, t in enumerate(graph.tensors)
        if t.sparsity is not None and t.is_constant and consumers.get(i)
        and not runs_sparse_in_litert(graph, i, consumers)
    ]
    if not behind:
        return graph
    out = copy.copy(graph)
    out.tensors = list(graph.tensors)
    out.operators = [dataclasses.replace(op, inputs=list(op.inputs)) for op in graph.operators]
    densify_ops = []
    for i in behind:
        t = graph.tensors[i]
        dense = out.add_tensor(Tensor(f"{t.name}/densified", t.dtype, t.shape, copy.deepcopy(t.quant),
                                      shape_signature=t.shape_signature))
        for op in out.operators:
            op.inputs = [dense if x == i else x for x in op.inputs]
        densify_ops.append(Operator(DENSIFY, [i], [dense], options_type="DensifyOptions"))
    # A DENSIFY reads only a constant, so it can run first.
    out.operators = densify_ops + out.operators
    return out
