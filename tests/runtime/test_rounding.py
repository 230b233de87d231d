"""Requantization rounding per target (docs/int8-semantics.md, edged.model.rounding).

LiteRT rounds the fixed-point scaling of FULLY_CONNECTED / CONV_2D twice on
x86-64 and once on aarch64. edged's numpy spec and C kernels implement both;
``auto`` picks this machine's. Here: the single-rounding requantizer against
exact rational arithmetic, the numpy spec and the C kernels agreeing in both
modes, and the native engine equal to this machine's LiteRT on the
converter-made fixtures (on aarch64 CI that is the single-rounding check).
"""

from __future__ import annotations

from fractions import Fraction
from math import floor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.cli import main as cli_main
from edged.config import ConfigError, parse_config
from edged.errors import EdgedError
from edged.model import rounding
from edged.model.quant import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier_half_up,
    multiply_by_quantized_multiplier_single,
)
from edged.model.rounding import resolve_rounding, rounds_once, set_default_rounding
from edged.model.tflite import read_tflite
from edged.runtime.kernels import VARIANT_NAMES, available_variants
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine
from tests.singleop import OP_STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = [*sorted((ROOT / "tests/fixtures/converter").glob("*.tflite")),
            *sorted((ROOT / "tests/fixtures/dynamic_batch").glob("*.tflite"))]
MATMUL_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")


@pytest.fixture(autouse=True)
def _no_process_default():
    yield
    set_default_rounding("auto")


def _inputs(engine, batch: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for spec in engine.inputs:
        shape = (batch, *spec.shape)
        if spec.dtype == np.float32:
            out.append(rng.uniform(-1, 1, shape).astype(np.float32))
        else:
            out.append(rng.integers(-128, 128, shape).astype(np.int8))
    return out


def _exact_single(x: int, multiplier: int, shift: int) -> int:
    """x * multiplier * 2^(shift - 31), the real number, rounded to nearest with ties up."""
    value = Fraction(x * multiplier, 2 ** (31 - shift))
    return min(max(floor(value + Fraction(1, 2)), INT32_MIN), INT32_MAX)


@given(
    st.lists(st.integers(INT32_MIN, INT32_MAX), min_size=1, max_size=16),
    st.integers(0, INT32_MAX),
    st.integers(-31, 30),
)
def test_single_rounding_requantizer_is_the_exact_product_rounded_half_up(xs, multiplier, shift):
    got = multiply_by_quantized_multiplier_single(np.array(xs, np.int64), multiplier, shift)
    assert [int(v) for v in got] == [_exact_single(x, multiplier, shift) for x in xs]


def test_single_rounding_ties_go_up_where_double_rounding_differs():
    # 3 * 2^30 / 2^31 = 1.5 -> 2 (ties up, both signs): -1.5 -> -1.
    assert int(multiply_by_quantized_multiplier_single(3, 1 << 30, 0)) == 2
    assert int(multiply_by_quantized_multiplier_single(-3, 1 << 30, 0)) == -1
    # 5 * 2^30 / 2^32 = 1.25: once -> 1; twice (2.5 -> 3, then 1.5 -> 2) -> 2.
    assert int(multiply_by_quantized_multiplier_single(5, 1 << 30, -1)) == 1
    assert int(multiply_by_quantized_multiplier_half_up(5, 1 << 30, -1)) == 2


def test_rounds_once_spares_the_products_litert_sends_to_its_gemv():
    assert not rounds_once("double", 5, 16, 64)
    assert rounds_once("single", 2, 16, 64)
    assert not rounds_once("single", 1, 4, 8)  # one row: NEON matrix-times-vector, rounds twice
    assert rounds_once("single", 1, 3, 64)  # too few output channels for it
    assert rounds_once("single", 1, 16, 7)  # too shallow for it


def test_auto_follows_the_machine_and_the_configured_default():
    assert resolve_rounding("auto", machine="aarch64") == "single"
    assert resolve_rounding("auto", machine="arm64") == "single"
    assert resolve_rounding("auto", machine="x86_64") == "double"
    assert resolve_rounding("double", machine="aarch64") == "double"
    set_default_rounding("single")
    assert resolve_rounding("auto") == "single"
    set_default_rounding("auto")
    assert resolve_rounding("auto") == resolve_rounding("auto", machine=rounding.platform.machine())
    with pytest.raises(ValueError, match="rounding must be one of"):
        resolve_rounding("nearest")


def test_an_unknown_mode_is_a_clear_error():
    graph = read_tflite(FIXTURES[0])
    with pytest.raises(EdgedError, match="rounding must be one of"):
        NativeEngine(graph, "m", rounding="nearest")
    with pytest.raises(ConfigError, match=r"model\.rounding"):
        parse_config({"model": {"rounding": "nearest"}})
    assert parse_config({"model": {"rounding": "single"}}).model.rounding == "single"


@pytest.mark.parametrize("variant", available_variants(), ids=lambda v: VARIANT_NAMES[v])
@pytest.mark.parametrize("mode", ["double", "single"])
@pytest.mark.parametrize("op", MATMUL_OPS)
def test_native_equals_the_spec_in_both_modes(op, mode, variant):
    @given(OP_STRATEGIES[op])
    def check(case):
        graph, inputs = case
        want = ReferenceEngine(graph, rounding=mode).run(inputs)[0]
        got = NativeEngine(graph, variant=variant, rounding=mode).infer(inputs)[0]
        np.testing.assert_array_equal(got, want)

    check()


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixtures_native_equals_the_spec_in_both_modes(path):
    for mode in ("double", "single"):
        reference = ReferenceEngine(read_tflite(path), rounding=mode)
        for variant in available_variants():
            native = NativeEngine.from_file(path, variant=variant, rounding=mode)
            batches = (1,) if native.plan.per_sample else (1, 5)
            for batch in batches:
                inputs = _inputs(native, batch, seed=batch)
                np.testing.assert_array_equal(native.infer(inputs)[0], reference.run(inputs)[0])


def test_the_modes_differ_on_a_fixture():
    """Each mode reaches the kernels: some tie in a real model rounds differently."""
    path = ROOT / "tests/fixtures/dynamic_batch/mobilenet_v1.tflite"
    engines = {m: NativeEngine.from_file(path, rounding=m) for m in ("double", "single")}
    inputs = _inputs(engines["double"], 5, seed=5)
    outputs = {m: e.infer(inputs)[0] for m, e in engines.items()}
    layer = {m: ReferenceEngine(read_tflite(path), rounding=m).prepared.steps[0].params.single_rounding
             for m in outputs}
    assert layer == {"double": False, "single": True}
    assert not np.array_equal(outputs["double"], outputs["single"])


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixtures_bit_exact_with_this_machines_litert(path):
    """rounding auto: on x86-64 double, on aarch64 single, each equal to that machine's LiteRT."""
    native = NativeEngine.from_file(path)
    litert = LiteRTEngine.from_file(path)
    batches = (1,) if native.plan.per_sample else (1, 5)
    for batch in batches:
        for seed in range(3):
            inputs = _inputs(native, batch, seed=10 * batch + seed)
            for got, want in zip(native.infer(inputs), litert.infer(inputs), strict=True):
                np.testing.assert_array_equal(got, want)


def test_cli_rounding_flag_sets_the_process_default(tmp_path, capsys):
    path = ROOT / "tests/fixtures/converter/mlp64_int8io.tflite"
    x = _inputs(NativeEngine.from_file(path), 2, seed=0)[0]
    np.save(tmp_path / "x.npy", x)
    assert cli_main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--rounding", "single",
                     "--output", str(tmp_path / "y.npy")]) == 0
    assert resolve_rounding("auto") == "single"
    want = ReferenceEngine(read_tflite(path), rounding="single").run([x])[0]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)
