"""The generated .tflite flatbuffer schema (with its object API).

LiteRT ships it as ``ai_edge_litert.schema_py_generated``; a full TensorFlow
install ships the same module. edged does not carry its own copy so that it
always reads and writes the schema of the runtime that executes the models.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edged.errors import BackendUnavailableError

_CANDIDATES = (
    "ai_edge_litert.schema_py_generated",
    "tensorflow.lite.python.schema_py_generated",
)


def _load() -> ModuleType:
    for name in _CANDIDATES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise BackendUnavailableError(
        "the .tflite schema module was not found; install the 'ai-edge-litert' package "
        "(pip install ai-edge-litert), which ships it"
    )


schema = _load()


def enum_name(enum: type, value: int) -> str:
    """The name of ``value`` in a generated schema enum class (the number if unknown)."""
    for key, val in vars(enum).items():
        if not key.startswith("_") and val == value:
            return key
    return str(value)
