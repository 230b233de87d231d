"""Whole models: the native engine equals LiteRT on every bundled and converter-made model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edged.data import default_model_path, digits_input, load_digits_test, load_digits_train
from edged.model.tflite import read_tflite
from edged.runtime.engine import load_engine
from edged.runtime.kernels import VARIANT_NAMES, available_variants
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "converter").glob("*.tflite"))
BUNDLED = ["digits_mlp", "digits_cnn"]


def _digits(engine):
    images, labels = load_digits_test()
    spec = engine.inputs[0]
    return digits_input(images, spec.dtype, spec.scale, spec.zero_point, spec.shape), labels


@pytest.mark.parametrize("variant", available_variants(), ids=lambda v: VARIANT_NAMES[v])
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_whole_test_split_bit_exact(name, variant):
    path = default_model_path(name)
    native = NativeEngine.from_file(path, variant=variant)
    litert = load_engine(path, "litert")
    x, labels = _digits(native)
    got = native.infer([x])[0]
    expected = litert.infer([x])[0]
    assert np.array_equal(got, expected)
    # One sample at a time too (a different flat size for the SIMD/tail splits).
    for i in range(0, len(x), 37):
        assert np.array_equal(native.infer([x[i : i + 1]])[0], litert.infer([x[i : i + 1]])[0])
    assert np.mean(np.argmax(got, axis=1) == labels) > 0.95


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_converter_models_bit_exact(path):
    io = np.load(path.with_suffix(".io.npz"))
    # The stored outputs were computed one sample at a time by LiteRT's builtin kernels on
    # x86-64, whose rounding is "double" (on any machine edged can compute it).
    native = NativeEngine.from_file(path, rounding="double")
    got = np.concatenate([native.infer([io["x"][i : i + 1]])[0] for i in range(len(io["x"]))])
    assert np.array_equal(got, io["y"])
    reference = ReferenceEngine(read_tflite(path), rounding="double")
    ref = np.concatenate([reference.run([io["x"][i : i + 1]])[0] for i in range(len(io["x"]))])
    assert np.array_equal(ref, io["y"])


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_converter_models_batched_match_litert(path):
    native = load_engine(path, "native")
    litert = load_engine(path, "litert")
    spec = native.inputs[0]
    rng = np.random.default_rng(1)
    if spec.dtype == np.float32:
        x = rng.uniform(-1, 1, (9, *spec.shape)).astype(np.float32)
    else:
        x = rng.integers(-128, 128, (9, *spec.shape)).astype(np.int8)
    assert np.array_equal(native.infer([x])[0], litert.infer([x])[0])


def test_plan_runs_fully_native_on_bundled_models():
    for name in BUNDLED:
        plan = NativeEngine.from_file(default_model_path(name)).plan
        assert all(plan.native), f"{name}: some ops fall back to numpy"


def _with_flatten_to(shape: list[int]) -> bytes:
    """The bundled CNN with its flattening RESHAPE's new shape replaced."""
    from edged.model.tflite import read_tflite, write_tflite

    graph = read_tflite(default_model_path("digits_cnn").read_bytes())
    (op,) = [op for op in graph.operators if op.opcode == "RESHAPE"]
    graph.tensors[op.inputs[1]].data = np.array(shape, np.int32)
    op.options["new_shape"] = shape
    return write_tflite(graph)


def test_models_with_a_pinned_batch_run_per_sample_and_agree_with_the_batched_form():
    pinned = NativeEngine.from_bytes(_with_flatten_to([1, 512]), "pinned")
    batched = NativeEngine.from_file(default_model_path("digits_cnn"))
    assert pinned.plan.per_sample and pinned.per_sample
    assert not batched.plan.per_sample  # the bundled CNN flattens to [-1, 512], as the converter does
    assert not NativeEngine.from_file(default_model_path("digits_mlp")).plan.per_sample
    x, _ = _digits(batched)
    np.testing.assert_array_equal(pinned.infer([x[:9]])[0], batched.infer([x[:9]])[0])
    litert = load_engine(default_model_path("digits_cnn"), "litert")
    np.testing.assert_array_equal(litert.infer([x[:9]])[0], batched.infer([x[:9]])[0])
    assert not litert.per_sample


def test_batch_sizes_in_any_order_keep_matching_litert():
    """A plan that is one C call runs by a shortcut kept per batch size; growing the arena for a
    larger batch must retire the shortcuts into the old one."""
    native = NativeEngine.from_file(default_model_path("digits_cnn"))
    litert = load_engine(default_model_path("digits_cnn"), "litert")
    x, _ = _digits(native)
    for batch in (1, 9, 1, 3, 40, 9, 1):
        rows = x[batch : 2 * batch]
        np.testing.assert_array_equal(native.infer([rows])[0], litert.infer([rows])[0])
        np.testing.assert_array_equal(native.infer(rows)[0], litert.infer([rows])[0])


def test_threads_get_their_own_arena():
    import threading

    engine = NativeEngine.from_file(default_model_path("digits_cnn"))
    x, _ = _digits(engine)
    expected = engine.infer([x])[0]
    errors = []

    def work(offset: int) -> None:
        for i in range(offset, len(x), 7):
            if not np.array_equal(engine.infer([x[i : i + 3]])[0], expected[i : i + 3]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors


def test_bundled_training_split_is_the_one_the_models_learned():
    """The bundled training split: 1437 images, every class, disjoint from the test split, and the
    bundled models fit it at least as well as the held-out images."""
    train, y = load_digits_train()
    test, _ = load_digits_test()
    assert train.shape == (1437, 8, 8) and train.dtype == np.uint8 and train.max() <= 16
    assert np.bincount(y, minlength=10).min() > 100
    assert not set(map(bytes, train)) & set(map(bytes, test))
    for name in BUNDLED:
        engine = NativeEngine.from_file(default_model_path(name))
        spec = engine.inputs[0]
        x = digits_input(train, spec.dtype, spec.scale, spec.zero_point, spec.shape)
        train_acc = np.mean(np.argmax(engine.infer([x])[0], 1) == y)
        test_x, test_y = _digits(engine)
        assert train_acc >= np.mean(np.argmax(engine.infer([test_x])[0], 1) == test_y) - 0.005
