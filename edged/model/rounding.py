"""Which requantization rounding FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D follow.

LiteRT's builtin int8 kernels round the fixed-point scaling of the GEMM-based
ops (FULLY_CONNECTED, CONV_2D) differently per platform (docs/int8-semantics.md):
twice on x86-64 (a rounding doubling high multiply, then a rounding shift, both
ties up), once on aarch64 (the 64-bit product shifted right by 31 - shift,
ties up), except where its NEON matrix-times-vector path takes the product,
which rounds twice everywhere. DEPTHWISE_CONV_2D rounds twice on both. edged
follows the platform it runs on unless told otherwise, so its results equal
that machine's LiteRT.

The two modes also name the LiteRT build whose other per-target arithmetic
edged reproduces: ``single`` is the aarch64 build, whose NEON bodies of
HARD_SWISH, SOFTMAX and DEQUANTIZE compute differently from the x86-64 build's
(``neon_bodies``).
"""

from __future__ import annotations

import platform

ROUNDING_MODES = ("auto", "double", "single")
# platform.machine() names of the 64-bit ARM targets LiteRT builds with single rounding.
_SINGLE_ROUNDING_MACHINES = frozenset({"aarch64", "arm64"})
_override: str | None = None


def resolve_rounding(mode: str = "auto", machine: str | None = None) -> str:
    """``double`` or ``single``: ``auto`` picks the one LiteRT uses on ``machine`` (default: this one)."""
    if mode not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDING_MODES)}, not {mode!r}")
    if mode != "auto":
        return mode
    if _override is not None and machine is None:
        return _override
    machine = platform.machine() if machine is None else machine
    return "single" if machine.lower() in _SINGLE_ROUNDING_MACHINES else "double"


def set_default_rounding(mode: str) -> None:
    """What ``auto`` means in this process from now on: the config key / CLI flag's value.

    Engines built later without an explicit mode (the daemon's, the adaptation
    loop's) then all follow it."""
    global _override
    if mode not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDING_MODES)}, not {mode!r}")
    _override = None if mode == "auto" else mode


def configured_rounding() -> str:
    """The mode ``set_default_rounding`` set in this process (``auto`` if none): what a process
    this one starts (the adaptation worker) must set in turn, as a spawned one starts afresh."""
    return _override or "auto"


def rounds_once(rounding: str, rows: int, out_c: int, depth: int) -> bool:
    """Whether a FULLY_CONNECTED / CONV_2D product of ``rows`` activation rows (the whole batch:
    im2col pixels times samples for a convolution) rounds once under ``rounding``.

    With single rounding, LiteRT still sends a one-row product with at least 4
    output channels and 8 of depth to its NEON matrix-times-vector kernel
    (cpu_backend_gemm's custom GEMV), which rounds twice, ties up."""
    return rounding == "single" and not (rows == 1 and out_c >= 4 and depth >= 8)


def neon_bodies(rounding: str) -> bool:
    """Whether HARD_SWISH, SOFTMAX and DEQUANTIZE follow LiteRT's aarch64 build under ``rounding``.

    That build runs HARD_SWISH's NEON body (ties-up rounding, flooring high
    multiply), SOFTMAX's uint16 lookup-table kernel (SoftmaxInt8LUT) and
    DEQUANTIZE's fused multiply-add; the x86-64 build runs scalar HARD_SWISH,
    the float-table SOFTMAX and a multiply then an add (docs/int8-semantics.md)."""
    return rounding == "single"
