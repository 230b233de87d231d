"""A small helper to assemble quantized graphs op by op.

Used by the bundled-model trainer, the benchmarks (one-layer models) and the
tests (single-op models for every op, with random parameters).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edged.model.ir import Graph, Operator, Quantization, Tensor


class GraphBuilder:
    def __init__(self, name: str = "main", description: str = "edged") -> None:
        self.graph = Graph(
            tensors=[], operators=[], inputs=[], outputs=[], name=name, description=description
        )

    def tensor(
        self,
        name: str,
        dtype: Any,
        shape: tuple[int, ...],
        scale: float | np.ndarray | None = None,
        zero_point: int | np.ndarray = 0,
        axis: int = 0,
        data: np.ndarray | None = None,
    ) -> int:
        quant = None
        if scale is not None:
            scales = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            zps = np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
            if zps.size == 1 and scales.size > 1:
                zps = np.repeat(zps, scales.size)
            quant = Quantization(scales, zps, axis)
        signature = None
        if data is None and shape:
            signature = (-1, *shape[1:])
        return self.graph.add_tensor(
            Tensor(
                name=name,
                dtype=np.dtype(dtype),
                shape=tuple(shape),
                quant=quant,
                data=data,
                shape_signature=signature,
            )
        )

    def input(self, *args: Any, **kwargs: Any) -> int:
        idx = self.tensor(*args, **kwargs)
        self.graph.inputs.append(idx)
        return idx

    def const(self, name: str, data: np.ndarray, scale=None, zero_point=0, axis: int = 0) -> int:
        data = np.asarray(data)
        return self.tensor(name, data.dtype, data.shape, scale, zero_point, axis, data=data)

    def op(
        self, opcode: str, inputs: list[int], outputs: list[int], version: int = 1, **options: Any
    ) -> None:
        self.graph.operators.append(
            Operator(opcode, list(inputs), list(outputs), dict(options), version=version)
        )

    def output(self, idx: int) -> None:
        self.graph.outputs.append(idx)

    def build(self) -> Graph:
        return self.graph
