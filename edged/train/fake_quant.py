"""8-bit fake quantisation with a straight-through estimator.

The forward pass rounds a float tensor onto the int8 grid it will have in the
exported model and maps it back to float; the backward pass treats the
rounding as the identity (straight through) and clipping as what it is: no
gradient reaches a value the int8 range cuts off. Weights are quantized the
way ``edged.adapt.requantize.set_float_weights`` will quantize them at export
(symmetric per output channel, [-127, 127], scale from each channel's peak),
so the model trained is the model written.
"""

from __future__ import annotations

import numpy as np

QMAX_WEIGHT = 127


def fake_quant_activation(x: np.ndarray, scale: float, zero_point: int,
                          qmin: int = -128, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """``x`` on the affine int8 grid (scale, zero point) and the mask of values inside its range."""
    low = (qmin - zero_point) * scale
    high = (qmax - zero_point) * scale
    inside = (x >= low) & (x <= high)
    q = np.clip(np.rint(x / scale) + zero_point, qmin, qmax)
    return ((q - zero_point) * scale).astype(x.dtype, copy=False), inside


def weight_scales(w: np.ndarray) -> np.ndarray:
    """Per output channel (axis 0) symmetric scale: peak / 127, rounded to float32 like the file's."""
    peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    return np.where(peak > 0, peak / QMAX_WEIGHT, 1.0).astype(np.float32).astype(w.dtype)


def fake_quant_weights(w: np.ndarray) -> np.ndarray:
    """``w`` rounded onto its own per-channel int8 grid; the gradient passes straight through
    (no value is clipped: the scale comes from each channel's own peak)."""
    scales = weight_scales(w).reshape((-1,) + (1,) * (w.ndim - 1))
    return np.clip(np.rint(w / scales), -QMAX_WEIGHT, QMAX_WEIGHT) * scales
