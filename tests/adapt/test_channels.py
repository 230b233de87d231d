"""Whole-channel removal through pooling, flattening, depthwise convolutions and residual ADDs."""

from __future__ import annotations

import numpy as np
import pytest

from edged.adapt.channels import channel_group, channel_scores, removable_groups, remove_group_channels
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.builder import GraphBuilder
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine


def residual_model(seed: int = 0):
    """conv a -> (conv b, conv c) -> ADD -> depthwise -> max pool -> flatten -> FC, int8."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()

    def conv(name, x, cin, cout, k, act="RELU", depthwise=False):
        shape = (1, k, k, cout) if depthwise else (cout, k, k, cin)
        w_scale = rng.uniform(0.005, 0.02, cout)
        f = b.const(f"{name}/w", rng.integers(-127, 128, shape).astype(np.int8), w_scale, 0,
                    axis=3 if depthwise else 0)
        bias = b.const(f"{name}/b", rng.integers(-3000, 3000, cout).astype(np.int32),
                       np.float32(0.05) * w_scale, 0)
        y = b.tensor(f"{name}/out", np.int8, (1, 6, 6, cout), 0.05, -20)
        opts = dict(padding="SAME", stride_h=1, stride_w=1, dilation_h_factor=1, dilation_w_factor=1,
                    fused_activation_function=act)
        if depthwise:
            b.op("DEPTHWISE_CONV_2D", [x, f, bias], [y], version=3, depth_multiplier=1, **opts)
        else:
            b.op("CONV_2D", [x, f, bias], [y], version=3, **opts)
        return y

    x = b.input("x", np.int8, (1, 6, 6, 3), 0.05, -20)
    a = conv("a", x, 3, 8, 3)
    left, right = conv("b", a, 8, 12, 3, "NONE"), conv("c", a, 8, 12, 1, "NONE")
    added = b.tensor("add/out", np.int8, (1, 6, 6, 12), 0.05, -20)
    b.op("ADD", [left, right], [added], version=2, fused_activation_function="RELU")
    dw = conv("dw", added, 12, 12, 3, depthwise=True)
    pooled = b.tensor("pool/out", np.int8, (1, 3, 3, 12), 0.05, -20)
    b.op("MAX_POOL_2D", [dw], [pooled], version=2, padding="VALID", stride_h=2, stride_w=2,
         filter_height=2, filter_width=2, fused_activation_function="NONE")
    flat = b.tensor("flat", np.int8, (1, 108), 0.05, -20)
    b.op("RESHAPE", [pooled, b.const("shape", np.array([-1, 108], np.int32))], [flat], new_shape=[-1, 108])
    w_scale = rng.uniform(0.002, 0.01, 10)
    fc_w = b.const("fc/w", rng.integers(-127, 128, (10, 108)).astype(np.int8), w_scale, 0)
    y = b.tensor("y", np.int8, (1, 10), 0.2, 0)
    b.op("FULLY_CONNECTED", [flat, fc_w, -1], [y], version=5, fused_activation_function="NONE")
    b.output(y)
    return b.build(), rng.integers(-128, 128, (16, 6, 6, 3)).astype(np.int8)


def _same_everywhere(graph, x):
    native = NativeEngine(graph).infer([x])[0]
    assert np.array_equal(native, LiteRTEngine(write_tflite(graph)).infer([x])[0])
    return native


def test_layers_tied_by_an_add_share_one_mask_and_the_result_runs_alike_everywhere():
    graph, x = residual_model()
    groups = removable_groups(graph)
    tied = channel_group(graph, 1)  # conv b
    assert sorted(tied.producers) == [1, 2] and tied.depthwise == [4] and tied.channels == 12
    assert tied.reshapes == [6] and tied.readers == [(7, 9)]
    assert channel_group(graph, 2).producers == tied.producers  # the same group from either side
    assert sorted(groups) == [0, 1]
    keep = np.ones(12, bool)
    keep[[0, 5, 7, 11]] = False
    small = remove_group_channels(graph, tied, keep)
    for i in (1, 2):
        assert small.tensors[small.operators[i].inputs[1]].shape[0] == 8
    assert small.tensors[small.operators[7].inputs[1]].shape == (10, 72)
    _same_everywhere(small, x)
    # Channels that nothing downstream reads can go with no change at all.
    fc = graph.tensors[graph.operators[7].inputs[1]]
    fc.data = fc.data.reshape(10, 9, 12).copy()
    fc.data[:, :, ~keep] = 0
    fc.data = fc.data.reshape(10, 108)
    assert np.array_equal(_same_everywhere(remove_group_channels(graph, tied, keep), x),
                          _same_everywhere(graph, x))


def test_conv_channels_go_through_pooling_and_flattening_on_the_bundled_cnn():
    graph = read_tflite(default_model_path("digits_cnn"))
    x = digits_for(graph, load_digits_test()[0][:100])
    groups = removable_groups(graph)
    assert sorted(groups) == [0, 1]  # conv1 -> conv2, conv2 -> pool -> flatten -> dense
    group = groups[1]
    scores = channel_scores(graph, group)
    keep = scores >= np.median(scores)
    small = remove_group_channels(graph, group, keep)
    assert small.tensors[small.operators[4].inputs[1]].shape == (10, 16 * int(keep.sum()))
    assert len(write_tflite(small)) < 0.8 * len(write_tflite(graph))
    _same_everywhere(small, x)


def test_uses_that_cannot_follow_are_named():
    graph = read_tflite(default_model_path("digits_cnn"))
    with pytest.raises(ValueError, match=r"op #5 \(SOFTMAX\) reads the channels"):
        channel_group(graph, 4)  # the classifier's units are the classes
    with pytest.raises(ValueError, match="only FULLY_CONNECTED and CONV_2D"):
        channel_group(graph, 2)
    with pytest.raises(ValueError, match="at least one True"):
        remove_group_channels(graph, channel_group(graph, 0), np.zeros(16, bool))
