"""Build hook: compiles the C kernels into edged._kernels with cffi at install time."""

from setuptools import setup

setup(cffi_modules=["kernels/build_ffi.py:ffibuilder"])
