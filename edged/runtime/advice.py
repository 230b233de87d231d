"""Which block shapes make a layer faster on this machine: what pruning should aim for.

Pruning only pays when its zeros fall in blocks the sparse kernels can skip.
For each matmul layer of a plan this measures, on synthetic masks of the
layer's real geometry, how the sparse kernel in every block shape compares
with the dense kernel at several sparsities, and derives the break-even
sparsity of each shape. The pruning controller asks for the fast shapes of a
layer and prunes in one of them. Results depend only on the geometry, the
kernel variant and the CPU, so they are cached like the autotuner's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from edged.runtime.kernels import VARIANT_NAMES
from edged.runtime.layout import MIN_GAIN, TuneCache, cpu_fingerprint, time_layouts
from edged.sparse.block_csr import BLOCK_SHAPES, BlockShape

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)


@dataclass
class BlockAdvice:
    block: BlockShape
    speedup: dict[float, float]  # sparsity -> dense time / sparse time
    breakeven: float | None  # smallest measured sparsity at which sparse wins by MIN_GAIN, None if never

    def to_json(self) -> dict:
        return {"block": str(self.block), "breakeven": self.breakeven,
                "speedup": {f"{s:g}": round(r, 3) for s, r in self.speedup.items()}}


@dataclass
class LayerAdvice:
    step: int
    opcode: str
    shape: tuple[int, int]  # (out_c, depth)
    dense_us: float
    blocks: list[BlockAdvice] = field(default_factory=list)

    def fast_blocks(self, sparsity: float) -> list[BlockShape]:
        """Block shapes that beat dense at ``sparsity`` (interpolating the measured
        points conservatively: the nearest measured sparsity at or below it), fastest first."""
        below = [s for s in SPARSITIES if s <= sparsity + 1e-9]
        if not below:
            return []
        at = max(below)
        winners = [b for b in self.blocks if b.speedup.get(at, 0.0) >= MIN_GAIN]
        return [b.block for b in sorted(winners, key=lambda b: -b.speedup[at])]

    def to_json(self) -> dict:
        return {"step": self.step, "opcode": self.opcode, "shape": list(self.shape),
                "dense_us": round(self.dense_us, 3), "blocks": [b.to_json() for b in self.blocks]}


def synthetic_weights(
    shape: tuple[int, ...], block: BlockShape, sparsity: float, seed: int = 0
) -> np.ndarray:
    """Random int8 weights of ``shape`` (flattened to [out_c, -1]) with ``sparsity`` of their blocks zero."""
    rng = np.random.default_rng(seed)
    n = shape[0]
    k = int(np.prod(shape[1:]))
    w = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
    w[w == 0] = 1
    rows, cols = -(-n // block.rows), -(-k // block.cols)
    keep = rng.permutation(rows * cols) >= round(sparsity * rows * cols)
    keep = keep.reshape(rows, cols)
    full = np.repeat(np.repeat(keep, block.rows, axis=0), block.cols, axis=1)[:n, :k]
    return np.where(full, w, np.int8(0)).reshape(shape)


def layer_advice(graph, step, variant: int, cache: TuneCache | None = None,
                 blocks: tuple[BlockShape, ...] = BLOCK_SHAPES, batch: int = 1) -> LayerAdvice | None:
    """Measured speedups of every block shape over dense for ``step``; None if it has no matmul weights."""
    matmul = getattr(step.module, "matmul_weights", None)
    if matmul is None or matmul(step.params) is None:
        return None
    weights = step.params.weights
    shape2d = matmul(step.params).shape
    cache = cache if cache is not None else TuneCache.default()
    geometry = {k: v for k, v in vars(step.params).items() if not isinstance(v, np.ndarray)}
    key = "advice|" + repr((step.opcode, weights.shape, sorted(geometry.items()), VARIANT_NAMES[variant],
                            cpu_fingerprint(), batch, SPARSITIES, [str(b) for b in blocks]))
    hit = cache.get(key)
    if hit is None:
        dense_samples = []
        speed: dict[str, dict[str, float]] = {}
        for block in blocks:
            speed[str(block)] = {}
            for s in SPARSITIES:
                w = synthetic_weights(weights.shape, block, s)
                probe = dataclasses.replace(step, params=dataclasses.replace(step.params, weights=w))
                t = time_layouts(graph, probe, variant, [None, block], rounds=5, target_s=0.004, batch=batch)
                dense_samples.append(t["dense"])
                speed[str(block)][f"{s:g}"] = t["dense"] / t[str(block)]
        hit = {"dense_us": float(np.median(dense_samples)), "speedup": speed}
        cache.put(key, hit)
    advice = LayerAdvice(step.index, step.opcode, (int(shape2d[0]), int(shape2d[1])), hit["dense_us"])
    for block in blocks:
        speedup = {s: hit["speedup"][str(block)][f"{s:g}"] for s in SPARSITIES}
        wins = [s for s in SPARSITIES if speedup[s] >= MIN_GAIN]
        advice.blocks.append(BlockAdvice(block, speedup, min(wins) if wins else None))
    return advice


def fastest_blocks(plan, layers, sparsity: float) -> dict[int, BlockShape]:
    """Per layer of ``layers`` (operator indices), the fastest block shape on this machine at
    ``sparsity``; 1x1 (unstructured) where no shape beats dense."""
    advice = plan_advice(plan)
    out = {}
    for i in layers:
        fast = advice[i].fast_blocks(sparsity) if i in advice else []
        out[i] = fast[0] if fast else BlockShape(1, 1)
    return out


def plan_advice(plan, cache: TuneCache | None = None, batch: int = 1) -> dict[int, LayerAdvice]:
    """Advice for every matmul layer of a native plan, keyed by operator index."""
    out = {}
    for step in plan.steps:
        if step.index in plan.layouts:
            advice = layer_advice(plan.prepared.graph, step, plan.variant, cache, batch=batch)
            if advice is not None:
                out[step.index] = advice
    return out
