"""Pattern pruning (after AutoSculpt): shapes of sparsity that every runtime turns into speed.

Two pattern families, each exported as a plain int8 model:

* **channel removal**: whole output units of a FULLY_CONNECTED whose only
  consumer is another FULLY_CONNECTED are taken out, with the matching input
  columns of the consumer. The model is physically smaller, so dense LiteRT
  gets faster too, and the remaining arithmetic is untouched (bit-exact).
* **3x3 kernel patterns**: each 3x3 CONV_2D kernel keeps 4 of its 9 taps,
  the centre always, in one of a small library of the most frequent
  shapes (chosen per kernel by retained norm), then the layer is re-quantized.

``PatternCompressor`` allocates a family and ratio per layer from each layer's
sensitivity under a KL budget or target, like the other strategies; this is
the greedy baseline a learned policy would have to beat.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter

import numpy as np

from edged.adapt.calibration import Calibration
from edged.adapt.compress import Compressor, MagnitudeStrategy
from edged.model.ir import Graph

CENTRE = 4  # index of the centre tap in a flattened 3x3 kernel
ALL_PATTERNS = [tuple(sorted((CENTRE, *rest))) for rest in itertools.combinations(
    [i for i in range(9) if i != CENTRE], 3)]


def kernel_patterns(weights: np.ndarray, library_size: int = 8) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Keep-mask of a [out, 3, 3, in] filter under 4-tap patterns, and the pattern library used.

    Each kernel first takes its best pattern among all 56 (most retained L2
    norm); the ``library_size`` most frequent become the library, and every
    kernel is then assigned its best pattern from the library."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[1:3] != (3, 3):
        raise ValueError(f"kernel patterns need a [out, 3, 3, in] filter, got {list(w.shape)}")
    energy = (w**2).transpose(0, 3, 1, 2).reshape(-1, 9)  # [kernels, 9]
    onehot = np.zeros((len(ALL_PATTERNS), 9))
    for k, p in enumerate(ALL_PATTERNS):
        onehot[k, list(p)] = 1.0
    retained = energy @ onehot.T  # [kernels, patterns]
    favourite = Counter(np.argmax(retained, axis=1).tolist())
    library = [k for k, _ in favourite.most_common(library_size)]
    choice = np.asarray(library)[np.argmax(retained[:, library], axis=1)]
    keep = onehot[choice].reshape(w.shape[0], w.shape[3], 3, 3).transpose(0, 2, 3, 1) > 0
    return keep, [ALL_PATTERNS[k] for k in library]


def removable_channels(graph: Graph) -> dict[int, int]:
    """FULLY_CONNECTED op -> its only consumer, also a FULLY_CONNECTED: where units can be removed."""
    consumers = graph.consumers()
    out = {}
    for i, op in enumerate(graph.operators):
        if op.opcode != "FULLY_CONNECTED" or op.outputs[0] in graph.outputs:
            continue
        users = consumers.get(op.outputs[0], [])
        if len(users) == 1 and graph.operators[users[0]].opcode == "FULLY_CONNECTED" \
                and graph.operators[users[0]].inputs[0] == op.outputs[0]:
            out[i] = users[0]
    return out


def remove_channels(graph: Graph, op_index: int, keep: np.ndarray) -> Graph:
    """A copy of ``graph`` without the output units of ``op_index`` where ``keep`` is False."""
    pairs = removable_channels(graph)
    if op_index not in pairs:
        raise ValueError(
            f"op #{op_index} has no FULLY_CONNECTED as its only consumer; units cannot be removed"
        )
    keep = np.asarray(keep, dtype=bool)
    g = copy.deepcopy(graph)
    op, nxt = g.operators[op_index], g.operators[pairs[op_index]]
    w = g.tensors[op.inputs[1]]
    if keep.shape != (w.shape[0],) or not keep.any():
        raise ValueError(f"keep must be {w.shape[0]} booleans with at least one True")
    w.data, w.shape = w.data[keep], (int(keep.sum()), *w.shape[1:])
    if w.quant.scale.size > 1:
        w.quant.scale, w.quant.zero_point = w.quant.scale[keep], w.quant.zero_point[keep]
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = g.tensors[op.inputs[2]]
        b.data, b.shape = b.data[keep], (int(keep.sum()),)
        if b.quant is not None and b.quant.scale.size > 1:
            b.quant.scale, b.quant.zero_point = b.quant.scale[keep], b.quant.zero_point[keep]
    mid = g.tensors[op.outputs[0]]
    mid.shape = (*mid.shape[:-1], int(keep.sum()))
    if mid.shape_signature is not None:
        mid.shape_signature = (*mid.shape_signature[:-1], int(keep.sum()))
    w2 = g.tensors[nxt.inputs[1]]
    w2.data, w2.shape = w2.data[:, keep], (w2.shape[0], int(keep.sum()))
    return g


class PatternCompressor(Compressor):
    """Per layer, the pattern family that fits it (unit removal for FC -> FC, 3x3 kernel
    patterns for CONV_2D) at a level chosen by sensitivity under the budget."""

    grid = (0.0, 0.25, 0.5, 0.75)  # share of units removed; a 3x3 conv takes 5/9 at any level > 0

    def __init__(self, master: Graph, calib: Calibration, progress=None) -> None:
        pairs = removable_channels(master)
        convs = [i for i, op in enumerate(master.operators) if op.opcode == "CONV_2D"
                 and master.tensors[op.inputs[1]].shape[1:3] == (3, 3)]
        layers = sorted([*pairs, *convs])
        if not layers:
            raise ValueError("no layer fits a pattern: FC feeding an FC, or a 3x3 CONV_2D")
        self.pairs = pairs
        super().__init__(master, calib, MagnitudeStrategy(), layers=layers, progress=progress)

    def _prepare(self) -> None:
        self._unit_order: dict[int, np.ndarray] = {}
        self._conv_keep: dict[int, np.ndarray] = {}
        for i in self.layers:
            op = self.master.operators[i]
            w = self.master.tensors[op.inputs[1]].data.astype(np.float64)
            if op.opcode == "CONV_2D":
                self._conv_keep[i], _ = kernel_patterns(self._float_weights(i))
                continue
            # A unit matters by what it receives, how active it is, and what it sends on.
            nxt = self.master.tensors[self.master.operators[self.pairs[i]].inputs[1]].data.astype(np.float64)
            out_norm = np.abs(nxt).sum(axis=0)
            activity = self.stats[self.pairs[i]].input_norm
            score = np.abs(w).sum(axis=1) * out_norm * (activity + 1e-12)
            self._unit_order[i] = np.argsort(score, kind="stable")

    def candidate(self, levels: dict[int, float]) -> Graph:
        from edged.adapt.requantize import requantize_layer

        g = self.master
        # Convolutions first (no shape changes), then unit removal, last op first, so indices hold.
        conv_done = copy.deepcopy(g)
        for i, level in levels.items():
            if level > 0 and i in self._conv_keep:
                requantize_layer(conv_done, i, self._conv_keep[i])
        g = conv_done
        for i in sorted((i for i in levels if i in self._unit_order and levels[i] > 0), reverse=True):
            order = self._unit_order[i]
            keep = np.ones(order.size, dtype=bool)
            keep[order[: round(levels[i] * order.size)]] = False
            g = remove_channels(g, i, keep)
        return g

    def overall_sparsity(self, levels: dict[int, float]) -> float:
        """Share of the prunable weights removed (units take their consumer's columns along)."""
        total = removed = 0
        for i in self.layers:
            w = self.master.tensors[self.master.operators[i].inputs[1]]
            total += w.size
            level = levels.get(i, 0.0)
            if level <= 0:
                continue
            if i in self._conv_keep:
                removed += w.size * 5 // 9
            else:
                nxt = self.master.tensors[self.master.operators[self.pairs[i]].inputs[1]]
                units = round(level * w.shape[0])
                removed += units * (w.size // w.shape[0]) + units * nxt.shape[0]
        return removed / total
