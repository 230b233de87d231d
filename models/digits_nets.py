"""Float training in plain numpy for the bundled digits models.

Adam, softmax cross-entropy, He initialisation, and the two float networks
(MLP and a small CNN with hand-written im2col convolutions) that
``train_digits.py`` trains, calibrates and exports to int8 .tflite.
"""

from __future__ import annotations

import itertools

import numpy as np


class Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float, l2: float) -> None:
        self.params = params
        self.lr, self.l2 = lr, l2
        self.b1, self.b2, self.eps = 0.9, 0.999, 1e-8
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray], lr: float | None = None) -> None:
        self.t += 1
        lr = self.lr if lr is None else lr
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for k, p in self.params.items():
            g = grads[k]
            if k.endswith("W") and self.l2:
                g = g + self.l2 * p
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            p -= (lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)).astype(p.dtype)


def softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean())
    d = p.copy()
    d[np.arange(n), y] -= 1
    return loss, (d / n).astype(np.float32)


def he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def train(
    model,
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    epochs: int,
    batch: int,
    lr: float,
    l2: float,
    label: str,
) -> None:
    opt = Adam(model.params, lr, l2)
    n = len(x)
    for epoch in range(epochs):
        # cosine decay keeps the last epochs calm, which helps quantization a little
        lr_e = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
        order = rng.permutation(n)
        total = 0.0
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            logits, cache = model.forward(x[idx])
            loss, dlogits = softmax_xent(logits, y[idx])
            total += loss * len(idx)
            opt.step(model.backward(dlogits, cache), lr_e)
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"  {label} epoch {epoch + 1:3d}  loss {total / n:.4f}")


# ------------------------------------------------------------------ models (float)


class MLP:
    """64 -> 1024 -> 1024 -> 10; weights kept in TFLite layout [out, in]."""

    def __init__(self, rng: np.random.Generator, sizes=(64, 1024, 1024, 10)) -> None:
        self.sizes = sizes
        self.params: dict[str, np.ndarray] = {}
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            self.params[f"d{i}W"] = he(rng, (b, a), a)
            self.params[f"d{i}b"] = np.zeros(b, np.float32)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def forward(self, x: np.ndarray, keep: bool = True):
        acts = [x]
        h = x
        for i in range(self.n_layers):
            h = h @ self.params[f"d{i}W"].T + self.params[f"d{i}b"]
            if i < self.n_layers - 1:
                h = np.maximum(h, 0)
            acts.append(h)
        return h, acts

    def backward(self, d: np.ndarray, acts: list[np.ndarray]) -> dict[str, np.ndarray]:
        grads = {}
        for i in reversed(range(self.n_layers)):
            grads[f"d{i}W"] = d.T @ acts[i]
            grads[f"d{i}b"] = d.sum(axis=0)
            if i > 0:
                d = (d @ self.params[f"d{i}W"]) * (acts[i] > 0)
        return grads

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """[hidden1, hidden2, logits]: the tensors that need calibrated ranges."""
        return self.forward(x)[1][1:]


def im2col3x3(x: np.ndarray) -> np.ndarray:
    """[N, H, W, C] -> [N, H, W, 9*C] with SAME padding, ordered (kh, kw, c) like TFLite filters."""
    n, h, w, c = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.empty((n, h, w, 3, 3, c), dtype=x.dtype)
    for i in range(3):
        for j in range(3):
            cols[:, :, :, i, j, :] = p[:, i : i + h, j : j + w, :]
    return cols.reshape(n, h, w, 9 * c)


def col2im3x3(dcols: np.ndarray, c: int) -> np.ndarray:
    n, h, w, _ = dcols.shape
    dcols = dcols.reshape(n, h, w, 3, 3, c)
    dp = np.zeros((n, h + 2, w + 2, c), dtype=dcols.dtype)
    for i in range(3):
        for j in range(3):
            dp[:, i : i + h, j : j + w, :] += dcols[:, :, :, i, j, :]
    return dp[:, 1:-1, 1:-1, :]


class CNN:
    """[8,8,1] -> conv3x3 16 relu -> conv3x3 32 relu -> maxpool 2x2 -> fc 10 (NHWC, TFLite layouts)."""

    def __init__(self, rng: np.random.Generator, c1: int = 16, c2: int = 32) -> None:
        self.c1, self.c2 = c1, c2
        self.params = {
            "c1W": he(rng, (c1, 3, 3, 1), 9),
            "c1b": np.zeros(c1, np.float32),
            "c2W": he(rng, (c2, 3, 3, c1), 9 * c1),
            "c2b": np.zeros(c2, np.float32),
            "fcW": he(rng, (10, 4 * 4 * c2), 4 * 4 * c2),
            "fcb": np.zeros(10, np.float32),
        }

    def forward(self, x: np.ndarray, keep: bool = True):
        p = self.params
        n = len(x)
        x = x.reshape(n, 8, 8, 1)
        cols1 = im2col3x3(x)
        h1 = np.maximum(cols1 @ p["c1W"].reshape(self.c1, -1).T + p["c1b"], 0)
        cols2 = im2col3x3(h1)
        h2 = np.maximum(cols2 @ p["c2W"].reshape(self.c2, -1).T + p["c2b"], 0)
        blocks = h2.reshape(n, 4, 2, 4, 2, self.c2)
        pooled = blocks.max(axis=(2, 4))
        flat = pooled.reshape(n, -1)
        logits = flat @ p["fcW"].T + p["fcb"]
        return logits, (cols1, h1, cols2, h2, pooled, flat, logits)

    def backward(self, d: np.ndarray, cache) -> dict[str, np.ndarray]:
        p = self.params
        cols1, h1, cols2, h2, pooled, flat, _ = cache
        n = len(d)
        g = {"fcW": d.T @ flat, "fcb": d.sum(axis=0)}
        dpool = (d @ p["fcW"]).reshape(pooled.shape)
        # route each pooled gradient to one arg max of its 2x2 window, like a max pool does
        win = h2.reshape(n, 4, 2, 4, 2, self.c2).transpose(0, 1, 3, 5, 2, 4).reshape(n, 4, 4, self.c2, 4)
        onehot = np.arange(4) == win.argmax(axis=-1)[..., None]
        dwin = onehot * dpool[..., None]
        dh2 = dwin.reshape(n, 4, 4, self.c2, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(h2.shape) * (h2 > 0)
        d2 = dh2.reshape(-1, self.c2)
        g["c2W"] = (d2.T @ cols2.reshape(len(d2), -1)).reshape(p["c2W"].shape)
        g["c2b"] = d2.sum(axis=0)
        dcols2 = dh2 @ p["c2W"].reshape(self.c2, -1)
        dh1 = col2im3x3(dcols2, self.c1) * (h1 > 0)
        d1 = dh1.reshape(-1, self.c1)
        g["c1W"] = (d1.T @ cols1.reshape(len(d1), -1)).reshape(p["c1W"].shape)
        g["c1b"] = d1.sum(axis=0)
        return g

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """[conv1, conv2 (= pool = reshape range), logits]."""
        _, (_, h1, _, h2, _, _, logits) = self.forward(x)
        return [h1, h2, logits]


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.forward(x)[0], axis=1) == y))
