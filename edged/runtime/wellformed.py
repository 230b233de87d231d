"""Checks that hold for every valid .tflite file, whichever engine runs it.

LiteRT's own checks at load are incomplete; what it lets through here would
fail later in a way that names nothing (an output it never allocated), so
edged refuses it at load with a message that says what is wrong.
"""

from __future__ import annotations

from edged.errors import ModelFormatError
from edged.model.ir import Graph


def check_outputs_computed(graph: Graph, model: str) -> None:
    """Every graph output is a graph input, a constant, or written by an operator."""
    written = set(graph.inputs) | {t for op in graph.operators for t in op.outputs}
    for t in graph.outputs:
        if t not in written and not graph.tensors[t].is_constant:
            raise ModelFormatError(
                f"{model}: graph output tensor #{t} '{graph.tensors[t].name}' is never computed "
                f"(no operator writes it; the graph has {len(graph.operators)} operators)"
            )


def check_dataflow(graph: Graph, model: str) -> None:
    """Operators in order read only tensors already there, and write each tensor once.

    LiteRT runs operators in file order and trusts this wiring: an operator
    reading a tensor nothing has written reads memory LiteRT never allocated
    (a crash in ``invoke``), and one writing a constant writes into the file's
    mapped buffer.
    """
    present = set(graph.inputs)
    written: set[int] = set()
    for k, op in enumerate(graph.operators):
        for t in op.inputs:
            tensor = graph.tensors[t] if t >= 0 else None
            if tensor is None or tensor.is_constant or tensor.is_variable or t in present:
                continue
            raise ModelFormatError(
                f"{model}: operator #{k} ({op.opcode}) reads tensor #{t} '{tensor.name}', which no "
                "graph input or earlier operator provides"
            )
        for t in op.outputs:
            if t < 0:
                continue
            tensor = graph.tensors[t]
            if tensor.is_constant or t in written or t in graph.inputs:
                what = "a constant" if tensor.is_constant else "written twice"
                raise ModelFormatError(
                    f"{model}: operator #{k} ({op.opcode}) writes tensor #{t} '{tensor.name}', {what}"
                )
            written.add(t)
            present.add(t)
