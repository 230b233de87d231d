"""The serving-side watch: which trigger a step reports, in which order, and what the controller does
to the KL budget for each; no adaptation runs here."""

from __future__ import annotations

import dataclasses

import numpy as np

from edged.adapt.controller import Controller
from edged.config import AdaptSection
from edged.data import default_model_path
from edged.serve.feedback import FeedbackLog

CFG = AdaptSection(enabled=True, kl_budget=0.05, max_kl_budget=0.1, min_interval_s=30)


@dataclasses.dataclass
class Served:
    batch1_us: float = 20.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def idle_controller(feedback=None, **changes) -> Controller:
    """A controller that has just adapted: its triggers are reported but none may start a cycle."""
    clock = Clock()
    ctrl = Controller(default_model_path("digits_mlp").read_bytes(), dataclasses.replace(CFG, **changes),
                      current=Served, deploy=lambda c, m: None, feedback=feedback, clock=clock)
    ctrl._last_adaptation = clock.now
    return ctrl


def wrong_labels(log: FeedbackLog, n: int) -> None:
    for i in range(n):
        log.record(str(i), "m", "1", np.zeros((1, 10), np.int8))  # predicts class 0
        log.match(str(i), 5)


def test_the_timer_counts_from_the_last_adaptation():
    ctrl = idle_controller(period_s=60)
    assert ctrl.watch.demand_trigger(ctrl._last_adaptation) is None
    ctrl.clock.now += 60
    trigger = ctrl.watch.demand_trigger(ctrl._last_adaptation)
    assert trigger.kind == "timer" and "60 s" in trigger.reason


def test_pressure_loosens_the_budget_up_to_its_ceiling_each_step():
    ctrl = idle_controller(latency_slo_us=10)
    assert ctrl.watch.demand_trigger(ctrl._last_adaptation).kind == "pressure"
    ctrl.step()
    assert np.isclose(ctrl.kl_budget, 0.075)
    ctrl.step()
    assert ctrl.kl_budget == CFG.max_kl_budget
    assert [e.kind for e in ctrl.events] == []  # min_interval_s holds every cycle back


def test_feedback_accuracy_comes_before_pressure_and_tightens_the_budget_down_to_an_eighth():
    log = FeedbackLog(4096)
    ctrl = idle_controller(log, latency_slo_us=10, accuracy_floor=0.5)
    wrong_labels(log, 60)
    ctrl.step()
    assert ctrl.kl_budget == CFG.kl_budget / 2  # the accuracy trigger, not pressure's raise
    assert ctrl.watch.accuracy.reading().samples == 60
    for _ in range(4):
        wrong_labels(log, 1)
        ctrl.step()
    assert ctrl.kl_budget == CFG.kl_budget / 8
