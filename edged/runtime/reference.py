"""The numpy reference engine: every op's spec, run op by op.

It is slow and exists to define what the native engine must compute.
"""

from __future__ import annotations

import numpy as np

from edged.model.ir import Graph
from edged.runtime.prepared import PreparedGraph, prepare_graph


class ReferenceEngine:
    """Runs a graph with the numpy reference implementation of each op."""

    name = "reference"

    def __init__(self, graph: Graph, model: str = "<model>", rounding: str = "auto") -> None:
        self.prepared: PreparedGraph = prepare_graph(graph, model, rounding)
        self.graph = graph

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        values: dict[int, np.ndarray] = {}
        for idx, x in zip(self.graph.inputs, inputs, strict=True):
            values[idx] = x
        for step in self.prepared.steps:
            args = [values[i] for i in step.activation_inputs]
            values[step.output] = step.module.reference(step.params, args)
        return [values[i] for i in self.graph.outputs]
