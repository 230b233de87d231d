"""What the served traffic says about the model: reasons to adapt, and a reason to roll back.

``TriggerWatch`` feeds the monitors (edged.adapt.monitors) from the serving
side: the rows the activation taps copied since its last look (input drift;
the served version's fidelity to the dense master), the feedback log's new
labels (feedback accuracy, and the labelled rows adaptations learn from), the
served model's batch-1 time, the CPU load and temperature (resource pressure),
and the time since the last adaptation. It reports what it saw as a
``Trigger`` and never acts: the controller (edged.adapt.controller) decides
whether to adapt, roll back or wait, and what a trigger does to the KL budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edged.adapt.compress import output_probabilities
from edged.adapt.monitors import (
    AccuracyMonitor,
    DriftReading,
    FidelityMonitor,
    FidelityReading,
    KlDriftMonitor,
)
from edged.adapt.taps import Taps, TapSpec
from edged.adapt.validation import LabelledRows
from edged.config import AdaptSection
from edged.model.ir import Graph


@dataclass
class Trigger:
    """A reason to adapt, from one watch: drift, fidelity, accuracy, pressure or timer."""

    kind: str
    reason: str
    # The monitor's record behind it (drift and fidelity): a fidelity breach in probation rolls back.
    reading: DriftReading | FidelityReading | None = None


class TriggerWatch:
    """The taps and monitors of one served model family, and the feedback log's labels."""

    def __init__(
        self, master: Graph, master_engine: Any, cfg: AdaptSection, *, current: Callable[[], Any],
        feedback: Any = None, metrics: Any = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.master, self.master_engine, self.cfg = master, master_engine, cfg
        self.current, self.feedback, self.metrics, self.clock = current, feedback, metrics, clock
        self.input_tensor, self.output_tensor = master.inputs[0], master.outputs[0]
        # The model input and output are all the loop reads: layer statistics are recomputed from
        # the master on collected inputs, so they stay right whatever version is serving.
        specs = [TapSpec(t, master.tensors[t].name, int(np.prod(master.tensors[t].shape[1:])))
                 for t in (self.input_tensor, self.output_tensor)]
        self.taps = Taps(specs, cfg.sample_rate, cfg.tap_memory_bytes)
        features = int(np.prod(master.input_tensors[0].shape[1:]))
        # Joint (pixel, value) histograms see shifts that only move values around (translation)
        # while the pooled histogram would not; wide inputs use the pooled one.
        self.drift = KlDriftMonitor(window=cfg.window, value_bins=16 if features * 16 <= 1 << 16 else None)
        self.fidelity = FidelityMonitor(window=max(64, cfg.window))
        classes = int(np.prod(master.output_tensors[0].shape[1:]))
        self.accuracy = AccuracyMonitor(max(classes, 2), window=max(64, cfg.window))
        self.last_drift: DriftReading | None = None
        # Labelled feedback rows: the watch gathers them, adaptations train and judge on them.
        self.labelled = LabelledRows(master.input_tensors[0].shape[1:], master.input_tensors[0].dtype)
        self._seen = 0  # tapped rows already looked at
        self._feedback_seen = 0

    # ------------------------------------------------------------ the served rows

    def traffic_trigger(self, judge_fidelity: bool, kl_budget: float) -> Trigger | None:
        """Drift and, when ``judge_fidelity``, fidelity on the rows served since the last look. A
        fidelity breach wins over drift (its trigger carries the breaching reading)."""
        fresh = self._fresh_rows()
        if fresh is None:
            return None
        x, y = fresh
        trigger = None
        for reading in self.drift.observe(x):
            self.last_drift = reading
            if self.metrics is not None:
                self.metrics.drift(reading.kl, reading.js)
            if reading.tripped:
                why = f"input KL {reading.kl:.4f} > threshold {reading.threshold:.4f}"
                trigger = trigger or Trigger("drift", why, reading)
        if judge_fidelity:
            # log-probabilities: the monitor's softmax gives the probabilities back
            served = np.log(self._probs(self._dequantize(y)))
            reading = self.fidelity.observe(served, np.log(self._probs(self._master_outputs(x))))
            if self.metrics is not None:
                self.metrics.fidelity(reading.agreement, reading.output_kl)
            if reading.breached(self.cfg.fidelity_floor, 4 * kl_budget):
                trigger = Trigger("fidelity", f"agreement upper bound {reading.agreement_upper:.3f} < "
                                  f"{self.cfg.fidelity_floor}", reading)
        return trigger

    def _fresh_rows(self) -> tuple[np.ndarray, np.ndarray] | None:
        total, (x, y) = self.taps.since(self._seen, [self.input_tensor, self.output_tensor])
        self._seen = total
        if len(x) == 0:
            return None
        shape = self.master.input_tensors[0].shape[1:]
        return x.reshape((-1, *shape)), y

    def mark_seen(self, total: int) -> None:
        """Rows up to tap count ``total`` were taken by an adaptation: the monitors skip them."""
        self._seen = max(self._seen, total)

    def restart(self) -> None:
        """After a swap or rollback: the monitors start from the rows the new version serves. The rows
        tapped while the cycle ran were served by the version before it: probation judged on them would
        pass or fail the wrong model, and the drift reference rebuilt from them in one long step
        (fidelity shadows every row) outlasted probation and, over hundreds of windows at once,
        tripped the freshly calibrated drift threshold: a new adaptation right after probation."""
        self._seen = self.taps.total(self.input_tensor)
        self.accuracy.reset()  # feedback accuracy of the version before would re-trigger at once
        self.fidelity.reset()
        self.drift.rebase()

    def _master_outputs(self, x: np.ndarray) -> np.ndarray:
        return self._dequantize(self.master_engine.infer([x])[0].reshape(len(x), -1))

    def _probs(self, values: np.ndarray) -> np.ndarray:
        return output_probabilities(self.master, values)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        q = self.master.output_tensors[0].quant
        return (y.astype(np.float64) - float(q.zero_point[0])) * float(q.scale[0])

    # ------------------------------------------------------------ feedback, resources, time

    def demand_trigger(self, last_adaptation: float) -> Trigger | None:
        """The first of: feedback accuracy below its floor, resource pressure, the timer (counted
        from ``last_adaptation``, on the watch's clock). Later ones are not looked at."""
        return self.feedback_trigger() or self._pressure_trigger() or self._timer_trigger(last_adaptation)

    def feedback_trigger(self) -> Trigger | None:
        """Record the feedback log's new labels (accuracy, and the labelled rows it kept inputs of)."""
        if self.feedback is None:
            return None
        self._feedback_seen, new = self.feedback.since(self._feedback_seen)
        reading = None
        for e in new:
            rows = self._feedback_rows(e)
            for k, (p, t) in enumerate(zip(e.predicted, e.label, strict=True)):
                try:
                    reading = self.accuracy.record(p, t)
                except ValueError:
                    if self.metrics is not None:
                        self.metrics.bad_labels.inc()
                    continue
                if rows is not None:
                    self.labelled.add(rows[k], int(t))
        if reading is not None and self.metrics is not None:
            self.metrics.accuracy(reading.accuracy)
        floor = self.cfg.accuracy_floor
        if reading is not None and floor > 0 and reading.samples >= 50 and reading.accuracy_lower < floor:
            why = f"feedback accuracy lower bound {reading.accuracy_lower:.3f} < {floor}"
            return Trigger("accuracy", why)
        return None

    def _feedback_rows(self, event: Any) -> np.ndarray | None:
        """The event's input rows in the model's input shape, if the feedback log kept them and they fit."""
        x = getattr(event, "inputs", None)
        spec = self.master.input_tensors[0]
        if x is None or x.dtype != spec.dtype or x.size != len(event.label) * int(np.prod(spec.shape[1:])):
            return None
        return x.reshape((len(event.label), *spec.shape[1:]))

    def _pressure_trigger(self) -> Trigger | None:
        cfg, why = self.cfg, None
        model = self.current()
        if cfg.latency_slo_us > 0 and getattr(model, "batch1_us", 0) > cfg.latency_slo_us:
            why = f"batch-1 time {model.batch1_us:.0f} us > SLO {cfg.latency_slo_us:.0f} us"
        if why is None and cfg.load_per_cpu > 0:
            load = os.getloadavg()[0] / (os.cpu_count() or 1)
            if load > cfg.load_per_cpu:
                why = f"load {load:.2f} per CPU > {cfg.load_per_cpu}"
        if why is None and cfg.cpu_temp_c > 0:
            temp = _hottest_sensor()
            if temp is not None and temp > cfg.cpu_temp_c:
                why = f"CPU at {temp:.0f} C > {cfg.cpu_temp_c:.0f} C"
        return None if why is None else Trigger("pressure", why)

    def _timer_trigger(self, last_adaptation: float) -> Trigger | None:
        period = self.cfg.period_s
        if period > 0 and self.clock() - last_adaptation >= period:
            return Trigger("timer", f"no adaptation for {period:.0f} s")
        return None


def _hottest_sensor() -> float | None:
    try:
        import psutil

        temps = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return None
    values = [t.current for entries in temps.values() for t in entries if t.current]
    return max(values) if values else None
