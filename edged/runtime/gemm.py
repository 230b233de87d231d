"""Packing of int8 GEMM weights for the C micro-kernels."""

from __future__ import annotations

import numpy as np

from edged.runtime.kernels import address, ffi, lib


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
    packed = np.zeros(size + 64, dtype=np.uint8)
    start = (-packed.ctypes.data) % 64
    packed = packed[start : start + size]
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
