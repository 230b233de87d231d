"""Reading and writing .tflite: round trips keep every bit; bad files fail clearly."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.errors import ModelFormatError
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.litert import LiteRTEngine
from tests.fuzz.litert_bitflips import flip, run_in_child
from tests.singleop import OP_STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "converter").glob("*.tflite"))
BUNDLED = sorted((ROOT / "models").glob("*.tflite"))


def _graphs_equal(a, b) -> None:
    assert len(a.tensors) == len(b.tensors)
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert (ta.name, ta.dtype, ta.shape) == (tb.name, tb.dtype, tb.shape)
        assert (ta.data is None) == (tb.data is None)
        if ta.data is not None:
            assert np.array_equal(ta.data, tb.data)
        assert (ta.quant is None) == (tb.quant is None)
        if ta.quant is not None:
            assert np.array_equal(ta.quant.scale, tb.quant.scale)
            assert np.array_equal(ta.quant.zero_point, tb.quant.zero_point)
            assert ta.quant.axis == tb.quant.axis
    assert [(o.opcode, o.inputs, o.outputs) for o in a.operators] == [
        (o.opcode, o.inputs, o.outputs) for o in b.operators
    ]
    for oa, ob in zip(a.operators, b.operators, strict=True):
        # A graph built in code may leave options at their schema defaults.
        assert {k: ob.options[k] for k in oa.options} == oa.options
    assert (a.inputs, a.outputs) == (b.inputs, b.outputs)


@pytest.mark.parametrize("path", FIXTURES + BUNDLED, ids=lambda p: p.name)
def test_round_trip_keeps_graph_and_outputs(path):
    graph = read_tflite(path)
    content = write_tflite(graph)
    again = read_tflite(content)
    _graphs_equal(graph, again)
    io = path.with_suffix(".io.npz")
    rng = np.random.default_rng(0)
    if io.exists():
        x = np.load(io)["x"]
    else:
        spec = LiteRTEngine.from_file(path).inputs[0]
        x = rng.integers(-128, 128, (4, *spec.shape)).astype(spec.dtype)
    original = LiteRTEngine.from_file(path).infer([x])
    rewritten = LiteRTEngine(content).infer([x])
    for a, b in zip(original, rewritten, strict=True):
        assert np.array_equal(a, b)


def test_round_trip_keeps_signatures_and_metadata():
    path = next(p for p in FIXTURES if "mlp64_int8io" in p.name)
    graph = read_tflite(path)
    again = read_tflite(write_tflite(graph))
    assert again.signatures == graph.signatures
    assert again.metadata == graph.metadata


@settings(max_examples=20)
@given(st.sampled_from(sorted(OP_STRATEGIES)).flatmap(lambda op: OP_STRATEGIES[op]))
def test_round_trip_generated_models(case):
    graph, _ = case
    _graphs_equal(graph, read_tflite(write_tflite(graph)))


def test_buffers_are_aligned():
    graph = read_tflite(BUNDLED[0] if BUNDLED else FIXTURES[0])
    content = write_tflite(graph)
    biggest = max((t for t in graph.tensors if t.is_constant), key=lambda t: t.nbytes)
    offset = content.find(biggest.data.tobytes())
    assert offset > 0 and offset % 16 == 0


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read model file"):
        read_tflite(tmp_path / "nope.tflite")


@pytest.mark.parametrize(
    "content", [b"", b"TFL3", b"\x89PNG\r\n\x1a\n" + bytes(64), b"hello world, not a model"]
)
def test_not_a_tflite_file(content):
    with pytest.raises(ModelFormatError, match=r"too short|not a \.tflite"):
        read_tflite(content)


def test_every_truncation_fails_cleanly():
    content = (FIXTURES[0]).read_bytes()
    for cut in sorted({8, 12, 16, 64, 100, *range(200, len(content), max(len(content) // 40, 1))}):
        with pytest.raises(ModelFormatError):
            read_tflite(content[:cut])


@settings(max_examples=150)
@given(st.data())
def test_bit_flips_never_escape_as_other_errors(data):
    content = bytearray((FIXTURES[0]).read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(8, len(content) - 1))
        content[pos] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(ModelFormatError):
        read_tflite(bytes(content))


def test_corrupt_tensor_name_is_a_model_format_error_in_litert():
    from edged.errors import ModelFormatError

    content = bytearray(FIXTURES[0].read_bytes())
    content[7064] ^= 1 << 7  # a byte of a tensor name: no longer UTF-8
    with pytest.raises(ModelFormatError, match="corrupt tensor name"):
        LiteRTEngine(bytes(content), "flipped.tflite")


def test_model_whose_operators_are_lost_is_refused_before_litert():
    # This flip empties the operator vector: LiteRT loads the file, runs nothing, and then cannot
    # read the output it never allocated (a bare ValueError from get_tensor).
    content = flip(FIXTURES[0].read_bytes(), [(2852, 2)])
    assert read_tflite(content).operators == []
    with pytest.raises(ModelFormatError, match=r"output tensor #18 .* is never computed"):
        LiteRTEngine(content, "flipped.tflite")


@pytest.mark.parametrize(
    "flips",
    [[(3192, 0)], [(6832, 1), (6094, 6), (3192, 0), (3433, 0)]],
    ids=["one-flip", "four-flips"],
)
def test_operator_reading_a_tensor_nothing_writes_is_refused_before_litert(flips):
    # The flip turns MAX_POOL_2D's output from tensor 14 into 15 (RESHAPE's output): RESHAPE then
    # reads tensor 14, which LiteRT never allocated, and invoke crashed the process (SIGSEGV).
    content = flip(FIXTURES[0].read_bytes(), flips)
    with pytest.raises(ModelFormatError, match=r"operator #5 \(RESHAPE\) reads tensor #14 .* no graph input"):
        LiteRTEngine(content, "flipped.tflite")


@settings(max_examples=100)
@given(st.data())
def test_corrupt_models_fail_cleanly_in_litert_too(data):
    # LiteRT runs in a forked child: a crash in its C++ is this test failing, with the flips named,
    # not the test process gone.
    content = FIXTURES[0].read_bytes()
    flips = [
        (data.draw(st.integers(8, len(content) - 1)), data.draw(st.integers(0, 7)))
        for _ in range(data.draw(st.integers(1, 6)))
    ]
    outcome = run_in_child(flip(content, flips))
    assert outcome in ("ok", "edged_error"), f"flips (position, bit) {flips}: LiteRT ended with {outcome}"
