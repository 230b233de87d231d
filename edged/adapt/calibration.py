"""Calibration data for compression: the model's inputs (and labels) and what each layer sees.

``edged compress --calib DATA.npz`` takes ``x`` (a batch in the model input's
dtype, as ``edged run`` takes it) and optionally ``y`` (integer labels). The
layer statistics come from running the dense model's numpy reference once,
so they are exactly the int8 values the layers consume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edged.errors import EdgedError
from edged.model.ir import Graph
from edged.runtime.prepared import prepare_graph

PRUNABLE = ("FULLY_CONNECTED", "CONV_2D")
MAX_SAMPLES = 2048  # rows of input features kept per layer (a seeded subsample beyond that)


@dataclass
class Calibration:
    x: np.ndarray
    y: np.ndarray | None = None


@dataclass
class LayerStats:
    op_index: int
    opcode: str
    weight_shape: tuple[int, ...]
    mean_input: np.ndarray  # [depth]: mean dequantized input feature (im2col patch for CONV_2D)
    input_norm: np.ndarray  # [depth]: L2 norm of each input feature over the window (Wanda's ||X_j||)
    samples: np.ndarray  # [<= MAX_SAMPLES, depth]: dequantized input rows, for the retrainer


def load_calibration(path: str | Path, graph: Graph) -> Calibration:
    """Read and check DATA.npz against the model's input; EdgedError with the reason otherwise."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data:
                raise EdgedError(f"{path}: no 'x' array (calibration inputs) in the file")
            x = data["x"]
            y = data.get("y")
    except (OSError, ValueError) as exc:
        raise EdgedError(f"{path}: cannot read calibration data: {exc}") from exc
    spec = graph.input_tensors[0]
    if x.dtype != spec.dtype or tuple(x.shape[1:]) != tuple(spec.shape[1:]) or x.shape[0] < 1:
        raise EdgedError(
            f"{path}: 'x' is {x.dtype} {list(x.shape)}, the model takes {spec.dtype} [N, "
            f"{', '.join(str(d) for d in spec.shape[1:])}]"
        )
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise EdgedError(f"{path}: 'x' holds NaN or infinite values")
    if y is not None and (y.shape != (x.shape[0],) or y.dtype.kind not in "iu"):
        raise EdgedError(f"{path}: 'y' must be {x.shape[0]} integer labels, got {y.dtype} {list(y.shape)}")
    return Calibration(x, None if y is None else y.astype(np.int64))


def prunable_ops(graph: Graph) -> list[int]:
    """FULLY_CONNECTED / CONV_2D operators with constant int8 weights."""
    out = []
    for i, op in enumerate(graph.operators):
        if op.opcode in PRUNABLE:
            w = graph.tensors[op.inputs[1]]
            if w.data is not None and w.dtype == np.int8:
                out.append(i)
    return out


def layer_inputs(graph: Graph, x: np.ndarray) -> dict[int, np.ndarray]:
    """The int8 input of every prunable op on ``x``, from the numpy reference."""
    prepared = prepare_graph(graph)
    wanted = set(prunable_ops(graph))
    values = {graph.inputs[0]: x}
    out = {}
    for step in prepared.steps:
        args = [values[t] for t in step.activation_inputs]
        if step.index in wanted:
            out[step.index] = args[0]
        values[step.output] = step.module.reference(step.params, args)
    return out


def layer_stats(graph: Graph, x: np.ndarray) -> dict[int, LayerStats]:
    """Per prunable layer: mean and norm of each input feature, dequantized."""
    from edged.ops.conv import im2col_patches

    params = {s.index: s.params for s in prepare_graph(graph).steps}
    stats = {}
    for i, a in layer_inputs(graph, x).items():
        op = graph.operators[i]
        t = graph.tensors[op.inputs[0]]
        w = graph.tensors[op.inputs[1]]
        scale, zp = float(t.quant.scale[0]), float(t.quant.zero_point[0])
        if op.opcode == "CONV_2D":  # the im2col patches are what the filter rows multiply
            p = params[i]
            patches = im2col_patches(p, a.reshape((-1, *p.in_hwc))).astype(np.float64) * scale
            feats = patches.reshape(-1, int(np.prod(w.shape[1:])))
        else:
            feats = ((a.astype(np.float64) - zp) * scale).reshape(-1, w.shape[1])
        rows = feats
        if len(rows) > MAX_SAMPLES:
            rows = rows[np.random.default_rng(0).choice(len(rows), MAX_SAMPLES, replace=False)]
        stats[i] = LayerStats(i, op.opcode, tuple(w.shape), feats.mean(axis=0),
                              np.sqrt((feats**2).sum(axis=0)), rows)
    return stats
