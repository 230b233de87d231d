"""TFLite's fixed-point arithmetic, vectorized in numpy.

These functions are the spec for the C kernels: a real multiplier becomes an
int32 mantissa and a power-of-two shift (``quantize_multiplier``), and an int32
accumulator is scaled by it with gemmlowp's rounding
(``multiply_by_quantized_multiplier``).
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

QRANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255), np.dtype(np.int16): (-32768, 32767)}


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Split ``real`` into (int32 mantissa in [2^30, 2^31), shift) like TFLite's QuantizeMultiplier."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    # C's std::round rounds half away from zero; Python's round() rounds to even.
    q = int(_round_half_away(mantissa * (1 << 31)))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        shift, q = 0, 0
    if shift > 30:
        shift, q = 30, (1 << 31) - 1
    return int(q), int(shift)


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of quantize_multiplier: int32 arrays of mantissas and shifts (one per channel; a
    wide layer has thousands, and a hot swap plans them while requests are served)."""
    r = np.asarray(reals, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(r)):
        raise ValueError(f"a requantization multiplier is {r[~np.isfinite(r)][0]}: the model's scales are "
                         "not finite")
    mantissa, shift = np.frexp(r)
    q = round_half_away(mantissa * float(1 << 31)).astype(np.int64)  # exact: a power-of-two scaling
    carry = q == (1 << 31)
    q = np.where(carry, q // 2, q)
    shift = shift.astype(np.int64) + carry
    tiny, huge = shift < -31, shift > 30
    q = np.where(tiny, 0, np.where(huge, (1 << 31) - 1, q))
    shift = np.where(tiny, 0, np.where(huge, 30, shift))
    return q.astype(np.int32), shift.astype(np.int32)


def srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul: high half of 2ab, ties away from zero."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    # C++ integer division truncates toward zero; numpy's >> floors.
    high = np.where(num >= 0, num >> 31, -((-num) >> 31))
    return np.where(overflow, INT32_MAX, high)


def srdhm_half_up(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The vector form (ARM vqrdmulh, ruy's x86 kernels): high half of 2ab, ties toward +inf."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, (a * b + (1 << 30)) >> 31)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: right shift, ties away from zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def rounding_shift_half_up(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """ARM's vrshl / srshl right shift: ties toward +inf."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    return (x + ((np.int64(1) << exponent) >> 1)) >> exponent


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite's scalar MultiplyByQuantizedMultiplier: two roundings, ties away from zero."""
    shifted, right = _left_shift(x, shift)
    return rounding_divide_by_pot(srdhm(shifted, multiplier), right)


def multiply_by_quantized_multiplier_half_up(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """The same scaling as LiteRT's vector code rounds it: two roundings, ties toward +inf.

    LiteRT's optimized kernels use it in their SIMD bodies (and ruy on x86 for
    FULLY_CONNECTED and CONV_2D); their scalar tails use the form above.
    """
    shifted, right = _left_shift(x, shift)
    return rounding_shift_half_up(srdhm_half_up(shifted, multiplier), right)


def multiply_by_quantized_multiplier_single(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """TFLite's single-rounding MultiplyByQuantizedMultiplier: one rounding, ties toward +inf.

    ``x * multiplier / 2^(31 - shift)`` rounded once, half up, in 64-bit
    arithmetic (no int32 pre-shift), saturated to int32. It is what LiteRT's
    aarch64 builds compute for FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D
    (docs/int8-semantics.md).
    """
    x = np.asarray(x, dtype=np.int64)
    total = 31 - np.asarray(shift, dtype=np.int64)
    product = x * np.asarray(multiplier, dtype=np.int64)
    return np.clip((product + (np.int64(1) << (total - 1))) >> total, INT32_MIN, INT32_MAX)


def _left_shift(x: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    # TFLite shifts in int32 arithmetic; wrap like C would.
    return wrap_int32(x * (np.int64(1) << left)), np.maximum(-shift, 0)


def vector_body(n: int, block: int) -> int:
    """How many leading elements of n a SIMD loop of ``block`` lanes handles (the rest is its tail)."""
    return n - n % block


def wrap_int32(x: np.ndarray) -> np.ndarray:
    return ((x + 2**31) % 2**32) - 2**31


def activation_range(activation: str, scale: float, zero_point: int, dtype: np.dtype) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the clamp range of a fused activation."""
    qmin, qmax = QRANGE[np.dtype(dtype)]

    def quantize(v: float) -> int:
        # TFLite: zero_point + static_cast<int32_t>(TfLiteRound(v / scale)), in float.
        return zero_point + int(_round_half_away(np.float32(v) / np.float32(scale)))

    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, quantize(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    raise ValueError(f"fused activation {activation} is not supported on int8 tensors")


def _round_half_away(v: float) -> float:
    return float(round_half_away(np.float64(v)))


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C's round(): halves away from zero (numpy's rint rounds them to even).

    Computed from the exact fractional part, so no addition of 0.5 can round
    a value like 0.49999997 up.
    """
    x = np.asarray(x)
    whole = np.trunc(x)
    frac = x - whole
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(x), 0).astype(x.dtype)
