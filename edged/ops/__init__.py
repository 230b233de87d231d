"""Operator modules, found by naming convention: every module here with ``OPCODES``.

Each module holds one op family: ``infer_output`` (the output shape and dtype
its inputs and options give, checked against the file at load: see
edged.ops.base.check_op), ``prepare`` (all float work, once), ``reference``
(the numpy spec), and for ops with C kernels ``native_kind``, ``pack``
(constant data shared by all executors) and ``describe`` (fills the C
descriptor).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

_MODULES = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]

OPS: dict[str, ModuleType] = {code: m for m in _MODULES for code in getattr(m, "OPCODES", ())}

SUPPORTED_OPCODES = tuple(sorted(OPS))
