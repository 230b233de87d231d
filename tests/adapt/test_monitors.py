"""Monitors on known distributions: drift detected when it happens, quiet when it does not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edged.adapt.monitors import AccuracyMonitor, FidelityMonitor, KlDriftMonitor
from edged.adapt.stats import int8_histogram, js_divergence, kl_divergence, smoothed, wilson_lower_bound


def gaussian_int8(rng, n, features=64, mean=0.0, std=20.0):
    return np.clip(np.round(rng.normal(mean, std, (n, features))), -128, 127).astype(np.int8)


def test_divergences_of_known_distributions():
    p = np.array([0.5, 0.5])
    q = np.array([0.9, 0.1])
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1))
    assert kl_divergence(p, p) == 0.0
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(math.log(2))
    h = int8_histogram(np.array([-128, -128, 0, 127], np.int8))
    assert h[0] == 2 and h[128] == 1 and h[255] == 1 and h.sum() == 4
    assert smoothed(np.zeros(256)).min() > 0


def test_wilson_bound_matches_the_formula():
    assert wilson_lower_bound(50, 100) == pytest.approx(0.4038, abs=1e-4)
    assert wilson_lower_bound(100, 100) == pytest.approx(0.9630, abs=1e-4)
    assert wilson_lower_bound(0, 0) == 0.0
    with pytest.raises(ValueError):
        wilson_lower_bound(5, 3)


def test_same_distribution_stays_quiet():
    rng = np.random.default_rng(0)
    mon = KlDriftMonitor(window=256, reference_windows=8)
    readings = []
    for _ in range(60):
        readings += mon.observe(gaussian_int8(rng, 64))
    assert mon.calibrated and len(readings) == 60 * 64 // 256 - 8
    assert not any(r.tripped for r in readings)


@pytest.mark.parametrize("shift", [dict(mean=8.0), dict(std=30.0)])
def test_shift_is_detected_within_a_few_windows(shift):
    rng = np.random.default_rng(1)
    mon = KlDriftMonitor(window=256, reference_windows=8, patience=2)
    for _ in range(8 * 4):
        assert mon.observe(gaussian_int8(rng, 64)) == []
    readings = []
    for _ in range(4 * 4):
        readings += mon.observe(gaussian_int8(rng, 64, **shift))
    trips = [r.window for r in readings if r.tripped]
    assert trips and trips[0] <= 3 and readings[-1].drifted
    assert all(r.kl > r.threshold for r in readings[:2]) and readings[0].js > 0


def test_hysteresis_cooldown_and_rebase():
    rng = np.random.default_rng(2)
    mon = KlDriftMonitor(window=128, reference_windows=4, patience=1, cooldown=3)
    mon.observe(gaussian_int8(rng, 128 * 4))
    r = mon.observe(gaussian_int8(rng, 128, mean=30.0))
    assert r[0].tripped and mon.drifted
    r = mon.observe(gaussian_int8(rng, 128 * 2))  # back to normal: state clears below the hysteresis band
    assert not mon.drifted
    r = mon.observe(gaussian_int8(rng, 128, mean=30.0))  # within the cooldown: no new trip
    assert not r[0].tripped
    mon.rebase()
    assert not mon.calibrated


def test_constant_activations_do_not_crash_or_trip():
    mon = KlDriftMonitor(window=32, reference_windows=3)
    x = np.full((32, 8), 5, np.int8)
    readings = []
    for _ in range(10):
        readings += mon.observe(x)
    assert mon.threshold > 0 and not any(r.tripped for r in readings)
    with pytest.raises(ValueError, match="non-empty int8"):
        mon.observe(np.zeros((0, 8), np.int8))
    with pytest.raises(ValueError, match="non-empty int8"):
        mon.observe(np.zeros((4, 8), np.float32))


def test_fidelity_agreement_and_kl():
    rng = np.random.default_rng(3)
    master = rng.normal(size=(200, 10))
    mon = FidelityMonitor(window=100)
    same = mon.observe(master[:100], master[:100])
    assert same.agreement == 1.0 and same.output_kl == pytest.approx(0.0, abs=1e-12)
    assert not same.breached(floor=0.9, kl_budget=0.01)
    noisy = mon.observe(master[100:] + rng.normal(0, 3, (100, 10)), master[100:])
    assert noisy.samples == 100 and noisy.agreement < 0.7 and noisy.output_kl > 0.1
    assert noisy.breached(floor=0.9, kl_budget=0.05)
    with pytest.raises(ValueError):
        mon.observe(master[:3], master[:4])


def test_accuracy_from_feedback():
    mon = AccuracyMonitor(classes=10, window=4)
    for pred, label in [(1, 1), (2, 3), (4, 4), (5, 5), (6, 6), (7, 7)]:
        reading = mon.record(pred, label)
    assert reading.samples == 4 and reading.accuracy == 1.0  # the window slid past the miss
    with pytest.raises(ValueError, match="outside"):
        mon.record(1, 10)


def test_joint_histogram_sees_a_translation_the_pooled_one_misses():
    rng = np.random.default_rng(5)
    base = gaussian_int8(rng, 4096, features=16, std=30.0)
    base[:, :8] = np.abs(base[:, :8])  # left half bright, right half dark: position matters
    base[:, 8:] = -np.abs(base[:, 8:])
    moved = np.roll(base, 8, axis=1)  # same values, other features
    for bins, should_trip in ((None, False), (16, True)):
        mon = KlDriftMonitor(window=256, reference_windows=8, patience=1, value_bins=bins)
        mon.observe(base[: 256 * 8])
        readings = mon.observe(moved[: 256 * 4])
        assert any(r.tripped for r in readings) == should_trip
