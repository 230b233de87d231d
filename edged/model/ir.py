"""The in-memory form of a model: tensors, operators and the graph they make.

The IR is deliberately small and schema-free: it holds exactly what edged needs
to execute, prune and re-export a model. Only ``edged.model.tflite`` knows how
it maps onto the .tflite flatbuffer schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edged.sparse.tflite_encoding import TfliteSparsity


@dataclass
class Quantization:
    """Affine quantization ``real = scale * (q - zero_point)``.

    ``scale`` and ``zero_point`` have one entry for per-tensor quantization and
    one per slice along ``axis`` for per-channel quantization.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    def __post_init__(self) -> None:
        self.scale = np.asarray(self.scale, dtype=np.float32).reshape(-1)
        self.zero_point = np.asarray(self.zero_point, dtype=np.int64).reshape(-1)
        if self.scale.size != self.zero_point.size and self.zero_point.size != 1:
            raise ValueError(
                f"quantization has {self.scale.size} scales but {self.zero_point.size} zero points"
            )

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def single_scale(self) -> float:
        """The scale of a per-tensor quantized tensor (as float32, like TFLite)."""
        if self.per_channel:
            raise ValueError("tensor is quantized per channel; it has no single scale")
        return float(self.scale[0])

    @property
    def single_zero_point(self) -> int:
        if self.per_channel and np.any(self.zero_point != self.zero_point[0]):
            raise ValueError("tensor has per-channel zero points")
        return int(self.zero_point[0])


@dataclass
class Tensor:
    """A tensor of the graph: an activation (``data is None``) or a constant.

    ``data`` is always dense. ``sparsity`` (constants only) says that the file
    stores the tensor in TFLite's sparse encoding: the reader keeps the
    encoding it found there, the writer stores ``data`` in that layout again.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    quant: Quantization | None = None
    data: np.ndarray | None = None
    shape_signature: tuple[int, ...] | None = None
    is_variable: bool = False
    sparsity: TfliteSparsity | None = None

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.dtype)
        self.shape = tuple(int(d) for d in self.shape)
        if self.shape_signature is not None:
            self.shape_signature = tuple(int(d) for d in self.shape_signature)
        if self.data is not None:
            self.data = np.ascontiguousarray(self.data, dtype=self.dtype).reshape(self.shape)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass
class Operator:
    """One node of the graph.

    ``opcode`` is the builtin operator name (``"FULLY_CONNECTED"``) or, for a
    custom operator, ``"CUSTOM"`` with ``custom_code`` set. ``inputs`` and
    ``outputs`` index ``Graph.tensors``; ``-1`` marks an absent optional input.
    ``options`` holds the builtin options with snake_case keys and enum values as
    names (``{"fused_activation_function": "RELU", "padding": "SAME", ...}``).
    ``options_type`` names the schema options table so unknown ops survive a
    round trip; ``passthrough`` carries schema objects edged does not interpret.
    """

    opcode: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)
    options_type: str | None = None
    version: int = 1
    custom_code: str | None = None
    custom_options: bytes | None = None
    passthrough: dict[str, Any] = field(default_factory=dict)

    @property
    def fused_activation(self) -> str:
        return self.options.get("fused_activation_function", "NONE")


@dataclass
class Signature:
    """A named entry point: input/output names mapped to tensor indices."""

    key: str
    inputs: dict[str, int]
    outputs: dict[str, int]


@dataclass
class Graph:
    """A single-subgraph model."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    name: str = "main"
    description: str = "edged"
    metadata: dict[str, bytes] = field(default_factory=dict)
    signatures: list[Signature] = field(default_factory=list)

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    @property
    def input_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.inputs]

    @property
    def output_tensors(self) -> list[Tensor]:
        return [self.tensors[i] for i in self.outputs]

    def parameter_count(self) -> int:
        return sum(t.size for t in self.tensors if t.is_constant)

    def producers(self) -> dict[int, int]:
        """Tensor index -> index of the operator that writes it."""
        return {t: i for i, op in enumerate(self.operators) for t in op.outputs}

    def consumers(self) -> dict[int, list[int]]:
        """Tensor index -> indices of the operators that read it."""
        users: dict[int, list[int]] = {}
        for i, op in enumerate(self.operators):
            for t in op.inputs:
                if t >= 0:
                    users.setdefault(t, []).append(i)
        return users

    def add_tensor(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def drop_unused_tensors(self) -> int:
        """Remove tensors no operator, input, output or signature refers to (e.g. weights an
        edit replaced), renumbering the rest; returns how many were removed."""
        used = set(self.inputs) | set(self.outputs)
        for op in self.operators:
            used.update(t for t in op.inputs + op.outputs if t >= 0)
        for sig in self.signatures:
            used.update(sig.inputs.values())
            used.update(sig.outputs.values())
        keep = [i for i in range(len(self.tensors)) if i in used]
        if len(keep) == len(self.tensors):
            return 0
        remap = {old: new for new, old in enumerate(keep)}
        removed = len(self.tensors) - len(keep)
        self.tensors = [self.tensors[i] for i in keep]
        # Negative indices (an absent optional tensor, or a file's bad reference that the checks
        # after this report with its operator) are kept as they are.
        def renumber(t: int) -> int:
            return remap[t] if t >= 0 else t

        for op in self.operators:
            op.inputs = [renumber(t) for t in op.inputs]
            op.outputs = [renumber(t) for t in op.outputs]
        self.inputs = [renumber(t) for t in self.inputs]
        self.outputs = [renumber(t) for t in self.outputs]
        for sig in self.signatures:
            sig.inputs = {k: renumber(v) for k, v in sig.inputs.items()}
            sig.outputs = {k: renumber(v) for k, v in sig.outputs.items()}
        return removed
