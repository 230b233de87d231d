"""Exception types a user of edged can catch and act on.

Every error edged raises on bad input derives from ``EdgedError`` so that the
CLI and the daemon can report it precisely and keep going.
"""

from __future__ import annotations


class EdgedError(Exception):
    """Base class of every error edged raises on purpose."""


class ModelFormatError(EdgedError):
    """The file is not a readable .tflite model (truncated, corrupt, wrong format)."""


class UnsupportedModelError(EdgedError):
    """The model is a valid .tflite file but the native engine cannot run it."""


class UnsupportedOpError(UnsupportedModelError):
    """The model contains an operator the native engine does not implement."""

    def __init__(self, op_name: str, op_index: int, model: str) -> None:
        self.op_name = op_name
        self.op_index = op_index
        self.model = model
        super().__init__(
            f"{model}: operator #{op_index} is {op_name}, which the native engine does not "
            f"support; run this model with --engine litert"
        )


class SparseFormatError(EdgedError):
    """A packed sparse weight matrix is inconsistent (bad indices, row pointers or sizes)."""


class InputError(EdgedError):
    """An inference input has the wrong shape, dtype or values."""


class BackendUnavailableError(EdgedError):
    """A requested engine backend (e.g. LiteRT) is not installed."""
