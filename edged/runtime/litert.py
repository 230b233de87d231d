"""The LiteRT backend: the interpreter from ai-edge-litert, or tflite-runtime."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np

from edged.errors import BackendUnavailableError, ModelFormatError
from edged.model.tflite import read_tflite
from edged.runtime.engine import Engine

_INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def interpreter_module() -> ModuleType:
    for name in _INTERPRETER_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise BackendUnavailableError(
        "no LiteRT interpreter is installed: pip install ai-edge-litert (or tflite-runtime on "
        "boards that only have it, via the 'legacy' extra)"
    )


def make_interpreter(content: bytes, *, delegates: bool = False, threads: int = 1):
    """A LiteRT interpreter on model bytes.

    With ``delegates=False`` it runs LiteRT's builtin kernels, whose integer
    arithmetic is the one edged reproduces bit for bit; the default XNNPACK
    delegate requantizes in float and may differ by one step.
    """
    mod = interpreter_module()
    kwargs = {"model_content": content, "num_threads": threads}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return mod.Interpreter(**kwargs)
    except ValueError as exc:
        raise ModelFormatError(f"LiteRT cannot load the model: {exc}") from exc


class LiteRTEngine(Engine):
    """Runs a model with the LiteRT interpreter."""

    name = "litert"

    def __init__(self, content: bytes, model: str = "<model>", *, delegates: bool = False) -> None:
        graph = read_tflite(content, name=model)
        super().__init__(graph, model)
        self._interp = make_interpreter(content, delegates=delegates)
        self._batch: int | None = None
        # Models whose shapes pin the batch (a RESHAPE to [1, n]) run sample by sample.
        self._per_sample = False
        self._in_idx = [d["index"] for d in self._interp.get_input_details()]
        self._out_idx = [d["index"] for d in self._interp.get_output_details()]

    @classmethod
    def from_file(cls, path: Path, *, delegates: bool = False) -> LiteRTEngine:
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise ModelFormatError(f"{path}: cannot read model file: {exc.strerror}") from exc
        return cls(content, str(path), delegates=delegates)

    def _resize(self, batch: int) -> bool:
        """Resize the interpreter to ``batch``; False if the model cannot take it."""
        if batch == self._batch:
            return True
        try:
            for idx, spec in zip(self._in_idx, self.inputs, strict=True):
                self._interp.resize_tensor_input(idx, [batch, *spec.shape], strict=False)
            self._interp.allocate_tensors()
        except RuntimeError:
            for idx, spec in zip(self._in_idx, self.inputs, strict=True):
                self._interp.resize_tensor_input(idx, [1, *spec.shape], strict=False)
            self._interp.allocate_tensors()
            self._batch = 1
            return False
        self._batch = batch
        return True

    def _invoke(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        for idx, x in zip(self._in_idx, inputs, strict=True):
            self._interp.set_tensor(idx, x)
        self._interp.invoke()
        return [self._interp.get_tensor(i).copy() for i in self._out_idx]

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        batch = inputs[0].shape[0]
        if not self._per_sample and self._resize(batch):
            return self._invoke(inputs)
        self._per_sample = True
        self._resize(1)
        results = [self._invoke([x[b : b + 1] for x in inputs]) for b in range(batch)]
        return [np.concatenate(outs) for outs in zip(*results, strict=True)]
