"""Hypothesis strategies for the activation, resize and data-movement ops: valid single-op int8 models.

Companion of tests/singleop.py (same conventions: each strategy returns
(graph, inputs) ready for any engine, with a batch of random samples).
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from edged.model.builder import GraphBuilder
from tests.singleop import _int8, batches, scales, seeds, zero_points

shapes = st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple)


@st.composite
def tanh(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = draw(shapes)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), draw(scales), draw(zero_points))
    y = b.tensor("y", np.int8, (1, *shape), draw(st.sampled_from([1 / 128, draw(scales)])), draw(zero_points))
    b.op("TANH", [x], [y])
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape))]


@st.composite
def leaky_relu(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = draw(shapes)
    alpha = draw(st.sampled_from([0.0, 0.01, 0.2, 0.3, 1.0, -0.25, 1.7]) | st.floats(-1.0, 2.0, width=32))
    in_s = draw(scales)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), in_s, draw(zero_points))
    y = b.tensor("y", np.int8, (1, *shape), draw(st.sampled_from([in_s, draw(scales)])), draw(zero_points))
    b.op("LEAKY_RELU", [x], [y], alpha=float(alpha))
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape))]


@st.composite
def prelu(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    # alpha: the full sample shape, or with some axes shared (extent 1), or fewer leading axes
    alpha_shape = [d if draw(st.booleans()) else 1 for d in shape]
    alpha_shape = alpha_shape[draw(st.integers(0, len(shape) - 1)) :]
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), draw(scales), draw(zero_points))
    alpha = rng.integers(-128, 128, alpha_shape).astype(np.int8)
    a = b.const("alpha", alpha, float(rng.uniform(0.001, 0.02)), draw(zero_points))
    y = b.tensor("y", np.int8, (1, *shape), draw(scales), draw(zero_points))
    b.op("PRELU", [x, a], [y])
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape))]


@st.composite
def resize(draw):
    rng = np.random.default_rng(draw(seeds))
    opcode = draw(st.sampled_from(["RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"]))
    h, w, c = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 5))
    oh, ow = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    align, half = draw(st.sampled_from([(False, False), (True, False), (False, True)]))
    s, zp = draw(scales), draw(zero_points)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, h, w, c), s, zp)
    size = b.const("size", np.array([oh, ow], dtype=np.int32))
    y = b.tensor("y", np.int8, (1, oh, ow, c), s, zp)
    b.op(opcode, [x, size], [y], version=3, align_corners=align, half_pixel_centers=half)
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), h, w, c))]


@st.composite
def transpose(draw):
    rng = np.random.default_rng(draw(seeds))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=5)))
    rest = draw(st.permutations(list(range(1, len(shape) + 1))))
    perm = [0, *rest]
    s, zp = draw(scales), draw(zero_points)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), s, zp)
    p = b.const("perm", np.array(perm, dtype=np.int32))
    y = b.tensor("y", np.int8, tuple((1, *shape)[k] for k in perm), s, zp)
    b.op("TRANSPOSE", [x, p], [y], version=2)
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape))]


@st.composite
def slices(draw):
    """SLICE, or STRIDED_SLICE with any begin / end / stride and masks (the batch axis kept whole)."""
    rng = np.random.default_rng(draw(seeds))
    shape = (1, *draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    s, zp = draw(scales), draw(zero_points)
    b = GraphBuilder()
    x = b.input("x", np.int8, shape, s, zp)
    if draw(st.booleans()):
        begin = [0] + [draw(st.integers(0, d - 1)) for d in shape[1:]]
        size = [-1] + [draw(st.sampled_from([-1, draw(st.integers(1, d - bg))])) for d, bg in
                       zip(shape[1:], begin[1:], strict=True)]
        out = [1] + [d - bg if sz == -1 else sz
                     for d, bg, sz in zip(shape[1:], begin[1:], size[1:], strict=True)]
        y = b.tensor("y", np.int8, tuple(out), s, zp)
        begin_t = b.const("begin", np.array(begin, np.int32))
        b.op("SLICE", [x, begin_t, b.const("size", np.array(size, np.int32))], [y], version=2)
    else:
        begin, end, strides, keys = [0], [0], [1], [slice(None)]
        begin_mask, end_mask, shrink = 1, 1, 0
        for axis, d in enumerate(shape[1:], start=1):
            if draw(st.integers(0, 4)) == 0:
                index = draw(st.integers(-d, d - 1))
                begin.append(index), end.append(index + 1), strides.append(1)
                shrink |= 1 << axis
                keys.append(index)
                continue
            bg, en = draw(st.integers(-d - 2, d + 2)), draw(st.integers(-d - 2, d + 2))
            step = draw(st.sampled_from([1, 1, 2, 3, -1, -2]))
            masked_begin, masked_end = draw(st.booleans()), draw(st.booleans())
            begin_mask |= masked_begin << axis
            end_mask |= masked_end << axis
            begin.append(bg), end.append(en), strides.append(step)
            keys.append(slice(None if masked_begin else bg, None if masked_end else en, step))
        out = np.zeros(shape, np.int8)[tuple(keys)].shape
        assume(0 not in out)
        y = b.tensor("y", np.int8, out, s, zp)
        parts = [b.const(n, np.array(v, np.int32))
                 for n, v in (("begin", begin), ("end", end), ("strides", strides))]
        b.op("STRIDED_SLICE", [x, *parts], [y], version=2, begin_mask=begin_mask, end_mask=end_mask,
             shrink_axis_mask=shrink, ellipsis_mask=0, new_axis_mask=0)
    b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape[1:]))]


@st.composite
def squared_difference(draw):
    """Two activations of one shape, or an activation and a constant that broadcasts to it."""
    rng = np.random.default_rng(draw(seeds))
    shape = draw(shapes)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), draw(scales), draw(zero_points))
    if draw(st.booleans()):
        other = b.input("z", np.int8, (1, *shape), draw(scales), draw(zero_points))
        inputs = [_int8(rng, (draw(batches), *shape))]
        inputs.append(_int8(rng, inputs[0].shape))
    else:
        const_shape = tuple(d if draw(st.booleans()) else 1 for d in shape)[draw(st.integers(0, len(shape))):]
        other = b.const("z", _int8(rng, const_shape), draw(scales), draw(zero_points))
        inputs = [_int8(rng, (draw(batches), *shape))]
    operands = [x, other] if draw(st.booleans()) else [other, x]
    # An output scale LiteRT accepts: (2 * larger input scale)^2 / 2^14 below it.
    y = b.tensor("y", np.int8, (1, *shape), draw(st.floats(0.01, 2.0)), draw(zero_points))
    b.op("SQUARED_DIFFERENCE", operands, [y])
    b.output(y)
    return b.build(), inputs


@st.composite
def split(draw):
    """SPLIT into equal parts or SPLIT_V (one size may be -1) along any axis but the batch."""
    rng = np.random.default_rng(draw(seeds))
    shape = [1, *draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))]
    axis = draw(st.integers(1, len(shape) - 1))
    s, zp = draw(scales), draw(zero_points)
    b = GraphBuilder()
    x = b.input("x", np.int8, tuple(shape), s, zp)
    if draw(st.booleans()):
        n = draw(st.sampled_from([d for d in range(1, shape[axis] + 1) if shape[axis] % d == 0]))
        sizes = [shape[axis] // n] * n
        axis_t = b.const("axis", np.array(axis - len(shape) if draw(st.booleans()) else axis, np.int32))
        outputs = [b.tensor(f"y{k}", np.int8, (*shape[:axis], d, *shape[axis + 1 :]), s, zp)
                   for k, d in enumerate(sizes)]
        b.op("SPLIT", [axis_t, x], outputs, version=2, num_splits=n)
    else:
        cuts = sorted(draw(st.lists(st.integers(1, max(shape[axis] - 1, 1)), max_size=3, unique=True)))
        cuts = [c for c in cuts if c < shape[axis]]
        sizes = np.diff([0, *cuts, shape[axis]]).tolist()
        given = list(sizes)
        if draw(st.booleans()):
            given[draw(st.integers(0, len(sizes) - 1))] = -1
        outputs = [b.tensor(f"y{k}", np.int8, (*shape[:axis], d, *shape[axis + 1 :]), s, zp)
                   for k, d in enumerate(sizes)]
        sizes_t = b.const("sizes", np.array(given, np.int32))
        axis_t = b.const("axis", np.array(axis, np.int32))
        b.op("SPLIT_V", [x, sizes_t, axis_t], outputs, version=2, num_splits=len(sizes))
    for y in outputs:
        b.output(y)
    return b.build(), [_int8(rng, (draw(batches), *shape[1:]))]


@st.composite
def batch_matmul(draw):
    """Two activations with the same leading axes, or an activation and a constant right side."""
    rng = np.random.default_rng(draw(seeds))
    lead = draw(st.lists(st.integers(1, 3), max_size=2))
    m, k, p = draw(st.integers(1, 7)), draw(st.integers(1, 40)), draw(st.integers(1, 7))
    adj_x, adj_y = draw(st.booleans()), draw(st.booleans())
    b = GraphBuilder()
    x_shape = (1, *lead, *((k, m) if adj_x else (m, k)))
    x = b.input("x", np.int8, x_shape, draw(scales), draw(zero_points))
    right = (p, k) if adj_y else (k, p)
    inputs = [_int8(rng, (draw(batches), *x_shape[1:]))]
    if draw(st.booleans()):
        z = b.input("z", np.int8, (1, *lead, *right), draw(scales), draw(zero_points))
        inputs.append(_int8(rng, (inputs[0].shape[0], *lead, *right)))
    else:
        const_lead = [d if draw(st.booleans()) else 1 for d in lead][draw(st.integers(0, len(lead))):]
        z = b.const("z", _int8(rng, (*const_lead, *right)), draw(scales), draw(zero_points))
    y = b.tensor("y", np.int8, (1, *lead, m, p), draw(st.floats(0.05, 4.0)), draw(zero_points))
    b.op("BATCH_MATMUL", [x, z], [y], version=4, adj_x=adj_x, adj_y=adj_y, asymmetric_quantize_inputs=False)
    b.output(y)
    return b.build(), inputs


MORE_STRATEGIES = {
    "TANH": tanh(),
    "LEAKY_RELU": leaky_relu(),
    "PRELU": prelu(),
    "RESIZE_NEAREST_NEIGHBOR/RESIZE_BILINEAR": resize(),
    "TRANSPOSE": transpose(),
    "SLICE/STRIDED_SLICE": slices(),
    "SQUARED_DIFFERENCE": squared_difference(),
    "SPLIT/SPLIT_V": split(),
    "BATCH_MATMUL": batch_matmul(),
}
