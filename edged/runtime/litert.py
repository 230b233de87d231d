"""The LiteRT backend: the interpreter from ai-edge-litert, or tflite-runtime."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType

import numpy as np

from edged.errors import BackendUnavailableError, EdgedError, ModelFormatError, UnsupportedModelError
from edged.runtime.engine import Engine, TensorSpec

log = logging.getLogger(__name__)

_INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def _spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = scale != 0.0
    return TensorSpec(
        name=detail["name"],
        dtype=np.dtype(detail["dtype"]),
        shape=tuple(int(d) for d in detail["shape"][1:]),
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


def _check_structure(content: bytes, model: str, delegates: bool) -> bool:
    """Reject files LiteRT would crash on or get wrong; return whether delegates may run.

    LiteRT crashes on some corrupt models its verifier lets through (an empty
    subgraph list, for one); edged's reader checks them in Python. Without the
    schema module (tflite-runtime alone) this check is skipped.
    """
    try:
        from edged.model.tflite import read_tflite
    except BackendUnavailableError:
        return delegates
    from edged.runtime.wellformed import check_dataflow, check_outputs_computed

    graph = read_tflite(content, name=model, keep_densify=True)
    check_dataflow(graph, model)
    check_outputs_computed(graph, model)
    _check_edged_ops(graph, model)
    return _check_sparse_weights(graph, model, delegates)


def _check_edged_ops(graph, model: str) -> None:
    """edged's own operators (EDGED_HMATRIX) are custom ops LiteRT does not have."""
    from edged.ops.hmatrix import CUSTOM_CODE

    for i, op in enumerate(graph.operators):
        if op.opcode == "CUSTOM" and op.custom_code == CUSTOM_CODE:
            raise UnsupportedModelError(
                f"{model}: operator #{i} is {CUSTOM_CODE}, edged's H-matrix layer, which only the native "
                "engine runs: use --engine native, or write the model with `edged compress --export "
                "factors` or `--export dense` for LiteRT"
            )


def _check_sparse_weights(graph, model: str, delegates: bool) -> bool:
    """Weights in TFLite's sparse encoding: only LiteRT's sparse FULLY_CONNECTED and DENSIFY read them right.

    LiteRT checks the encoding's level formats and block size but not its
    traversal order (a 1x16 layout traversed column-first crashes it), its
    CONV_2D reads sparse weights as if dense, and so does the XNNPACK
    delegate: all three give wrong results or worse, so they are refused (or
    the delegate left out) here.
    """
    sparse = [i for i, t in enumerate(graph.tensors) if t.sparsity is not None]
    for i in sparse:
        t = graph.tensors[i]
        users = [op for op in graph.operators if i in op.inputs]
        behind_densify = all(op.opcode == "DENSIFY" for op in users)
        ok = behind_densify or (t.sparsity.is_fc_block_1x16 and all(
            op.opcode == "FULLY_CONNECTED" and op.inputs.index(i) == 1 for op in users
        ))
        if not ok:
            raise UnsupportedModelError(
                f"{model}: tensor #{i} '{t.name}' is stored sparse in a form LiteRT's kernels do not run "
                "correctly (only FULLY_CONNECTED weights in 1x16 blocks, traversal order [0, 1, 2], or any "
                "layout behind a DENSIFY operator, as edged writes it); "
                "run it with --engine native, which reads any sparse encoding"
            )
    if sparse and delegates:
        log.warning("%s: sparse weights: running without the XNNPACK delegate, which misreads them", model)
        return False
    return delegates


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
    arithmetic is the one edged reproduces bit for bit; with ``delegates=True``
    the op resolver is AUTO, which applies the default XNNPACK delegate: about
    twice as fast on small int8 models, but it requantizes in float and may
    differ by one step.
    """
    mod = interpreter_module()
    kwargs = {"model_content": content, "num_threads": threads}
    resolvers = mod.OpResolverType
    kwargs["experimental_op_resolver_type"] = (
        resolvers.AUTO if delegates else resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    try:
        interpreter = mod.Interpreter(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"LiteRT cannot load the model: {exc}") from exc
    return interpreter


class LiteRTEngine(Engine):
    """Runs a model with the LiteRT interpreter."""

    name = "litert"

    def __init__(self, content: bytes, model: str = "<model>", *, delegates: bool = False) -> None:
        delegates = _check_structure(content, model, delegates)
        # The interpreter describes its own tensors, so this engine needs no
        # schema module: it works with tflite-runtime alone.
        self._interp = make_interpreter(content, delegates=delegates)
        try:
            inputs = [_spec(d) for d in self._interp.get_input_details()]
            outputs = [_spec(d) for d in self._interp.get_output_details()]
        except UnicodeDecodeError as exc:  # LiteRT decodes tensor names it never checked
            raise ModelFormatError(f"{model}: corrupt tensor name ({exc})") from exc
        super().__init__(inputs, outputs, model)
        if not self.inputs or not self.outputs:
            raise ModelFormatError(f"{model}: the model has no inputs or no outputs")
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
        except (ValueError, RuntimeError):
            try:
                for idx, spec in zip(self._in_idx, self.inputs, strict=True):
                    self._interp.resize_tensor_input(idx, [1, *spec.shape], strict=False)
                self._interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise EdgedError(f"{self.model}: LiteRT cannot prepare the model: {exc}") from exc
            self._batch = 1
            return False
        self._batch = batch
        return True

    @property
    def per_sample(self) -> bool:
        return self._per_sample  # known once a batch above 1 was refused

    def _invoke(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            for idx, x in zip(self._in_idx, inputs, strict=True):
                self._interp.set_tensor(idx, x)
            self._interp.invoke()
            # A corrupt file can leave an output unallocated: reading it raises ValueError.
            return [self._interp.get_tensor(i).copy() for i in self._out_idx]
        except (ValueError, RuntimeError) as exc:
            raise EdgedError(f"{self.model}: LiteRT failed to run the model: {exc}") from exc

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        batch = inputs[0].shape[0]
        if not self._per_sample and self._resize(batch):
            return self._invoke(inputs)
        self._per_sample = True
        self._resize(1)
        results = [self._invoke([x[b : b + 1] for x in inputs]) for b in range(batch)]
        return [np.concatenate(outs) for outs in zip(*results, strict=True)]
