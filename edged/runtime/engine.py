"""The engine interface: validated inputs in, outputs out.

Two engines implement it: ``native`` (edged's own C kernels) and ``litert``
(the LiteRT interpreter). Both take batches whose first axis is the batch and
whose other axes match the model's input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edged.errors import EdgedError, InputError
from edged.model.ir import Quantization, Tensor

ENGINES = ("native", "litert")


@dataclass(frozen=True)
class TensorSpec:
    """What an engine expects or returns for one tensor (batch axis excluded)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # per sample
    scale: float | None = None
    zero_point: int | None = None

    @classmethod
    def of(cls, t: Tensor) -> TensorSpec:
        """The spec of a graph tensor."""
        q: Quantization | None = t.quant
        scale = float(q.scale[0]) if q is not None and not q.per_channel else None
        zp = int(q.zero_point[0]) if q is not None and not q.per_channel else None
        return cls(t.name, np.dtype(t.dtype), tuple(t.shape[1:]), scale, zp)


class Engine:
    """Common input validation; subclasses implement ``_run``."""

    name = "engine"

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec], model: str) -> None:
        self.model = model
        self.inputs = inputs
        self.outputs = outputs

    @property
    def per_sample(self) -> bool:
        """Whether a batch runs one sample at a time (the model's shapes pin the batch at 1):
        then joining requests into one batch saves nothing."""
        return False

    def validate(self, inputs: list[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """Check count, dtype, shape and values; return C-contiguous arrays."""
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if len(inputs) == 1 and len(self.inputs) == 1:
            # The usual call: one integer array of the right type, shape and layout. A small model
            # runs in a few microseconds, so these checks are written to cost little.
            x, spec = inputs[0], self.inputs[0]
            if (type(x) is np.ndarray and x.dtype == spec.dtype and x.dtype.kind != "f"
                    and x.shape[1:] == spec.shape and x.ndim == len(spec.shape) + 1 and x.shape[0] >= 1
                    and x.flags.c_contiguous):
                return [x]
        return self.validate_all(inputs)

    def validate_all(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """``validate`` without its fast path: every check, with its error."""
        if len(inputs) != len(self.inputs):
            raise InputError(f"model takes {len(self.inputs)} input(s), got {len(inputs)}")
        out = []
        batch = None
        for spec, x in zip(self.inputs, inputs, strict=True):
            x = np.asarray(x)
            if x.dtype != spec.dtype:
                raise InputError(f"input '{spec.name}' must be {spec.dtype}, got {x.dtype}")
            if x.ndim != len(spec.shape) + 1 or tuple(x.shape[1:]) != spec.shape:
                raise InputError(
                    f"input '{spec.name}' must have shape [batch, {', '.join(map(str, spec.shape))}], "
                    f"got {list(x.shape)}"
                )
            if x.shape[0] < 1:
                raise InputError(f"input '{spec.name}' has an empty batch")
            if batch is not None and x.shape[0] != batch:
                raise InputError(f"inputs disagree on the batch size ({batch} vs {x.shape[0]})")
            batch = x.shape[0]
            if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
                raise InputError(f"input '{spec.name}' contains NaN or infinite values")
            out.append(np.ascontiguousarray(x))
        return out

    def infer(self, inputs: list[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """Run one batch; returns one array per model output, batch axis first."""
        return self._run(self.validate(inputs))

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


def load_engine(
    model: str | os.PathLike, engine: str = "native", layout: str = "auto", rounding: str = "auto"
) -> Engine:
    """Open a .tflite file with the named engine; ``layout`` is the native weight layout policy,
    ``rounding`` the native requantization rounding (edged.model.rounding)."""
    path = Path(model)
    if engine == "native":
        from edged.runtime.layout import parse_policy
        from edged.runtime.native import NativeEngine

        try:
            policy = parse_policy(layout)
        except ValueError as exc:
            raise EdgedError(str(exc)) from exc
        return NativeEngine.from_file(path, layout=policy, rounding=rounding)
    if engine == "litert":
        from edged.runtime.litert import LiteRTEngine

        return LiteRTEngine.from_file(path)
    raise EdgedError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
