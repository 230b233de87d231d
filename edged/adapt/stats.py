"""Distances between distributions and confidence bounds, on int8-domain data.

Activations are int8, so their distribution over a window is a 256-bin
histogram; the divergences below compare two such histograms after additive
(Laplace) smoothing, which keeps KL finite when a bin is empty in one window
and not the other.
"""

from __future__ import annotations

import math

import numpy as np

BINS = 256


def int8_histogram(values: np.ndarray) -> np.ndarray:
    """Counts of each int8 value (index v + 128), as int64 [256]."""
    v = np.asarray(values)
    if v.dtype != np.int8:
        raise TypeError(f"int8 activations expected, got {v.dtype}")
    return np.bincount(v.reshape(-1).view(np.uint8) ^ 0x80, minlength=BINS).astype(np.int64)


def smoothed(counts: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Probabilities from counts with ``alpha`` added to every bin."""
    c = np.asarray(counts, dtype=np.float64) + alpha
    return c / c.sum()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats for probability vectors without zeros in q where p > 0."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in nats (symmetric, at most ln 2)."""
    m = 0.5 * (np.asarray(p, dtype=np.float64) + np.asarray(q, dtype=np.float64))
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def mean_output_kl(p_logits: np.ndarray, q_logits: np.ndarray, eps: float = 1e-12) -> float:
    """Mean over rows of KL(softmax(p) || softmax(q)): how far a candidate's outputs moved."""
    return mean_row_kl(softmax_rows(p_logits), softmax_rows(q_logits), eps)


def as_probabilities(rows: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Rows of (dequantized, so slightly off) probabilities, made proper: >= eps, summing to 1.

    For int8 probabilities pass half a quantization step as ``eps``: a 0 there
    means "below one step", and flooring it far lower would make KL between two
    int8 models mostly a measure of which tiny classes rounded to zero."""
    p = np.maximum(np.asarray(rows, dtype=np.float64), eps)
    return p / p.sum(axis=-1, keepdims=True)


def mean_row_kl(p: np.ndarray, q: np.ndarray, eps: float = 1e-12) -> float:
    """Mean over rows of KL(p_row || q_row) for rows of probabilities."""
    q = np.maximum(q, eps)
    per_row = np.sum(np.where(p > 0, p * (np.log(np.maximum(p, eps)) - np.log(q)), 0.0), axis=-1)
    return float(per_row.mean()) if per_row.size else 0.0


def wilson_lower_bound(successes: int, trials: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval of a binomial proportion (0 for no trials)."""
    if trials <= 0:
        return 0.0
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} outside [0, {trials}]")
    phat = successes / trials
    denom = 1 + z * z / trials
    centre = phat + z * z / (2 * trials)
    margin = z * math.sqrt(phat * (1 - phat) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - margin) / denom)
