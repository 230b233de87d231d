"""A loaded, warmed model version: what the inference workers run.

A ``ServedModel`` is immutable once built. The server holds one reference to
the current one; a swap replaces that reference, and batches already running
keep theirs until they finish, so they complete on the version they started on.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged.errors import EdgedError, ModelFormatError
from edged.runtime.engine import Engine, TensorSpec
from edged.serve.protocol import DATATYPES, datatype_name, infer_reply_body, on_wire

# Engines whose infer() may be called from several threads at once (the native
# engine gives each thread its own arena). Others get one instance per worker.
SHARED_ENGINES = frozenset({"native"})


@dataclass(eq=False)
class ServedModel:
    name: str
    version: str
    engines: list[Engine]
    engine_kind: str
    sha256: str = ""
    size_bytes: int = 0
    weight_bytes: int = 0
    sparsity: float = 0.0
    batch1_us: float = 0.0  # median engine time at batch 1, measured at warm-up
    loaded_at: float = field(default_factory=time.time)
    _reply_bodies: dict[tuple, str] = field(default_factory=dict, init=False, repr=False)

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.engines[0].inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.engines[0].outputs

    def engine(self, worker: int) -> Engine:
        return self.engines[worker % len(self.engines)]

    @functools.cached_property
    def signature(self) -> tuple:
        """What a request must match to run on this model (per-sample dtype and shape)."""
        return tuple((s.dtype.str, s.shape) for s in self.inputs)

    @functools.cached_property
    def wire_problem(self) -> str | None:
        """Why requests cannot reach this model over EDGED1 (a tensor dtype it lacks), or None."""
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            for s in specs:
                if not on_wire(s.dtype):
                    return (
                        f"the model's {kind} '{s.name}' is {datatype_name(s.dtype)}, a datatype EDGED1 "
                        "does not carry; this model cannot be served over it"
                    )
        return None

    @functools.cached_property
    def input_wire(self) -> list[tuple[str, np.dtype, tuple[int, ...], bool]]:
        """Per input: name, wire dtype, per-sample shape, whether it is float (checked for NaN).

        Only read when ``wire_problem`` is None.
        """
        return [
            (s.name, DATATYPES[datatype_name(s.dtype)], tuple(s.shape), s.dtype.kind == "f")
            for s in self.inputs
        ]

    @functools.cached_property
    def output_wire(self) -> list[tuple[str, str]]:
        """(name, EDGED1 datatype) of each output, for replies; only read when wire_problem is None."""
        return [(s.name, datatype_name(s.dtype)) for s in self.outputs]

    def reply_body(self, shapes: tuple[tuple[int, ...], ...]) -> str:
        """``protocol.infer_reply_body`` of this version for outputs of ``shapes``, built once per shape."""
        body = self._reply_bodies.get(shapes)
        if body is None:
            if len(self._reply_bodies) >= 64:  # shapes differ only in the batch: a few dozen at most
                self._reply_bodies.clear()
            body = infer_reply_body(self.name, self.version, self.output_wire, shapes)
            self._reply_bodies[shapes] = body
        return body

    def describe(self) -> dict[str, Any]:
        """The ``metadata`` reply fields; tensors EDGED1 cannot carry are marked ``unsupported``."""

        def spec(s: TensorSpec) -> dict[str, Any]:
            d: dict[str, Any] = {"name": s.name, "datatype": datatype_name(s.dtype), "shape": [-1, *s.shape]}
            if not on_wire(s.dtype):
                d["unsupported"] = True
            if s.scale is not None:
                d["parameters"] = {"scale": s.scale, "zero_point": s.zero_point}
            return d

        return {
            "model_name": self.name,
            "model_version": self.version,
            "engine": self.engine_kind,
            "sha256": self.sha256,
            "inputs": [spec(s) for s in self.inputs],
            "outputs": [spec(s) for s in self.outputs],
        }


def _engine_from_bytes(kind: str, content: bytes, label: str, layout: str = "auto") -> Engine:
    if kind == "native":
        from edged.runtime.layout import parse_policy
        from edged.runtime.native import NativeEngine

        return NativeEngine.from_bytes(content, label, parse_policy(layout))
    if kind == "litert":
        from edged.runtime.litert import LiteRTEngine

        # Served with LiteRT's default XNNPACK delegate (about 2x faster at batch 1 on the
        # bundled models, bench/serve.py), except on files it misreads (sparse weights).
        return LiteRTEngine(content, label, delegates=True)
    raise EdgedError(f"unknown engine {kind!r}")


def weight_stats(content: bytes, label: str) -> tuple[int, float]:
    """Bytes of int8 weight tensors and the fraction of them that are zero."""
    from edged.model.tflite import read_tflite

    graph = read_tflite(content, name=label)
    total = zeros = 0
    for t in graph.tensors:
        if t.data is not None and t.dtype == np.int8 and len(t.shape) >= 2:
            total += t.data.size
            zeros += int(np.count_nonzero(t.data == 0))
    return total, (zeros / total if total else 0.0)


def warm(model: ServedModel, max_batch: int, runs: int) -> None:
    """Run every engine at batch 1 and at max_batch so the first request pays nothing.

    Also measures the batch-1 time the server uses to decide whether a lone
    request may run on the I/O thread.
    """
    for engine in model.engines:
        for batch in sorted({1, max_batch}):
            zeros = [np.zeros((batch, *s.shape), s.dtype) for s in engine.inputs]
            for _ in range(runs):
                outs = engine.infer(zeros)
                if len(outs) != len(engine.outputs) or any(o.shape[0] != batch for o in outs):
                    raise ModelFormatError(
                        f"{engine.model}: warm-up at batch {batch} returned {[list(o.shape) for o in outs]}"
                    )
    engine = model.engines[0]
    one = [np.zeros((1, *s.shape), s.dtype) for s in engine.inputs]
    times = []
    for _ in range(max(5, runs)):
        t0 = time.perf_counter_ns()
        engine.infer(one)
        times.append(time.perf_counter_ns() - t0)
    model.batch1_us = float(np.median(times)) / 1e3


def load_model(
    content: bytes,
    *,
    name: str,
    version: str,
    engine: str,
    workers: int,
    max_batch: int,
    warmup_runs: int,
    label: str | None = None,
    layout: str = "auto",
) -> ServedModel:
    """Build the engines for model bytes and warm them up; raises EdgedError subclasses.

    ``workers`` counts every thread that may run the model at once (the server
    passes its workers plus the I/O thread).
    """
    label = label or f"{name}@{version}"
    count = 1 if engine in SHARED_ENGINES else workers
    engines = [_engine_from_bytes(engine, content, label, layout) for _ in range(count)]
    weight_bytes, sparsity = weight_stats(content, label)
    model = ServedModel(
        name,
        version,
        engines,
        engine,
        hashlib.sha256(content).hexdigest(),
        len(content),
        weight_bytes,
        sparsity,
    )
    warm(model, max_batch, max(1, warmup_runs))
    return model


def read_model_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read model file: {exc.strerror}") from exc
