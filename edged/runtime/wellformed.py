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
