"""Graph -> prepared steps: each op checked and its parameters computed once.

Shared by the reference engine and the native planner so that both run from
the very same multipliers, shifts and tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edged.errors import EdgedError, UnsupportedModelError, UnsupportedOpError
from edged.model.fold import EVALUATORS, fold_shapes
from edged.model.ir import Graph
from edged.model.rounding import resolve_rounding
from edged.model.split import SPLIT_OPCODES, expand_splits
from edged.ops import OPS
from edged.ops.base import OpContext, check_op
from edged.runtime.validate import check_graph


@dataclass
class Step:
    index: int
    opcode: str
    module: ModuleType
    params: Any
    activation_inputs: list[int]  # non-constant input tensors, in op order
    output: int


@dataclass
class PreparedGraph:
    graph: Graph
    steps: list[Step]


def op_key(op) -> str:
    """What an operator module is registered under: the builtin name, or a custom op's code."""
    return op.custom_code if op.opcode == "CUSTOM" and op.custom_code else op.opcode


def prepare_graph(graph: Graph, model: str = "<model>", rounding: str = "auto") -> PreparedGraph:
    """Check every op is supported and consistent, and prepare it; raise a precise EdgedError otherwise.

    Shape arithmetic left in the graph is folded first, and splits become slices
    (both in place), or explained. ``rounding`` is the requantization rounding of
    FC/CONV (edged.model.rounding)."""
    try:
        rounding = resolve_rounding(rounding)
    except ValueError as exc:
        raise EdgedError(str(exc)) from exc
    # An unsupported op is named before any shape arithmetic it may block is explained.
    rewritten = {"SHAPE", *EVALUATORS, *SPLIT_OPCODES}
    for i, op in enumerate(graph.operators):
        if op_key(op) not in OPS and op.opcode not in rewritten:
            raise UnsupportedOpError(op_key(op), i, model)
    fold_shapes(graph, model, strict=True)
    for i, op in enumerate(graph.operators):
        if op_key(op) not in OPS and op.opcode not in SPLIT_OPCODES:
            raise UnsupportedOpError(op_key(op), i, model)
    check_graph(graph, model)
    origin = expand_splits(graph, model)
    if len(graph.inputs) < 1:
        raise UnsupportedModelError(f"{model}: the graph has no inputs")
    for t in graph.input_tensors + graph.output_tensors:
        if not t.shape or t.shape[0] < 1:
            raise UnsupportedModelError(
                f"{model}: tensor '{t.name}' has no batch axis (shape {list(t.shape)})"
            )
    available = set(graph.inputs) | {i for i, t in enumerate(graph.tensors) if t.is_constant}
    steps = []
    for i, op in enumerate(graph.operators):
        where = origin[i]  # the index messages name: the operator's in the graph as given
        if len(op.outputs) != 1:
            raise UnsupportedModelError(
                f"{model}: operator #{where} ({op.opcode}) has {len(op.outputs)} outputs"
            )
        ctx = OpContext(graph, op, where, model, rounding)
        for t in op.inputs:
            if t >= 0 and t not in available:
                raise UnsupportedModelError(
                    f"{model}: operator #{where} ({op.opcode}) reads tensor {t} before it is computed"
                )
        module = OPS[op_key(op)]
        try:
            check_op(ctx, module)
            params = module.prepare(ctx)
        except EdgedError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, ArithmeticError) as exc:
            # Whatever check an op module lacks, bad values in a file end here, named.
            raise ctx.malformed(f"malformed operator ({type(exc).__name__}: {exc})") from exc
        acts = [t for t in op.inputs if t >= 0 and not graph.tensors[t].is_constant]
        if not acts:
            # Nothing here carries the batch; the converter folds such operators away.
            raise ctx.fail("every input is a constant")
        steps.append(Step(i, op_key(op), module, params, acts, op.outputs[0]))
        available.add(op.outputs[0])
    for t in graph.outputs:
        if t not in available:
            raise UnsupportedModelError(f"{model}: graph output tensor {t} is never computed")
    return PreparedGraph(graph, steps)
