"""FULLY_CONNECTED layers -> edged's EDGED_HMATRIX operator (edged.ops.hmatrix).

The H-matrix of a layer (edged.adapt.hmatrix) becomes the operator's two
stage matrices: W1 stacks every low-rank leaf's B on its input columns, W2
holds the dense leaves on the input columns and every leaf's A on its own
mid columns. The mid features' int8 scales are calibrated on data (the
largest magnitude seen on each), as a converter calibrates activations. W1
and W2 are written in TFLite's sparse encoding, so the file holds the
factors, not the zeros between them. Only the native engine runs the op; the
LiteRT-compatible exports are edged.adapt.lowrank_export (two plain FCs) and
the re-densified matrix.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from edged.adapt.calibration import layer_inputs
from edged.adapt.hmatrix import HMatrix
from edged.model.ir import Graph, Operator, Quantization, Tensor
from edged.ops.hmatrix import CUSTOM_CODE
from edged.sparse.tflite_encoding import encode_block_sparse

QMAX = 127


@dataclass
class HMatrixLayer:
    op_index: int
    mid_c: int  # total rank over the low-rank leaves
    leaves: dict[str, int]  # low_rank / dense counts
    dense_bytes: int  # the FC's int8 weights
    stored_bytes: int  # nonzero int8 weights of W1 and W2


def _sym_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    peak = np.abs(x).max(axis=1)
    scale = np.where(peak > 0, peak / QMAX, 1.0).astype(np.float32)
    return np.clip(np.round(x / scale[:, None].astype(np.float64)), -QMAX, QMAX).astype(np.int8), scale


def _block_width(n: int) -> int:
    """The widest of 16/4/1 that divides n: the block width of the file encoding."""
    return next(b for b in (16, 4, 1) if n % b == 0)


def _file_encoding(data: np.ndarray):
    return encode_block_sparse(data, (1, _block_width(data.shape[1])))[1]


def stage_matrices(hm: HMatrix, x_scale: float, x_zp: int, x_rows: np.ndarray):
    """(W1 int8, W1 scales, mid scales, W2 float [m, n + R]) of ``hm`` for inputs ``x_rows``
    (int8 [rows, n] calibration inputs quantized with ``x_scale``/``x_zp``)."""
    m, n = hm.shape
    low = [leaf for leaf in hm.leaves if leaf.a is not None and leaf.rank]
    r_total = sum(leaf.rank for leaf in low)
    # Zero mid features pad W2's width to the file encoding's block width (W1 rows of zeros,
    # W2 columns of zeros: neither is stored).
    block = _block_width(n)
    r_total += -r_total % block if r_total else 0
    w1 = np.zeros((r_total, n), np.int8)
    s_w1 = np.ones(r_total, np.float32)
    w2 = np.zeros((m, n + r_total))
    k = 0
    for leaf in hm.leaves:  # a reordered tree's leaves land back on the original rows and columns
        rows, cols = hm.rows(leaf), hm.cols(leaf)
        if leaf.a is None:
            w2[np.ix_(rows, cols)] = leaf.to_float()
            continue
        if not leaf.rank:
            continue
        r = leaf.rank
        w1[k : k + r, cols] = leaf.b
        s_w1[k : k + r] = leaf.b_scale
        w2[rows, n + k : n + k + r] = leaf.a.astype(np.float64) * leaf.a_scale[None, :]  # float A, for now
        k += r
    t = (x_rows.astype(np.int64) - x_zp) @ w1.astype(np.int64).T  # stage-1 accumulators
    real = np.abs(t).max(axis=0, initial=0) * float(np.float32(x_scale)) * s_w1.astype(np.float64)
    s_mid = np.where(real > 0, real / QMAX, float(np.float32(x_scale)) * s_w1).astype(np.float32)
    # A's columns multiply mid values of scale s_mid; express them in units of the input scale.
    w2[:, n:] *= s_mid.astype(np.float64)[None, :] / float(np.float32(x_scale))
    return w1, s_w1, s_mid, w2


def checked_inputs(graph: Graph, forms: dict[int, HMatrix], calib_x: np.ndarray | None,
                   inputs: dict[int, np.ndarray] | None) -> dict[int, np.ndarray]:
    """Check each form fits its FULLY_CONNECTED; the layers' int8 calibration inputs."""
    for i, hm in forms.items():
        op = graph.operators[i]
        if op.opcode != "FULLY_CONNECTED":
            raise ValueError(f"op #{i} is {op.opcode}, not FULLY_CONNECTED")
        if hm.shape != graph.tensors[op.inputs[1]].shape:
            raise ValueError(f"op #{i}: the H-matrix is {hm.shape}, the weights "
                             f"{graph.tensors[op.inputs[1]].shape}")
    if inputs is not None:
        return inputs
    if calib_x is None:
        raise ValueError("an H-matrix layer needs calibration inputs")
    return layer_inputs(graph, calib_x)


def to_hmatrix_ops(graph: Graph, calib_x: np.ndarray | None, forms: dict[int, HMatrix],
                   min_saving: float = 0.0, inputs: dict[int, np.ndarray] | None = None,
                   ) -> tuple[Graph, list[HMatrixLayer]]:
    """A copy of ``graph`` with each FULLY_CONNECTED in ``forms`` replaced by an EDGED_HMATRIX op.

    The mid features are calibrated on ``calib_x`` (or on the layers' int8 inputs, ``inputs``,
    from edged.adapt.calibration.layer_inputs). A layer is replaced only when its stored
    weights shrink by more than ``min_saving`` (a share of the dense int8 bytes) and it has a
    low-rank leaf; otherwise it stays a FULLY_CONNECTED holding the re-densified H-matrix."""
    from edged.adapt.requantize import set_float_weights

    inputs = checked_inputs(graph, forms, calib_x, inputs)
    g = copy.deepcopy(graph)
    report = []
    new_ops: dict[int, Operator] = {}
    for i, hm in forms.items():
        op = g.operators[i]
        x_t, w_t = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
        m, n = w_t.shape
        x_scale, x_zp = float(x_t.quant.scale[0]), int(x_t.quant.zero_point[0])
        w1, s_w1, s_mid, w2_f = stage_matrices(hm, x_scale, x_zp, inputs[i].reshape(-1, n))
        w2, s_w2 = _sym_rows(w2_f)
        stored = int(np.count_nonzero(w1) + np.count_nonzero(w2))
        scales = 4 * w1.shape[0]  # the mid features' scales; both forms have per-row ones
        if w1.shape[0] == 0 or stored + scales >= (1.0 - min_saving) * m * n:
            set_float_weights(g, i, hm.to_float())
            continue
        base = len(g.tensors)
        name = w_t.name
        g.tensors += [
            Tensor(f"{name}/hmatrix_w1", np.int8, w1.shape,
                   Quantization(s_w1, np.zeros(w1.shape[0], np.int64)), w1, sparsity=_file_encoding(w1)),
            Tensor(f"{name}/hmatrix_mid_scale", np.float32, s_mid.shape, None, s_mid),
            Tensor(f"{name}/hmatrix_w2", np.int8, w2.shape, Quantization(s_w2, np.zeros(m, np.int64)),
                   w2, sparsity=_file_encoding(w2)),
        ]
        inputs_new = [op.inputs[0], base, base + 1, base + 2]
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b_t = g.tensors[op.inputs[2]]
            old = np.asarray(w_t.quant.scale, np.float64).reshape(-1)
            old = np.full(m, old[0]) if old.size == 1 else old
            real = b_t.data.astype(np.float64) * float(np.float32(x_scale)) * old
            bias_scale = (np.float32(x_scale) * s_w2).astype(np.float32)
            g.tensors.append(Tensor(f"{b_t.name}/hmatrix", np.int32, (m,),
                                    Quantization(bias_scale, np.zeros(m, np.int64)),
                                    np.round(real / bias_scale.astype(np.float64)).astype(np.int32)))
            inputs_new.append(len(g.tensors) - 1)
        new_ops[i] = Operator("CUSTOM", inputs_new, list(op.outputs), custom_code=CUSTOM_CODE,
                              custom_options=hmatrix_options(op.fused_activation))
        report.append(HMatrixLayer(i, int(w1.shape[0]), hm.counts(), m * n, stored))
    g.operators = [new_ops.get(i, op) for i, op in enumerate(g.operators)]
    g.drop_unused_tensors()
    return g, report


def hmatrix_options(activation: str) -> bytes:
    from flatbuffers import flexbuffers

    return bytes(flexbuffers.Dumps({"fused_activation_function": activation}))
