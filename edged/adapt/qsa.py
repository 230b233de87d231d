"""Quantized sparse autoencoder (QSA) on a layer's input activations, in numpy.

The autoencoder learns to reconstruct a window of the activations a layer
consumes through a ReLU code, with its weights fake-quantized to int8 in the
forward pass (straight-through estimator), as they would be on the device.
One lambda weighs an L1 penalty on the weights and on the code (per weight
and per code unit, so the two are on one scale); it is adjusted between
epochs toward a target code sparsity (the code term is what makes that
steerable: biases are not penalized, so weight L1 alone cannot silence a
unit). Activations are centred and scaled by one global deviation, not per
feature, so a feature carrying little energy stays small and cheap to drop,
as it would be for the layer that consumes it. What the
pruner uses is the encoder: input features whose encoder weights the L1 term
drove to zero are ones the autoencoder could reconstruct the window without,
i.e. redundant for the layer that consumes them; the L1 norm of each
feature's encoder weights is its importance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class QsaConfig:
    code_size: int = 64
    target_code_sparsity: float = 0.7  # fraction of code units at zero, on average
    lam: float = 0.05  # initial L1 weight; adapted
    learning_rate: float = 3e-3
    batch_size: int = 128
    epochs: int = 30
    time_budget_s: float = 5.0  # training stops when either runs out, or at a plateau
    # A plateau: the best reconstruction error has not fallen by min_improvement
    # (relative) in `patience` epochs. 0 patience trains for the whole budget.
    patience: int = 0
    min_improvement: float = 0.01
    seed: int = 0


@dataclass
class QsaResult:
    importance: np.ndarray  # [features], mean 1 over features with any importance
    reconstruction_mse: float  # on the standardized window
    code_sparsity: float
    lam: float
    epochs: int
    seconds: float
    history: list[tuple[float, float, float]] = field(default_factory=list)  # (mse, code sparsity, lam)
    converged: bool = False  # stopped at a plateau (not by the epoch or time budget)


def fake_quantize(w: np.ndarray) -> np.ndarray:
    """Symmetric per-column int8 quantize-dequantize (zero point 0, levels -127..127)."""
    scale = np.abs(w).max(axis=0, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(w / scale), -127, 127) * scale


class _Adam:
    def __init__(self, shapes: list[tuple[int, ...]], lr: float) -> None:
        self.lr, self.t = lr, 0
        self.m = [np.zeros(s) for s in shapes]
        self.v = [np.zeros(s) for s in shapes]

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2 = 0.9, 0.999
        for p, g, m, v in zip(params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / (1 - b1**self.t)) / (np.sqrt(v / (1 - b2**self.t)) + 1e-8)


def train_qsa(window: np.ndarray, config: QsaConfig | None = None) -> QsaResult:
    """Train on ``window`` [samples, features] (int8 or float activations); return feature importance.

    Raises ValueError on an empty window. Constant features (no variance) get
    importance 0 without training on them: nothing can be learnt from them.
    """
    cfg = config or QsaConfig()
    x = np.asarray(window, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"QSA needs a window of at least 2 samples x 1 feature, got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("QSA window holds NaN or infinite values")
    t0 = time.perf_counter()
    mean, std = x.mean(axis=0), x.std(axis=0)
    live = std > 0
    n, d = x.shape
    importance = np.zeros(d)
    if not live.any():
        return QsaResult(importance, 0.0, 1.0, cfg.lam, 0, time.perf_counter() - t0)
    xs = (x[:, live] - mean[live]) / float(np.sqrt(np.mean(std[live] ** 2)))
    dl = xs.shape[1]
    rng = np.random.default_rng(cfg.seed)
    h = cfg.code_size
    we = rng.normal(0, np.sqrt(2.0 / dl), (dl, h))
    be = np.zeros(h)
    wd = rng.normal(0, np.sqrt(1.0 / h), (h, dl))
    bd = np.zeros(dl)
    params = [we, be, wd, bd]
    opt = _Adam([p.shape for p in params], cfg.learning_rate)
    lam = cfg.lam
    history = []
    epochs_run = 0
    best, best_epoch, converged = np.inf, 0, False
    for epochs_run in range(1, cfg.epochs + 1):
        order = rng.permutation(n)
        for start in range(0, n, cfg.batch_size):
            xb = xs[order[start : start + cfg.batch_size]]
            qe, qd = fake_quantize(we), fake_quantize(wd)
            pre = xb @ qe + be
            z = np.maximum(pre, 0.0)
            out = z @ qd + bd
            err = out - xb
            m = xb.shape[0]
            g_out = 2.0 * err / (m * dl)
            # Straight-through: gradients of the quantized weights go to the float ones.
            g_wd = z.T @ g_out + lam * np.sign(wd) / wd.size
            g_bd = g_out.sum(axis=0)
            g_z = g_out @ qd.T + lam / (m * h)  # d(lam * mean|z|)/dz, z >= 0
            g_pre = g_z * (pre > 0)
            g_we = xb.T @ g_pre + lam * np.sign(we) / we.size
            g_be = g_pre.sum(axis=0)
            opt.step(params, [g_we, g_be, g_wd, g_bd])
        z_all = np.maximum(xs @ fake_quantize(we) + be, 0.0)
        mse = float(np.mean((z_all @ fake_quantize(wd) + bd - xs) ** 2))
        sparsity = float(np.mean(z_all <= 0))
        history.append((mse, sparsity, lam))
        # Steer lambda toward the target code sparsity: more L1 shrinks the code.
        lam *= 1.3 if sparsity < cfg.target_code_sparsity else 1 / 1.3
        if mse < best * (1 - cfg.min_improvement):
            best, best_epoch = mse, epochs_run
        if cfg.patience and epochs_run - best_epoch >= cfg.patience:
            converged = True
            break
        if time.perf_counter() - t0 > cfg.time_budget_s:
            break
    imp = np.abs(fake_quantize(we)).sum(axis=1)
    imp = imp / imp.mean() if imp.mean() > 0 else imp
    importance[live] = imp
    mse, sparsity, lam_used = history[-1]
    return QsaResult(importance, mse, sparsity, lam_used, epochs_run, time.perf_counter() - t0, history,
                     converged)
