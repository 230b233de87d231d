"""Bad models and bad inputs get a precise error, never a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.cli import main
from edged.errors import InputError, UnsupportedModelError, UnsupportedOpError
from edged.model.builder import GraphBuilder
from edged.model.tflite import write_tflite
from edged.runtime.engine import load_engine

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "tests" / "fixtures" / "converter" / "mlp64_int8io.tflite"
FLOAT_IO = ROOT / "tests" / "fixtures" / "converter" / "mlp64_floatio.tflite"
ENGINES = ["native", "litert"]


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_shape(engine):
    e = load_engine(MLP, engine)
    with pytest.raises(InputError, match=r"must have shape \[batch, 64\], got \[2, 63\]"):
        e.infer([np.zeros((2, 63), np.int8)])
    with pytest.raises(InputError, match="shape"):
        e.infer([np.zeros((64,), np.int8)])


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_dtype(engine):
    e = load_engine(MLP, engine)
    with pytest.raises(InputError, match="must be int8, got float32"):
        e.infer([np.zeros((1, 64), np.float32)])


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_input_count_and_empty_batch(engine):
    e = load_engine(MLP, engine)
    with pytest.raises(InputError, match="takes 1 input"):
        e.infer([np.zeros((1, 64), np.int8)] * 2)
    with pytest.raises(InputError, match="empty batch"):
        e.infer([np.zeros((0, 64), np.int8)])


@pytest.mark.parametrize("engine", ENGINES)
def test_nan_in_float_input(engine):
    e = load_engine(FLOAT_IO, engine)
    x = np.zeros((3, 64), np.float32)
    x[1, 7] = np.nan
    with pytest.raises(InputError, match="NaN"):
        e.infer([x])


def test_non_contiguous_input_is_accepted_and_exact():
    e = load_engine(MLP, "native")
    x = np.random.default_rng(0).integers(-128, 128, (4, 128)).astype(np.int8)[:, ::2]
    assert not x.flags.c_contiguous
    assert np.array_equal(e.infer([x])[0], load_engine(MLP, "litert").infer([x])[0])


def _elu_model(tmp_path) -> Path:
    """An op LiteRT runs on int8 and the native engine does not."""
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 8), 0.1, 0)
    y = b.tensor("y", np.int8, (1, 8), 0.1, 0)
    b.op("ELU", [x], [y])
    b.output(y)
    path = tmp_path / "elu.tflite"
    write_tflite(b.build(), path)
    return path


def test_unsupported_op_names_op_index_file_and_fallback(tmp_path):
    path = _elu_model(tmp_path)
    with pytest.raises(UnsupportedOpError) as err:
        load_engine(path, "native")
    message = str(err.value)
    assert "operator #0 is ELU" in message and str(path) in message and "--engine litert" in message
    # LiteRT still runs it.
    assert load_engine(path, "litert").infer([np.zeros((1, 8), np.int8)])[0].shape == (1, 8)


def test_float_model_on_native_engine(tmp_path):
    b = GraphBuilder()
    x = b.input("x", np.float32, (1, 4))
    w = b.const("w", np.ones((2, 4), np.float32))
    y = b.tensor("y", np.float32, (1, 2))
    b.op("FULLY_CONNECTED", [x, w, -1], [y])
    b.output(y)
    path = tmp_path / "float.tflite"
    write_tflite(b.build(), path)
    with pytest.raises(UnsupportedModelError, match="not int8-quantized"):
        load_engine(path, "native")


def test_cli_reports_errors_and_exits_nonzero(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"definitely not a flatbuffer")
    assert main(["inspect", str(bad)]) == 2
    assert "not a .tflite" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((1, 3), np.int8))
    assert main(["run", str(MLP), "--input", str(tmp_path / "x.npy")]) == 2
    assert "must have shape" in capsys.readouterr().err
    assert main(["run", str(_elu_model(tmp_path)), "--input", str(tmp_path / "x.npy")]) == 2
    assert "ELU" in capsys.readouterr().err


@given(
    dtype=st.sampled_from([np.int8, np.uint8, np.int16, np.float32, np.int64]),
    shape=st.one_of(
        st.tuples(st.integers(0, 3), st.sampled_from([64, 63, 65])).map(list),
        st.lists(st.integers(0, 65), min_size=0, max_size=3),
    ),
    strided=st.booleans(),
    subclass=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_the_fast_input_check_decides_as_every_check(dtype, shape, strided, subclass):
    """One input array takes a shortcut through the checks; it accepts and refuses exactly what the
    full checks do, with the same error."""
    e = _ENGINE_CACHE.setdefault("mlp", load_engine(MLP, "native"))
    x = np.zeros([*shape[:-1], 2 * shape[-1]] if (strided and shape) else shape, dtype)
    if strided and shape:
        x = x[..., ::2]
    if subclass:
        x = x.view(np.ma.MaskedArray) if x.ndim else x

    def outcome(check):
        try:
            return [a.tobytes() + str((a.dtype, a.shape, a.flags.c_contiguous)).encode() for a in check()]
        except InputError as exc:
            return str(exc)

    assert outcome(lambda: e.validate(x)) == outcome(lambda: e.validate_all([x]))


_ENGINE_CACHE: dict = {}


@given(
    dtype=st.sampled_from([np.int8, np.uint8, np.int16, np.float32]),
    batch=st.integers(0, 3),
    width=st.sampled_from([64, 63]),
    strided=st.booleans(),
    readonly=st.booleans(),
    subclass=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=150, deadline=None)
def test_the_shortest_infer_path_answers_as_the_general_one(dtype, batch, width, strided, readonly, subclass,
                                                            seed):
    """infer's one-call path (taken once a batch size has run) returns what LiteRT returns and
    refuses what the full checks refuse, with the same error."""
    e = _ENGINE_CACHE.setdefault("mlp", load_engine(MLP, "native"))
    litert = _ENGINE_CACHE.setdefault("mlp-litert", load_engine(MLP, "litert"))
    for b in range(1, 4):  # every batch size has run once: the one-call entries exist
        e.infer([np.zeros((b, 64), np.int8)])
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (batch, 2 * width if strided else width)).astype(dtype)
    if strided:
        x = x[:, ::2]
    if readonly:
        x.flags.writeable = False
    if subclass:
        x = x.view(np.ma.MaskedArray)

    def outcome(run):
        try:
            return [a.tobytes() + str((a.dtype, a.shape)).encode() for a in run()]
        except InputError as exc:
            return str(exc)

    assert outcome(lambda: e.infer([x])) == outcome(lambda: litert.infer([x]))
