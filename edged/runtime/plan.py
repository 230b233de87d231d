"""Prepared graph -> execution plan: arena layout, packed weights, C descriptors.

The plan is built once per model (TFLite Micro's Prepare). Running it is one
call into C for every maximal run of natively implemented ops; an op without a
C kernel runs its numpy reference on the arena in between, so a plan is
always complete and always bit-exact.

A ``Plan`` is immutable and shared between threads; each thread runs it
through its own ``Executor``, which owns the arena and the descriptor array.
C validates an executor's descriptors once, when they are written; each run
then only executes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edged.runtime.kernels import address, best_variant, ffi, lib
from edged.runtime.layout import LayerLayout, TuneCache, choose_layout
from edged.runtime.prepared import PreparedGraph, Step
from edged.sparse.block_csr import BlockShape

OneCall = tuple[np.ndarray, Any, int, Any, int, list[np.ndarray]]

ALIGN = 64


class PlanError(ValueError):
    """A step the planner cannot turn into a valid C descriptor (the model's values are out of range)."""

    def __init__(self, step: Step, reason: str) -> None:
        self.step = step
        super().__init__(f"operator #{step.index} ({step.opcode}): {reason}")


@dataclass
class Plan:
    prepared: PreparedGraph
    variant: int
    native: list[bool]  # per step: runs in C
    alias: dict[int, int]  # tensor -> tensor whose bytes it shares (RESHAPE)
    per_sample: bool  # the model pins batch 1: run a batch one sample at a time, as LiteRT does
    shared: dict[int, dict[str, Any]] = field(default_factory=dict)  # per step: packed weights, tables
    layouts: dict[int, LayerLayout] = field(default_factory=dict)  # per matmul step: dense or block-sparse

    @property
    def steps(self) -> list[Step]:
        return self.prepared.steps

    def root(self, tensor: int) -> int:
        while tensor in self.alias:
            tensor = self.alias[tensor]
        return tensor

    def native_fraction(self) -> float:
        return sum(self.native) / max(len(self.native), 1)


def build_plan(
    prepared: PreparedGraph,
    variant: int | None = None,
    layout: str | BlockShape = "auto",
    cache: TuneCache | None = None,
) -> Plan:
    """Plan ``prepared`` for ``variant``; ``layout`` is the weight layout policy of
    FULLY_CONNECTED / CONV_2D layers (see edged.runtime.layout.choose_layout)."""
    variant = best_variant() if variant is None else variant
    native = []
    alias = {}
    shared: dict[int, dict[str, Any]] = {}
    layouts: dict[int, LayerLayout] = {}
    for step in prepared.steps:
        module = step.module
        if step.opcode == "RESHAPE":
            alias[step.output] = step.activation_inputs[0]
            native.append(True)
            continue
        kind = module.native_kind(step.params) if hasattr(module, "native_kind") else None
        native.append(kind is not None)
        if kind is None:
            continue
        try:
            choice = choose_layout(prepared.graph, step, variant, layout, cache)
            if choice is not None:
                layouts[step.index] = choice
                shared[step.index] = module.pack(step.params, variant, choice.layout)
            else:
                shared[step.index] = module.pack(step.params, variant) if hasattr(module, "pack") else {}
        except (ValueError, OverflowError, IndexError, ArithmeticError) as exc:
            raise PlanError(step, f"cannot pack its weights ({type(exc).__name__}: {exc})") from exc
        shared[step.index]["kind"] = kind
        freeze(shared[step.index])
    return Plan(prepared, variant, native, alias, batch_pinned(prepared), shared, layouts)


def freeze(shared: dict[str, Any]) -> None:
    """Make a step's packed arrays read-only: descriptors point into them, and an
    executor validates its descriptors once, so they must not change afterwards."""
    for value in shared.values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False


def single_op_executor(
    graph, step: Step, variant: int, layout: BlockShape | None, batch: int = 1
) -> Executor:
    """An executor running ``step`` of ``graph`` alone, weights in ``layout``: what the autotuner times.

    Its arena holds ``batch`` samples of random activations."""
    shared = {step.index: step.module.pack(step.params, variant, layout)}
    shared[step.index]["kind"] = step.module.native_kind(step.params)
    freeze(shared[step.index])
    plan = Plan(PreparedGraph(graph, [step]), variant, [True], {}, False, shared)
    ex = Executor(plan, batch)
    rng = np.random.default_rng(0)
    ex.arena[:] = rng.integers(0, 256, ex.arena.size, dtype=np.uint8)
    return ex


def batch_pinned(prepared: PreparedGraph) -> bool:
    """Whether a RESHAPE fixes the batch at 1 (LiteRT then cannot batch the model).

    Some kernels split their SIMD body and scalar tail over the flat tensor,
    batch included, so such a model must also run sample by sample here to
    give LiteRT's results.
    """
    graph = prepared.graph
    for op in graph.operators:
        if op.opcode != "RESHAPE":
            continue
        shape = None
        if len(op.inputs) > 1 and op.inputs[1] >= 0 and graph.tensors[op.inputs[1]].is_constant:
            shape = [int(v) for v in graph.tensors[op.inputs[1]].data.reshape(-1)]
        elif op.options.get("new_shape"):
            shape = [int(v) for v in op.options["new_shape"]]
        if shape and shape[0] != -1:
            return True
    return False


@dataclass
class _Segment:
    native: bool
    first: int  # index into the executor's descriptor array, or the step for Python
    count: int
    ops: Any = None  # pointer to the first descriptor of a native segment


class Executor:
    """Runs a Plan: owns an arena sized for a batch capacity and the C descriptors."""

    def __init__(self, plan: Plan, capacity: int = 1) -> None:
        self.plan = plan
        self.graph = plan.prepared.graph
        self.capacity = 0
        self._layout(max(capacity, 1))

    # -- layout

    def _per_sample_bytes(self, tensor: int) -> int:
        t = self.graph.tensors[tensor]
        return int(np.prod(t.shape[1:], dtype=np.int64)) * t.dtype.itemsize

    def _layout(self, capacity: int) -> None:
        plan = self.plan
        tensors = set(self.graph.inputs) | set(self.graph.outputs)
        for step in plan.steps:
            tensors.update(step.activation_inputs)
            tensors.add(step.output)
        roots = sorted({plan.root(t) for t in tensors})
        offsets: dict[int, int] = {}
        size = 0
        for t in roots:
            offsets[t] = size
            size += -(-self._per_sample_bytes(t) * capacity // ALIGN) * ALIGN
        self.arena = np.zeros(size + ALIGN, dtype=np.uint8)
        base = (-self.arena.ctypes.data) % ALIGN
        self._offsets = {t: base + offsets[plan.root(t)] for t in tensors}
        self.capacity = capacity
        self._io_views: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        # Per batch, for plans that are one native segment: (input view, ops, count, output views).
        # Per batch size, when the whole plan is one C call: the input view, its address and size,
        # the ops, their count and the output views (run_one).
        self._one_segment: dict[int, OneCall] = {}
        self._describe()

    def view(self, tensor: int, batch: int) -> np.ndarray:
        t = self.graph.tensors[tensor]
        start = self._offsets[tensor]
        nbytes = self._per_sample_bytes(tensor) * batch
        return self.arena[start : start + nbytes].view(t.dtype).reshape((batch, *t.shape[1:]))

    def _pointer(self, tensor: int) -> Any:
        return ffi.cast("void *", self.arena.ctypes.data + self._offsets[tensor])

    def _describe(self) -> None:
        plan = self.plan
        native_steps = [
            s for s, n in zip(plan.steps, plan.native, strict=True) if n and s.opcode != "RESHAPE"
        ]
        self._ops = ffi.new("edged_op[]", max(len(native_steps), 1))
        self._keep: list[Any] = []
        self._segments: list[_Segment] = []
        self.descriptor_steps: list[Step] = []  # the step of each C descriptor
        scratch_bytes = 0
        k = 0
        for step, native in zip(plan.steps, plan.native, strict=True):
            if step.opcode == "RESHAPE":
                continue
            if not native:
                self._segments.append(_Segment(False, step.index, 1))
                continue
            try:
                self._describe_step(step, self._ops[k])
            except (OverflowError, ValueError, IndexError, TypeError) as exc:
                # cffi refuses a value that does not fit its C field (an int32 geometry field).
                raise PlanError(step, f"a value does not fit its kernel descriptor ({exc})") from exc
            self.descriptor_steps.append(step)
            scratch_bytes = max(scratch_bytes, lib.edged_scratch_size(self._ops + k, self.capacity))
            if self._segments and self._segments[-1].native:
                self._segments[-1].count += 1
            else:
                self._segments.append(_Segment(True, k, 1, self._ops + k))
            k += 1
        self._scratch = np.zeros(scratch_bytes + ALIGN, dtype=np.uint8)
        for i in range(k):
            self._ops[i].scratch = address(self._scratch)
        # Validated once here, run unchecked (edged_execute) on every call: nothing
        # writes the descriptors after this, and what they point to is read-only.
        self.check()

    def _describe_step(self, step: Step, d: Any) -> None:
        shared = self.plan.shared[step.index]
        d.kind = shared["kind"]
        d.variant = self.plan.variant
        d.n_in = len(step.activation_inputs)
        if d.n_in > len(d.in_stride):
            raise ValueError(f"{d.n_in} inputs, the descriptor holds {len(d.in_stride)}")
        for j, t in enumerate(step.activation_inputs):
            getattr(d, "in")[j] = self._pointer(t)
            d.in_stride[j] = self._per_sample_bytes(t) // self.graph.tensors[t].dtype.itemsize
        d.out = self._pointer(step.output)
        out_t = self.graph.tensors[step.output]
        d.out_stride = self._per_sample_bytes(step.output) // out_t.dtype.itemsize
        self._keep.extend(step.module.describe(step.params, d, shared) or [])

    def check(self) -> None:
        """Have C validate every descriptor (done whenever they are written); raise PlanError."""
        for seg in self._segments:
            if seg.native:
                bad = lib.edged_validate(seg.ops, seg.count, 1)
                if bad:
                    step = self.descriptor_steps[seg.first + bad - 1]
                    raise PlanError(step, "the native kernel rejects its descriptor (sizes out of range)")

    # -- running

    def native_ops(self) -> tuple[Any, int]:
        """(descriptor pointer, count) of a plan that runs entirely in C."""
        if len(self._segments) != 1 or not self._segments[0].native:
            raise ValueError("the plan is not one native segment")
        return self._segments[0].ops, self._segments[0].count

    def run_one(self, x: np.ndarray, fast: OneCall) -> list[np.ndarray]:
        """``run`` of a plan that is one C call for x's batch; ``fast`` is its _one_segment entry."""
        view_in, address_in, nbytes, ops, count, views_out = fast
        try:  # a C memmove from the caller's buffer is half the cost of np.copyto for small inputs
            ffi.memmove(address_in, x, nbytes)
        except ValueError:  # not C-contiguous: no flat buffer to copy from
            np.copyto(view_in, x)
        if lib.edged_execute(ops, count, x.shape[0]) != 0:
            raise RuntimeError(f"native kernels refused batch {x.shape[0]}")
        if len(views_out) == 1:  # the usual model; half the cost of the comprehension
            return [views_out[0].copy()]
        return [view.copy() for view in views_out]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        batch = inputs[0].shape[0]
        fast = self._one_segment.get(batch) if len(inputs) == 1 else None
        if fast is not None:  # the whole plan is one C call: skip the general loop
            return self.run_one(inputs[0], fast)
        if self.plan.per_sample and batch > 1:
            results = [self.run([x[b : b + 1] for x in inputs]) for b in range(batch)]
            return [np.concatenate(outs) for outs in zip(*results, strict=True)]
        if batch > self.capacity:
            self._layout(max(batch, 2 * self.capacity))
        views = self._io_views.get(batch)
        if views is None:
            views = self._io_views[batch] = (
                [self.view(t, batch) for t in self.graph.inputs],
                [self.view(t, batch) for t in self.graph.outputs],
            )
        if len(self._segments) == 1 and self._segments[0].native and len(views[0]) == 1:
            seg = self._segments[0]
            view_in = views[0][0]
            self._one_segment[batch] = (view_in, ffi.from_buffer(view_in), view_in.nbytes, seg.ops, seg.count,
                                        views[1])
        for view, x in zip(views[0], inputs, strict=True):
            np.copyto(view, x)
        steps = self.plan.steps
        for seg in self._segments:
            if seg.native:
                if lib.edged_execute(seg.ops, seg.count, batch) != 0:
                    raise RuntimeError(f"native kernels refused batch {batch}")
            else:
                step = steps[seg.first]
                args = [self.view(t, batch) for t in step.activation_inputs]
                np.copyto(self.view(step.output, batch), step.module.reference(step.params, args))
        return [view.copy() for view in views[1]]
