"""The C library's expf, which LiteRT's lookup tables are built with.

A lookup table entry lands on a rounding boundary often enough that numpy's
own float32 exp (a different implementation) would break bit-exactness, so the
reference calls the same libm function the runtime calls. Where no C libm can
be loaded, the correctly rounded float64 result is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np


def _load_expf():
    name = ctypes.util.find_library("m") or "libm.so.6"
    try:
        fn = ctypes.CDLL(name).expf
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


_EXPF = _load_expf()


def expf(x: np.ndarray) -> np.ndarray:
    """Elementwise C ``expf`` of a float32 array."""
    x = np.asarray(x, dtype=np.float32)
    if _EXPF is None:
        return np.exp(x.astype(np.float64)).astype(np.float32)
    return np.array([_EXPF(float(v)) for v in x.reshape(-1)], dtype=np.float32).reshape(x.shape)
