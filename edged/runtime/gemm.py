"""Packing of int8 GEMM weights for the C micro-kernels, dense or block-sparse."""

from __future__ import annotations

import numpy as np

from edged.errors import SparseFormatError
from edged.runtime.kernels import address, ffi, lib
from edged.sparse.block_csr import BlockCsr, BlockShape, pack_block_csr


def pack_gemm(weights: np.ndarray, bias: np.ndarray, input_offset: int, variant: int) -> np.ndarray:
    """Pack [out_c, depth] int8 weights (bias and input zero point folded in) for ``variant``."""
    w = np.ascontiguousarray(weights, dtype=np.int8)
    if w.ndim != 2:
        raise ValueError(f"GEMM weights must be 2-D, got shape {list(w.shape)}")
    out_c, depth = w.shape
    b = np.ascontiguousarray(bias, dtype=np.int32)
    if b.shape != (out_c,):
        raise ValueError(f"bias has shape {list(b.shape)}, expected [{out_c}]")
    size = lib.edged_s8_gemm_packed_size(variant, out_c, depth)
    packed = _aligned(size)
    status = lib.edged_s8_gemm_pack(
        variant,
        ffi.cast("int8_t *", w.ctypes.data),
        ffi.cast("int32_t *", b.ctypes.data),
        input_offset,
        out_c,
        depth,
        address(packed),
    )
    if status != 0:
        raise ValueError(f"packing a {out_c}x{depth} GEMM for variant {variant} failed ({status})")
    return packed


_SPMM_ERRORS = {
    -1: "bad shape or block",
    -2: "inconsistent row pointers",
    -3: "a column index out of range or not increasing",
    -4: "a nonzero outside the matrix",
}


def pack_spmm(csr: BlockCsr, bias: np.ndarray, input_offset: int) -> np.ndarray:
    """Pack block-CSR weights (bias and input zero point folded in) for the s8_spmm kernels."""
    csr.validate()
    out_c, depth = csr.shape
    b = np.ascontiguousarray(bias, dtype=np.int32)
    if b.shape != (out_c,):
        raise ValueError(f"bias has shape {list(b.shape)}, expected [{out_c}]")
    br, bc = csr.block.rows, csr.block.cols
    size = lib.edged_s8_spmm_packed_size(out_c, depth, br, bc, csr.nnz_blocks)
    if size == 0:
        raise ValueError(f"cannot pack a {out_c}x{depth} matrix in {csr.block} blocks")
    packed = _aligned(size)
    row_ptr = np.ascontiguousarray(csr.row_ptr, dtype=np.int32)
    col_idx = np.ascontiguousarray(csr.col_idx, dtype=np.int32)
    values = np.ascontiguousarray(csr.values, dtype=np.int8)
    status = lib.edged_s8_spmm_pack(
        out_c, depth, br, bc,
        ffi.cast("int32_t *", row_ptr.ctypes.data),
        ffi.cast("int32_t *", col_idx.ctypes.data),
        csr.nnz_blocks,
        ffi.cast("int8_t *", values.ctypes.data),
        ffi.cast("int32_t *", b.ctypes.data),
        input_offset,
        address(packed),
    )
    if status != 0:
        raise SparseFormatError(f"packing {csr.block} blocks failed: {_SPMM_ERRORS.get(status, status)}")
    return packed


def pack_weights(
    weights: np.ndarray, bias: np.ndarray, input_offset: int, variant: int, layout: BlockShape | None
) -> dict:
    """The packed weights of a FULLY_CONNECTED / CONV_2D descriptor: dense, or block-sparse in ``layout``."""
    if layout is None:
        return {"packed": pack_gemm(weights, bias, input_offset, variant),
                "weight_format": lib.EDGED_WEIGHTS_DENSE, "layout": None}
    csr = pack_block_csr(np.ascontiguousarray(weights, dtype=np.int8), layout)
    return {"packed": pack_spmm(csr, bias, input_offset),
            "weight_format": lib.EDGED_WEIGHTS_BLOCK_SPARSE, "layout": layout}


def _aligned(size: int) -> np.ndarray:
    buf = np.zeros(size + 64, dtype=np.uint8)
    start = (-buf.ctypes.data) % 64
    return buf[start : start + size]
