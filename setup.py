"""Build hooks that setup.cfg cannot express.

- The C kernels are compiled into edged._kernels with cffi at install time.
- The bundled models in the top-level models/ folder install as edged.models.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["edged", "edged.*"]), "edged.models"],
    package_dir={"edged.models": "models"},
    cffi_modules=["kernels/build_ffi.py:ffibuilder"],
)
