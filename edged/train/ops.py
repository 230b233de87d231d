"""Forward and backward passes of the operators, in float, one pair per op family.

Every ``*_forward`` returns ``(output, cache)``; its ``*_backward(dy, cache)``
returns the gradients of the inputs in the forward's argument order (``None``
where the argument is not differentiable). Layouts are TFLite's: NHWC
activations, FULLY_CONNECTED weights [out, in], CONV_2D [out, kh, kw, in],
DEPTHWISE_CONV_2D [1, kh, kw, in * multiplier].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A sliding window over the two spatial axes of an NHWC tensor."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]  # top, left
    out_hw: tuple[int, int]


def _padded(x: np.ndarray, w: Window, fill: float) -> np.ndarray:
    """``x`` with the window's leading pad and as much trailing pad as the last window reaches."""
    _, h, wd, _ = x.shape
    need_h = (w.kernel[0] - 1) * w.dilation[0] + w.stride[0] * (w.out_hw[0] - 1) + 1
    need_w = (w.kernel[1] - 1) * w.dilation[1] + w.stride[1] * (w.out_hw[1] - 1) + 1
    bottom = max(need_h - w.pad[0] - h, 0)
    right = max(need_w - w.pad[1] - wd, 0)
    return np.pad(x, ((0, 0), (w.pad[0], bottom), (w.pad[1], right), (0, 0)), constant_values=fill)


def _tap(w: Window, i: int, j: int) -> tuple[slice, slice]:
    """Where kernel tap (i, j) reads in the padded input, for every output position."""
    oh, ow = w.out_hw
    r0, c0 = i * w.dilation[0], j * w.dilation[1]
    return (slice(r0, r0 + w.stride[0] * (oh - 1) + 1, w.stride[0]),
            slice(c0, c0 + w.stride[1] * (ow - 1) + 1, w.stride[1]))


def windows(x: np.ndarray, w: Window, fill: float = 0.0) -> np.ndarray:
    """[n, out_h, out_w, kh, kw, c] patches of ``x`` [n, h, w, c]; ``fill`` outside the input."""
    xp = _padded(x, w, fill)
    n, c = x.shape[0], x.shape[3]
    out = np.empty((n, *w.out_hw, *w.kernel, c), dtype=x.dtype)
    for i in range(w.kernel[0]):
        for j in range(w.kernel[1]):
            rows, cols = _tap(w, i, j)
            out[:, :, :, i, j, :] = xp[:, rows, cols, :]
    return out


def windows_backward(dp: np.ndarray, x_shape: tuple[int, ...], w: Window) -> np.ndarray:
    """The gradient of ``x`` from the gradient of its patches (the adjoint of ``windows``)."""
    dxp = _padded(np.zeros(x_shape, dtype=dp.dtype), w, 0.0)
    for i in range(w.kernel[0]):
        for j in range(w.kernel[1]):
            rows, cols = _tap(w, i, j)
            dxp[:, rows, cols, :] += dp[:, :, :, i, j, :]
    return dxp[:, w.pad[0] : w.pad[0] + x_shape[1], w.pad[1] : w.pad[1] + x_shape[2], :]


# ------------------------------------------------------------------ layers with weights


def fc_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None):
    flat = x.reshape(-1, w.shape[1])
    y = flat @ w.T
    if b is not None:
        y = y + b
    return y, (flat, w, x.shape, b is not None)


def fc_backward(dy: np.ndarray, cache):
    flat, w, x_shape, has_bias = cache
    dy = dy.reshape(-1, w.shape[0])
    return (dy @ w).reshape(x_shape), dy.T @ flat, dy.sum(axis=0) if has_bias else None


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, win: Window):
    patches = windows(x, win)
    n, oh, ow = patches.shape[:3]
    flat = patches.reshape(n * oh * ow, -1)
    y = flat @ w.reshape(w.shape[0], -1).T
    if b is not None:
        y = y + b
    return y.reshape(n, oh, ow, w.shape[0]), (flat, w, x.shape, win, b is not None)


def conv_backward(dy: np.ndarray, cache):
    flat, w, x_shape, win, has_bias = cache
    dy2 = dy.reshape(-1, w.shape[0])
    dw = (dy2.T @ flat).reshape(w.shape)
    dp = (dy2 @ w.reshape(w.shape[0], -1)).reshape(dy.shape[0], *win.out_hw, *win.kernel, x_shape[3])
    return windows_backward(dp, x_shape, win), dw, dy2.sum(axis=0) if has_bias else None


def depthwise_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, win: Window, multiplier: int):
    # output channel oc = ic * multiplier + m reads input channel ic
    source = np.arange(w.shape[3]) // multiplier
    patches = windows(x, win)[..., source]
    y = np.einsum("nhwijc,ijc->nhwc", patches, w[0])
    if b is not None:
        y = y + b
    return y, (patches, w, x.shape, win, multiplier, b is not None)


def depthwise_backward(dy: np.ndarray, cache):
    patches, w, x_shape, win, multiplier, has_bias = cache
    dw = np.einsum("nhwijc,nhwc->ijc", patches, dy)[None]
    dp = np.einsum("nhwc,ijc->nhwijc", dy, w[0])
    dp = dp.reshape(*dp.shape[:5], x_shape[3], multiplier).sum(axis=-1)
    db = dy.sum(axis=(0, 1, 2)) if has_bias else None
    return windows_backward(dp, x_shape, win), dw, db


# ------------------------------------------------------------------ pooling and reductions


def pool_forward(x: np.ndarray, win: Window, average: bool):
    if average:  # TFLite averages over the pixels inside the input only
        patches = windows(x, win)
        count = windows(np.ones((1, *x.shape[1:3], 1), dtype=x.dtype), win).sum(axis=(3, 4))
        return patches.sum(axis=(3, 4)) / count, (x.shape, win, True, count)
    patches = windows(x, win, fill=-np.inf)
    n, oh, ow, kh, kw, c = patches.shape
    flat = patches.reshape(n, oh, ow, kh * kw, c)
    arg = np.argmax(flat, axis=3)
    y = np.take_along_axis(flat, arg[:, :, :, None, :], axis=3)[:, :, :, 0, :]
    return y, (x.shape, win, False, arg)


def pool_backward(dy: np.ndarray, cache):
    x_shape, win, average, extra = cache
    kh, kw = win.kernel
    if average:
        dp = np.broadcast_to((dy / extra)[:, :, :, None, None, :], (*dy.shape[:3], kh, kw, dy.shape[3]))
        return (windows_backward(np.ascontiguousarray(dp), x_shape, win),)
    n, oh, ow, c = dy.shape
    onehot = np.zeros((n, oh, ow, kh * kw, c), dtype=dy.dtype)
    np.put_along_axis(onehot, extra[:, :, :, None, :], dy[:, :, :, None, :], axis=3)
    return (windows_backward(onehot.reshape(n, oh, ow, kh, kw, c), x_shape, win),)


def mean_forward(x: np.ndarray, axes: tuple[int, ...], keep_dims: bool):
    return x.mean(axis=axes, keepdims=keep_dims), (x.shape, axes)


def mean_backward(dy: np.ndarray, cache):
    x_shape, axes = cache
    count = int(np.prod([x_shape[a] for a in axes]))
    kept = list(x_shape)
    for a in axes:
        kept[a] = 1
    return (np.broadcast_to(dy.reshape(kept) / count, x_shape).copy(),)


# ------------------------------------------------------------------ elementwise and shape ops


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` down to ``shape`` (the adjoint of numpy broadcasting)."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def add_forward(a: np.ndarray, b: np.ndarray, subtract: bool = False):
    return (a - b if subtract else a + b), (a.shape, b.shape, subtract)


def add_backward(dy: np.ndarray, cache):
    a_shape, b_shape, subtract = cache
    return _unbroadcast(dy, a_shape), _unbroadcast(-dy if subtract else dy, b_shape)


def mul_forward(a: np.ndarray, b: np.ndarray):
    return a * b, (a, b)


def mul_backward(dy: np.ndarray, cache):
    a, b = cache
    return _unbroadcast(dy * b, a.shape), _unbroadcast(dy * a, b.shape)


def reshape_forward(x: np.ndarray, shape: tuple[int, ...]):
    return x.reshape(shape), x.shape


def reshape_backward(dy: np.ndarray, cache):
    return (dy.reshape(cache),)


def concat_forward(xs: list[np.ndarray], axis: int):
    return np.concatenate(xs, axis=axis), (axis, [x.shape[axis] for x in xs])


def concat_backward(dy: np.ndarray, cache):
    axis, sizes = cache
    return tuple(np.split(dy, np.cumsum(sizes)[:-1], axis=axis))


def pad_forward(x: np.ndarray, paddings: tuple[tuple[int, int], ...], value: float = 0.0):
    return np.pad(x, paddings, constant_values=value), (x.shape, paddings)


def pad_backward(dy: np.ndarray, cache):
    shape, paddings = cache
    return (dy[tuple(slice(a, a + s) for (a, _), s in zip(paddings, shape, strict=True))],)


def softmax_forward(x: np.ndarray, beta: float = 1.0):
    z = beta * x
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    y = e / e.sum(axis=-1, keepdims=True)
    return y, (y, beta)


def softmax_backward(dy: np.ndarray, cache):
    y, beta = cache
    return (beta * y * (dy - np.sum(dy * y, axis=-1, keepdims=True)),)


def logistic_forward(x: np.ndarray):
    y = 0.5 * (1.0 + np.tanh(0.5 * x))  # 1 / (1 + e^-x) without overflow
    return y, y


def logistic_backward(dy: np.ndarray, cache):
    return (dy * cache * (1.0 - cache),)


def hard_swish_forward(x: np.ndarray):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0, x


def hard_swish_backward(dy: np.ndarray, cache):
    x = cache
    slope = np.where(x < -3.0, 0.0, np.where(x > 3.0, 1.0, (2.0 * x + 3.0) / 6.0))
    return (dy * slope,)


CLAMPS = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}


def clamp_forward(x: np.ndarray, kind: str):
    """RELU, RELU6, RELU_N1_TO_1, standalone or fused; ``NONE`` is the identity."""
    if kind == "NONE":
        return x, None
    low, high = CLAMPS[kind]
    inside = x > low if high is None else (x > low) & (x < high)
    return np.clip(x, low, high), inside


def clamp_backward(dy: np.ndarray, cache):
    return (dy if cache is None else dy * cache,)
