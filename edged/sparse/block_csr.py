"""Block-CSR int8 weights: the sparse format edged's C kernels run.

A weight matrix [out_c, depth] is cut into blocks of ``rows`` output channels
x ``cols`` consecutive depth steps. Only blocks holding a nonzero are kept,
row-major inside the block, with their block-column index (uint8 when the
matrix has at most 256 block columns, else uint16) and a row pointer per
block row. The block shapes that matter are the register tiles of the dot
product instructions (16x4 and 8x4 for x86 VNNI, 4x4 for Arm ``sdot``),
1x16 (TFLite's own sparse FULLY_CONNECTED) and 1x1 (unstructured, the
smallest file but the slowest kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.errors import SparseFormatError

MAX_BLOCK = 64  # the C packer's limit on either block side
MAX_BLOCK_COLS = 65536  # uint16 column indices


@dataclass(frozen=True, order=True)
class BlockShape:
    rows: int
    cols: int

    def __post_init__(self) -> None:
        if not (1 <= self.rows <= MAX_BLOCK and 1 <= self.cols <= MAX_BLOCK):
            raise ValueError(f"block shape {self.rows}x{self.cols} is outside 1x1 .. {MAX_BLOCK}x{MAX_BLOCK}")

    @classmethod
    def parse(cls, text: str) -> BlockShape:
        """'16x4' -> BlockShape(16, 4)."""
        try:
            rows, cols = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"block shape '{text}' is not ROWSxCOLS, e.g. 16x4") from None
        return cls(rows, cols)

    @property
    def size(self) -> int:
        return self.rows * self.cols

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


UNSTRUCTURED = BlockShape(1, 1)
# The shapes the planner and the benchmarks consider, smallest first.
BLOCK_SHAPES = (BlockShape(1, 1), BlockShape(1, 4), BlockShape(1, 16), BlockShape(4, 4),
                BlockShape(8, 4), BlockShape(16, 4))


@dataclass(frozen=True)
class BlockCsr:
    """A block-sparse int8 matrix; see the module docstring for the layout."""

    shape: tuple[int, int]  # (out_c, depth) of the dense matrix
    block: BlockShape
    row_ptr: np.ndarray  # int32 [n_block_rows + 1]
    col_idx: np.ndarray  # uint8 or uint16 [nnz_blocks]
    values: np.ndarray  # int8 [nnz_blocks, rows, cols]

    @property
    def grid(self) -> tuple[int, int]:
        """(block rows, block columns) of the padded matrix."""
        return -(-self.shape[0] // self.block.rows), -(-self.shape[1] // self.block.cols)

    @property
    def nnz_blocks(self) -> int:
        return int(self.col_idx.size)

    @property
    def block_density(self) -> float:
        """Fraction of blocks kept: the kernels' work relative to dense."""
        rows, cols = self.grid
        return self.nnz_blocks / (rows * cols)

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights in the dense matrix."""
        return 1.0 - int(np.count_nonzero(self.values)) / (self.shape[0] * self.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes the kernels stream: values, column indices and row pointers."""
        return self.values.nbytes + self.col_idx.nbytes + self.row_ptr.nbytes

    def to_dense(self) -> np.ndarray:
        """The [out_c, depth] int8 matrix (exact inverse of ``pack_block_csr``)."""
        self.validate()
        (n, k), (br, bc) = self.shape, (self.block.rows, self.block.cols)
        rows, cols = self.grid
        padded = np.zeros((rows, br, cols, bc), dtype=np.int8)
        block_row = np.repeat(np.arange(rows), np.diff(self.row_ptr))
        padded[block_row, :, self.col_idx.astype(np.intp), :] = self.values
        return padded.reshape(rows * br, cols * bc)[:n, :k].copy()

    def validate(self) -> None:
        """Raise SparseFormatError unless every array is consistent with the shape.

        Run before anything reaches C: a bad index there would read out of bounds.
        """
        n, k = self.shape
        br, bc = self.block.rows, self.block.cols
        if n < 1 or k < 1:
            raise SparseFormatError(f"matrix shape {list(self.shape)} must be positive")
        rows, cols = self.grid
        if cols > MAX_BLOCK_COLS:
            raise SparseFormatError(f"{cols} block columns exceed the {MAX_BLOCK_COLS} a uint16 index holds")
        rp, ci, v = self.row_ptr, self.col_idx, self.values
        if rp.dtype != np.int32 or rp.shape != (rows + 1,):
            raise SparseFormatError(
                f"row_ptr must be int32 of length {rows + 1}, got {rp.dtype} {list(rp.shape)}"
            )
        if ci.dtype != index_dtype(cols) or ci.ndim != 1:
            raise SparseFormatError(
                f"col_idx must be a 1-D {index_dtype(cols).__name__} array, got {ci.dtype}"
            )
        if v.dtype != np.int8 or v.shape != (ci.size, br, bc):
            raise SparseFormatError(
                f"values must be int8 of shape {[ci.size, br, bc]}, got {v.dtype} {list(v.shape)}"
            )
        if rp[0] != 0 or rp[-1] != ci.size or np.any(np.diff(rp) < 0):
            raise SparseFormatError(f"row_ptr must rise from 0 to {ci.size} without decreasing")
        if ci.size and int(ci.max()) >= cols:
            raise SparseFormatError(f"column index {int(ci.max())} is out of range for {cols} block columns")
        starts = np.zeros(ci.size, dtype=bool)
        starts[rp[:-1][np.diff(rp) > 0]] = True
        rising = np.diff(ci.astype(np.int64)) > 0
        if ci.size > 1 and not np.all(rising | starts[1:]):
            raise SparseFormatError("column indices must strictly increase within each block row")
        edge = _ragged_edge(self)
        if edge is not None and np.any(v[edge]):
            raise SparseFormatError("blocks hold nonzero values outside the matrix (ragged edge)")


def index_dtype(block_cols: int) -> type:
    return np.uint8 if block_cols <= 256 else np.uint16


def _ragged_edge(csr: BlockCsr) -> np.ndarray | None:
    """Boolean mask over ``values`` of entries past out_c or depth, or None when there are none."""
    (n, k), (br, bc) = csr.shape, (csr.block.rows, csr.block.cols)
    if n % br == 0 and k % bc == 0:
        return None
    rows, _ = csr.grid
    block_row = np.repeat(np.arange(rows), np.diff(csr.row_ptr))
    out_row = block_row[:, None] * br + np.arange(br)[None, :]  # [nnz, br]
    depth = csr.col_idx.astype(np.int64)[:, None] * bc + np.arange(bc)[None, :]  # [nnz, bc]
    return (out_row[:, :, None] >= n) | (depth[:, None, :] >= k)


def block_view(w: np.ndarray, block: BlockShape) -> np.ndarray:
    """[rows, br, cols, bc] view of ``w`` zero-padded to whole blocks."""
    n, k = w.shape
    rows, cols = -(-n // block.rows), -(-k // block.cols)
    padded = np.zeros((rows * block.rows, cols * block.cols), dtype=w.dtype)
    padded[:n, :k] = w
    return padded.reshape(rows, block.rows, cols, block.cols)


def block_occupancy(w: np.ndarray, block: BlockShape) -> np.ndarray:
    """[block rows, block cols] bool: which blocks of ``w`` hold a nonzero."""
    return np.any(block_view(w, block) != 0, axis=(1, 3))


def pack_block_csr(weights: np.ndarray, block: BlockShape, mask: np.ndarray | None = None) -> BlockCsr:
    """Pack a dense int8 [out_c, depth] matrix, optionally masked (False = pruned), into block-CSR."""
    w = np.asarray(weights)
    if w.dtype != np.int8 or w.ndim != 2 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 2-D int8 matrix, got {w.dtype} {list(w.shape)}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != w.shape:
            raise ValueError(f"mask shape {list(mask.shape)} differs from the weights' {list(w.shape)}")
        w = np.where(mask.astype(bool), w, np.int8(0))
    blocks = block_view(w, block)
    occupied = np.any(blocks != 0, axis=(1, 3))
    rows, cols = occupied.shape
    if cols > MAX_BLOCK_COLS:
        raise ValueError(f"depth {w.shape[1]} needs {cols} block columns, more than {MAX_BLOCK_COLS}")
    block_row, block_col = np.nonzero(occupied)  # row-major: sorted by row, then column
    row_ptr = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(occupied.sum(axis=1), out=row_ptr[1:])
    values = np.ascontiguousarray(blocks[block_row, :, block_col, :], dtype=np.int8)
    csr = BlockCsr((int(w.shape[0]), int(w.shape[1])), block, row_ptr,
                   block_col.astype(index_dtype(cols)), values.reshape(-1, block.rows, block.cols))
    return csr
