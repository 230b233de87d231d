"""A learned allocation for pattern pruning (after AutoSculpt): GATv2 features, REINFORCE policy.

The model is a graph: one node per patternable layer (features: op type,
size, FLOPs share, and its measured sensitivity at every level), edges along
the data flow between those layers, self-loops included. A GATv2 layer
(attention e_ij = a . LeakyReLU(W [h_i || h_j])) mixes each node with its
neighbours; a linear head gives each node a distribution over the levels.
Episodes sample one level per layer, build the candidate, and score it:
reward = share of weights removed, minus a penalty when the output KL on the
calibration data exceeds the budget. REINFORCE with a moving-average baseline
trains the head; the GATv2 weights are seeded random projections held fixed
(the graphs here have a handful of nodes, too few to train an encoder on).
Training stops at ``time_budget_s``; the best candidate seen is kept, even if
training is interrupted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edged.adapt.patterns import PatternCompressor


@dataclass
class PolicyResult:
    levels: dict[int, float]
    sparsity: float
    kl: float
    reward: float
    episodes: int
    seconds: float
    candidates: int = 0  # distinct allocations actually built and measured
    history: list[float] = field(default_factory=list)  # mean reward per batch of episodes


def _leaky(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, 0.2 * x)


def node_features(comp: PatternCompressor, curves: dict[int, dict[float, float]]) -> np.ndarray:
    g = comp.master
    total = sum(g.tensors[g.operators[i].inputs[1]].size for i in comp.layers)
    rows = []
    for i in comp.layers:
        op = g.operators[i]
        w = g.tensors[op.inputs[1]]
        out = g.tensors[op.outputs[0]]
        flops = w.size * int(np.prod(out.shape[1:-1], dtype=np.int64) if op.opcode == "CONV_2D" else 1)
        sens = [np.log1p(curves[i][level]) for level in comp.grid]
        rows.append([op.opcode == "FULLY_CONNECTED", op.opcode == "CONV_2D", w.size / total,
                     np.log10(flops), *sens])
    x = np.asarray(rows, dtype=np.float64)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)


def adjacency(comp: PatternCompressor) -> np.ndarray:
    """Data-flow edges between the patternable layers (a layer reaches the next one it feeds)."""
    g = comp.master
    producers = g.producers()
    n = len(comp.layers)
    adj = np.eye(n, dtype=bool)
    index = {op: k for k, op in enumerate(comp.layers)}
    for k, i in enumerate(comp.layers):
        frontier = [g.operators[i].inputs[0]]
        seen = set()
        while frontier:  # walk back to the nearest patternable producer
            t = frontier.pop()
            p = producers.get(t)
            if p is None or p in seen:
                continue
            seen.add(p)
            if p in index:
                adj[k, index[p]] = adj[index[p], k] = True
                continue
            frontier.extend(x for x in g.operators[p].inputs if x >= 0 and g.tensors[x].data is None)
    return adj


def gatv2(h: np.ndarray, adj: np.ndarray, rng: np.random.Generator, dim: int = 16) -> np.ndarray:
    """One GATv2 layer with seeded weights: attention over neighbours, then ELU."""
    w = rng.normal(0, 1 / np.sqrt(h.shape[1]), (2 * h.shape[1], dim))
    a = rng.normal(0, 1 / np.sqrt(dim), dim)
    wv = rng.normal(0, 1 / np.sqrt(h.shape[1]), (h.shape[1], dim))
    n = h.shape[0]
    e = np.full((n, n), -np.inf)
    for i in range(n):
        for j in range(n):
            if adj[i, j]:
                e[i, j] = _leaky(np.concatenate([h[i], h[j]]) @ w) @ a
    alpha = np.exp(e - e.max(axis=1, keepdims=True))
    alpha /= alpha.sum(axis=1, keepdims=True)
    out = alpha @ (h @ wv)
    return np.where(out > 0, out, np.exp(np.minimum(out, 0)) - 1)


def train_policy(comp: PatternCompressor, kl_budget: float, time_budget_s: float = 20.0,
                 episodes_per_batch: int = 8, learning_rate: float = 0.3, seed: int = 0,
                 curves: dict[int, dict[float, float]] | None = None) -> PolicyResult:
    """Learn per-layer levels maximizing removed weights with output KL within ``kl_budget``."""
    if kl_budget <= 0:
        raise ValueError(f"the KL budget must be positive, got {kl_budget}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    curves = curves or comp.sensitivity()
    h = gatv2(node_features(comp, curves), adjacency(comp), rng)
    levels = np.asarray(comp.grid)
    head = np.zeros((h.shape[1], levels.size))
    baseline = None
    best: PolicyResult | None = None
    history = []
    episodes = 0
    cache: dict[tuple[int, ...], tuple[float, float]] = {}
    while time.perf_counter() - t0 < time_budget_s:
        logits = h @ head
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        grad = np.zeros_like(head)
        rewards = []
        for _ in range(episodes_per_batch):
            choice = tuple(int(rng.choice(levels.size, p=p)) for p in probs)
            if choice not in cache:
                alloc = {layer: float(levels[c]) for layer, c in zip(comp.layers, choice, strict=True)}
                cache[choice] = (comp.overall_sparsity(alloc), comp.kl(comp.candidate(alloc)))
            sparsity, kl = cache[choice]
            reward = sparsity - 2.0 * max(0.0, kl - kl_budget) / kl_budget
            rewards.append(reward)
            episodes += 1
            if kl <= kl_budget and (best is None or reward > best.reward):
                alloc = {layer: float(levels[c]) for layer, c in zip(comp.layers, choice, strict=True)}
                best = PolicyResult(alloc, sparsity, kl, reward, episodes, 0.0)
            adv = reward - (baseline if baseline is not None else reward)
            for k, c in enumerate(choice):  # d log softmax / d head = h_k (onehot - p)
                grad += adv * np.outer(h[k], np.eye(levels.size)[c] - probs[k])
        mean = float(np.mean(rewards))
        baseline = mean if baseline is None else 0.8 * baseline + 0.2 * mean
        head += learning_rate * grad / episodes_per_batch
        history.append(mean)
    if best is None:
        none = {layer: 0.0 for layer in comp.layers}
        best = PolicyResult(none, 0.0, 0.0, 0.0, episodes, 0.0)
    best.episodes, best.seconds, best.history = episodes, time.perf_counter() - t0, history
    best.candidates = len(cache)
    return best
