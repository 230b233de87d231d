"""Pruning masks in the block shapes the sparse kernels run."""

from __future__ import annotations

import numpy as np

from edged.sparse.block_csr import BlockShape, block_view


def block_magnitude_mask(weights: np.ndarray, block: BlockShape, sparsity: float) -> np.ndarray:
    """Keep-mask (True = kept) of ``weights`` [out_c, depth] that prunes the ``sparsity``
    fraction of ``block`` blocks with the smallest L1 norm (ties broken by position)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be within [0, 1], got {sparsity}")
    w = np.asarray(weights)
    norms = np.abs(block_view(w.astype(np.int64), block)).sum(axis=(1, 3))
    n_pruned = round(sparsity * norms.size)
    keep = np.ones(norms.size, dtype=bool)
    keep[np.argsort(norms, axis=None, kind="stable")[:n_pruned]] = False
    keep = keep.reshape(norms.shape)
    full = np.repeat(np.repeat(keep, block.rows, axis=0), block.cols, axis=1)
    return full[: w.shape[0], : w.shape[1]]
