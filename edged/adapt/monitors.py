"""Monitors: is the served data drifting, is the served model still faithful, is it still accurate?

Each monitor consumes observations as they come and returns a small record
when it has something to say; none of them acts. The controller reads their
records and decides. Thresholds come from the data, not from constants: the
drift threshold is the spread of the statistic between windows drawn from the
reference distribution itself.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edged.adapt.stats import (
    int8_histogram,
    js_divergence,
    kl_divergence,
    mean_output_kl,
    smoothed,
    wilson_lower_bound,
)


@dataclass
class DriftReading:
    """The drift statistic of one completed window of activations."""

    kl: float  # KL(current window || reference), nats
    js: float  # Jensen-Shannon between them, nats
    threshold: float  # KL above which a window counts as drifted
    drifted: bool  # the monitor's state after this window (with hysteresis)
    tripped: bool  # this window turned the state to drifted (and no cooldown held it back)
    window: int  # index of this window since the reference was set


class KlDriftMonitor:
    """Drift of int8 activations: KL and JS between a window's histogram and the reference.

    The first ``reference_windows`` windows of ``window`` samples define the
    reference distribution (their pooled histogram). Each of them is also
    compared, leave-one-out, with the pool of the others: those KL values are
    what windows of this size from the same distribution score, and the
    threshold is their mean plus ``z`` standard deviations (the deviation
    floored at a quarter of the mean, so a very regular reference does not
    make noise look like drift). The state turns to drifted after ``patience``
    windows above the threshold and back after ``patience`` windows below
    ``hysteresis`` times it; after a trip, ``cooldown`` windows pass before
    the next trip is reported.

    With ``value_bins`` set, the histogram is joint over (feature, value
    bucket): each feature gets ``value_bins`` buckets of its int8 range. That
    sees shifts that move values between features without changing their
    pooled distribution (a translated image); the pooled 256-bin histogram
    (``value_bins=None``) is cheaper and fits wide tensors.
    """

    def __init__(self, window: int = 256, reference_windows: int = 8, z: float = 4.0,
                 hysteresis: float = 0.7, patience: int = 2, cooldown: int = 8, alpha: float = 0.5,
                 value_bins: int | None = None) -> None:
        if window < 1 or reference_windows < 3:
            raise ValueError("drift monitor needs window >= 1 and at least 3 reference windows")
        if not 0 < hysteresis <= 1:
            raise ValueError(f"hysteresis must be in (0, 1], got {hysteresis}")
        self.window, self.reference_windows, self.z = window, reference_windows, z
        self.hysteresis, self.patience, self.cooldown, self.alpha = hysteresis, patience, cooldown, alpha
        if value_bins is not None and not 2 <= value_bins <= 256:
            raise ValueError(f"value_bins must be within [2, 256], got {value_bins}")
        self.value_bins = value_bins
        self._bins: int | None = None
        self.rebase()

    def rebase(self) -> None:
        """Forget the reference: the next windows define a new one (after an adaptation)."""
        self._reference: list[np.ndarray] = []
        self._pool: np.ndarray | None = None
        self.threshold: float | None = None
        self._current: np.ndarray | None = None
        self._filled = 0
        self._windows = 0
        self._above = self._below = 0
        self._cooldown_left = 0
        self.drifted = False

    @property
    def calibrated(self) -> bool:
        return self.threshold is not None

    def observe(self, activations: np.ndarray) -> list[DriftReading]:
        """Add a batch of int8 activations [batch, ...]; returns a reading per window it completes."""
        a = np.asarray(activations)
        if a.dtype != np.int8 or a.ndim < 1 or a.shape[0] == 0:
            raise ValueError(f"drift monitor takes a non-empty int8 batch, got {a.dtype} {list(a.shape)}")
        readings = []
        rows = a.reshape(a.shape[0], -1)
        start = 0
        while start < rows.shape[0]:
            take = min(self.window - self._filled, rows.shape[0] - start)
            hist = self._histogram(rows[start : start + take])
            self._current = hist if self._current is None else self._current + hist
            self._filled += take
            start += take
            if self._filled == self.window:
                reading = self._close_window()
                if reading is not None:
                    readings.append(reading)
        return readings

    def _histogram(self, rows: np.ndarray) -> np.ndarray:
        if self.value_bins is None:
            return int8_histogram(rows)
        features = rows.shape[1]
        if self._bins is None:
            self._bins = features * self.value_bins
        elif self._bins != features * self.value_bins:
            raise ValueError(f"drift monitor saw {self._bins // self.value_bins} features, now {features}")
        bucket = (rows.astype(np.int64) + 128) * self.value_bins // 256
        flat = np.arange(features)[None, :] * self.value_bins + bucket
        return np.bincount(flat.reshape(-1), minlength=self._bins).astype(np.int64)

    def _close_window(self) -> DriftReading | None:
        counts, self._filled, self._current = self._current, 0, None
        if not self.calibrated:
            self._reference.append(counts)
            if len(self._reference) == self.reference_windows:
                self._calibrate()
            return None
        self._windows += 1
        p, q = smoothed(counts, self.alpha), smoothed(self._pool, self.alpha)
        kl, js = kl_divergence(p, q), js_divergence(p, q)
        tripped = False
        if kl > self.threshold:
            self._above, self._below = self._above + 1, 0
        elif kl < self.threshold * self.hysteresis:
            self._below, self._above = self._below + 1, 0
        if not self.drifted and self._above >= self.patience and self._cooldown_left == 0:
            self.drifted = tripped = True
            self._cooldown_left = self.cooldown
        else:
            if self.drifted and self._below >= self.patience:
                self.drifted = False
            self._cooldown_left = max(0, self._cooldown_left - 1)
        return DriftReading(kl, js, self.threshold, self.drifted, tripped, self._windows)

    def _calibrate(self) -> None:
        ref = np.stack(self._reference)
        k = len(ref)
        # Pools are averaged to one window's mass so smoothing weighs them like
        # a single window: otherwise a pool of k windows would look sharper
        # than any window drawn from it, and the statistic would be biased.
        self._pool = ref.mean(axis=0)
        total = ref.sum(axis=0)
        loo = [kl_divergence(smoothed(h, self.alpha), smoothed((total - h) / (k - 1), self.alpha))
               for h in ref]
        mean, std = float(np.mean(loo)), float(np.std(loo, ddof=1))
        self.threshold = mean + self.z * max(std, 0.25 * mean, 1e-9)
        self.reference_kl = loo


@dataclass
class FidelityReading:
    samples: int
    agreement: float  # top-1 agreement of the served model with the dense master
    agreement_lower: float  # its Wilson lower bound (95 %)
    output_kl: float  # mean KL(master || served) of the softmax outputs
    agreement_upper: float = 1.0  # its Wilson upper bound (95 %)

    def breached(self, floor: float, kl_budget: float, min_samples: int = 50) -> bool:
        """Evidence that the served model is below the agreement floor (even its upper bound is)
        or above the KL budget. A validation gate asks the opposite question (is the lower bound
        above the floor?); asking it here would roll back good models on sampling noise."""
        return self.samples >= min_samples and (self.agreement_upper < floor or self.output_kl > kl_budget)


class FidelityMonitor:
    """Shadow comparison of the served model with the dense master over a sliding window."""

    def __init__(self, window: int = 1000) -> None:
        self._agree: deque[bool] = deque(maxlen=window)
        self._kl: deque[float] = deque(maxlen=window)

    def reset(self) -> None:
        self._agree.clear()
        self._kl.clear()

    def observe(self, served: np.ndarray, master: np.ndarray) -> FidelityReading:
        """Outputs [batch, classes] of both models on the same inputs (dequantized or raw logits)."""
        s, m = np.asarray(served, np.float64), np.asarray(master, np.float64)
        if s.shape != m.shape or s.ndim != 2 or s.shape[0] == 0:
            raise ValueError(
                f"fidelity needs two [batch, classes] outputs, got {list(s.shape)} and {list(m.shape)}"
            )
        agree = np.argmax(s, axis=1) == np.argmax(m, axis=1)
        for i in range(s.shape[0]):
            self._agree.append(bool(agree[i]))
            self._kl.append(mean_output_kl(m[i : i + 1], s[i : i + 1]))
        return self.reading()

    def reading(self) -> FidelityReading:
        n = len(self._agree)
        k = sum(self._agree)
        return FidelityReading(n, k / n if n else 1.0, wilson_lower_bound(k, n) if n else 0.0,
                               float(np.mean(self._kl)) if n else 0.0,
                               1.0 - wilson_lower_bound(n - k, n) if n else 1.0)


@dataclass
class AccuracyReading:
    samples: int
    accuracy: float
    accuracy_lower: float


class AccuracyMonitor:
    """Accuracy from client feedback (labels of served predictions), over a sliding window."""

    def __init__(self, classes: int, window: int = 1000) -> None:
        if classes < 2:
            raise ValueError(f"accuracy needs at least 2 classes, got {classes}")
        self.classes = classes
        self._hits: deque[bool] = deque(maxlen=window)

    def record(self, predicted: int, label: int) -> AccuracyReading:
        """One labelled prediction; a label outside [0, classes) raises ValueError (the caller counts it)."""
        if not 0 <= int(label) < self.classes:
            raise ValueError(f"label {label} is outside the model's {self.classes} classes")
        self._hits.append(int(predicted) == int(label))
        return self.reading()

    def reset(self) -> None:
        """Forget the window: its predictions came from a version no longer served."""
        self._hits.clear()

    def reading(self) -> AccuracyReading:
        n, k = len(self._hits), sum(self._hits)
        return AccuracyReading(n, k / n if n else 0.0, wilson_lower_bound(k, n))
