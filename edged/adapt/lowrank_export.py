"""Serve a low-rank or hierarchical FULLY_CONNECTED as standard layers every LiteRT runs.

An H-matrix (edged.adapt.hmatrix) with low-rank leaves A_l B_l and dense
leaves D becomes:

    x -> FC(B) -> mid (int8, R features) -> FC(A) -> y          (no dense leaf)
    x -> FC(B) -> mid -> FC(A) -> y_lr;  x -> FC(D) -> y_d;  y = ADD(y_d, y_lr)

where B stacks every B_l on its leaf's input columns and A holds every A_l on
its leaf's output rows (a whole-matrix SVD is the one-leaf case). All are
standard int8 layers, so LiteRT and the native engine run the result
bit-exactly. Each mid feature is rescaled (B_l row up, A_l column down, the
product unchanged) so all use the same range, because the mid tensor has
one scale; the intermediate ranges are calibrated on data, as a converter
would. The weights are stored dense, zeros between leaves included, so a
layer is split only where those bytes are clearly below m*n (``PAYS``);
``edged compress --sparse-encoding`` then stores the zeros away.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from edged.adapt.calibration import layer_inputs
from edged.adapt.hmatrix import HMatrix, truncated_svd, truncation_rank
from edged.adapt.hmatrix_op import checked_inputs
from edged.adapt.requantize import float_weights
from edged.model.ir import Graph, Operator, Quantization, Tensor

PAYS = 0.8  # split only when the pieces' weights are at most this share of the dense weights
FC_OPTIONS = {"fused_activation_function": "NONE", "keep_num_dims": False, "weights_format": "DEFAULT",
              "asymmetric_quantize_inputs": False}


@dataclass
class SplitLayer:
    op_index: int
    rank: int  # mid features (total rank over the leaves)
    dense_bytes: int
    factor_bytes: int  # int8 weights of the pieces, as stored


def _sym_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    peak = np.abs(x).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.round(x / scale[:, None].astype(np.float64)), -127, 127).astype(np.int8), scale


def _asym(values: np.ndarray) -> Quantization:
    """An int8 activation range covering ``values`` and zero, as a converter calibrates it."""
    lo, hi = min(0.0, float(values.min(initial=0.0))), max(0.0, float(values.max(initial=0.0)))
    scale = max((hi - lo) / 255.0, 1e-8)
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return Quantization(np.array([scale], np.float32), np.array([zp]))


def _pieces(hm: HMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A [m, R], B [R, n], D [m, n]) in float: the low-rank leaves stacked, the dense ones placed."""
    m, n = hm.shape
    low = [leaf for leaf in hm.leaves if leaf.a is not None and leaf.rank]
    r_total = sum(leaf.rank for leaf in low)
    a, b, d = np.zeros((m, r_total)), np.zeros((r_total, n)), np.zeros((m, n))
    k = 0
    for leaf in hm.leaves:
        rows, cols = hm.rows(leaf), hm.cols(leaf)
        if leaf.a is None:
            d[np.ix_(rows, cols)] = leaf.to_float()
        elif leaf.rank:
            r = leaf.rank
            a[rows, k : k + r] = leaf.a.astype(np.float64) * leaf.a_scale[None, :]
            b[k : k + r, cols] = leaf.b.astype(np.float64) * leaf.b_scale[:, None]
            k += r
    return a, b, d


def stored_bytes(w: np.ndarray, sparse: bool) -> int:
    """Bytes of FULLY_CONNECTED weights in the file: all of them, or (``sparse``, TFLite's 1x16
    encoding) the 1x16 blocks holding a nonzero."""
    if not sparse:
        return int(w.size)
    m, n = w.shape
    padded = np.zeros((m, -(-n // 16) * 16), dtype=bool)
    padded[:, :n] = w != 0
    return 16 * int(padded.reshape(m, -1, 16).any(axis=2).sum())


def split_hmatrix(graph: Graph, calib_x: np.ndarray | None, forms: dict[int, HMatrix],
                  inputs: dict[int, np.ndarray] | None = None,
                  sparse_storage: bool = False) -> tuple[Graph, list[SplitLayer]]:
    """A copy of ``graph`` whose FULLY_CONNECTED layers in ``forms`` are replaced by their pieces
    wherever that pays; other layers are left as they are. Needs calibration inputs (``calib_x``,
    or the layers' int8 inputs from edged.adapt.calibration.layer_inputs). ``sparse_storage``:
    the file will store the pieces' zero blocks away (edged.sparse.tflite_encoding), so only
    their nonzero blocks count against the dense layer."""
    inputs = checked_inputs(graph, forms, calib_x, inputs)
    g = copy.deepcopy(graph)
    splits = []
    new_ops: dict[int, list[Operator]] = {}
    for i, hm in forms.items():
        op = graph.operators[i]
        m, n = hm.shape
        a_f, b_f, d_f = _pieces(hm)
        if sparse_storage and n % 16 == 0 and b_f.shape[0] % 16:  # zero features: A's depth too takes 1x16
            pad = 16 - b_f.shape[0] % 16
            a_f, b_f = np.pad(a_f, ((0, 0), (0, pad))), np.pad(b_f, ((0, pad), (0, 0)))
        r = b_f.shape[0]
        stored = stored_bytes(b_f, sparse_storage) + stored_bytes(a_f, sparse_storage)
        stored += stored_bytes(d_f, sparse_storage) if d_f.any() else 0
        if not a_f.any() or stored > PAYS * m * n:
            continue
        x_t = graph.tensors[op.inputs[0]]
        x = (inputs[i].reshape(-1, n).astype(np.float64) - float(x_t.quant.zero_point[0])) \
            * float(x_t.quant.scale[0])
        mid = x @ b_f.T
        peak = np.abs(mid).max(axis=0)
        gain = np.where(peak > 0, 1.0 / np.where(peak > 0, peak, 1.0), 1.0)  # every feature peaks at 1
        b_f, a_f, mid = b_f * gain[:, None], a_f / gain[None, :], mid * gain[None, :]
        split = _SplitBuilder(g, op, i)
        out_shape = graph.tensors[op.outputs[0]].shape
        mid_t = split.activation("mid", (*out_shape[:-1], r), _asym(mid))
        first = split.fc(op.inputs[0], b_f, None, mid_t, FC_OPTIONS)
        bias = split.real_bias()
        if d_f.any():
            y_lr = split.activation("lowrank_out", out_shape, _asym(mid @ a_f.T))
            y_d = split.activation("dense_out", out_shape, _asym(x @ d_f.T + (0 if bias is None else bias)))
            ops = [first, split.fc(mid_t, a_f, None, y_lr, FC_OPTIONS),
                   split.fc(op.inputs[0], d_f, bias, y_d, FC_OPTIONS),
                   Operator("ADD", [y_d, y_lr], list(op.outputs),
                            {"fused_activation_function": op.fused_activation}, version=2)]
        else:
            ops = [first, split.fc(mid_t, a_f, bias, op.outputs[0], dict(op.options))]
        new_ops[i] = ops
        splits.append(SplitLayer(i, r, m * n, stored))
    g.operators = [new for i, op in enumerate(g.operators) for new in new_ops.get(i, [op])]
    g.drop_unused_tensors()  # the replaced weights and biases
    return g, splits


def split_low_rank(graph: Graph, calib_x: np.ndarray,
                   eps: float | dict[int, float]) -> tuple[Graph, list[SplitLayer]]:
    """``split_hmatrix`` with each layer's whole-matrix truncated SVD at tolerance ``eps`` (one for
    every FULLY_CONNECTED, or per operator index)."""
    inputs = layer_inputs(graph, calib_x)
    if not isinstance(eps, dict):
        eps = {i: eps for i, op in enumerate(graph.operators)
               if op.opcode == "FULLY_CONNECTED" and i in inputs}
    forms = {}
    for i, e in eps.items():
        if not 0.0 < e < 1.0:
            raise ValueError(f"the tolerance must be in (0, 1), got {e} for op #{i}")
        if graph.operators[i].opcode != "FULLY_CONNECTED":
            raise ValueError(f"op #{i} is {graph.operators[i].opcode}, not FULLY_CONNECTED")
        w = float_weights(graph, i)
        forms[i] = truncated_svd(w, max(1, truncation_rank(np.linalg.svd(w, compute_uv=False), e)))
    return split_hmatrix(graph, None, forms, inputs)


class _SplitBuilder:
    """Adds the tensors and FULLY_CONNECTED pieces replacing op ``index`` to graph ``g``."""

    def __init__(self, g: Graph, op: Operator, index: int) -> None:
        self.g, self.op, self.index = g, op, index
        self.x_t = g.tensors[op.inputs[0]]
        self.name = f"{g.tensors[op.inputs[1]].name}/split{index}"

    def activation(self, what: str, shape: tuple[int, ...], quant: Quantization) -> int:
        self.g.tensors.append(Tensor(f"{self.name}/{what}", np.int8, shape, quant))
        return len(self.g.tensors) - 1

    def real_bias(self) -> np.ndarray | None:
        """The layer's bias in real units, or None."""
        if len(self.op.inputs) < 3 or self.op.inputs[2] < 0:
            return None
        w_t = self.g.tensors[self.op.inputs[1]]
        scale = np.asarray(w_t.quant.scale, np.float64).reshape(-1)
        scale = np.full(w_t.shape[0], scale[0]) if scale.size == 1 else scale
        bias = self.g.tensors[self.op.inputs[2]].data.astype(np.float64)
        return bias * float(self.x_t.quant.scale[0]) * scale

    def fc(self, x: int, w: np.ndarray, bias: np.ndarray | None, y: int, options: dict) -> Operator:
        """FULLY_CONNECTED x -> y with float weights ``w`` (per-row int8) and a real bias."""
        q, scale = _sym_rows(w)
        g = self.g
        g.tensors.append(Tensor(f"{self.name}/w{len(g.tensors)}", np.int8, q.shape,
                                Quantization(scale, np.zeros(q.shape[0], np.int64)), q))
        inputs = [x, len(g.tensors) - 1, -1]
        if bias is not None:
            bias_scale = (np.float32(g.tensors[x].quant.scale[0]) * scale).astype(np.float32)
            g.tensors.append(Tensor(f"{self.name}/b{len(g.tensors)}", np.int32, (q.shape[0],),
                                    Quantization(bias_scale, np.zeros(q.shape[0], np.int64)),
                                    np.round(bias / bias_scale.astype(np.float64)).astype(np.int32)))
            inputs[2] = len(g.tensors) - 1
        return Operator("FULLY_CONNECTED", inputs, [y], options, self.op.options_type, self.op.version)
