"""The C library's expf and tanhf, which LiteRT's lookup tables are built with.

A lookup table entry lands on a rounding boundary often enough that numpy's
own float32 functions (different implementations) would break bit-exactness,
so the reference calls the same libm functions the runtime calls. Where no C
libm can be loaded, the correctly rounded float64 result is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np


def _load(name: str):
    library = ctypes.util.find_library("m") or "libm.so.6"
    try:
        fn = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


_EXPF = _load("expf")
_TANHF = _load("tanhf")


def _apply(fn, fallback, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if fn is None:
        return fallback(x.astype(np.float64)).astype(np.float32)
    return np.array([fn(float(v)) for v in x.reshape(-1)], dtype=np.float32).reshape(x.shape)


def expf(x: np.ndarray) -> np.ndarray:
    """Elementwise C ``expf`` of a float32 array."""
    return _apply(_EXPF, np.exp, x)


def tanhf(x: np.ndarray) -> np.ndarray:
    """Elementwise C ``tanhf`` of a float32 array."""
    return _apply(_TANHF, np.tanh, x)
