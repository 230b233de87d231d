"""Converter-made models, one per op family: edged's engines == LiteRT's builtin kernels, bit for bit.

The fixtures (tests/fixtures/ops, made by make_op_models.py with the official
TFLite converter from standard Keras layers) put each op between
convolutions or dense layers with the scales, zero points and options the
converter picks. Each op must run in C, not in the numpy fallback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edged.errors import UnsupportedOpError
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.kernels import VARIANT_NAMES, available_variants
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ops"

# fixture -> the ops it exists to exercise (each occurs at least once)
MODELS = {
    "tanh_mlp": {"TANH"},
    "tanh_conv": {"TANH"},
    "leaky_relu": {"LEAKY_RELU"},
    "prelu": {"PRELU"},
    "resize_nearest": {"RESIZE_NEAREST_NEIGHBOR"},
    "resize_bilinear": {"RESIZE_BILINEAR"},
    "transpose": {"TRANSPOSE"},
    "slices": {"STRIDED_SLICE"},
    "squared_difference": {"SQUARED_DIFFERENCE"},
    "split": {"SPLIT", "SPLIT_V"},
    "batch_matmul": {"BATCH_MATMUL"},
}
RUNS_AS = {"SPLIT": "SLICE", "SPLIT_V": "SLICE"}  # rewritten at load: one SLICE per output


def _inputs(graph, batch: int, seed: int) -> list[np.ndarray]:
    shape = graph.input_tensors[0].shape[1:]
    x = np.random.default_rng(seed).integers(-128, 128, (batch, *shape)).astype(np.int8)
    x[0] = 127  # the extremes reach every op's clamps
    if batch > 1:
        x[1] = -128
    return [x]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_converter_model_runs_natively_and_bit_exact(name):
    path = FIXTURES / f"{name}.tflite"
    content = path.read_bytes()
    graph = read_tflite(content, name=str(path))
    assert MODELS[name] <= {op.opcode for op in graph.operators}
    litert = LiteRTEngine(content, str(path))
    reference = ReferenceEngine(read_tflite(content, name=str(path)), str(path))
    for batch, seed in ((1, 0), (5, 1)):
        inputs = _inputs(graph, batch, seed)
        expected = litert.infer(inputs)[0]
        assert batch == 1 or np.unique(expected[2:]).size > 8  # a comparison that can fail
        np.testing.assert_array_equal(reference.run(inputs)[0], expected, err_msg=f"{name} reference")
        for variant in available_variants():
            native = NativeEngine(read_tflite(content, name=str(path)), str(path), variant=variant)
            on_c = {s.opcode for s, n in zip(native.plan.steps, native.plan.native, strict=True) if n}
            assert {RUNS_AS.get(op, op) for op in MODELS[name]} <= on_c
            np.testing.assert_array_equal(
                native.infer(inputs)[0], expected, err_msg=f"{name} native/{VARIANT_NAMES[variant]}"
            )


def test_an_unsupported_op_fails_at_load_naming_op_index_and_file(tmp_path):
    # The converter's TANH model with its TANH swapped for ELU, which LiteRT runs and edged does not.
    graph = read_tflite((FIXTURES / "tanh_conv.tflite").read_bytes())
    index = next(i for i, op in enumerate(graph.operators) if op.opcode == "TANH")
    graph.operators[index].opcode = "ELU"
    graph.operators[index].version = 1
    path = tmp_path / "elu_conv.tflite"
    write_tflite(graph, path)
    with pytest.raises(UnsupportedOpError, match=rf"{path}: operator #{index} is ELU.*--engine litert"):
        NativeEngine.from_file(path)
    assert LiteRTEngine.from_file(path).infer(_inputs(graph, 1, 0))[0].shape[0] == 1
