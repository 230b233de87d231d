"""The compiled C kernels (edged._kernels), built by cffi at install time."""

from __future__ import annotations

from edged.errors import BackendUnavailableError

try:
    from edged._kernels import ffi, lib
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise BackendUnavailableError(
        "edged's C kernels are not built; reinstall the package with a C compiler available "
        f"(pip install .) ({exc})"
    ) from exc

VARIANT_NAMES = {
    lib.EDGED_VARIANT_REF: "ref",
    lib.EDGED_VARIANT_AVX2: "avx2",
    lib.EDGED_VARIANT_AVX512VNNI: "avx512vnni",
    lib.EDGED_VARIANT_NEON: "neon",
    lib.EDGED_VARIANT_NEONDOT: "neondot",
}
# Fastest first: the planner takes the first one the CPU has.
PREFERENCE = (
    lib.EDGED_VARIANT_AVX512VNNI,
    lib.EDGED_VARIANT_AVX2,
    lib.EDGED_VARIANT_NEONDOT,
    lib.EDGED_VARIANT_NEON,
    lib.EDGED_VARIANT_REF,
)


def available_variants() -> list[int]:
    mask = lib.edged_cpu_variants()
    return [v for v in PREFERENCE if mask & (1 << v)] or [lib.EDGED_VARIANT_REF]


def best_variant() -> int:
    return available_variants()[0]


def address(array) -> object:
    """A C pointer to a C-contiguous numpy array's data (the array must stay alive)."""
    return ffi.cast("void *", array.ctypes.data)
