"""Compression of an int8 model: score weights, allocate sparsity per layer, prune, re-quantize.

One path serves ``edged compress`` (offline) and the pruning controller
(online). A strategy scores every weight of a layer (higher = more worth
keeping); masks keep the best-scoring blocks of the chosen block shape; each
layer's sparsity comes from its own sensitivity (the output KL when that layer
alone is pruned), so fragile layers are pruned less. Masks are always cut from
the dense master, never from an already pruned model, so pruned weights can
come back when the data changes.

The seed's threshold tau = argmin KL(p_before || p_after) is read as a
constrained search: tau caps each layer's own sensitivity; the largest tau
(the most pruning) whose joint candidate stays within the KL budget, or
reaches the requested overall sparsity, is found by bisection, and every
point tried is kept as the KL curve.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edged.adapt.calibration import Calibration, LayerStats, layer_stats, prunable_ops
from edged.adapt.qsa import QsaConfig, QsaResult, train_qsa
from edged.adapt.requantize import requantize_layer
from edged.adapt.stats import as_probabilities, mean_row_kl, softmax_rows
from edged.model.ir import Graph
from edged.sparse.block_csr import BlockShape, block_view

DEFAULT_BLOCK = BlockShape(16, 4)
SENSITIVITY_GRID = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)


def output_probabilities(graph: Graph, values: np.ndarray) -> np.ndarray:
    """Dequantized output rows of ``graph`` as probabilities: its own softmax (int8 zeros
    floored at half a quantization step), else the softmax of its logits."""
    if graph.operators[-1].opcode == "SOFTMAX":
        t = graph.output_tensors[0]
        step = float(t.quant.scale[0]) if t.dtype.kind in "iu" and t.quant is not None else 0.0
        return as_probabilities(values, max(1e-6, step / 2))
    return softmax_rows(values)


class Strategy(Protocol):
    """Scores the weights of one layer: same shape as the weights, higher = keep."""

    name: str

    def scores(self, weights: np.ndarray, stats: LayerStats) -> np.ndarray: ...


class MagnitudeStrategy:
    """|w|: the classic baseline."""

    name = "magnitude"

    def scores(self, weights: np.ndarray, stats: LayerStats) -> np.ndarray:
        return np.abs(weights.astype(np.float64))


class WandaStrategy:
    """|w_ij| * ||x_j||: a weight matters as much as the activations it multiplies (Wanda)."""

    name = "wanda"

    def scores(self, weights: np.ndarray, stats: LayerStats) -> np.ndarray:
        flat = np.abs(weights.reshape(weights.shape[0], -1).astype(np.float64)) * stats.input_norm[None, :]
        return flat.reshape(weights.shape)


class QsaStrategy:
    """|w_ij| * ||x_j|| * (floor + importance_j): Wanda's score weighted by how much the layer's
    quantized sparse autoencoder needed input feature j (edged.adapt.qsa).

    Offline it trains each autoencoder to a plateau (30 s at most per layer). Measured on the
    bundled models (`python bench/adapt.py --only qsa`) its pruning is no better than magnitude
    or Wanda, nor than the same score with the importances shuffled across features, so it is
    an opt-in strategy, not the default."""

    name = "qsa"
    floor = 0.1  # features the autoencoder dropped are demoted, not condemned

    def __init__(self, config: QsaConfig | None = None) -> None:
        self.config = config or QsaConfig(epochs=500, time_budget_s=30.0, patience=20)
        self.results: dict[int, QsaResult] = {}

    def scores(self, weights: np.ndarray, stats: LayerStats) -> np.ndarray:
        result = train_qsa(stats.samples, self.config)
        self.results[stats.op_index] = result
        weight = stats.input_norm * (self.floor + result.importance)
        flat = np.abs(weights.reshape(weights.shape[0], -1).astype(np.float64)) * weight[None, :]
        return flat.reshape(weights.shape)


class ObsStrategy:
    """w_ij² / [H⁻¹]_jj with H = XᵀX of the layer's inputs: the output error optimal brain surgeon
    expects from pruning w_ij alone. With reconstruction on, the mask is chosen inside the
    reconstruction sweep instead, from the weights as they are updated (SparseGPT)."""

    name = "obs"

    def scores(self, weights: np.ndarray, stats: LayerStats) -> np.ndarray:
        from edged.adapt.reconstruct import DAMPING

        x = stats.samples
        h = x.T @ x
        h[np.diag_indices_from(h)] += DAMPING * (float(np.mean(np.diag(h))) or 1.0)
        inv_diag = np.diag(np.linalg.inv(h))
        flat = weights.reshape(weights.shape[0], -1).astype(np.float64) ** 2 / inv_diag[None, :]
        return flat.reshape(weights.shape)


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "magnitude": MagnitudeStrategy,
    "wanda": WandaStrategy,
    "qsa": QsaStrategy,
    "obs": ObsStrategy,
}


@dataclass
class BlockRanking:
    """Blocks of a score matrix from least to most worth keeping: sorted once, cut at any sparsity."""

    order: np.ndarray  # flat block indices, ascending summed score (stable)
    grid: tuple[int, int]
    block: BlockShape
    shape: tuple[int, ...]  # of the scores (the weight tensor)

    @classmethod
    def of(cls, scores: np.ndarray, block: BlockShape) -> BlockRanking:
        flat = scores.reshape(scores.shape[0], -1)
        sums = block_view(flat, block).sum(axis=(1, 3))
        return cls(np.argsort(sums, axis=None, kind="stable"), sums.shape, block, scores.shape)

    def mask(self, sparsity: float) -> np.ndarray:
        """Keep-mask pruning the ``sparsity`` share of blocks with the lowest summed score."""
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity must be within [0, 1], got {sparsity}")
        keep = np.ones(self.order.size, dtype=bool)
        keep[self.order[: round(sparsity * self.order.size)]] = False
        full = np.repeat(np.repeat(keep.reshape(self.grid), self.block.rows, axis=0), self.block.cols, axis=1)
        n = self.shape[0]
        k = int(np.prod(self.shape[1:]))
        return full[:n, :k].reshape(self.shape)


def score_mask(scores: np.ndarray, block: BlockShape, sparsity: float) -> np.ndarray:
    """Keep-mask pruning the ``sparsity`` share of ``block`` blocks with the lowest summed score."""
    return BlockRanking.of(scores, block).mask(sparsity)


@dataclass
class LayerPlan:
    op_index: int
    block: BlockShape
    sparsity: float  # fraction of blocks pruned
    sensitivity: dict[float, float] = field(default_factory=dict)  # sparsity -> output KL, this layer alone


@dataclass
class CurvePoint:
    tau: float
    sparsity: float  # of all prunable weights
    kl: float


@dataclass
class CompressResult:
    graph: Graph
    layers: list[LayerPlan]
    kl: float
    sparsity: float
    curve: list[CurvePoint]


class Compressor:
    """Builds pruned, re-quantized candidates of a dense int8 master on calibration data.

    A candidate is described by one level per layer (here: the fraction of
    blocks pruned); subclasses with another transform (``HMatrixCompressor`` and
    ``SvdCompressor`` in edged.adapt.factorize, ``PatternCompressor``) redefine
    the levels, ``candidate`` and ``overall_sparsity``, and share the
    sensitivity allocation and search.
    """

    grid: tuple[float, ...] = SENSITIVITY_GRID

    def __init__(self, master: Graph, calib: Calibration, strategy: Strategy,
                 blocks: dict[int, BlockShape] | BlockShape = DEFAULT_BLOCK,
                 layers: list[int] | None = None, bias_correction: bool = False,
                 progress: Callable[[str], None] | None = None, reconstruct: bool = False) -> None:
        from edged.runtime.reference import ReferenceEngine

        self.master = master
        self.calib = calib
        self.strategy = strategy
        self.layers = prunable_ops(master) if layers is None else layers
        if not self.layers:
            raise ValueError("the model has no prunable layers (FULLY_CONNECTED / CONV_2D with int8 weights)")
        self.blocks = blocks if isinstance(blocks, dict) else {i: blocks for i in self.layers}
        self.bias_correction = bias_correction
        self.reconstruct = reconstruct
        self._dense_features: dict[int, np.ndarray] = {}  # what each layer sees in the master
        self._dense_upper: dict[int, np.ndarray] = {}  # and the inverse Cholesky factor of its Gram matrix
        self.progress = progress or (lambda _msg: None)
        self.stats = layer_stats(master, calib.x)
        self._reference_out = self._outputs(ReferenceEngine(master))
        self._prepare()

    def _prepare(self) -> None:
        """Score every layer once (a mask at any sparsity is then a cut of the ranking)."""
        master = self.master
        self._ranking: dict[int, BlockRanking] = {}
        for i in self.layers:
            w = master.tensors[master.operators[i].inputs[1]].data
            scores = self.strategy.scores(self._float_weights(i), self.stats[i])
            if scores.shape != w.shape:
                raise ValueError(
                    f"{self.strategy.name} scored op #{i} with shape {scores.shape}, not {w.shape}"
                )
            self._ranking[i] = BlockRanking.of(scores, self.blocks[i])

    def _float_weights(self, i: int) -> np.ndarray:
        w = self.master.tensors[self.master.operators[i].inputs[1]]
        scale = np.asarray(w.quant.scale, dtype=np.float64)
        shape = (-1,) + (1,) * (w.data.ndim - 1)
        return w.data.astype(np.float64) * (scale.reshape(shape) if scale.size > 1 else scale[0])

    def _outputs(self, engine) -> np.ndarray:
        """Output class probabilities on the calibration inputs: the model's own if it ends in
        SOFTMAX, else the softmax of its (dequantized) logits."""
        out = engine.run([self.calib.x])[0] if hasattr(engine, "run") else engine.infer([self.calib.x])[0]
        t = self.master.output_tensors[0]
        values = out.astype(np.float64)
        if out.dtype.kind in "iu" and t.quant is not None:
            values = (values - float(t.quant.zero_point[0])) * float(t.quant.scale[0])
        return output_probabilities(self.master, values.reshape(values.shape[0], -1))

    def candidate(self, sparsities: dict[int, float]) -> Graph:
        """The master with each layer pruned to its sparsity (in its block shape) and re-quantized;
        with ``reconstruct``, the kept weights are solved for again (edged.adapt.reconstruct)."""
        if self.reconstruct:
            return self._reconstructed(sparsities)
        g = copy.deepcopy(self.master)
        for i, s in sparsities.items():
            if s <= 0:
                continue
            keep = self._ranking[i].mask(s)
            mean = self.stats[i].mean_input if self.bias_correction else None
            requantize_layer(g, i, keep, mean)
        return g

    def _reconstructed(self, sparsities: dict[int, float]) -> Graph:
        """Layers in graph order: each pruned one is reconstructed on the inputs the layers before it
        now give; after the first change, every later layer is re-fitted to the master's outputs
        (pruned or not). The master's inputs and factors are cached: a candidate pruning a single
        layer costs one sweep."""
        from edged.adapt.reconstruct import inverse_cholesky, layer_features, reconstruct_layer

        g = copy.deepcopy(self.master)
        changed = False
        for i in sorted(self.layers):
            s = sparsities.get(i, 0.0)
            if s <= 0 and not changed:
                continue
            if i not in self._dense_features:
                self._dense_features[i] = layer_features(self.master, self.calib.x, i)
            dense_x = self._dense_features[i]
            keep = None if self.strategy.name == "obs" or s <= 0 else self._ranking[i].mask(s)
            if not changed:
                if i not in self._dense_upper:
                    self._dense_upper[i] = inverse_cholesky(self._gram(i, dense_x))
                reconstruct_layer(g, i, dense_x, self.blocks[i], sparsity=None if keep is not None else s,
                                  keep=keep, upper=self._dense_upper[i])
            else:
                reconstruct_layer(g, i, layer_features(g, self.calib.x, i), self.blocks[i],
                                  sparsity=None if keep is not None else s, keep=keep,
                                  target_features=dense_x)
            changed = True
        return g

    def _gram(self, i: int, features: np.ndarray) -> np.ndarray:
        from edged.adapt.reconstruct import gram

        op = self.master.operators[i]
        return gram(features, with_bias=len(op.inputs) > 2 and op.inputs[2] >= 0)

    def kl(self, graph: Graph) -> float:
        """Mean KL between the master's and ``graph``'s output distributions on the calibration data."""
        from edged.runtime.native import NativeEngine

        return mean_row_kl(self._reference_out, self._outputs(NativeEngine(graph, layout="dense")))

    def accuracy(self, graph: Graph) -> float | None:
        from edged.runtime.native import NativeEngine

        if self.calib.y is None:
            return None
        out = NativeEngine(graph, layout="dense").infer([self.calib.x])[0]
        return float(np.mean(np.argmax(out, axis=1) == self.calib.y))

    def sensitivity(self) -> dict[int, dict[float, float]]:
        """Output KL with each layer alone pruned at each grid sparsity."""
        curves = {}
        for i in self.layers:
            curves[i] = {}
            for s in self.grid:
                curves[i][s] = 0.0 if s == 0 else self.kl(self.candidate({i: s}))
            points = ", ".join(f"{s:g}:{k:.4f}" for s, k in curves[i].items())
            self.progress(f"sensitivity of op #{i}: {points}")
        return curves

    def allocate(self, curves: dict[int, dict[float, float]], tau: float) -> dict[int, float]:
        """Per layer, the largest grid sparsity whose own KL stays <= tau."""
        out = {}
        for i, curve in curves.items():
            ok = [s for s, k in curve.items() if k <= tau]
            out[i] = max(ok) if ok else 0.0
        return out

    def overall_sparsity(self, sparsities: dict[int, float]) -> float:
        """Fraction of prunable weights removed (for other transforms: of weight bytes saved)."""
        sizes = {i: self.master.tensors[self.master.operators[i].inputs[1]].size for i in self.layers}
        return sum(sizes[i] * sparsities.get(i, 0.0) for i in self.layers) / sum(sizes.values())

    def search(self, kl_budget: float | None = None, sparsity: float | None = None,
               steps: int = 14) -> CompressResult:
        """Binary search over tau: the most pruning within ``kl_budget``, or the least KL reaching
        ``sparsity``. The allocation only changes where tau crosses a measured sensitivity, so tau
        runs over those values, at most ``steps`` joint candidates."""
        if (kl_budget is None) == (sparsity is None):
            raise ValueError("give exactly one of a KL budget or a target sparsity")
        if kl_budget is not None and kl_budget <= 0:
            raise ValueError(f"the KL budget must be positive, got {kl_budget}")
        if sparsity is not None and not 0 < sparsity < 1:
            raise ValueError(f"the target sparsity must be in (0, 1), got {sparsity}")
        curves = self.sensitivity()
        taus = sorted({k for c in curves.values() for k in c.values()})
        if sparsity is not None:
            best_possible = self.overall_sparsity(self.allocate(curves, taus[-1]))
            if best_possible + 1e-9 < sparsity:
                raise ValueError(
                    f"no allocation reaches {sparsity:.0%} sparsity: at most {best_possible:.1%} with the "
                    f"largest grid level {max(self.grid):g} in every layer"
                )
        lo, hi = 0, len(taus) - 1  # indices into taus
        curve: list[CurvePoint] = []
        best: tuple[dict[int, float], float] | None = None
        for _ in range(steps):
            if lo > hi:
                break
            mid = (lo + hi) // 2
            tau = taus[mid]
            alloc = self.allocate(curves, tau)
            s = self.overall_sparsity(alloc)
            kl = self.kl(self.candidate(alloc))
            curve.append(CurvePoint(tau, s, kl))
            self.progress(f"tau {tau:.5f}: sparsity {s:.1%}, KL {kl:.5f}")
            if kl_budget is not None:
                if kl <= kl_budget:
                    lo = mid + 1
                    if best is None or s > self.overall_sparsity(best[0]):
                        best = (alloc, kl)
                else:
                    hi = mid - 1
            else:
                if s >= sparsity - 1e-9:
                    hi = mid - 1
                    if best is None or kl < best[1]:
                        best = (alloc, kl)
                else:
                    lo = mid + 1
        if best is None:
            if kl_budget is not None:
                raise ValueError(f"no pruning meets the KL budget {kl_budget:g}: the gentlest point tried "
                                 f"had KL {min(p.kl for p in curve):.5f}")
            alloc = self.allocate(curves, taus[-1])
            best = (alloc, self.kl(self.candidate(alloc)))
        alloc, kl = best
        if kl_budget is not None and self.overall_sparsity(alloc) == 0:
            steps_that_save = [(k, i) for i, c in curves.items() for lv, k in c.items()
                               if lv > 0 and self.overall_sparsity({i: lv}) > 0]
            if not steps_that_save:
                raise ValueError("no layer can be compressed: no level of any layer saves weights")
            k, i = min(steps_that_save)
            raise ValueError(f"no layer can be compressed within the KL budget {kl_budget:g}: the gentlest "
                             f"step that saves weights, on op #{i}, costs KL {k:.5f}")
        reached = self.overall_sparsity(alloc)
        linear = type(self).overall_sparsity is Compressor.overall_sparsity
        if sparsity is not None and reached > sparsity and linear:
            # Levels here are fractions of blocks, so overall sparsity is linear in them: scaling
            # every layer down lands on the target itself, not on the next grid point above it.
            alloc = {i: a * sparsity / reached for i, a in alloc.items()}
            candidate = self.candidate(alloc)
            kl = self.kl(candidate)
            curve.append(CurvePoint(curve[-1].tau if curve else 0.0, self.overall_sparsity(alloc), kl))
        else:
            candidate = self.candidate(alloc)
        layers = [LayerPlan(i, self.blocks[i], alloc[i], curves[i]) for i in self.layers]
        return CompressResult(candidate, layers, kl, self.overall_sparsity(alloc), curve)


def served_bytes(graph: Graph) -> int:
    """Bytes of weights as served: dense int8, or block-CSR (values + indices + row pointers) where
    that is smaller, plus the quantization parameters (one float scale per channel)."""
    from edged.ops.hmatrix import CUSTOM_CODE
    from edged.sparse.block_csr import BLOCK_SHAPES, pack_block_csr

    def stored(w) -> int:
        flat = w.data.reshape(w.shape[0], -1)
        best = flat.nbytes
        if np.count_nonzero(flat) < flat.size:
            best = min([best] + [pack_block_csr(flat, b).nbytes for b in BLOCK_SHAPES])
        return best + 4 * w.quant.scale.size

    total = 0
    for i in prunable_ops(graph):
        total += stored(graph.tensors[graph.operators[i].inputs[1]])
        if len(graph.operators[i].inputs) > 2 and graph.operators[i].inputs[2] >= 0:
            total += graph.tensors[graph.operators[i].inputs[2]].nbytes
    for op in graph.operators:  # H-matrix layers: both stage matrices, mid scales, bias
        if op.opcode == "CUSTOM" and op.custom_code == CUSTOM_CODE:
            w1, mid, w2 = (graph.tensors[t] for t in op.inputs[1:4])
            total += stored(w1) + stored(w2) + mid.nbytes
            total += graph.tensors[op.inputs[4]].nbytes if len(op.inputs) > 4 and op.inputs[4] >= 0 else 0
    return total


def float_bytes(graph: Graph) -> int:
    """Bytes of the same weights (and biases) in float32: the denominator of the compression ratio."""
    total = 0
    for i in prunable_ops(graph):
        op = graph.operators[i]
        total += 4 * graph.tensors[op.inputs[1]].size
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            total += 4 * graph.tensors[op.inputs[2]].size
    return total
