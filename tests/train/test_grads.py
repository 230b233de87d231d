"""Every backward pass against central finite differences of its forward pass, in float64."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite
from edged.train import ops
from edged.train.graph import TrainGraph

EPS = 1e-6


def check(forward, backward, args: list[np.ndarray], rng: np.random.Generator, wrt: list[int],
          samples: int = 12) -> None:
    """d(sum(forward(*args) * dy)) / d args[k] from ``backward`` matches finite differences."""
    y, cache = forward(*args)
    dy = rng.normal(size=y.shape)
    grads = backward(dy, cache)
    for k in wrt:
        a = args[k]
        flat = a.reshape(-1)
        for idx in rng.choice(flat.size, min(samples, flat.size), replace=False):
            old = flat[idx]
            flat[idx] = old + EPS
            up = np.sum(forward(*args)[0] * dy)
            flat[idx] = old - EPS
            down = np.sum(forward(*args)[0] * dy)
            flat[idx] = old
            numeric = (up - down) / (2 * EPS)
            analytic = grads[k].reshape(-1)[idx]
            assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(numeric)), (k, idx, numeric, analytic)


def away_from(x: np.ndarray, kinks: tuple[float, ...], gap: float = 1e-3) -> np.ndarray:
    """``x`` with values too close to a kink of a piecewise function moved off it."""
    for k in kinks:
        near = np.abs(x - k) < gap
        x[near] = k + 2 * gap
    return x


windows_spec = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2),
                         st.integers(1, 2), st.integers(0, 1), st.integers(0, 1))


def make_window(h: int, w: int, spec) -> ops.Window:
    kh, kw, sh, sw, dil, pt, pl = spec
    out_h = (h + pt - ((kh - 1) * dil + 1)) // sh + 1
    out_w = (w + pl - ((kw - 1) * dil + 1)) // sw + 1
    return ops.Window((kh, kw), (sh, sw), (dil, dil), (pt, pl), (max(out_h, 1), max(out_w, 1)))


@given(st.integers(0, 2**31), st.integers(1, 4), st.integers(1, 6), st.integers(1, 5))
def test_fully_connected(seed, n, depth, out):
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=(n, depth)), rng.normal(size=(out, depth)), rng.normal(size=out)]
    check(ops.fc_forward, ops.fc_backward, args, rng, [0, 1, 2])


@given(st.integers(0, 2**31), st.integers(3, 6), st.integers(3, 6), st.integers(1, 3), st.integers(1, 3),
       windows_spec)
def test_conv(seed, h, w, cin, cout, spec):
    rng = np.random.default_rng(seed)
    win = make_window(h, w, spec)
    args = [rng.normal(size=(2, h, w, cin)), rng.normal(size=(cout, *win.kernel, cin)), rng.normal(size=cout)]
    check(lambda x, wt, b: ops.conv_forward(x, wt, b, win), ops.conv_backward, args, rng, [0, 1, 2])


@given(st.integers(0, 2**31), st.integers(3, 6), st.integers(3, 6), st.integers(1, 3), st.integers(1, 2),
       windows_spec)
def test_depthwise(seed, h, w, cin, multiplier, spec):
    rng = np.random.default_rng(seed)
    win = make_window(h, w, spec)
    cout = cin * multiplier
    args = [rng.normal(size=(2, h, w, cin)), rng.normal(size=(1, *win.kernel, cout)), rng.normal(size=cout)]
    check(lambda x, wt, b: ops.depthwise_forward(x, wt, b, win, multiplier), ops.depthwise_backward, args,
          rng, [0, 1, 2])


@given(st.integers(0, 2**31), st.integers(2, 6), st.integers(2, 6), st.booleans(), windows_spec)
def test_pooling(seed, h, w, average, spec):
    rng = np.random.default_rng(seed)
    kh, kw, sh, sw, _, pt, pl = spec
    win = make_window(h, w, (kh, kw, sh, sw, 1, min(pt, kh - 1), min(pl, kw - 1)))
    x = rng.permutation(2 * h * w * 2).reshape(2, h, w, 2) * 0.01  # distinct: no ties for max
    check(lambda a: ops.pool_forward(a, win, average), ops.pool_backward, [x.astype(np.float64)], rng, [0])


@given(st.integers(0, 2**31), st.sampled_from([(1,), (2,), (1, 2), (1, 2, 3)]), st.booleans())
def test_mean(seed, axes, keep):
    rng = np.random.default_rng(seed)
    check(lambda a: ops.mean_forward(a, axes, keep), ops.mean_backward, [rng.normal(size=(2, 3, 4, 2))], rng,
          [0])


BROADCASTS = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 3, 4), (1, 3, 1)), ((2, 1, 4), (2, 3, 1))]


@given(st.integers(0, 2**31), st.sampled_from(BROADCASTS), st.booleans())
def test_add_sub_mul(seed, shapes, subtract):
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=shapes[0]), rng.normal(size=shapes[1])]
    check(lambda a, b: ops.add_forward(a, b, subtract), ops.add_backward, args, rng, [0, 1])
    check(ops.mul_forward, ops.mul_backward, args, rng, [0, 1])


@given(st.integers(0, 2**31), st.integers(1, 3), st.integers(1, 3))
def test_shape_ops(seed, a, b):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, a, b, 3))
    check(lambda v: ops.reshape_forward(v, (2, -1)), ops.reshape_backward, [x], rng, [0])
    check(lambda v, w: ops.concat_forward([v, w], 3), ops.concat_backward, [x, rng.normal(size=(2, a, b, 2))],
          rng, [0, 1])
    pads = ((0, 0), (1, 0), (0, 2), (1, 1))
    check(lambda v: ops.pad_forward(v, pads), ops.pad_backward, [x], rng, [0])


@given(st.integers(0, 2**31), st.floats(0.1, 3.0))
def test_softmax_logistic_hard_swish(seed, beta):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=(3, 7))
    check(lambda v: ops.softmax_forward(v, beta), ops.softmax_backward, [x.copy()], rng, [0])
    check(ops.logistic_forward, ops.logistic_backward, [x.copy()], rng, [0])
    check(ops.hard_swish_forward, ops.hard_swish_backward, [away_from(x.copy(), (-3.0, 3.0))], rng, [0])


@given(st.integers(0, 2**31), st.sampled_from(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]))
def test_clamps(seed, kind):
    rng = np.random.default_rng(seed)
    x = away_from(rng.normal(scale=4.0, size=(3, 9)), (-1.0, 0.0, 1.0, 6.0))
    check(lambda v: ops.clamp_forward(v, kind), ops.clamp_backward, [x], rng, [0])


def test_whole_graph_gradients_match_finite_differences():
    """Through the bundled CNN (CONV_2D + fused RELU, MAX_POOL_2D, RESHAPE, FULLY_CONNECTED, the final
    SOFTMAX left to the loss) without fake quantisation: weights and input."""
    graph = read_tflite(default_model_path("digits_cnn"))
    images, _ = load_digits_test()
    tg = TrainGraph(graph, quantize=False, dtype=np.float64)
    rng = np.random.default_rng(0)
    # Blank patches give equal pooled values, and at a tie max pooling has no derivative: jitter.
    x = tg.input_values(digits_for(graph, images[:3])) + rng.uniform(0, 0.05, (3, 8, 8, 1))
    dy = rng.normal(size=(3, 10))

    def loss() -> float:
        return float(np.sum(tg.forward(x) * dy))

    tg.forward(x, train=True)
    grads = tg.backward(dy)
    tg.forward(x, train=True)
    dx = tg.input_gradient(dy)
    for name in ("0:w", "0:b", "1:w", "4:w", "4:b"):
        p = tg.params[name].reshape(-1)
        live = np.flatnonzero(tg.masks[name].reshape(-1)) if name.endswith(":w") else np.arange(p.size)
        for idx in rng.choice(live, 8, replace=False):
            old = p[idx]
            p[idx] = old + EPS
            up = loss()
            p[idx] = old - EPS
            down = loss()
            p[idx] = old
            numeric = (up - down) / (2 * EPS)
            assert abs(numeric - grads[name].reshape(-1)[idx]) <= 1e-4 * max(1.0, abs(numeric)), name
    flat = x.reshape(-1)
    for idx in rng.choice(flat.size, 8, replace=False):
        old = flat[idx]
        flat[idx] = old + EPS
        up = loss()
        flat[idx] = old - EPS
        down = loss()
        flat[idx] = old
        numeric = (up - down) / (2 * EPS)
        assert abs(numeric - dx.reshape(-1)[idx]) <= 1e-4 * max(1.0, abs(numeric))
