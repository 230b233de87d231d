"""cffi builder for edged's C kernels: the extension module ``edged._kernels``.

setup.py uses it as ``cffi_modules=["kernels/build_ffi.py:ffibuilder"]``. The
cdef is edged_kernels.h itself, minus preprocessor lines and comments, so the
header stays the single description of the C API.

Run directly to build without pip: ``python kernels/build_ffi.py`` compiles
into build/cffi/; ``--inplace`` also copies the module next to edged/ so
``from edged import _kernels`` works from a source checkout.
"""

from __future__ import annotations

import glob
import os
import re
import sys

from cffi import FFI

KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(KERNELS_DIR)
HEADER = os.path.join(KERNELS_DIR, "edged_kernels.h")

# No -march: ISA-specific code is compiled per function (target attributes)
# and chosen at run time, so the wheel runs on any x86-64 / aarch64 CPU.
# -ffp-contract=off keeps float expressions unfused, as in LiteRT's x86 build.
CFLAGS = ["-O3", "-std=c99", "-fno-strict-aliasing", "-ffp-contract=off"]


def _cdef_source(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _rel(path: str) -> str:
    """Paths relative to the working directory when possible: setuptools
    rejects absolute source paths in some versions, and pip runs setup.py from
    the project root (sdist or clone alike)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def make_builder(absolute: bool = False) -> FFI:
    fix = os.path.abspath if absolute else _rel
    patterns = ("*.c", os.path.join("ref", "*.c"), os.path.join("simd", "*.c"))
    sources = sorted(f for p in patterns for f in glob.glob(os.path.join(KERNELS_DIR, p)))
    builder = FFI()
    builder.cdef(_cdef_source(HEADER))
    builder.set_source(
        "edged._kernels",
        '#include "edged_kernels.h"\n',
        sources=[fix(f) for f in sources],
        include_dirs=[fix(KERNELS_DIR)],
        extra_compile_args=CFLAGS,
        libraries=["m"],
    )
    return builder


ffibuilder = make_builder()


if __name__ == "__main__":
    build_dir = os.path.join(ROOT_DIR, "build", "cffi")
    os.makedirs(build_dir, exist_ok=True)
    # ffi.compile() runs the compiler from inside tmpdir: absolute paths.
    built = make_builder(absolute=True).compile(tmpdir=build_dir, verbose=True)
    print(built)
    if "--inplace" in sys.argv[1:]:
        import shutil

        target = os.path.join(ROOT_DIR, "edged", os.path.basename(built))
        shutil.copy2(built, target)
        print(f"copied to {target}")
