"""Operator modules, found by their OPCODES.

Each module holds one op family: ``prepare`` (all float work, once),
``reference`` (the numpy spec) and ``describe`` (the C descriptor).
"""

from __future__ import annotations

from types import ModuleType

from edged.ops import (
    add,
    concatenation,
    conv,
    fully_connected,
    logistic,
    mean,
    pad,
    pooling,
    quantize,
    reshape,
    softmax,
)

_MODULES = (
    add,
    concatenation,
    conv,
    fully_connected,
    logistic,
    mean,
    pad,
    pooling,
    quantize,
    reshape,
    softmax,
)

OPS: dict[str, ModuleType] = {code: module for module in _MODULES for code in module.OPCODES}

SUPPORTED_OPCODES = tuple(sorted(OPS))
