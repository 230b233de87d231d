"""Pattern pruning (after AutoSculpt): shapes of sparsity that every runtime turns into speed.

Three pattern families, each exported as a plain int8 model:

* **channels**: whole output channels of a FULLY_CONNECTED or CONV_2D taken
  out of the model with everything that carries them (edged.adapt.channels;
  layers tied by a residual ADD share one mask). The model is physically
  smaller, so dense LiteRT gets faster too.
* **kernel3x3**: each 3x3 CONV_2D kernel keeps 4 of its 9 taps, the centre
  always, in one of a small library of the most frequent shapes (chosen per
  kernel by retained norm), then the layer is re-quantized.
* **blocks**: magnitude-ranked blocks in the shape the kernel planner reports
  fastest for the layer (edged.runtime.advice; 16x4 when not given), which
  the native engine's block-sparse kernels skip.

Every layer gets a list of actions (family, ratio). ``PatternCompressor``
measures each action's output KL alone (sensitivity) and allocates one action
per layer under a KL budget or target, like the other strategies: the greedy
baseline that edged.adapt.policy's learned allocation is measured against.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edged.adapt.calibration import Calibration, prunable_ops
from edged.adapt.channels import (
    ChannelGroup,
    channel_group,
    channel_scores,
    removable_groups,
    remove_group_channels,
)
from edged.adapt.compress import DEFAULT_BLOCK, Compressor, MagnitudeStrategy
from edged.model.ir import Graph
from edged.sparse.block_csr import BlockShape

CHANNEL_RATIOS = (0.25, 0.5, 0.75)
BLOCK_RATIOS = (0.5, 0.75, 0.9)

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


def remove_channels(graph: Graph, op_index: int, keep: np.ndarray) -> Graph:
    """A copy of ``graph`` without the output channels of ``op_index`` (and of the layers tied to
    it) where ``keep`` is False."""
    return remove_group_channels(graph, channel_group(graph, op_index), keep)


@dataclass(frozen=True)
class Action:
    family: str  # "none", "channels", "kernel3x3" or "blocks"
    ratio: float  # share of channels / blocks removed (kernel3x3: 5/9 of the taps)

    def __str__(self) -> str:
        return "kept as is" if self.family == "none" else f"{self.family} {self.ratio:.0%}"


NONE = Action("none", 0.0)


class PatternCompressor(Compressor):
    """Per layer, one action among the pattern families that fit it, allocated by sensitivity.

    A level (what the shared search allocates) is the share of the model's prunable weights
    the action removes, so "the largest level within tau" is the most pruning."""

    def __init__(self, master: Graph, calib: Calibration, blocks: dict[int, BlockShape] | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.groups: dict[int, ChannelGroup] = removable_groups(master)
        layers = prunable_ops(master)
        if not layers:
            raise ValueError("no layer fits a pattern: the model has no FULLY_CONNECTED / CONV_2D "
                             "with int8 weights")
        self.block_shapes = {i: (blocks or {}).get(i, DEFAULT_BLOCK) for i in layers}
        super().__init__(master, calib, MagnitudeStrategy(), self.block_shapes, layers=layers,
                         progress=progress)

    # -- actions

    def _prepare(self) -> None:
        super()._prepare()  # magnitude block rankings, for the blocks family
        g = self.master
        total = sum(g.tensors[g.operators[i].inputs[1]].size for i in self.layers)
        self.actions: dict[int, dict[float, Action]] = {}
        self._conv_keep: dict[int, np.ndarray] = {}
        self._channel_order = {k: np.argsort(channel_scores(g, grp), kind="stable")
                               for k, grp in self.groups.items()}
        for i in self.layers:
            op = g.operators[i]
            w = g.tensors[op.inputs[1]]
            removed = {NONE: 0}
            if i in self.groups:
                per_channel = self._channel_weights(self.groups[i])
                for r in CHANNEL_RATIOS:
                    removed[Action("channels", r)] = round(r * self.groups[i].channels) * per_channel
            if op.opcode == "CONV_2D" and w.shape[1:3] == (3, 3):
                self._conv_keep[i], _ = kernel_patterns(self._float_weights(i))
                removed[Action("kernel3x3", 5 / 9)] = w.size * 5 // 9
            for r in BLOCK_RATIOS:
                removed[Action("blocks", r)] = round(r * w.size)
            levels: dict[float, Action] = {}
            for action, n in sorted(removed.items(), key=lambda kv: kv[1]):
                level = n / total
                while level in levels:  # equal savings stay distinct levels
                    level = np.nextafter(level, 1.0)
                levels[float(level)] = action
            self.actions[i] = levels

    def _channel_weights(self, group: ChannelGroup) -> int:
        """Weights that leave with one channel: its producers' rows, its readers' columns."""
        g = self.master
        n = sum(g.tensors[g.operators[p].inputs[1]].size // group.channels for p in group.producers)
        for reader, spatial in group.readers:
            w = g.tensors[g.operators[reader].inputs[1]]
            n += w.size // w.shape[-1] * spatial
        for d in group.depthwise:
            n += g.tensors[g.operators[d].inputs[1]].size // group.channels
        return n

    def action(self, i: int, level: float) -> Action:
        return self.actions[i].get(level, NONE) if level > 0 else NONE

    def levels(self, i: int) -> list[float]:
        return list(self.actions[i])

    # -- candidates

    def candidate(self, levels: dict[int, float]) -> Graph:
        from edged.adapt.requantize import requantize_layer

        chosen = {i: self.action(i, level) for i, level in levels.items()}
        g = copy.deepcopy(self.master)
        for i, act in chosen.items():  # weight masks first: no shape changes
            if act.family == "kernel3x3":
                requantize_layer(g, i, self._conv_keep[i])
            elif act.family == "blocks":
                requantize_layer(g, i, self._ranking[i].mask(act.ratio))
        for i, act in chosen.items():  # then channels; tensor and op indices never move
            if act.family == "channels":
                group = self.groups[i]
                keep = np.ones(group.channels, dtype=bool)
                keep[self._channel_order[i][: round(act.ratio * group.channels)]] = False
                g = remove_group_channels(g, group, keep)
        return g

    def sensitivity(self) -> dict[int, dict[float, float]]:
        """Output KL with each layer alone taking each of its actions."""
        curves = {}
        for i in self.layers:
            curves[i] = {lv: 0.0 if lv == 0 else self.kl(self.candidate({i: lv})) for lv in self.levels(i)}
            points = ", ".join(f"{self.action(i, lv)}:{k:.4f}" for lv, k in curves[i].items())
            self.progress(f"sensitivity of op #{i}: {points}")
        return curves

    def overall_sparsity(self, levels: dict[int, float]) -> float:
        """Share of the prunable weights removed (channels take their readers' columns along)."""
        return float(sum(levels.get(i, 0.0) for i in self.layers))
