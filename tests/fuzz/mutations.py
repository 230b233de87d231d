"""Structural mutations of a model: edit one IR field, write the file back with edged's writer.

Byte-level mutation of a flatbuffer mostly produces files the reader refuses
outright. Editing the graph instead (a shape, an axis, a scale, a buffer, an
option, an operator's wiring) produces files that read fine and then have to
be caught by the load-time checks, which is where a model could reach the C
kernels. Shared by the seeded-random test (tests/runtime/test_model_mutations.py)
and the atheris target's custom mutator (tests/fuzz/fuzz_models.py).
"""

from __future__ import annotations

import copy
import random

import numpy as np

from edged.errors import EdgedError
from edged.model.ir import Graph, Quantization
from edged.model.tflite import read_tflite, write_tflite
from edged.ops import SUPPORTED_OPCODES

# Values that sit on the edges of every check: empty, one, negative, int32 and int64 limits.
EDGE_INTS = [0, 1, 2, 3, -1, -2, 7, 8, 16, 255, 256, 2**15, 2**16, 2**31 - 1, 2**31, -(2**31), 2**40]
EDGE_FLOATS = [0.0, -0.0, -1.0, 1e-45, 1e-30, 1e30, float("inf"), float("-inf"), float("nan"), 3.4e38]
DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.float32, np.float16, np.bool_]


def _int(rng: random.Random, old: int | None = None) -> int:
    choice = rng.random()
    if old is not None and choice < 0.3:
        return old + rng.choice([-1, 1, -old, old])
    return rng.choice(EDGE_INTS) if choice < 0.8 else rng.randint(-1000, 1000)


def _mutate_shape(g: Graph, rng: random.Random) -> None:
    t = rng.choice(g.tensors)
    shape = list(t.shape)
    action = rng.random()
    if shape and action < 0.6:
        k = rng.randrange(len(shape))
        shape[k] = _int(rng, shape[k])
    elif shape and action < 0.8:
        del shape[rng.randrange(len(shape))]
    else:
        shape.insert(rng.randrange(len(shape) + 1), rng.choice([1, 2, 3]))
    t.shape = tuple(shape)
    if t.is_constant and rng.random() < 0.5 and 0 <= np.prod(shape, dtype=object) <= 1 << 16:
        # A consistent constant of the new shape: exercises the checks rather than the reader's.
        t.data = np.random.default_rng(rng.randrange(2**32)).integers(-3, 4, shape).astype(t.dtype)


def _mutate_dtype(g: Graph, rng: random.Random) -> None:
    t = rng.choice(g.tensors)
    t.dtype = np.dtype(rng.choice(DTYPES))
    if t.is_constant:
        t.data = t.data.astype(t.dtype)


def _mutate_quant(g: Graph, rng: random.Random) -> None:
    t = rng.choice(g.tensors)
    q = t.quant
    action = rng.randrange(5)
    if q is None or action == 0:
        t.quant = None if q is not None else Quantization([rng.choice([*EDGE_FLOATS, 0.1])], [_int(rng)])
        return
    scale, zp = q.scale.copy(), q.zero_point.copy()
    if action == 1:
        scale[rng.randrange(scale.size)] = rng.choice(EDGE_FLOATS)
    elif action == 2:
        zp[rng.randrange(zp.size)] = _int(rng)
    elif action == 3:
        n = max(1, _int(rng, scale.size) % 70)
        scale = np.resize(scale, n)
        zp = np.resize(zp, n)
    t.quant = Quantization(scale, zp, _int(rng, q.axis) if action == 4 else q.axis)


def _mutate_buffer(g: Graph, rng: random.Random) -> None:
    consts = [t for t in g.tensors if t.is_constant]
    if not consts:
        return
    t = rng.choice(consts)
    flat = t.data.reshape(-1).copy()
    if rng.random() < 0.5 and flat.size:
        flat[rng.randrange(flat.size)] = np.array(_int(rng)).astype(t.dtype)
        t.data = flat.reshape(t.shape)
    else:
        # A buffer whose size disagrees with the shape: Tensor keeps data as given.
        cut = flat[: max(0, flat.size + rng.choice([-1, 1, -flat.size // 2 or -1]))]
        object.__setattr__(t, "data", np.resize(cut, max(cut.size, 0)))


def _mutate_option(g: Graph, rng: random.Random) -> None:
    if not g.operators:
        return
    op = rng.choice(g.operators)
    keys = [k for k, v in op.options.items()
            if isinstance(v, (int, float, str, list)) and not isinstance(v, bool)]
    if not keys:
        return
    key = rng.choice(keys)
    value = op.options[key]
    if isinstance(value, str):
        op.options[key] = rng.choice(["NONE", "RELU", "RELU6", "TANH", "SAME", "VALID", "DEFAULT"])
    elif isinstance(value, float):
        op.options[key] = rng.choice(EDGE_FLOATS)
    elif isinstance(value, list):
        op.options[key] = [_int(rng) for _ in range(rng.randrange(5))]
    else:
        op.options[key] = _int(rng, value)


def _mutate_wiring(g: Graph, rng: random.Random) -> None:
    n = len(g.tensors)
    if g.operators and rng.random() < 0.8:
        op = rng.choice(g.operators)
        ports = op.inputs if rng.random() < 0.7 or not op.outputs else op.outputs
        action = rng.randrange(3)
        if action == 0 and ports:
            ports[rng.randrange(len(ports))] = rng.randrange(-1, n)
        elif action == 1 and ports:
            del ports[rng.randrange(len(ports))]
        else:
            ports.append(rng.randrange(-1, n))
    elif g.operators:
        op = rng.choice(g.operators)
        op.opcode = rng.choice(SUPPORTED_OPCODES)
        op.options_type = None
        if op.opcode.startswith("EDGED_"):
            op.custom_code, op.opcode = op.opcode, "CUSTOM"


MUTATIONS = [_mutate_shape, _mutate_dtype, _mutate_quant, _mutate_buffer, _mutate_option, _mutate_wiring]


def mutate(graph: Graph, rng: random.Random, edits: int = 1) -> bytes | None:
    """``edits`` random edits of a copy of ``graph``, written as a .tflite file; None if unwritable."""
    g = copy.deepcopy(graph)
    try:
        for _ in range(edits):
            rng.choice(MUTATIONS)(g, rng)
        return write_tflite(g)
    except Exception:  # the writer refuses what it cannot store (or flatbuffers cannot size): not a model
        return None


def load_and_run(content: bytes, label: str = "<mutant>") -> str:
    """Load ``content`` in the native engine and run it on zeros at batch 1 and 3.

    Returns "ok" or the EdgedError subclass name; any other exception propagates (a bug).
    """
    from edged.runtime.native import NativeEngine

    try:
        graph = read_tflite(content, name=label)
        engine = NativeEngine(graph, label, layout="cost")
        for batch in (1, 3):
            engine.infer([np.zeros((batch, *s.shape), s.dtype) for s in engine.inputs])
    except EdgedError as exc:
        return type(exc).__name__
    return "ok"
