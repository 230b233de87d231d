"""Graph-wide checks of a model before any operator is prepared.

Per-operator shapes are checked by each op's ``infer_output`` (see
edged.ops.base.check_op); this module checks what no single op owns: that
every activation tensor has a concrete shape the arena can hold, that
quantization parameters are usable numbers, and that the graph's wiring
(who writes which tensor) is one the executor can run.
"""

from __future__ import annotations

import math
import os

import numpy as np

from edged.errors import ModelFormatError, UnsupportedModelError
from edged.model.ir import Graph, Tensor
from edged.model.quant import QRANGE
from edged.ops.base import MAX_DIM

# Activation bytes per sample a model may need. Larger is no edge model and
# would make the arena allocation itself the failure. EDGED_MAX_ARENA_BYTES
# overrides it for a device that really has the memory.
DEFAULT_MAX_ARENA_BYTES = 1 << 30
MAX_RANK = 8

_ZERO_POINT_RANGE = {**QRANGE, np.dtype(np.int32): (-(2**31), 2**31 - 1)}


def max_arena_bytes() -> int:
    raw = os.environ.get("EDGED_MAX_ARENA_BYTES")
    return int(raw) if raw and raw.isdigit() else DEFAULT_MAX_ARENA_BYTES


def _label(t: Tensor, index: int) -> str:
    return f"tensor #{index} '{t.name}'"


def check_quantization(t: Tensor, index: int, model: str) -> None:
    """Scales finite and positive (zero allowed on constants), zero points representable,
    per-channel arrays one entry per slice of a real axis."""
    q = t.quant
    if q is None or t.dtype.kind == "f":
        return
    scale = q.scale.astype(np.float64)
    activation = not t.is_constant
    if not np.all(np.isfinite(scale)) or np.any(scale < 0) or (activation and np.any(scale == 0)):
        raise ModelFormatError(f"{model}: {_label(t, index)} has scale(s) {scale[:4].tolist()}: "
                               "scales must be finite and positive")
    low, high = _ZERO_POINT_RANGE.get(t.dtype, (-(2**63), 2**63 - 1))
    if np.any(q.zero_point < low) or np.any(q.zero_point > high):
        raise ModelFormatError(f"{model}: {_label(t, index)} has a zero point outside the {t.dtype} range")
    if q.per_channel and (not 0 <= q.axis < len(t.shape) or t.shape[q.axis] != q.scale.size):
        raise ModelFormatError(
            f"{model}: {_label(t, index)} of shape {list(t.shape)} has {q.scale.size} per-channel "
            f"scales on axis {q.axis}"
        )


def check_activation_shape(t: Tensor, index: int, model: str) -> int:
    """Per-sample bytes of an activation tensor, after checking its shape is concrete and bounded."""
    if not 1 <= len(t.shape) <= MAX_RANK:
        raise UnsupportedModelError(f"{model}: {_label(t, index)} has rank {len(t.shape)} "
                                    f"(the native engine runs ranks 1 to {MAX_RANK}, batch axis first)")
    if any(not 1 <= d <= MAX_DIM for d in t.shape):
        raise ModelFormatError(f"{model}: {_label(t, index)} has shape {list(t.shape)}: "
                               f"every dimension must be in [1, {MAX_DIM}]")
    return math.prod(t.shape[1:]) * t.dtype.itemsize


def check_graph(graph: Graph, model: str) -> None:
    """Tensors, quantization, wiring and arena size of a graph the native engine is to run."""
    used = set(graph.inputs) | set(graph.outputs)
    for op in graph.operators:
        used.update(t for t in op.inputs + op.outputs if t >= 0)
    arena = 0
    for i in sorted(used):
        t = graph.tensors[i]
        check_quantization(t, i, model)
        if not t.is_constant:
            arena += check_activation_shape(t, i, model)
    if arena > max_arena_bytes():
        raise UnsupportedModelError(
            f"{model}: the activations need {arena} bytes per sample, over the {max_arena_bytes()}-byte "
            "limit (EDGED_MAX_ARENA_BYTES)"
        )
    written = set(graph.inputs)
    for i in graph.inputs:
        if graph.tensors[i].is_constant:
            raise ModelFormatError(f"{model}: graph input tensor {i} is a constant")
    for k, op in enumerate(graph.operators):
        for t in op.outputs:
            if t < 0 or graph.tensors[t].is_constant or t in written:
                what = "is absent" if t < 0 else "is a constant" if graph.tensors[t].is_constant else (
                    "is written twice")
                raise ModelFormatError(f"{model}: operator #{k} ({op.opcode}): output tensor {t} {what}")
            written.add(t)
