"""Serve a low-rank FULLY_CONNECTED as what it is: two smaller FULLY_CONNECTED layers.

W ~ A @ B with A [m, r] and B [r, n] becomes FC(B) -> an int8 tensor of r
features -> FC(A) + bias. Both are standard int8 layers, so every LiteRT runs
the result (bit-exactly with the native engine), and the weights shrink from
m*n to r*(m+n) bytes, with the arithmetic shrinking alike. The intermediate
tensor's int8 range is calibrated on data, as a converter would. It pays
only when r*(m+n) is clearly below m*n; other layers are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.adapt.calibration import layer_inputs
from edged.adapt.hmatrix import truncation_rank
from edged.adapt.requantize import float_weights
from edged.model.ir import Graph, Operator, Quantization, Tensor

PAYS = 0.8  # split only when the two factors are at most this share of the dense weights


@dataclass
class SplitLayer:
    op_index: int
    rank: int
    dense_bytes: int
    factor_bytes: int


def _sym_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    peak = np.abs(x).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.round(x / scale[:, None]), -127, 127).astype(np.int8), scale


def split_low_rank(graph: Graph, calib_x: np.ndarray,
                   eps: float | dict[int, float]) -> tuple[Graph, list[SplitLayer]]:
    """A copy of ``graph`` whose FULLY_CONNECTED layers are replaced by two FCs wherever their
    rank at tolerance ``eps`` (one for all, or per operator index) makes that pay. Needs
    calibration inputs for the intermediate tensors' ranges."""
    import copy

    inputs = layer_inputs(graph, calib_x)
    if not isinstance(eps, dict):
        eps = {i: eps for i, op in enumerate(graph.operators)
               if op.opcode == "FULLY_CONNECTED" and i in inputs}
    for i, e in eps.items():
        if not 0.0 < e < 1.0:
            raise ValueError(f"the tolerance must be in (0, 1), got {e} for op #{i}")
        if graph.operators[i].opcode != "FULLY_CONNECTED":
            raise ValueError(f"op #{i} is {graph.operators[i].opcode}, not FULLY_CONNECTED")
    g = copy.deepcopy(graph)
    splits = []
    new_ops: dict[int, list[Operator]] = {}
    for i, tol in eps.items():
        op = graph.operators[i]
        w = float_weights(graph, i)
        m, n = w.shape
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        r = max(1, truncation_rank(s, tol))
        if r * (m + n) > PAYS * m * n:
            continue
        root = np.sqrt(s[:r])
        a_f, b_f = u[:, :r] * root, vt[:r] * root[:, None]  # W ~ a_f @ b_f
        x_t = graph.tensors[op.inputs[0]]
        x = (inputs[i].reshape(-1, n).astype(np.float64) - float(x_t.quant.zero_point[0])) \
            * float(x_t.quant.scale[0])
        mid = x @ b_f.T
        lo, hi = min(0.0, float(mid.min())), max(0.0, float(mid.max()))
        mid_scale = max((hi - lo) / 255.0, 1e-8)
        mid_zp = int(np.clip(round(-128 - lo / mid_scale), -128, 127))
        b_q, b_scale = _sym_rows(b_f)
        a_q, a_scale = _sym_rows(a_f)
        base = len(g.tensors)
        g.tensors += [
            Tensor(f"{x_t.name}/lowrank_b{i}", np.int8, (r, n), Quantization(b_scale, np.zeros(r, np.int64)),
                   b_q),
            Tensor(f"{x_t.name}/lowrank_mid{i}", np.int8, (1, r),
                   Quantization(np.array([mid_scale], np.float32), np.array([mid_zp]))),
            Tensor(f"{x_t.name}/lowrank_a{i}", np.int8, (m, r), Quantization(a_scale, np.zeros(m, np.int64)),
                   a_q),
        ]
        inputs_a = [base + 1, base + 2]
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b_t = graph.tensors[op.inputs[2]]
            old_w_scale = np.asarray(graph.tensors[op.inputs[1]].quant.scale, np.float64)
            bias = b_t.data.astype(np.float64) * float(x_t.quant.scale[0]) * old_w_scale
            bias_scale = (np.float32(mid_scale) * a_scale).astype(np.float32)
            g.tensors.append(Tensor(f"{b_t.name}/lowrank{i}", np.int32, (m,),
                                    Quantization(bias_scale, np.zeros(m, np.int64)),
                                    np.round(bias / bias_scale).astype(np.int32)))
            inputs_a.append(len(g.tensors) - 1)
        first = Operator("FULLY_CONNECTED", [op.inputs[0], base, -1], [base + 1],
                         {"fused_activation_function": "NONE", "keep_num_dims": False,
                          "weights_format": "DEFAULT", "asymmetric_quantize_inputs": False},
                         op.options_type, op.version)
        second = Operator("FULLY_CONNECTED", inputs_a, list(op.outputs), dict(op.options), op.options_type,
                          op.version)
        new_ops[i] = [first, second]
        splits.append(SplitLayer(i, r, m * n, r * (m + n)))
    g.operators = [new for i, op in enumerate(g.operators) for new in new_ops.get(i, [op])]
    g.drop_unused_tensors()  # the replaced weights and biases
    return g, splits
