"""The native engine: edged's own C kernels running an execution plan."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edged.errors import ModelFormatError, UnsupportedModelError
from edged.model.ir import Graph
from edged.model.tflite import read_tflite
from edged.runtime.engine import Engine, TensorSpec
from edged.runtime.layout import LayoutPolicy
from edged.runtime.plan import Executor, Plan, PlanError, build_plan
from edged.runtime.prepared import prepare_graph


class NativeEngine(Engine):
    """Runs an int8 graph through its plan; each calling thread gets its own arena."""

    name = "native"

    def __init__(
        self, graph: Graph, model: str = "<model>", variant: int | None = None, layout: LayoutPolicy = "auto",
        rounding: str = "auto",
    ) -> None:
        # A float model shows in its weights (input 1 of FULLY_CONNECTED, CONV_2D, ...); other
        # float constants can be an int8 op's parameters (EDGED_HMATRIX's mid-feature scales).
        weights = {op.inputs[1] for op in graph.operators if len(op.inputs) > 1 and op.inputs[1] >= 0}
        floats = [graph.tensors[i].name for i in sorted(weights)
                  if graph.tensors[i].is_constant and graph.tensors[i].dtype.kind == "f"]
        if floats:
            raise UnsupportedModelError(
                f"{model}: the model has float weights ('{floats[0]}'): it is not int8-quantized. The "
                "native engine runs full-integer quantized models; use --engine litert for float models"
            )
        super().__init__(
            [TensorSpec.of(t) for t in graph.input_tensors],
            [TensorSpec.of(t) for t in graph.output_tensors],
            model,
        )
        self.graph = graph
        self._local = threading.local()
        try:
            self.plan: Plan = build_plan(prepare_graph(graph, model, rounding), variant, layout)
            # Lay the plan out once now: a descriptor the kernels would refuse is a load error,
            # not a failure of the first request.
            executor = Executor(self.plan)
            executor.check()
        except PlanError as exc:
            raise ModelFormatError(f"{model}: {exc}") from exc
        self._local.executor = executor
        self.taps = None  # edged.adapt.taps.Taps: copies of intermediates for a sample of runs
        # For infer's shortest path: the one input's per-sample shape, and its dtype when that is an
        # integer type (float inputs take the checks for NaN and infinity).
        spec = self.inputs[0]
        self._input_shape = spec.shape if len(self.inputs) == 1 else None
        self._int_input = spec.dtype if len(self.inputs) == 1 and spec.dtype.kind != "f" else None

    @classmethod
    def from_file(
        cls, path: Path, variant: int | None = None, layout: LayoutPolicy = "auto", rounding: str = "auto"
    ) -> NativeEngine:
        return cls(read_tflite(path), str(path), variant, layout, rounding)

    @classmethod
    def from_bytes(
        cls, content: bytes, model: str = "<model>", layout: LayoutPolicy = "auto", rounding: str = "auto"
    ) -> NativeEngine:
        return cls(read_tflite(content, name=model), model, layout=layout, rounding=rounding)

    @property
    def per_sample(self) -> bool:
        return self.plan.per_sample

    def infer(self, inputs: list[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """Run one batch; returns one array per model output, batch axis first."""
        # The usual call (one integer array of the model's dtype and per-sample shape, no taps,
        # a plan that is one C call) is a few microseconds of kernels: it goes straight to the
        # executor's one-call form, which copies the input in and the outputs out, each step of
        # the general path it skips adding a fraction of a microsecond.
        if type(inputs) is list and len(inputs) == 1 and self.taps is None:
            x = inputs[0]
            ex = getattr(self._local, "executor", None)
            if type(x) is np.ndarray and x.dtype is self._int_input and ex is not None:
                fast = ex._one_segment.get(x.shape[0]) if x.shape[1:] == self._input_shape else None
                if fast is not None:
                    return ex.run_one(x, fast)
        return self._run(self.validate(inputs))

    def _executor(self) -> Executor:
        ex = getattr(self._local, "executor", None)
        if ex is None:
            ex = self._local.executor = Executor(self.plan)
        return ex

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        ex = self._executor()
        taps = self.taps
        if taps is None or not taps.decide():
            return ex.run(inputs)
        batch = inputs[0].shape[0]
        if self.plan.per_sample and batch > 1:
            # The arena holds one sample at a time: tap each as it is computed.
            results = []
            for b in range(batch):
                results.append(ex.run([x[b : b + 1] for x in inputs]))
                taps.record(lambda t: ex.view(t, 1))
            return [np.concatenate(outs) for outs in zip(*results, strict=True)]
        outputs = ex.run(inputs)
        taps.record(lambda t: ex.view(t, batch))
        return outputs


__all__ = ["NativeEngine"]
