"""Error-bounded hierarchical matrices (DE-HM): a weight matrix as a quad-tree of low-rank and dense blocks.

Each block B keeps the smallest rank r with ||B - B_r||_F <= eps * ||B||_F
(truncated SVD). A block is split into four when the low-rank form is not
cheaper than dense (r * (m + n) >= m * n) and both halves stay at least
``min_block`` wide; otherwise it stays a dense leaf. Because every leaf is
within eps of its block, the whole matrix is: ||W - W_H||_F^2 = sum of the
leaves' squared errors <= eps^2 * sum ||B||_F^2 = eps^2 * ||W||_F^2.

Factors are then stored int8 with a scale per factor column/row (the rank-1
terms are balanced first, so both factors use their range), which adds a
small quantization error on top of the bound; ``Leaf.error`` reports both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Leaf:
    row: int
    col: int
    shape: tuple[int, int]
    dense: np.ndarray | None = None  # int8 [m, n] with per-row scales
    dense_scale: np.ndarray | None = None  # float32 [m]
    a: np.ndarray | None = None  # int8 [m, r], per-column scales
    a_scale: np.ndarray | None = None
    b: np.ndarray | None = None  # int8 [r, n], per-row scales
    b_scale: np.ndarray | None = None

    @property
    def rank(self) -> int | None:
        return None if self.a is None else self.a.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes as stored: int8 values plus one float32 scale per row / factor column."""
        if self.a is None:
            return self.dense.nbytes + 4 * self.dense_scale.size
        return self.a.nbytes + self.b.nbytes + 4 * (self.a_scale.size + self.b_scale.size)

    def to_float(self) -> np.ndarray:
        if self.a is None:
            return self.dense.astype(np.float64) * self.dense_scale[:, None]
        a = self.a.astype(np.float64) * self.a_scale[None, :]
        b = self.b.astype(np.float64) * self.b_scale[:, None]
        return a @ b


@dataclass
class HMatrix:
    shape: tuple[int, int]
    leaves: list[Leaf]
    eps: float
    # The tree is built on W[row_order][:, col_order]; leaf coordinates are in that order.
    row_order: np.ndarray | None = None
    col_order: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        perms = sum(4 * p.size for p in (self.row_order, self.col_order) if p is not None)
        return sum(leaf.nbytes for leaf in self.leaves) + perms

    def rows(self, leaf: Leaf) -> np.ndarray:
        """Indices into the original matrix of a leaf's rows."""
        idx = np.arange(leaf.row, leaf.row + leaf.shape[0])
        return idx if self.row_order is None else self.row_order[idx]

    def cols(self, leaf: Leaf) -> np.ndarray:
        idx = np.arange(leaf.col, leaf.col + leaf.shape[1])
        return idx if self.col_order is None else self.col_order[idx]

    def to_float(self) -> np.ndarray:
        out = np.zeros(self.shape)
        for leaf in self.leaves:
            out[np.ix_(self.rows(leaf), self.cols(leaf))] = leaf.to_float()
        return out

    def counts(self) -> dict[str, int]:
        low = sum(1 for leaf in self.leaves if leaf.a is not None)
        return {"low_rank": low, "dense": len(self.leaves) - low}


def _quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row (zero point 0, levels -127..127)."""
    peak = np.abs(x).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.round(x / scale[:, None]), -127, 127).astype(np.int8), scale


def truncation_rank(s: np.ndarray, eps: float) -> int:
    """Smallest r with sqrt(sum_{i>=r} s_i^2) <= eps * ||s||."""
    total = float(np.sum(s**2))
    if total == 0.0:
        return 0
    tail = np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]])  # tail[r] = sum_{i>=r} s_i^2
    return int(np.argmax(tail <= (eps**2) * total))


def _low_rank_leaf(row: int, col: int, u: np.ndarray, s: np.ndarray, vt: np.ndarray, r: int) -> Leaf:
    m, n = u.shape[0], vt.shape[1]
    if r == 0:
        return Leaf(row, col, (m, n), a=np.zeros((m, 0), np.int8), a_scale=np.zeros(0, np.float32),
                    b=np.zeros((0, n), np.int8), b_scale=np.zeros(0, np.float32))
    root = np.sqrt(s[:r])  # split each singular value between the factors: both use their int8 range
    a_q, a_scale = _quantize_rows((u[:, :r] * root).T)
    b_q, b_scale = _quantize_rows(vt[:r] * root[:, None])
    return Leaf(row, col, (m, n), a=np.ascontiguousarray(a_q.T), a_scale=a_scale, b=b_q, b_scale=b_scale)


def build_hmatrix(w: np.ndarray, eps: float, min_block: int = 32, reorder: bool = False) -> HMatrix:
    """The DE-HM form of ``w`` (float [m, n]) with relative Frobenius error eps (before int8).

    A subdivision whose leaves together are not smaller than the block stored dense is undone
    (one dense leaf). ``reorder`` also builds the tree on rows and columns sorted by the leading
    singular vectors (a 1-D spectral ordering, which groups similar rows and columns so blocks
    have lower rank) and keeps that ordering if it stores fewer bytes."""
    if not 0.0 < eps < 1.0:
        raise ValueError(f"the tolerance must be in (0, 1), got {eps}")
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"an H-matrix needs a non-empty 2-D matrix, got shape {list(w.shape)}")
    shape = (int(w.shape[0]), int(w.shape[1]))
    best = HMatrix(shape, _tree(w, eps, min_block), eps)
    if reorder:
        u, _, vt = np.linalg.svd(w, full_matrices=False)
        rows, cols = np.argsort(u[:, 0], kind="stable"), np.argsort(vt[0], kind="stable")
        other = HMatrix(shape, _tree(w[rows][:, cols], eps, min_block), eps, rows, cols)
        best = other if other.nbytes < best.nbytes else best
    return best


def _dense_leaf(row: int, col: int, block: np.ndarray) -> Leaf:
    q, scale = _quantize_rows(block)
    return Leaf(row, col, block.shape, dense=q, dense_scale=scale)


def _tree(w: np.ndarray, eps: float, min_block: int) -> list[Leaf]:
    def visit(row: int, col: int, block: np.ndarray) -> list[Leaf]:
        m, n = block.shape
        u, s, vt = np.linalg.svd(block, full_matrices=False)
        r = truncation_rank(s, eps)
        if r * (m + n) < m * n:
            return [_low_rank_leaf(row, col, u, s, vt, r)]
        if min(m, n) >= 2 * min_block:
            hm, hn = m // 2, n // 2
            children = [*visit(row, col, block[:hm, :hn]), *visit(row, col + hn, block[:hm, hn:]),
                        *visit(row + hm, col, block[hm:, :hn]), *visit(row + hm, col + hn, block[hm:, hn:])]
            dense = _dense_leaf(row, col, block)
            return children if sum(c.nbytes for c in children) < dense.nbytes else [dense]
        return [_dense_leaf(row, col, block)]

    return visit(0, 0, w)


def truncated_svd(w: np.ndarray, rank: int) -> HMatrix:
    """The whole matrix at one rank (the baseline DE-HM is compared with), int8 factors."""
    w = np.asarray(w, dtype=np.float64)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    rank = max(0, min(rank, s.size))
    return HMatrix((int(w.shape[0]), int(w.shape[1])), [_low_rank_leaf(0, 0, u, s, vt, rank)], 0.0)


def svd_at_bytes(w: np.ndarray, nbytes: int) -> HMatrix:
    """The truncated SVD of ``w`` whose int8 factors take at most ``nbytes``."""
    m, n = w.shape
    per_rank = m + n + 8  # int8 column of A, row of B, two float32 scales
    return truncated_svd(w, max(1, nbytes // per_rank))
