"""Hypothesis strategies that build valid single-op int8 models.

Each strategy draws an op's parameters (shapes, strides, paddings, scales, zero
points, activations) and returns (graph, inputs) ready for any engine.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from edged.model.builder import GraphBuilder
from edged.ops.base import same_padding

scales = st.floats(min_value=0.002, max_value=0.5, allow_nan=False, allow_infinity=False)
zero_points = st.integers(min_value=-128, max_value=127)
activations = st.sampled_from(["NONE", "RELU", "RELU6"])
batches = st.integers(min_value=1, max_value=5)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _int8(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def _weights(rng, shape):
    return rng.integers(-127, 128, size=shape).astype(np.int8)


@st.composite
def fully_connected(draw):
    rng = np.random.default_rng(draw(seeds))
    depth = draw(st.integers(1, 96))
    units = draw(st.integers(1, 80))
    # The input may carry extra axes that FULLY_CONNECTED flattens into rows.
    rows = draw(st.sampled_from([1, 1, 2, 3]))
    per_channel = draw(st.booleans())
    in_s, in_zp = draw(scales), draw(zero_points)
    out_s, out_zp = draw(scales), draw(zero_points)
    w_scale = rng.uniform(0.001, 0.02, units) if per_channel else float(rng.uniform(0.001, 0.02))
    b = GraphBuilder()
    in_shape = (1, depth) if rows == 1 else (1, rows, depth)
    x = b.input("x", np.int8, in_shape, in_s, in_zp)
    w = b.const("w", _weights(rng, (units, depth)), w_scale, 0)
    bias = -1
    if draw(st.booleans()):
        bias_scale = np.float32(in_s) * np.asarray(w_scale, dtype=np.float32)
        bias = b.const("b", rng.integers(-5000, 5000, units).astype(np.int32), bias_scale, 0)
    out_shape = (1, units) if rows == 1 else (1, rows, units)
    y = b.tensor("y", np.int8, out_shape, out_s, out_zp)
    b.op(
        "FULLY_CONNECTED",
        [x, w, bias],
        [y],
        version=5,
        fused_activation_function=draw(activations),
        keep_num_dims=rows > 1,
    )
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *in_shape[1:]))]


@st.composite
def conv_2d(draw, depthwise: bool = False):
    rng = np.random.default_rng(draw(seeds))
    h, w_ = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    cin = draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    oh, _ = same_padding(h, kh, sh, dh, padding)
    ow, _ = same_padding(w_, kw, sw, dw, padding)
    if oh < 1 or ow < 1:
        padding = "SAME"
        oh, _ = same_padding(h, kh, sh, dh, padding)
        ow, _ = same_padding(w_, kw, sw, dw, padding)
    if depthwise:
        dm = draw(st.integers(1, 3))
        cout = cin * dm
        filt = _weights(rng, (1, kh, kw, cout))
        axis = 3
    else:
        dm = 1
        cout = draw(st.integers(1, 24))
        filt = _weights(rng, (cout, kh, kw, cin))
        axis = 0
    in_s, in_zp = draw(scales), draw(zero_points)
    out_s, out_zp = draw(scales), draw(zero_points)
    w_scale = rng.uniform(0.001, 0.02, cout)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, h, w_, cin), in_s, in_zp)
    f = b.const("w", filt, w_scale, 0, axis=axis)
    bias = b.const("b", rng.integers(-5000, 5000, cout).astype(np.int32), np.float32(in_s) * w_scale, 0)
    y = b.tensor("y", np.int8, (1, oh, ow, cout), out_s, out_zp)
    opts = dict(
        padding=padding,
        stride_h=sh,
        stride_w=sw,
        dilation_h_factor=dh,
        dilation_w_factor=dw,
        fused_activation_function=draw(activations),
    )
    if depthwise:
        b.op("DEPTHWISE_CONV_2D", [x, f, bias], [y], version=3, depth_multiplier=dm, **opts)
    else:
        b.op("CONV_2D", [x, f, bias], [y], version=3, **opts)
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), h, w_, cin))]


@st.composite
def pool_2d(draw, average: bool):
    rng = np.random.default_rng(draw(seeds))
    h, w_, c = draw(st.integers(1, 10)), draw(st.integers(1, 10)), draw(st.integers(1, 8))
    fh, fw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    if fh > h or fw > w_:
        padding = "SAME"
    oh, _ = same_padding(h, fh, sh, 1, padding)
    ow, _ = same_padding(w_, fw, sw, 1, padding)
    s, zp = draw(scales), draw(zero_points)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, h, w_, c), s, zp)
    y = b.tensor("y", np.int8, (1, oh, ow, c), s, zp)
    b.op(
        "AVERAGE_POOL_2D" if average else "MAX_POOL_2D",
        [x],
        [y],
        version=2,
        padding=padding,
        stride_h=sh,
        stride_w=sw,
        filter_height=fh,
        filter_width=fw,
        fused_activation_function=draw(activations),
    )
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), h, w_, c))]


@st.composite
def mean(draw):
    rng = np.random.default_rng(draw(seeds))
    h, w_, c = draw(st.integers(1, 8)), draw(st.integers(1, 8)), draw(st.integers(1, 40))
    keep = draw(st.booleans())
    axes = [1, 2] if keep else draw(st.sampled_from([[1, 2], [1], [2], [2, 1], [-1], [1, 2, 3]]))
    resolved = sorted({a % 4 for a in axes})
    out_shape = [1] + [
        1 if i in resolved else d for i, d in enumerate((h, w_, c), start=1) if keep or i not in resolved
    ]
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, h, w_, c), draw(scales), draw(zero_points))
    ax = b.const("axes", np.array(axes, dtype=np.int32))
    y = b.tensor("y", np.int8, tuple(out_shape), draw(scales), draw(zero_points))
    b.op("MEAN", [x, ax], [y], version=2, keep_dims=keep)
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), h, w_, c))]


@st.composite
def add(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    b = GraphBuilder()
    a = b.input("a", np.int8, (1, *shape), draw(scales), draw(zero_points))
    c = b.input("c", np.int8, (1, *shape), draw(scales), draw(zero_points))
    y = b.tensor("y", np.int8, (1, *shape), draw(scales), draw(zero_points))
    b.op("ADD", [a, c], [y], version=2, fused_activation_function=draw(activations))
    b.output(y)
    n = draw(batches)
    return b.build(), [_int8(rng, (n, *shape)), _int8(rng, (n, *shape))]


@st.composite
def softmax(draw):
    rng = np.random.default_rng(draw(seeds))
    depth = draw(st.integers(1, 40))
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, depth), draw(scales), draw(zero_points))
    y = b.tensor("y", np.int8, (1, depth), 1 / 256, -128)
    b.op("SOFTMAX", [x], [y], version=2, beta=draw(st.sampled_from([1.0, 0.5, 2.0])))
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), depth))]


@st.composite
def logistic(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), draw(scales), draw(zero_points))
    y = b.tensor("y", np.int8, (1, *shape), 1 / 256, -128)
    b.op("LOGISTIC", [x], [y], version=2)
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape))]


@st.composite
def quantize(draw):
    rng = np.random.default_rng(draw(seeds))
    n = draw(st.integers(1, 70))
    mode = draw(st.sampled_from(["quantize", "requantize", "dequantize"]))
    b = GraphBuilder()
    batch = draw(batches)
    if mode == "quantize":
        s = draw(scales)
        x = b.input("x", np.float32, (1, n))
        y = b.tensor("y", np.int8, (1, n), s, draw(zero_points))
        # Values on and near the rounding ties, plus some out of range.
        data = rng.integers(-300, 300, (batch, n)) * 0.5 * s + rng.choice([0, 1e-7, -1e-7], (batch, n))
        inputs = [data.astype(np.float32)]
        opcode = "QUANTIZE"
    elif mode == "requantize":
        in_s = draw(scales)
        out_s = float(np.clip(in_s * draw(st.floats(0.1, 8.0)), 0.001, 1.0))
        x = b.input("x", np.int8, (1, n), in_s, draw(zero_points))
        y = b.tensor("y", np.int8, (1, n), out_s, draw(zero_points))
        inputs = [_int8(rng, (batch, n))]
        opcode = "QUANTIZE"
    else:
        x = b.input("x", np.int8, (1, n), draw(scales), draw(zero_points))
        y = b.tensor("y", np.float32, (1, n))
        inputs = [_int8(rng, (batch, n))]
        opcode = "DEQUANTIZE"
    b.op(opcode, [x], [y], version=2)
    b.output(y)
    return b.build(), inputs


@st.composite
def concatenation(draw):
    rng = np.random.default_rng(draw(seeds))
    h, w_ = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    parts = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    axis = draw(st.sampled_from([1, 2, 3, -1]))
    s, zp = draw(scales), draw(zero_points)
    b = GraphBuilder()
    shapes = []
    for i, c in enumerate(parts):
        shape = [1, h, w_, 1]
        shape[axis % 4] = c
        shapes.append(tuple(shape))
        b.input(f"x{i}", np.int8, tuple(shape), s, zp)
    out = list(shapes[0])
    out[axis % 4] = sum(parts)
    y = b.tensor("y", np.int8, tuple(out), s, zp)
    b.op(
        "CONCATENATION", list(range(len(parts))), [y], version=2, axis=axis, fused_activation_function="NONE"
    )
    b.output(y)
    n = draw(batches)
    return b.build(), [_int8(rng, (n, *shape[1:])) for shape in shapes]


@st.composite
def pad(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 4)))
    pads = [[0, 0]] + [[draw(st.integers(0, 3)), draw(st.integers(0, 3))] for _ in shape]
    s, zp = draw(scales), draw(zero_points)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), s, zp)
    p = b.const("paddings", np.array(pads, dtype=np.int32))
    out = (1, *(d + a + c for d, (a, c) in zip(shape, pads[1:], strict=True)))
    y = b.tensor("y", np.int8, out, s, zp)
    b.op("PAD", [x, p], [y], version=2)
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape))]


@st.composite
def reshape(draw):
    rng = np.random.default_rng(draw(seeds))
    h, w_, c = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    s, zp = draw(scales), draw(zero_points)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, h, w_, c), s, zp)
    shape = b.const("shape", np.array([-1, h * w_ * c], dtype=np.int32))
    y = b.tensor("y", np.int8, (1, h * w_ * c), s, zp)
    b.op("RESHAPE", [x, shape], [y], new_shape=[-1, h * w_ * c])
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), h, w_, c))]


@st.composite
def hard_swish(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    in_s = draw(scales)
    # LiteRT refuses an output scale below input scale / 128.
    out_s = max(draw(scales), in_s / 100)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), in_s, draw(zero_points))
    y = b.tensor("y", np.int8, (1, *shape), out_s, draw(zero_points))
    b.op("HARD_SWISH", [x], [y])
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape))]


@st.composite
def mul(draw, opcode: str = "MUL"):
    """Equal shapes, broadcasts LiteRT runs as fivefold loops, and constant operands."""
    rng = np.random.default_rng(draw(seeds))
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 20), min_size=rank, max_size=rank)))
    mode = draw(st.sampled_from(["same", "broadcast_inner", "broadcast_outer", "constant", "scalar"]))
    other = list(shape)
    if mode == "broadcast_inner":  # e.g. squeeze-excite: [h, w, c] x [1, 1, c]
        other = [1] * (rank - 1) + [shape[-1]]
    elif mode == "broadcast_outer":  # [h, w, c] x [h, w, 1]
        other = [*shape[:-1], 1]
    b = GraphBuilder()
    a_in = b.input("a", np.int8, (1, *shape), draw(scales), draw(zero_points))
    if mode in ("constant", "scalar"):
        const_shape = () if mode == "scalar" else (shape[-1],)
        c_in = b.const("c", _int8(rng, const_shape), draw(scales), draw(zero_points))
    else:
        c_in = b.input("c", np.int8, (1, *other), draw(scales), draw(zero_points))
    operands = [a_in, c_in] if draw(st.booleans()) else [c_in, a_in]
    y = b.tensor("y", np.int8, (1, *shape), draw(scales), draw(zero_points))
    options = {} if opcode in ("MAXIMUM", "MINIMUM") else {"fused_activation_function": draw(activations)}
    b.op(opcode, operands, [y], **options)
    b.output(y)
    n = draw(batches)
    inputs = {a_in: _int8(rng, (n, *shape))}
    if mode not in ("constant", "scalar"):
        inputs[c_in] = _int8(rng, (n, *other))
    return b.build(), [inputs[i] for i in b.graph.inputs]


@st.composite
def relu(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    opcode = draw(st.sampled_from(["RELU", "RELU6", "RELU_N1_TO_1"]))
    in_s, in_zp = draw(scales), draw(zero_points)
    out_s, out_zp = draw(st.sampled_from([in_s, draw(scales)])), draw(zero_points)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), in_s, in_zp)
    y = b.tensor("y", np.int8, (1, *shape), out_s, out_zp)
    b.op(opcode, [x], [y])
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape))]


@st.composite
def squeeze_expand(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = list(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    s, zp = draw(scales), draw(zero_points)
    b = GraphBuilder()
    if draw(st.booleans()):
        axis = draw(st.integers(1, len(shape) + 1))
        x = b.input("x", np.int8, (1, *shape), s, zp)
        out = [1, *shape[: axis - 1], 1, *shape[axis - 1 :]]
        y = b.tensor("y", np.int8, tuple(out), s, zp)
        negative = draw(st.booleans())
        a = b.const("axis", np.array([axis - len(out) if negative else axis], np.int32))
        b.op("EXPAND_DIMS", [x, a], [y])
        in_shape = shape
    else:
        at = draw(st.integers(1, len(shape)))
        in_shape = [*shape[: at - 1], 1, *shape[at - 1 :]]
        x = b.input("x", np.int8, (1, *in_shape), s, zp)
        y = b.tensor("y", np.int8, (1, *shape), s, zp)
        b.op("SQUEEZE", [x], [y], squeeze_dims=[at])
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *in_shape))]


OP_STRATEGIES = {
    "FULLY_CONNECTED": fully_connected(),
    "CONV_2D": conv_2d(),
    "DEPTHWISE_CONV_2D": conv_2d(depthwise=True),
    "MAX_POOL_2D": pool_2d(average=False),
    "AVERAGE_POOL_2D": pool_2d(average=True),
    "MEAN": mean(),
    "ADD": add(),
    "SOFTMAX": softmax(),
    "LOGISTIC": logistic(),
    "QUANTIZE/DEQUANTIZE": quantize(),
    "CONCATENATION": concatenation(),
    "PAD": pad(),
    "RESHAPE": reshape(),
    "HARD_SWISH": hard_swish(),
    "MUL": mul(),
    "ADD (broadcast, constant)": mul("ADD"),
    "SUB": mul("SUB"),
    "MAXIMUM": mul("MAXIMUM"),
    "MINIMUM": mul("MINIMUM"),
    "RELU/RELU6/RELU_N1_TO_1": relu(),
    "SQUEEZE/EXPAND_DIMS": squeeze_expand(),
}
