"""Re-quantization of a pruned layer: fresh weight scales, exact zeros, corrected bias.

Pruning a layer's int8 weights leaves the old per-channel scales, sized for
weights that may now be gone: the surviving weights then use fewer of the
int8 levels than they could. ``requantize_layer`` recomputes each output
channel's symmetric scale from the weights that survive (zero point 0, so
pruned weights stay exactly zero), re-rounds them, and moves the bias by the
mean output shift the pruning causes on calibration inputs (bias
correction), so the layer's outputs stay centred where they were. The result
is an ordinary int8 layer that LiteRT and the native engine run bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.ir import Graph, Quantization

PRUNABLE = ("FULLY_CONNECTED", "CONV_2D")
QMAX = 127  # symmetric int8 weights use [-127, 127], as TFLite's quantizer does


@dataclass
class RequantizedLayer:
    op_index: int
    sparsity: float  # fraction of zero weights after pruning
    scale_change: np.ndarray  # new / old weight scale per output channel (<= 1 when big weights were pruned)
    bias_shift: np.ndarray  # float bias correction per output channel, in output units before requantization


def _channel_scales(quant: Quantization, channels: int) -> np.ndarray:
    scales = np.asarray(quant.scale, dtype=np.float64).reshape(-1)
    if scales.size == 1:
        return np.full(channels, float(scales[0]))
    if scales.size != channels:
        raise ValueError(f"{scales.size} weight scales for {channels} output channels")
    return scales


def requantize_layer(graph: Graph, op_index: int, keep: np.ndarray,
                     mean_input: np.ndarray | None = None) -> RequantizedLayer:
    """Prune operator ``op_index`` of ``graph`` in place to the ``keep`` mask and re-quantize it.

    ``keep`` has the weight tensor's shape (True = kept). ``mean_input`` is the
    mean dequantized input feature vector over calibration data ([depth] for
    FULLY_CONNECTED, [kh*kw*in_c] im2col patch mean for CONV_2D); without it
    the bias is left as it is. Weights always become per-channel.
    """
    w = float_weights(graph, op_index)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != w.shape:
        raise ValueError(f"mask shape {list(keep.shape)} differs from the weights' {list(w.shape)}")
    return set_float_weights(graph, op_index, np.where(keep, w, 0.0), mean_input)


def _layer(graph: Graph, op_index: int):
    op = graph.operators[op_index]
    if op.opcode not in PRUNABLE:
        raise ValueError(f"operator #{op_index} is {op.opcode}; only {', '.join(PRUNABLE)} can be pruned")
    w_t = graph.tensors[op.inputs[1]]
    if w_t.data is None or w_t.dtype != np.int8 or w_t.quant is None:
        raise ValueError(f"operator #{op_index}: weights must be constant int8 with quantization")
    return op, w_t


def float_weights(graph: Graph, op_index: int) -> np.ndarray:
    """The dequantized weights of a FULLY_CONNECTED / CONV_2D, in the tensor's shape."""
    _, w_t = _layer(graph, op_index)
    out_c = w_t.data.shape[0]
    scales = _channel_scales(w_t.quant, out_c)
    return (w_t.data.reshape(out_c, -1).astype(np.float64) * scales[:, None]).reshape(w_t.data.shape)


def set_float_weights(graph: Graph, op_index: int, weights: np.ndarray,
                      mean_input: np.ndarray | None = None) -> RequantizedLayer:
    """Quantize new float weights into operator ``op_index`` in place: per-channel symmetric scales
    from their own range, zero point 0 (zeros stay exact), the bias rescaled to match, and moved
    by the mean output change on ``mean_input`` when given (bias correction)."""
    op, w_t = _layer(graph, op_index)
    x_t = graph.tensors[op.inputs[0]]
    out_c = w_t.data.shape[0]
    old_scales = _channel_scales(w_t.quant, out_c)
    w = w_t.data.reshape(out_c, -1).astype(np.float64) * old_scales[:, None]
    new = np.asarray(weights, dtype=np.float64).reshape(out_c, -1)
    if new.shape != w.shape:
        raise ValueError(f"new weights have {new.size} values, the layer {w.size}")
    peak = np.abs(new).max(axis=1)
    # A channel with no weight left keeps its scale: its weights are all zero either way.
    new_scales = np.where(peak > 0, peak / QMAX, old_scales).astype(np.float32).astype(np.float64)
    q = np.clip(np.round(new / new_scales[:, None]), -QMAX, QMAX).astype(np.int8)
    w_t.data = q.reshape(w_t.data.shape)
    w_t.quant = Quantization(scale=new_scales.astype(np.float32), zero_point=np.zeros(out_c, np.int64),
                             axis=0)

    in_scale = float(np.asarray(x_t.quant.scale).reshape(-1)[0])
    shift = np.zeros(out_c)
    if mean_input is not None:
        m = np.asarray(mean_input, dtype=np.float64).reshape(-1)
        if m.size != w.shape[1]:
            raise ValueError(f"mean input has {m.size} features, the weights {w.shape[1]}")
        # What the change removed on average: give it back through the bias.
        shift = (w - q.astype(np.float64) * new_scales[:, None]) @ m
    bias_idx = op.inputs[2] if len(op.inputs) > 2 else -1
    if bias_idx >= 0:
        b_t = graph.tensors[bias_idx]
        old_b = b_t.data.astype(np.float64) * in_scale * old_scales
        b_scale = (np.float32(in_scale) * new_scales.astype(np.float32)).astype(np.float64)
        b_t.data = np.clip(np.round((old_b + shift) / b_scale), -(2**31), 2**31 - 1).astype(np.int32)
        b_t.quant = Quantization(scale=b_scale.astype(np.float32), zero_point=np.zeros(out_c, np.int64),
                                 axis=0)
    sparsity = 1.0 - np.count_nonzero(q) / q.size
    return RequantizedLayer(op_index, float(sparsity), new_scales / old_scales, shift)
