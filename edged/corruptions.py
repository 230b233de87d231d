"""Distribution shifts of the bundled digit images: what a drifting sensor does to the data.

Images are the raw 8x8 digits with values 0..16 (as ``load_digits_test``
returns them); every corruption returns the same dtype and range, so the
result feeds ``digits_input`` like clean data.
"""

from __future__ import annotations

import numpy as np

KINDS = ("noise", "contrast", "translate", "blur")


def corrupt(images: np.ndarray, kind: str, severity: float = 1.0, seed: int = 0) -> np.ndarray:
    """``images`` [N, 8, 8] uint8 0..16, shifted by ``kind`` at ``severity`` (0 = clean, 1 = strong)."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (8, 8):
        raise ValueError(f"digit images must be [N, 8, 8], got {list(x.shape)}")
    rng = np.random.default_rng(seed)
    if kind == "noise":  # sensor noise
        x = x + rng.normal(0.0, 4.0 * severity, x.shape)
    elif kind == "contrast":  # a washed-out sensor: ink fades toward a grey background
        x = x * (1.0 - 0.6 * severity) + 6.0 * severity
    elif kind == "translate":  # the object is off-centre by up to 2 pixels
        shift = max(1, round(2 * severity))
        out = np.zeros_like(x)
        for i in range(len(x)):
            dy, dx = rng.integers(-shift, shift + 1, 2)
            out[i] = np.roll(np.roll(x[i], dy, axis=0), dx, axis=1)
        x = out
    elif kind == "blur":  # defocus: a 3x3 box blur mixed in
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
        box = sum(padded[:, 1 + dy : 9 + dy, 1 + dx : 9 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
        x = (1 - severity) * x + severity * box
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(KINDS)}")
    return np.clip(np.round(x), 0, 16).astype(np.uint8)
