"""Malformed models are refused at load with an EdgedError naming the op, its index and the file.

Each case here once reached the C kernels with a descriptor that read or
wrote past a tensor (or raised a bare Python exception): the declared output
shape disagreed with the inputs, or a quantization parameter was not a number.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edged.errors import EdgedError, ModelFormatError, UnsupportedModelError
from edged.model.builder import GraphBuilder
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.native import NativeEngine
from edged.runtime.plan import Executor, PlanError
from edged.runtime.probe import probe_model
from edged.serve.served import load_model

ROOT = Path(__file__).resolve().parents[2]


def short_concatenation(n: int = 100) -> bytes:
    """CONCATENATION of two [1, 1, 1, n] tensors declared to give [1, 1, 1, 8].

    Before load-time shape checks, it passed the probe (its first run on one
    sample overflowed into arena padding only) and then corrupted the heap of
    the process that served it ("free(): invalid next size").
    """
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 1, 1, n), 0.1, 0)
    x2 = b.input("x2", np.int8, (1, 1, 1, n), 0.1, 0)
    y = b.tensor("y", np.int8, (1, 1, 1, 8), 0.1, 0)
    b.op("CONCATENATION", [x, x2], [y], axis=3)
    b.output(y)
    return write_tflite(b.build())


def test_short_concatenation_is_refused_by_the_probe_and_by_the_daemon_load():
    content = short_concatenation()
    with pytest.raises(ModelFormatError, match=r"concat\.tflite: operator #0 \(CONCATENATION\)"):
        probe_model(content, "native", "concat.tflite")
    # The daemon loads in-process after the probe: that load must refuse it too.
    with pytest.raises(ModelFormatError) as err:
        NativeEngine.from_bytes(content, "concat.tflite")
    message = str(err.value)
    assert "operator #0 (CONCATENATION)" in message and "concat.tflite" in message
    assert "declared [1, 1, 1, 8], its inputs give [1, 1, 1, 200]" in message
    # What the daemon calls after the probe (reload, deploy): it builds and warms the engines.
    with pytest.raises(EdgedError, match=r"operator #0 \(CONCATENATION\)"):
        load_model(content, name="concat", version="2", engine="native", workers=2, max_batch=4,
                   warmup_runs=1, label="concat.tflite")


def _unary(opcode: str, in_shape, out_shape, out_dtype=np.int8, **options) -> bytes:
    b = GraphBuilder()
    x = b.input("x", np.int8, in_shape, 0.1, 0)
    scale = None if out_dtype == np.float32 else 1 / 256
    y = b.tensor("y", out_dtype, out_shape, scale, -128 if scale else 0)
    b.op(opcode, [x], [y], **options)
    b.output(y)
    return write_tflite(b.build())


def _fc(out_units: int, declared_units: int) -> bytes:
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 16), 0.1, 0)
    w = b.const("w", np.ones((out_units, 16), np.int8), 0.01)
    y = b.tensor("y", np.int8, (1, declared_units), 0.2, 0)
    b.op("FULLY_CONNECTED", [x, w, -1], [y])
    b.output(y)
    return write_tflite(b.build())


def _pool(declared, **options) -> bytes:
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 8, 8, 4), 0.1, 0)
    y = b.tensor("y", np.int8, declared, 0.1, 0)
    b.op("MAX_POOL_2D", [x], [y], **options)
    b.output(y)
    return write_tflite(b.build())


POOL = {"padding": "VALID", "stride_h": 2, "stride_w": 2, "filter_height": 2, "filter_width": 2}

OUTPUT_MISMATCH = {
    "softmax_longer_output": (_unary("SOFTMAX", (1, 10), (1, 4000), beta=1.0), "SOFTMAX"),
    "logistic_longer_output": (_unary("LOGISTIC", (1, 10), (1, 4000)), "LOGISTIC"),
    "dequantize_longer_output": (_unary("DEQUANTIZE", (1, 10), (1, 4000), np.float32), "DEQUANTIZE"),
    "dequantize_to_int8": (_unary("DEQUANTIZE", (1, 10), (1, 10)), "DEQUANTIZE"),
    "fully_connected_units": (_fc(4, 64), "FULLY_CONNECTED"),
    "max_pool_output": (_pool((1, 8, 8, 4), **POOL), "MAX_POOL_2D"),
    "max_pool_zero_stride": (_pool((1, 4, 4, 4), **{**POOL, "stride_h": 0}), "MAX_POOL_2D"),
    "max_pool_huge_filter": (_pool((1, 1, 1, 4), **{**POOL, "filter_height": 1 << 30}), "MAX_POOL_2D"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_MISMATCH))
def test_declared_output_must_be_what_the_inputs_give(case):
    content, opcode = OUTPUT_MISMATCH[case]
    with pytest.raises(ModelFormatError, match=rf"m\.tflite: operator #0 \({opcode}\)"):
        NativeEngine.from_bytes(content, "m.tflite")


def _quantized_softmax(scale, zero_point) -> bytes:
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 10), scale, zero_point)
    y = b.tensor("y", np.int8, (1, 10), 1 / 256, -128)
    b.op("SOFTMAX", [x], [y], beta=1.0)
    b.output(y)
    return write_tflite(b.build())


@pytest.mark.parametrize(
    ("scale", "zero_point"), [(float("nan"), 0), (float("inf"), 0), (0.0, 0), (-0.5, 0), (0.1, 300)]
)
def test_activation_quantization_must_be_usable(scale, zero_point):
    with pytest.raises(ModelFormatError, match=r"q\.tflite: tensor #0 'x'"):
        NativeEngine.from_bytes(_quantized_softmax(scale, zero_point), "q.tflite")


def test_per_channel_scales_must_match_their_axis():
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 16), 0.1, 0)
    w = b.const("w", np.ones((4, 16), np.int8), np.full(3, 0.01), axis=0)
    y = b.tensor("y", np.int8, (1, 4), 0.2, 0)
    b.op("FULLY_CONNECTED", [x, w, -1], [y])
    b.output(y)
    with pytest.raises(ModelFormatError, match="3 per-channel scales on axis 0"):
        NativeEngine.from_bytes(write_tflite(b.build()), "pc.tflite")


def test_activations_beyond_the_arena_limit_are_refused_without_allocating():
    content = _unary("LOGISTIC", (1, 1 << 20, 1 << 20), (1, 1 << 20, 1 << 20))
    with pytest.raises(UnsupportedModelError, match="bytes per sample, over the"):
        NativeEngine.from_bytes(content, "big.tflite")


def test_negative_and_zero_dimensions_are_refused():
    for shape in [(1, -1), (1, 0)]:
        graph = read_tflite(_unary("LOGISTIC", (1, 10), (1, 10)))
        graph.tensors[graph.outputs[0]].shape = shape
        with pytest.raises(ModelFormatError, match="every dimension must be in"):
            NativeEngine(graph, "dims.tflite")


def test_an_op_writing_a_graph_input_is_refused():
    graph = read_tflite(_unary("LOGISTIC", (1, 10), (1, 10)))
    graph.operators[0].outputs = [graph.inputs[0]]
    with pytest.raises(EdgedError, match="written twice"):
        NativeEngine(graph, "loop.tflite")


def _concatenation_engine() -> NativeEngine:
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 1, 1, 8), 0.1, 0)
    x2 = b.input("x2", np.int8, (1, 1, 1, 8), 0.1, 0)
    y = b.tensor("y", np.int8, (1, 1, 1, 16), 0.1, 0)
    b.op("CONCATENATION", [x, x2], [y], axis=3)
    b.output(y)
    return NativeEngine.from_bytes(write_tflite(b.build()), "concat.tflite")


def test_kernels_refuse_a_descriptor_that_outgrows_its_tensor_when_loading():
    """The C extent checks stand behind the shape checks: a plan whose concatenation writes
    past its output (as the short CONCATENATION once did) is refused before anything runs."""
    engine = _concatenation_engine()
    engine.plan.steps[0].params.axis_sizes = (8, 100)  # as if the shape check had let it through
    with pytest.raises(PlanError, match=r"operator #0 \(CONCATENATION\): the native kernel rejects"):
        Executor(engine.plan).check()


def test_every_executor_validates_its_descriptors_when_it_writes_them():
    """Runs only execute (edged_execute, no checks), so an executor built for another thread
    and one laid out again for a bigger batch are validated before they can run."""
    engine = _concatenation_engine()
    executor = engine._executor()
    engine.plan.steps[0].params.axis_sizes = (8, 100)
    with pytest.raises(PlanError, match=r"operator #0 \(CONCATENATION\): the native kernel rejects"):
        Executor(engine.plan)
    with pytest.raises(PlanError, match=r"operator #0 \(CONCATENATION\): the native kernel rejects"):
        executor.run([np.zeros((3, 1, 1, 8), np.int8)] * 2)  # outgrows capacity 1: new descriptors


def test_what_descriptors_point_to_is_read_only_once_planned():
    """Descriptors are validated once, so the packed weights, per-channel arrays and tables
    they point into must not change afterwards."""
    engine = NativeEngine.from_file(ROOT / "tests" / "fixtures" / "dynamic_batch" / "mobilenet_v1.tflite")
    shared = engine.plan.shared.values()
    arrays = [v for step in shared for v in step.values() if isinstance(v, np.ndarray)]
    assert arrays
    assert not any(a.flags.writeable for a in arrays)
    with pytest.raises(ValueError, match="read-only"):
        arrays[0][...] = 0


def test_every_op_module_infers_its_output():
    """The load-time shape check is per op: an op module without infer_output would load unchecked."""
    from edged.ops import OPS

    missing = sorted(code for code, m in OPS.items() if not callable(getattr(m, "infer_output", None)))
    assert missing == []


REGRESSIONS = sorted((ROOT / "tests" / "fuzz" / "corpus" / "regressions").glob("*.tflite"))
_LOAD_IN_CHILD = """
import sys
import numpy as np
from edged.errors import EdgedError
from edged.runtime.native import NativeEngine
path = sys.argv[1]
try:
    engine = NativeEngine.from_bytes(open(path, "rb").read(), path)
    for batch in (1, 3):
        engine.infer([np.zeros((batch, *s.shape), s.dtype) for s in engine.inputs])
    print("ok")
except EdgedError as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_mutants_that_once_crashed_or_raised_fail_with_an_edged_error(path):
    """Structural mutants of the seed models on which loading once raised ZeroDivisionError,
    OverflowError, AttributeError, a kernel RuntimeError, or killed the process (SIGSEGV,
    SIGABRT: the *_corrupts_heap files). Loaded in a child so a crash fails this test, not pytest."""
    done = subprocess.run([sys.executable, "-c", _LOAD_IN_CHILD, str(path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-1500:]}"
    # unsupported_*: a valid file the native engine declines (LiteRT can run it).
    expected = "UnsupportedModelError" if path.name.startswith("unsupported_") else "ModelFormatError"
    assert done.stdout.startswith(expected) and path.name in done.stdout, done.stdout
