"""A learned allocation for pattern pruning (after AutoSculpt): a GATv2 encoder and a policy
trained together by REINFORCE with a baseline.

The model is a graph: one node per prunable layer, with features (op type,
parameters, FLOPs, input and output width, measured share of the model's
latency, and its one-shot sensitivity: the output KL of each action alone);
edges follow the data flow between those layers (through pooling, reshapes
and ADDs), self-loops included. One GATv2 layer (Brody et al.: attention
e_ij = a . LeakyReLU(W_l h_i + W_r h_j), softmax over neighbours, message
W_r h_j, ELU) encodes each node with its neighbours; each of the node's
actions (edged.adapt.patterns: family and ratio) is scored bilinearly
against the encoding, h_i . U phi(action), so layers with different action
sets share one head. Every parameter (W_l, W_r, a, U) is trained, with the
analytic gradients below (checked against finite differences in the tests).

Reward of an allocation: the share of weights removed and the share of
latency saved (each action's latency change measured once on the native
engine, so training is reproducible from a seed), minus a penalty when the
output KL on the calibration data exceeds the budget. Training stops at a
time budget or an episode cap; the best allocation within the budget is kept
whenever it stops. The graphs here have 2-3 nodes, so the learned policy has
little structure to exploit; bench/strategies.py reports how it compares
with the greedy allocation, which stays the default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edged.adapt.patterns import PatternCompressor

FAMILIES = ("none", "channels", "kernel3x3", "blocks")
DIM = 16


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


# ---------------------------------------------------------------- the encoder


def _leaky(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, 0.2 * x)


@dataclass
class Gatv2:
    """One GATv2 layer's weights; ``forward`` keeps what ``backward`` needs."""

    w_l: np.ndarray  # [features, DIM]
    w_r: np.ndarray
    a: np.ndarray  # [DIM]

    @classmethod
    def init(cls, features: int, rng: np.random.Generator, dim: int = DIM) -> Gatv2:
        s = 1 / np.sqrt(features)
        return cls(rng.normal(0, s, (features, dim)), rng.normal(0, s, (features, dim)),
                   rng.normal(0, 1 / np.sqrt(dim), dim))

    def forward(self, x: np.ndarray, adj: np.ndarray) -> tuple[np.ndarray, dict]:
        zl, zr = x @ self.w_l, x @ self.w_r
        u = zl[:, None, :] + zr[None, :, :]  # [i, j, DIM]
        e = np.where(adj, _leaky(u) @ self.a, -np.inf)
        alpha = np.exp(e - e.max(axis=1, keepdims=True))
        alpha /= alpha.sum(axis=1, keepdims=True)
        out = alpha @ zr
        h = np.where(out > 0, out, np.expm1(np.minimum(out, 0)))
        return h, {"x": x, "zr": zr, "u": u, "alpha": alpha, "out": out}

    def backward(self, dh: np.ndarray, cache: dict) -> Gatv2:
        """Gradients of a scalar with d/dh = ``dh``, as a Gatv2 of the same shapes."""
        x, zr, u, alpha, out = cache["x"], cache["zr"], cache["u"], cache["alpha"], cache["out"]
        dout = dh * np.where(out > 0, 1.0, np.exp(np.minimum(out, 0)))
        dzr = alpha.T @ dout
        dalpha = dout @ zr.T
        de = alpha * (dalpha - np.sum(alpha * dalpha, axis=1, keepdims=True))  # zero off the neighbourhood
        da = np.einsum("ij,ijd->d", de, _leaky(u))
        du = de[:, :, None] * self.a[None, None, :] * np.where(u > 0, 1.0, 0.2)
        dzl = du.sum(axis=1)
        dzr = dzr + du.sum(axis=0)
        return Gatv2(x.T @ dzl, x.T @ dzr, da)


# ---------------------------------------------------------------- the graph


def adjacency(comp: PatternCompressor) -> np.ndarray:
    """Data-flow edges between the prunable layers (a layer reaches the nearest ones it feeds)."""
    g = comp.master
    producers = g.producers()
    n = len(comp.layers)
    adj = np.eye(n, dtype=bool)
    index = {op: k for k, op in enumerate(comp.layers)}
    for k, i in enumerate(comp.layers):
        frontier = [g.operators[i].inputs[0]]
        seen = set()
        while frontier:  # walk back to the nearest prunable producers (through ADDs, both ways)
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


def measured_latency(comp: PatternCompressor, runs: int = 200) -> tuple[float, dict[int, dict[float, float]]]:
    """The master's batch-1 p50 (µs) and, per layer and action, the change when that action alone
    is applied, measured on the native engine in interleaved runs."""
    from edged.benchmark import measure
    from edged.runtime.native import NativeEngine

    x = comp.calib.x[:1]
    base = NativeEngine(comp.master)
    deltas: dict[int, dict[float, float]] = {}
    master_us = []
    for i in comp.layers:
        engines = {"master": base}
        for level in comp.levels(i):
            if level > 0:
                engines[str(level)] = NativeEngine(comp.candidate({i: level}))
        stats = measure(engines, [x], runs=runs, warmup=10)
        master_us.append(stats["master"].p50_us)
        deltas[i] = {lv: (stats[str(lv)].p50_us - stats["master"].p50_us if lv > 0 else 0.0)
                     for lv in comp.levels(i)}
    return float(np.median(master_us)), deltas


def node_features(comp: PatternCompressor, curves: dict[int, dict[float, float]],
                  deltas: dict[int, dict[float, float]], master_us: float) -> np.ndarray:
    g = comp.master
    total = sum(g.tensors[g.operators[i].inputs[1]].size for i in comp.layers)
    rows = []
    for i in comp.layers:
        op = g.operators[i]
        w, x, y = (g.tensors[t] for t in (op.inputs[1], op.inputs[0], op.outputs[0]))
        flops = w.size * int(np.prod(y.shape[1:-1], dtype=np.int64) if op.opcode == "CONV_2D" else 1)
        share = -min(deltas[i].values()) / master_us  # the most latency this layer can give back
        by_family = {f: min([np.log1p(curves[i][lv]) for lv, a in comp.actions[i].items() if a.family == f],
                            default=0.0) for f in FAMILIES[1:]}
        rows.append([op.opcode == "FULLY_CONNECTED", op.opcode == "CONV_2D", w.size / total, np.log10(flops),
                     np.log2(x.shape[-1]), np.log2(y.shape[-1]), share, *by_family.values()])
    x = np.asarray(rows, dtype=np.float64)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)


def action_features(comp: PatternCompressor, curves, deltas, master_us: float) -> dict[int, np.ndarray]:
    """phi(action) per layer: [family one-hot, ratio, log1p(KL alone), latency saved share, 1]."""
    out = {}
    for i in comp.layers:
        rows = []
        for level, act in comp.actions[i].items():
            onehot = [act.family == f for f in FAMILIES]
            rows.append([*onehot, act.ratio, np.log1p(100 * curves[i][level]), -deltas[i][level] / master_us,
                         1.0])
        out[i] = np.asarray(rows, dtype=np.float64)
    return out


# ---------------------------------------------------------------- training


KL_FEATURE = len(FAMILIES) + 1  # index of log1p(100 KL) in phi


@dataclass
class _Policy:
    enc: Gatv2
    u: np.ndarray  # [DIM + 1, action features]: the encoding, plus a constant for a shared prior

    @classmethod
    def init(cls, features: int, action_features: int, rng: np.random.Generator, dim: int = DIM) -> _Policy:
        u = rng.normal(0, 0.1, (dim + 1, action_features))
        u[-1, KL_FEATURE] = -1.0  # start out preferring the actions that cost least KL alone
        return cls(Gatv2.init(features, rng, dim), u)

    def probs(self, x, adj, phi):
        h, cache = self.enc.forward(x, adj)
        h = np.concatenate([h, np.ones((h.shape[0], 1))], axis=1)
        out = []
        for k, f in enumerate(phi):
            logits = f @ (self.u.T @ h[k])
            p = np.exp(logits - logits.max())
            out.append(p / p.sum())
        return out, h, cache

    def grad_log_prob(self, choice, probs, h, cache, phi) -> tuple[Gatv2, np.ndarray]:
        """d/dparams of sum_k log pi(choice_k)."""
        dh = np.zeros_like(h)
        du = np.zeros_like(self.u)
        for k, (c, p, f) in enumerate(zip(choice, probs, phi, strict=True)):
            g = -p
            g[c] += 1.0  # d log softmax / d logits
            direction = f.T @ g  # [action features]
            du += np.outer(h[k], direction)
            dh[k] = self.u @ direction
        return self.enc.backward(dh[:, :-1], cache), du


def train_policy(comp: PatternCompressor, kl_budget: float, time_budget_s: float = 20.0,
                 episodes_per_batch: int = 8, learning_rate: float = 0.05, seed: int = 0,
                 curves: dict[int, dict[float, float]] | None = None, max_episodes: int | None = None,
                 latency: tuple[float, dict[int, dict[float, float]]] | None = None,
                 latency_weight: float = 0.5) -> PolicyResult:
    """Learn one action per layer: most weights and latency removed with output KL within
    ``kl_budget``. ``curves`` (sensitivity) and ``latency`` (measured_latency) are measured
    when not given; pass them to reproduce a run exactly from its seed."""
    if kl_budget <= 0:
        raise ValueError(f"the KL budget must be positive, got {kl_budget}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    curves = curves or comp.sensitivity()
    master_us, deltas = latency or measured_latency(comp)
    x, adj = node_features(comp, curves, deltas, master_us), adjacency(comp)
    phi = [action_features(comp, curves, deltas, master_us)[i] for i in comp.layers]
    levels = [list(comp.actions[i]) for i in comp.layers]
    policy = _Policy.init(x.shape[1], phi[0].shape[1], rng)
    baseline = None
    best: PolicyResult | None = None
    history = []
    episodes = 0
    cache: dict[tuple[int, ...], tuple[float, float, float]] = {}

    def stop() -> bool:
        return (time.perf_counter() - t0 >= time_budget_s
                or (max_episodes is not None and episodes >= max_episodes))

    while not stop():
        probs, h, enc_cache = policy.probs(x, adj, phi)
        grads = []
        rewards = []
        for _ in range(episodes_per_batch):
            choice = tuple(int(rng.choice(p.size, p=p)) for p in probs)
            alloc = {i: levels[k][c] for k, (i, c) in enumerate(zip(comp.layers, choice, strict=True))}
            if choice not in cache:
                saved = -sum(deltas[i][lv] for i, lv in alloc.items()) / master_us
                cache[choice] = (comp.overall_sparsity(alloc), saved, comp.kl(comp.candidate(alloc)))
            sparsity, saved, kl = cache[choice]
            over = min(1.0, max(0.0, kl - kl_budget) / kl_budget)  # bounded: one wild episode must not
            reward = (1 - latency_weight) * sparsity + latency_weight * saved - 2.0 * over  # swamp a batch
            rewards.append(reward)
            episodes += 1
            if kl <= kl_budget and (best is None or reward > best.reward):
                best = PolicyResult(alloc, sparsity, kl, reward, episodes, 0.0)
            grads.append((reward, policy.grad_log_prob(choice, probs, h, enc_cache, phi)))
            if stop():
                break
        mean = float(np.mean(rewards))
        baseline = mean if baseline is None else 0.8 * baseline + 0.2 * mean
        step = learning_rate / len(grads)
        for reward, (g_enc, g_u) in grads:  # ascend the advantage-weighted log-likelihood
            adv = reward - baseline
            policy.enc.w_l += step * adv * g_enc.w_l
            policy.enc.w_r += step * adv * g_enc.w_r
            policy.enc.a += step * adv * g_enc.a
            policy.u += step * adv * g_u
        history.append(mean)
    if best is None:
        none = {i: 0.0 for i in comp.layers}
        best = PolicyResult(none, 0.0, 0.0, 0.0, episodes, 0.0)
    best.episodes, best.seconds, best.history = episodes, time.perf_counter() - t0, history
    best.candidates = len(cache)
    return best
