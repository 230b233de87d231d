"""DE-HM: the error bound as a property, storage, and the SVD baseline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.adapt.hmatrix import build_hmatrix, svd_at_bytes, truncation_rank


def _float_error(h, w):
    """Error of the H-matrix before int8 rounding: rebuild leaves exactly from their SVD."""
    return np.linalg.norm(w - h.to_float()) / np.linalg.norm(w)


@st.composite
def matrices(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m, n = draw(st.integers(8, 160)), draw(st.integers(8, 160))
    kind = draw(st.sampled_from(["random", "smooth", "lowrank"]))
    if kind == "random":
        w = rng.normal(size=(m, n))
    elif kind == "smooth":  # a kernel matrix: off-diagonal blocks are numerically low-rank
        x, y = np.linspace(0, 1, m)[:, None], np.linspace(0, 1, n)[None, :]
        w = 1.0 / (1.0 + 10 * np.abs(x - y)) + 0.01 * rng.normal(size=(m, n))
    else:
        w = rng.normal(size=(m, 3)) @ rng.normal(size=(3, n))
    if draw(st.booleans()):  # scrambled rows and columns: what a reordering can undo
        w = w[rng.permutation(m)][:, rng.permutation(n)]
    return w, draw(st.sampled_from([0.05, 0.1, 0.3, 0.6])), draw(st.sampled_from([4, 8, 32]))


@given(matrices(), st.booleans())
def test_error_bound_holds_up_to_int8_rounding(case, reorder):
    w, eps, min_block = case
    h = build_hmatrix(w, eps, min_block, reorder=reorder)
    assert h.nbytes <= w.size + 4 * w.shape[0] + (4 * sum(w.shape) if h.row_order is not None else 0)
    covered = sum(leaf.shape[0] * leaf.shape[1] for leaf in h.leaves)
    assert covered == w.size  # the leaves tile the matrix
    # The bound is exact before int8 rounding; int8 factors add at most ~1 % relative error here.
    assert _float_error(h, w) <= eps + 0.02


def test_truncation_rank_is_the_smallest_meeting_eps():
    s = np.array([4.0, 2.0, 1.0, 0.5])
    total = np.sqrt(np.sum(s**2))
    for eps in (0.01, 0.1, 0.25, 0.5, 0.99):
        r = truncation_rank(s, eps)
        assert np.sqrt(np.sum(s[r:] ** 2)) <= eps * total
        assert r == 0 or np.sqrt(np.sum(s[r - 1 :] ** 2)) > eps * total
    assert truncation_rank(np.zeros(3), 0.1) == 0


def test_low_rank_structure_is_found_and_stored_smaller():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(256, 3)) @ rng.normal(size=(3, 256))
    h = build_hmatrix(w, 0.05)
    assert h.counts() == {"low_rank": 1, "dense": 0} and h.leaves[0].rank == 3
    assert h.nbytes < w.size // 20
    x = np.linspace(0, 1, 256)
    smooth = 1.0 / (0.01 + np.abs(x[:, None] - x[None, :]))  # full-rank diagonal, low-rank elsewhere
    hs = build_hmatrix(smooth, 0.01, min_block=16)
    assert hs.counts()["low_rank"] > 1 and hs.nbytes < smooth.size  # hierarchical beats dense int8
    svd = svd_at_bytes(smooth, hs.nbytes)
    assert svd.nbytes <= hs.nbytes
    assert np.linalg.norm(smooth - hs.to_float()) < np.linalg.norm(smooth - svd.to_float())


def test_a_split_is_kept_when_it_beats_a_low_rank_block():
    t = np.linspace(0, 1, 1024)
    sharp = np.exp(-200 * np.abs(t[:, None] - t[None, :]))  # low-rank at the root, far more so in parts
    root_rank = truncation_rank(np.linalg.svd(sharp, compute_uv=False), 0.05)
    assert root_rank * 2048 < sharp.size
    h = build_hmatrix(sharp, 0.05)
    assert h.counts()["low_rank"] > 1 and h.nbytes < 0.1 * root_rank * 2048
    assert np.linalg.norm(sharp - h.to_float()) <= 0.06 * np.linalg.norm(sharp)


def test_reordering_is_kept_only_when_it_stores_less():
    x = np.linspace(0, 1, 256)
    smooth = 1.0 / (0.01 + np.abs(x[:, None] - x[None, :]))
    rng = np.random.default_rng(1)
    rows, cols = rng.permutation(256), rng.permutation(256)
    scrambled = smooth[rows][:, cols]  # the same matrix, its locality hidden
    plain = build_hmatrix(scrambled, 0.01, min_block=16)
    found = build_hmatrix(scrambled, 0.01, min_block=16, reorder=True)
    assert found.row_order is not None and found.nbytes < 0.7 * plain.nbytes
    assert np.linalg.norm(scrambled - found.to_float()) <= 0.02 * np.linalg.norm(scrambled)
    noise = rng.normal(size=(128, 128))  # nothing to find: no ordering, one dense leaf
    h = build_hmatrix(noise, 0.05, min_block=16, reorder=True)
    assert h.row_order is None and h.counts() == {"low_rank": 0, "dense": 1}


def test_bad_tolerances_are_refused():
    for eps in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError, match=r"in \(0, 1\)"):
            build_hmatrix(np.ones((4, 4)), eps)
