"""Block-CSR packing: exact round trips, and corrupt arrays rejected before C sees them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.errors import SparseFormatError
from edged.runtime.gemm import pack_spmm
from edged.sparse.block_csr import BLOCK_SHAPES, BlockCsr, BlockShape, block_occupancy, pack_block_csr

blocks = st.sampled_from([*BLOCK_SHAPES, BlockShape(3, 5), BlockShape(2, 64), BlockShape(64, 1)])


def block_masked(rng: np.random.Generator, shape, block: BlockShape, sparsity: float) -> np.ndarray:
    """Random int8 weights with a fraction ``sparsity`` of their ``block`` blocks zeroed."""
    w = rng.integers(-128, 128, size=shape).astype(np.int8)
    rows, cols = -(-shape[0] // block.rows), -(-shape[1] // block.cols)
    keep = rng.random((rows, cols)) >= sparsity
    full = np.repeat(np.repeat(keep, block.rows, axis=0), block.cols, axis=1)[: shape[0], : shape[1]]
    return np.where(full, w, np.int8(0))


@given(st.integers(1, 70), st.integers(1, 300), blocks, st.sampled_from([0.0, 0.5, 0.9, 1.0]),
       st.integers(0, 2**32 - 1))
def test_round_trip_is_exact(n, k, block, sparsity, seed):
    rng = np.random.default_rng(seed)
    w = block_masked(rng, (n, k), block, sparsity)
    csr = pack_block_csr(w, block)
    csr.validate()
    assert np.array_equal(csr.to_dense(), w)
    assert csr.nnz_blocks == int(block_occupancy(w, block).sum())
    assert csr.col_idx.dtype == (np.uint8 if -(-k // block.cols) <= 256 else np.uint16)
    assert csr.sparsity == pytest.approx(1 - np.count_nonzero(w) / w.size)


def test_mask_prunes_and_keeps_exactly_what_it_says():
    rng = np.random.default_rng(1)
    w = rng.integers(1, 100, size=(8, 16)).astype(np.int8)
    mask = rng.random(w.shape) < 0.3
    csr = pack_block_csr(w, BlockShape(1, 1), mask)
    assert np.array_equal(csr.to_dense(), np.where(mask, w, 0))
    assert csr.nnz_blocks == int(mask.sum())


def test_uint16_indices_for_wide_matrices():
    w = np.zeros((2, 1100), dtype=np.int8)
    w[0, 1099] = 5
    csr = pack_block_csr(w, BlockShape(1, 1))
    assert csr.col_idx.dtype == np.uint16 and csr.col_idx.tolist() == [1099]
    assert np.array_equal(csr.to_dense(), w)


def _valid() -> BlockCsr:
    w = np.arange(1, 1 + 4 * 8, dtype=np.int8).reshape(4, 8)
    w[:2, :4] = 0  # block (0, 0) pruned: row_ptr [0, 1, 3], col_idx [1, 0, 1]
    return pack_block_csr(w, BlockShape(2, 4))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("col_idx", np.array([1, 0, 5], np.uint8), "out of range"),
        ("col_idx", np.array([1, 1, 0], np.uint8), "strictly increase"),
        ("col_idx", np.array([1, 0, 1], np.uint16), "uint8"),
        ("row_ptr", np.array([0, 4, 3], np.int32), "rise from 0"),
        ("row_ptr", np.array([0, 2], np.int32), "length 3"),
        ("values", np.zeros((2, 2, 4), np.int8), "shape"),
    ],
)
def test_corrupt_arrays_are_rejected_in_python(field, value, message):
    csr = _valid()
    bad = BlockCsr(**{**csr.__dict__, field: value})
    with pytest.raises(SparseFormatError, match=message):
        bad.validate()
    with pytest.raises(SparseFormatError, match=message):
        pack_spmm(bad, np.zeros(4, np.int32), 0)


def test_nonzero_outside_the_matrix_is_rejected():
    csr = pack_block_csr(np.ones((3, 6), np.int8), BlockShape(2, 4))
    values = csr.values.copy()
    values[-1, 1, 3] = 9  # row 3 / depth 7 do not exist
    with pytest.raises(SparseFormatError, match="outside the matrix"):
        BlockCsr(**{**csr.__dict__, "values": values}).validate()


def test_block_shape_parsing():
    assert BlockShape.parse("16x4") == BlockShape(16, 4) and str(BlockShape(8, 4)) == "8x4"
    with pytest.raises(ValueError, match="ROWSxCOLS"):
        BlockShape.parse("16by4")
    with pytest.raises(ValueError, match="outside"):
        BlockShape(65, 1)


@st.composite
def arbitrary_csr(draw):
    """Block-CSR arrays that may or may not be consistent: what a corrupt file could hold."""
    n, k = draw(st.integers(1, 40)), draw(st.integers(1, 300))
    block = draw(blocks)
    rows, cols = -(-n // block.rows), -(-k // block.cols)
    nnz = draw(st.integers(0, min(rows * cols, 40)))
    counts = draw(st.lists(st.integers(0, nnz), min_size=rows, max_size=rows))
    row_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    if draw(st.booleans()):  # usually make the row pointers consistent with nnz
        row_ptr = np.linspace(0, nnz, rows + 1).astype(np.int32)
    col_idx = np.array(draw(st.lists(st.integers(0, cols + 2), min_size=nnz, max_size=nnz)), dtype=np.int64)
    if draw(st.booleans()):
        for i in range(rows):
            seg = slice(row_ptr[i], row_ptr[i + 1])
            col_idx[seg] = np.sort(col_idx[seg])
    col_idx = np.minimum(col_idx, 65535).astype(np.uint8 if cols <= 256 else np.uint16)
    seed = draw(st.integers(0, 2**32 - 1))
    values = np.random.default_rng(seed).integers(-128, 128, (nnz, block.rows, block.cols)).astype(np.int8)
    return BlockCsr((n, k), block, row_ptr, col_idx, values)


@given(arbitrary_csr())
def test_fuzzed_arrays_are_packed_exactly_or_rejected(csr):
    """Whatever the arrays hold, packing either raises SparseFormatError or gives a
    matrix the kernels multiply exactly like its dense form."""
    from edged.runtime.kernels import address, ffi, lib

    bias = np.arange(csr.shape[0], dtype=np.int32)
    try:
        packed = pack_spmm(csr, bias, 3)
    except SparseFormatError:
        return
    dense = csr.to_dense().astype(np.int64)
    x = np.random.default_rng(0).integers(-128, 128, csr.shape[1]).astype(np.int8)
    mult = np.full(csr.shape[0], 1 << 30, np.int32)  # times 0.5
    shift = np.zeros(csr.shape[0], np.int32)
    out = np.zeros(csr.shape[0], np.int8)
    op = ffi.new("edged_op *")  # one FULLY_CONNECTED descriptor, as the planner would fill it
    op.kind, op.variant, op.weight_format = lib.EDGED_OP_FULLY_CONNECTED, 0, lib.EDGED_WEIGHTS_BLOCK_SPARSE
    getattr(op, "in")[0] = address(x)
    op.in_stride[0], op.out, op.out_stride = csr.shape[1], address(out), csr.shape[0]
    op.in_h, op.in_c, op.out_c = 1, csr.shape[1], csr.shape[0]
    op.weights = address(packed)
    op.out_multiplier = ffi.cast("int32_t *", mult.ctypes.data)
    op.out_shift = ffi.cast("int32_t *", shift.ctypes.data)
    op.input_offset, op.act_min, op.act_max = 3, -128, 127
    assert lib.edged_run(op, 1, 1) == 0
    acc = dense @ (x.astype(np.int64) + 3) + bias
    expected = np.clip(np.floor((acc + 1) / 2), -128, 127)  # x * 0.5, ties up
    assert np.array_equal(out, expected.astype(np.int8))
