"""The float shadow is the int8 model: same predictions, exact export, fixed masks, straight-through."""

from __future__ import annotations

import numpy as np
import pytest

from edged.adapt.requantize import requantize_layer
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite
from edged.runtime.native import NativeEngine
from edged.train.fake_quant import fake_quant_activation, fake_quant_weights
from edged.train.graph import TrainGraph
from edged.train.optim import Adam, Sgd


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_fake_quantized_forward_predicts_like_the_int8_engine(name):
    graph = read_tflite(default_model_path(name))
    images, _ = load_digits_test()
    x = digits_for(graph, images)
    logits = TrainGraph(graph).predict(x)
    int8 = NativeEngine(graph, layout="dense").infer([x])[0]
    assert np.mean(np.argmax(logits, 1) == np.argmax(int8, 1)) >= 0.99


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_export_of_untrained_parameters_reproduces_the_model(name):
    graph = read_tflite(default_model_path(name))
    images, _ = load_digits_test()
    x = digits_for(graph, images[:64])
    exported = TrainGraph(graph).export()
    before = NativeEngine(graph, layout="dense").infer([x])[0]
    after = NativeEngine(exported, layout="dense").infer([x])[0]
    assert np.array_equal(before, after)


@pytest.mark.parametrize("optimizer", [Adam(lr=1e-2), Sgd(lr=0.1)])
def test_pruned_weights_stay_exactly_zero(optimizer):
    graph = read_tflite(default_model_path("digits_mlp"))
    rng = np.random.default_rng(0)
    w = graph.tensors[graph.operators[1].inputs[1]]
    requantize_layer(graph, 1, rng.random(w.shape) > 0.9)
    zeros = w.data == 0
    tg = TrainGraph(graph)
    images, labels = load_digits_test()
    x = digits_for(graph, images[:32])
    for _ in range(3):
        logits = tg.forward(x, train=True)
        grads = tg.backward(logits - np.eye(10)[labels[:32]])
        assert np.all(grads["1:w"][zeros] == 0)
        optimizer.step(tg.params, grads, tg.masks)
    assert np.all(tg.params["1:w"][zeros] == 0)
    assert np.any(tg.params["1:w"][~zeros] != TrainGraph(graph).params["1:w"][~zeros])
    exported = tg.export()
    assert np.all(exported.tensors[exported.operators[1].inputs[1]].data[zeros] == 0)


def test_fake_quant_rounds_onto_the_grid_and_clips_the_gradient_outside_it():
    x = np.array([-3.0, -0.26, 0.0, 0.24, 0.51, 3.0])
    y, inside = fake_quant_activation(x, 0.01, -28)  # range [-1.0, 1.55]
    assert np.allclose(y, [-1.0, -0.26, 0.0, 0.24, 0.51, 1.55])
    assert inside.tolist() == [False, True, True, True, True, False]
    w = np.array([[0.5, -0.25, 0.001], [0.0, 0.0, 0.0]])
    q = fake_quant_weights(w)
    assert q[0, 0] == pytest.approx(0.5) and q[0, 2] == 0.0 and np.all(q[1] == 0)
