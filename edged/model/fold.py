"""Load-time folding of shape arithmetic, so dynamic-batch RESHAPEs become static.

The TFLite converter writes a Keras ``Flatten`` or ``Reshape`` of a model with
a dynamic batch as ``SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE``: the batch is
read from the activation at run time. edged treats the leading axis of every
activation as the batch and knows every other extent at load time, so that
integer subgraph can be evaluated once. Its batch entries are tracked
symbolically: a value that is exactly the batch may only end up as the leading
entry of a RESHAPE's new shape, where it becomes ``-1``; a batch that flows
anywhere else (arithmetic, another op) makes the subgraph unfoldable.

``fold_shapes`` runs after reading (leniently: a graph it cannot fold stays as
it is) and again when a graph is prepared for execution (strictly: it then
raises ``ShapeFoldError`` naming the op that cannot be folded and why).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edged.errors import UnsupportedModelError
from edged.model.ir import Graph, Operator, Tensor

# What an entry of a folded integer value is: known at load time, the batch
# itself, or computed from the batch (known only at run time).
STATIC, BATCH, FROM_BATCH = 0, 1, 2

INTEGER_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
CAST_TYPES = {2: np.int32, 4: np.int64}  # schema TensorType codes of SHAPE's out_type and CAST


class ShapeFoldError(UnsupportedModelError):
    """An integer (shape) subgraph the native engine cannot evaluate at load time."""


@dataclass
class Value:
    """A load-time integer tensor and, per entry, STATIC / BATCH / FROM_BATCH."""

    data: np.ndarray
    origin: np.ndarray

    @classmethod
    def static(cls, data: np.ndarray) -> Value:
        data = np.asarray(data, dtype=np.int64)
        return cls(data, np.zeros(data.shape, dtype=np.int8))

    @property
    def has_batch(self) -> bool:
        return bool(np.any(self.origin != STATIC))


class _NotFoldableError(Exception):
    """Why one operator's integer result cannot be computed at load time."""


def _strided_slice(op: Operator, v: Value, begin: Value, end: Value, strides: Value) -> Value:
    opts = op.options
    if v.data.ndim != 1:
        raise _NotFoldableError(f"slicing a rank-{v.data.ndim} integer tensor")
    if opts.get("ellipsis_mask", 0) or opts.get("new_axis_mask", 0) or opts.get("offset", False):
        raise _NotFoldableError("ellipsis, new-axis or offset slicing")
    for part in (begin, end, strides):
        if part.has_batch or part.data.size != 1:
            raise _NotFoldableError("slice bounds must be one static entry each")
    b, e, s = int(begin.data.reshape(-1)[0]), int(end.data.reshape(-1)[0]), int(strides.data.reshape(-1)[0])
    if s == 0:
        raise _NotFoldableError("a slice stride of 0")
    n = v.data.size
    if opts.get("shrink_axis_mask", 0) & 1:
        index = b + n if b < 0 else b
        if not 0 <= index < n:
            raise _NotFoldableError(f"index {b} out of range for {n} entries")
        return Value(v.data[index].copy(), v.origin[index].copy())
    start = None if opts.get("begin_mask", 0) & 1 else b
    stop = None if opts.get("end_mask", 0) & 1 else e
    picked = slice(start, stop, s)
    return Value(v.data[picked].copy(), v.origin[picked].copy())


def _pack(op: Operator, *values: Value) -> Value:
    axis = int(op.options.get("axis", 0))
    return Value(np.stack([v.data for v in values], axis), np.stack([v.origin for v in values], axis))


def _concatenation(op: Operator, *values: Value) -> Value:
    if op.fused_activation != "NONE":
        raise _NotFoldableError("a fused activation on integer concatenation")
    axis = int(op.options.get("axis", 0))
    return Value(
        np.concatenate([v.data for v in values], axis), np.concatenate([v.origin for v in values], axis)
    )


def _gather(op: Operator, params: Value, indices: Value) -> Value:
    if indices.has_batch or int(op.options.get("batch_dims", 0)):
        raise _NotFoldableError("gather indices computed from the batch, or batch_dims")
    axis = int(op.options.get("axis", 0))
    size = params.data.shape[axis] if params.data.ndim else 0
    if np.any(indices.data < 0) or np.any(indices.data >= size):
        raise _NotFoldableError("a gather index out of range")
    return Value(np.take(params.data, indices.data, axis), np.take(params.origin, indices.data, axis))


def _arithmetic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., Value]:
    def apply(op: Operator, a: Value, b: Value) -> Value:
        if op.fused_activation != "NONE":
            raise _NotFoldableError("a fused activation on integer arithmetic")
        data = fn(a.data, b.data)
        # Anything computed from the batch is only known at run time.
        origin = np.maximum(
            np.broadcast_to(np.where(a.origin != STATIC, FROM_BATCH, STATIC), data.shape),
            np.broadcast_to(np.where(b.origin != STATIC, FROM_BATCH, STATIC), data.shape),
        ).astype(np.int8)
        return Value(data, origin)

    return apply


def _floor_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.any(b == 0):
        raise _NotFoldableError("an integer division by zero")
    return np.floor_divide(a, b)


def _reduce_prod(op: Operator, v: Value, axes: Value) -> Value:
    if axes.has_batch:
        raise _NotFoldableError("reduction axes computed from the batch")
    axis = tuple(int(a) for a in axes.data.reshape(-1))
    keep = bool(op.options.get("keep_dims", False))
    data = np.prod(v.data, axis=axis, keepdims=keep)
    origin = np.where(np.any(v.origin != STATIC, axis=axis, keepdims=keep), FROM_BATCH, STATIC)
    return Value(data, origin.astype(np.int8))


def _reshape_value(op: Operator, v: Value, shape: Value | None = None) -> Value:
    if shape is None:
        shape = Value.static(np.array(op.options.get("new_shape") or [], dtype=np.int64))
    if shape.has_batch:
        raise _NotFoldableError("reshaping an integer tensor to a shape not known at load time")
    dims = tuple(int(d) for d in shape.data.reshape(-1))
    return Value(v.data.reshape(dims), v.origin.reshape(dims))


def _cast(op: Operator, v: Value) -> Value:
    return v


def _squeeze(op: Operator, v: Value) -> Value:
    dims = op.options.get("squeeze_dims") or [i for i, d in enumerate(v.data.shape) if d == 1]
    axis = tuple(int(d) % max(v.data.ndim, 1) for d in dims)
    return Value(np.squeeze(v.data, axis), np.squeeze(v.origin, axis))


def _expand_dims(op: Operator, v: Value, axis: Value) -> Value:
    if axis.has_batch or axis.data.size != 1:
        raise _NotFoldableError("an expand_dims axis not known at load time")
    a = int(axis.data.reshape(-1)[0])
    return Value(np.expand_dims(v.data, a), np.expand_dims(v.origin, a))


# opcode -> evaluation on the op's (present) inputs. SHAPE is special: it reads
# only the static shape of its input, which need not be known.
EVALUATORS: dict[str, Callable[..., Value]] = {
    "STRIDED_SLICE": _strided_slice,
    "PACK": _pack,
    "CONCATENATION": _concatenation,
    "GATHER": _gather,
    "CAST": _cast,
    "MUL": _arithmetic(np.multiply),
    "ADD": _arithmetic(np.add),
    "SUB": _arithmetic(np.subtract),
    "FLOOR_DIV": _arithmetic(_floor_div),
    "MAXIMUM": _arithmetic(np.maximum),
    "MINIMUM": _arithmetic(np.minimum),
    "REDUCE_PROD": _reduce_prod,
    "RESHAPE": _reshape_value,
    "SQUEEZE": _squeeze,
    "EXPAND_DIMS": _expand_dims,
}


def _shape_of(t: Tensor) -> Value:
    signature = t.shape_signature or t.shape
    if any(d < 0 for d in signature[1:]):
        raise _NotFoldableError(
            f"tensor '{t.name}' has a dynamic extent other than the batch ({list(signature)})"
        )
    value = Value.static(np.array(t.shape, dtype=np.int64))
    if t.is_constant:
        return value
    if value.origin.size:
        value.origin[0] = BATCH
    return value


def _integer_output(graph: Graph, op: Operator) -> bool:
    if len(op.outputs) != 1:
        return False
    t = graph.tensors[op.outputs[0]]
    return t.dtype in INTEGER_DTYPES and t.quant is None and not t.is_constant


@dataclass
class _Failure:
    index: int
    opcode: str
    reason: str


class _Folder:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.values: dict[int, Value] = {}
        self.folded: list[int] = []  # operator indices
        self.failures: list[_Failure] = []

    def known(self, tensor: int) -> Value | None:
        if tensor in self.values:
            return self.values[tensor]
        t = self.graph.tensors[tensor]
        if t.is_constant and t.dtype in INTEGER_DTYPES:
            return Value.static(t.data)
        return None

    def evaluate(self) -> None:
        producers = self.graph.producers()
        for i, op in enumerate(self.graph.operators):
            # Other integer ops (ARG_MAX, ...) are simply unsupported: prepare says so.
            if op.opcode not in EVALUATORS and op.opcode != "SHAPE":
                continue
            if not _integer_output(self.graph, op):
                continue
            try:
                value = self._evaluate(op, producers)
            except _NotFoldableError as exc:
                self.failures.append(_Failure(i, op.opcode, str(exc)))
                continue
            except (ValueError, IndexError, TypeError) as exc:  # malformed operands
                self.failures.append(_Failure(i, op.opcode, f"malformed operands ({exc})"))
                continue
            out = self.graph.tensors[op.outputs[0]]
            if tuple(value.data.shape) != tuple(out.shape):
                self.failures.append(
                    _Failure(i, op.opcode, f"computes shape {list(value.data.shape)}, "
                             f"the file says {list(out.shape)}")
                )
                continue
            self.values[op.outputs[0]] = value
            self.folded.append(i)

    def _evaluate(self, op: Operator, producers: dict[int, int]) -> Value:
        inputs = [t for t in op.inputs if t >= 0]
        if op.opcode == "SHAPE":
            if op.options.get("out_type", 2) not in CAST_TYPES:
                raise _NotFoldableError(f"SHAPE to type code {op.options.get('out_type')}")
            return _shape_of(self.graph.tensors[inputs[0]])
        evaluate = EVALUATORS[op.opcode]
        operands = []
        for t in inputs:
            value = self.known(t)
            if value is None:
                source = producers.get(t)
                where = f"operator #{source} ({self.graph.operators[source].opcode})" if source is not None \
                    else "a graph input"
                raise _NotFoldableError(f"its input '{self.graph.tensors[t].name}' comes from {where}, "
                                  "which is not known at load time")
            operands.append(value)
        return evaluate(op, *operands)

    def reshape_targets(self) -> dict[int, np.ndarray]:
        """RESHAPE operator -> the static new shape (batch as -1) that replaces its shape input."""
        folded = set(self.folded)
        targets = {}
        for j, op in enumerate(self.graph.operators):
            if j in folded:
                continue
            for k, t in enumerate(op.inputs):
                value = self.values.get(t)
                if value is None:
                    continue
                if op.opcode == "RESHAPE" and k == 1:
                    try:
                        targets[j] = self._new_shape(op, value)
                    except _NotFoldableError as exc:
                        self.failures.append(_Failure(j, op.opcode, str(exc)))
                elif value.has_batch:
                    self.failures.append(
                        _Failure(j, op.opcode, f"it reads '{self.graph.tensors[t].name}', computed from "
                                 "the batch size, which is known only at run time")
                    )
        for t in self.graph.outputs:
            if t in self.values:
                self.failures.append(_Failure(-1, "output", f"graph output '{self.graph.tensors[t].name}' "
                                              "is a shape computation"))
        return targets

    def _new_shape(self, op: Operator, value: Value) -> np.ndarray:
        x, y = self.graph.tensors[op.inputs[0]], self.graph.tensors[op.outputs[0]]
        dims, origin = value.data.reshape(-1), value.origin.reshape(-1)
        if np.any(origin == FROM_BATCH) or np.any(origin[1:] == BATCH):
            raise _NotFoldableError("its new shape uses the batch size other than as its leading extent")
        if dims.size != len(y.shape) or x.size != y.size:
            raise _NotFoldableError(f"new shape {dims.tolist()} does not match output shape {list(y.shape)}")
        rest = dims[1:]
        if np.any((rest != y.shape[1:]) & (rest != -1)):
            raise _NotFoldableError(f"new shape {dims.tolist()} does not match output shape {list(y.shape)}")
        if origin.size and origin[0] == BATCH:
            return np.array([-1, *y.shape[1:]], dtype=np.int32)
        return dims.astype(np.int32)


def fold_shapes(graph: Graph, model: str = "<model>", strict: bool = False) -> int:
    """Evaluate integer shape subgraphs at load time; returns how many operators were removed.

    Every RESHAPE whose new shape they compute gets a constant new shape
    instead (batch as -1). Nothing changes unless the whole graph folds: with
    ``strict`` a graph that cannot be folded raises ShapeFoldError, otherwise it
    is left as it is.
    """
    folder = _Folder(graph)
    folder.evaluate()
    targets = folder.reshape_targets() if folder.folded else {}
    if folder.failures:
        if not strict:
            return 0
        first = folder.failures[0]
        where = f"operator #{first.index} ({first.opcode})" if first.index >= 0 else "the graph"
        raise ShapeFoldError(
            f"{model}: {where}: cannot evaluate the shape computation at load time: {first.reason}; "
            "run this model with --engine litert"
        )
    if not folder.folded:
        return 0
    for j, shape in targets.items():
        op = graph.operators[j]
        source = graph.tensors[op.inputs[1]]
        op.inputs[1] = graph.add_tensor(Tensor(f"{source.name}/folded", np.int32, shape.shape, data=shape))
        if op.options.get("new_shape"):
            op.options["new_shape"] = [int(d) for d in shape]
        y = graph.tensors[op.outputs[0]]
        y.shape_signature = (-1, *y.shape[1:]) if shape[0] == -1 else None
    for t, value in folder.values.items():
        if not value.has_batch:
            # A static integer result other (non-RESHAPE) ops may still read.
            tensor = graph.tensors[t]
            tensor.data = np.ascontiguousarray(value.data, dtype=tensor.dtype).reshape(tensor.shape)
    removed = set(folder.folded)
    graph.operators = [op for i, op in enumerate(graph.operators) if i not in removed]
    return len(removed)
