"""Which requantization rounding FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D follow.

LiteRT's builtin int8 kernels round the fixed-point scaling of these ops
differently per platform (docs/int8-semantics.md): twice on x86-64 (a rounding
doubling high multiply, then a rounding shift), once on aarch64 (the 64-bit
product shifted right by 31 - shift with ties up). edged follows the platform
it runs on unless told otherwise, so its results equal that machine's LiteRT.
"""

from __future__ import annotations

import platform

ROUNDING_MODES = ("auto", "double", "single")
# platform.machine() names of the 64-bit ARM targets LiteRT builds with single rounding.
_SINGLE_ROUNDING_MACHINES = frozenset({"aarch64", "arm64"})


def resolve_rounding(mode: str = "auto", machine: str | None = None) -> str:
    """``double`` or ``single``: ``auto`` picks the one LiteRT uses on ``machine`` (default: this one)."""
    if mode not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDING_MODES)}, not {mode!r}")
    if mode != "auto":
        return mode
    machine = platform.machine() if machine is None else machine
    return "single" if machine.lower() in _SINGLE_ROUNDING_MACHINES else "double"
