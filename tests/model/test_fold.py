"""Shape arithmetic folded at load time: converter-made dynamic-batch models run natively.

The fixtures in tests/fixtures/dynamic_batch/ are made by the TFLite converter
from standard Keras models (tests/fixtures/make_dynamic_batch_models.py); the
graphs built here reproduce the converter's pattern and its variants op by op.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edged.errors import UnsupportedModelError
from edged.model.builder import GraphBuilder
from edged.model.fold import ShapeFoldError, fold_shapes
from edged.model.schema import schema
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.runtime.reference import ReferenceEngine

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dynamic_batch"
SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK", "GATHER", "CAST"}


def _file_opcodes(content: bytes) -> list[str]:
    """The op names as the file stores them, before edged reads (and folds) it."""
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [names[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators]


def _inputs(engine, batch: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (batch, *spec.shape)).astype(np.int8) for spec in engine.inputs]


@pytest.mark.parametrize(
    "name",
    ["flatten_cnn", "ds_cnn_kws", "mobilenet_v1", "mobilenet_v3_small", "mobilenet_v2", "resnet8",
     "anomaly_autoencoder"],
)
def test_converter_dynamic_batch_models_run_natively_bit_exact(name):
    content = (FIXTURES / f"{name}.tflite").read_bytes()
    ops = _file_opcodes(content)
    if name not in ("mobilenet_v2", "anomaly_autoencoder"):  # pooled or dense heads: no Flatten
        assert {"SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"} <= set(ops), ops  # the converter's Flatten head

    graph = read_tflite(content, name=name)
    assert not SHAPE_OPS & {op.opcode for op in graph.operators}
    native = NativeEngine(graph, name)
    assert not native.plan.per_sample  # the batch stays dynamic
    litert = LiteRTEngine(content, name)
    for batch in (1, 5):
        inputs = _inputs(native, batch, seed=batch)
        expected = litert.infer(inputs)
        for got in (native.infer(inputs), ReferenceEngine(read_tflite(content)).run(inputs)):
            assert got[0].shape == expected[0].shape == (batch, *native.outputs[0].shape)
            np.testing.assert_array_equal(got[0], expected[0])


def test_folded_model_written_back_runs_in_litert_at_any_batch():
    content = (FIXTURES / "flatten_cnn.tflite").read_bytes()
    rewritten = write_tflite(read_tflite(content))
    assert "SHAPE" not in _file_opcodes(rewritten)
    original, folded = LiteRTEngine(content), LiteRTEngine(rewritten)
    inputs = _inputs(original, 5, seed=7)
    np.testing.assert_array_equal(folded.infer(inputs)[0], original.infer(inputs)[0])


def _flatten_graph(head: str = "pack", dynamic: bool = True):
    """conv-free Flatten head in the converter's form: SHAPE -> ... -> RESHAPE([batch, N])."""
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, 3, 4, 2), 0.05, 3)
    if not dynamic:
        b.graph.tensors[x].shape_signature = None
    shape = b.tensor("shape", np.int32, (4,))
    b.op("SHAPE", [x], [shape], out_type=2)
    zero, one = b.const("begin", np.array([0], np.int32)), b.const("end", np.array([1], np.int32))
    if head == "pack":
        batch = b.tensor("batch", np.int32, ())
        b.op("STRIDED_SLICE", [shape, zero, one, one], [batch], shrink_axis_mask=1)
        new_shape = b.tensor("new_shape", np.int32, (2,))
        b.op("PACK", [batch, b.const("n", np.array(24, np.int32))], [new_shape], values_count=2, axis=0)
    elif head == "gather_concat_cast":
        batch64 = b.tensor("batch64", np.int64, (1,))
        batch = b.tensor("batch", np.int32, (1,))
        b.op("GATHER", [shape, zero], [batch64], axis=0)
        b.op("CAST", [batch64], [batch])
        new_shape = b.tensor("new_shape", np.int32, (2,))
        b.op("CONCATENATION", [batch, b.const("n", np.array([-1], np.int32))], [new_shape], axis=0)
    else:  # the batch doubled: only known at run time
        batch = b.tensor("batch", np.int32, (1,))
        b.op("STRIDED_SLICE", [shape, zero, one, one], [batch])
        twice = b.tensor("twice", np.int32, (1,))
        b.op("MUL", [batch, b.const("two", np.array([2], np.int32))], [twice])
        new_shape = b.tensor("new_shape", np.int32, (2,))
        b.op("CONCATENATION", [twice, b.const("n", np.array([12], np.int32))], [new_shape], axis=0)
    y = b.tensor("y", np.int8, (1, 24), 0.05, 3)
    b.op("RESHAPE", [x, new_shape], [y])
    b.output(y)
    return b.build()


@pytest.mark.parametrize("head", ["pack", "gather_concat_cast"])
def test_shape_heads_fold_to_a_static_reshape_with_a_symbolic_batch(head):
    graph = _flatten_graph(head)
    removed = fold_shapes(graph, "flatten.tflite")
    assert [op.opcode for op in graph.operators] == ["RESHAPE"]
    assert removed == (3 if head == "pack" else 4)
    reshape = graph.operators[0]
    assert graph.tensors[reshape.inputs[1]].data.tolist() == [-1, 24]
    assert graph.tensors[reshape.outputs[0]].shape_signature == (-1, 24)
    x = np.random.default_rng(0).integers(-128, 128, (5, 3, 4, 2)).astype(np.int8)
    (y,) = NativeEngine(graph).infer([x])
    np.testing.assert_array_equal(y, x.reshape(5, 24))


def test_shape_of_a_static_input_still_folds_the_batch_as_minus_one():
    graph = _flatten_graph("pack", dynamic=False)
    fold_shapes(graph)
    assert graph.tensors[graph.operators[0].inputs[1]].data.tolist() == [-1, 24]


def test_unfoldable_shape_arithmetic_names_op_index_and_file():
    graph = _flatten_graph("batch_times_two")
    assert fold_shapes(graph, "double.tflite") == 0  # lenient: left as it was
    assert len(graph.operators) == 5
    with pytest.raises(ShapeFoldError) as err:
        fold_shapes(graph, "double.tflite", strict=True)
    message = str(err.value)
    assert "double.tflite" in message and "operator #4 (RESHAPE)" in message and "batch" in message
    assert isinstance(err.value, UnsupportedModelError)
    # Engines raise the same error; reading the file back keeps the graph intact.
    with pytest.raises(ShapeFoldError, match="operator #4"):
        NativeEngine(read_tflite(write_tflite(graph)), "double.tflite")


def test_shape_of_a_tensor_with_a_dynamic_inner_extent_is_refused():
    graph = _flatten_graph("pack")
    graph.tensors[graph.inputs[0]].shape_signature = (-1, -1, 4, 2)
    with pytest.raises(ShapeFoldError, match=r"operator #0 \(SHAPE\).*dynamic extent"):
        NativeEngine(graph, "dyn.tflite")
