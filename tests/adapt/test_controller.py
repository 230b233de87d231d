"""The pruning controller end to end without the network: real engines, real taps, fake daemon."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from edged.adapt.controller import Controller, State
from edged.config import AdaptSection
from edged.corruptions import corrupt
from edged.data import default_model_path, digits_input, load_digits_test
from edged.model.tflite import read_tflite
from edged.runtime.native import NativeEngine


@dataclasses.dataclass
class FakeServed:
    version: str
    engines: list
    content: bytes
    batch1_us: float = 20.0


class FakeDaemon:
    """What the controller needs from App: the served model and a deploy that swaps it."""

    def __init__(self, content: bytes) -> None:
        self.model = self._load(content, "v1")
        self.deployed: list[tuple[str, dict]] = []

    def _load(self, content: bytes, version: str) -> FakeServed:
        return FakeServed(version, [NativeEngine(read_tflite(content), version)], content)

    def deploy(self, content: bytes, made_by: dict) -> FakeServed:
        version = f"v{len(self.deployed) + 2}"
        self.deployed.append((version, made_by))
        self.model = self._load(content, version)
        return self.model


class Traffic:
    """Serves batches of digits from a background thread, like clients would."""

    def __init__(self, daemon: FakeDaemon) -> None:
        self.daemon = daemon
        images, self.labels = load_digits_test()
        self.images = images
        self.shift = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def batch(self, rng) -> np.ndarray:
        idx = rng.integers(0, len(self.images), 8)
        imgs = self.images[idx]
        if self.shift:
            imgs = corrupt(imgs, self.shift, 1.0, seed=int(rng.integers(1 << 30)))
        engine = self.daemon.model.engines[0]
        spec = engine.inputs[0]
        return digits_input(imgs, spec.dtype, spec.scale, spec.zero_point, spec.shape)

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        while not self._stop.is_set():
            engine = self.daemon.model.engines[0]
            engine.infer([self.batch(rng)])
            time.sleep(0.001)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


# The whole cycle, fine-tuning included (its labelled side: tests/train/test_controller_finetune.py).
CFG = AdaptSection(enabled=True, strategy="magnitude", kl_budget=0.05, block="1x1", sample_rate=1.0,
                   window=128, calib_samples=256, collect_timeout_s=20, min_interval_s=0, probation_s=2,
                   fidelity_floor=0.8)


def run_until(ctrl: Controller, done, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        ctrl.step()
        time.sleep(0.05)
    assert done(), [e.line() for e in ctrl.events]


def test_drift_triggers_a_validated_swap_recorded_with_lineage():
    content = default_model_path("digits_mlp").read_bytes()
    daemon = FakeDaemon(content)
    ctrl = Controller(content, CFG, current=lambda: daemon.model, deploy=daemon.deploy)
    ctrl.attach(daemon.model)
    with Traffic(daemon) as traffic:
        run_until(ctrl, lambda: ctrl.watch.drift.calibrated)
        traffic.shift = "contrast"
        run_until(ctrl, lambda: any(e.kind in ("swapped", "rejected", "aborted") for e in ctrl.events))
        kinds = [e.kind for e in ctrl.events]
        assert kinds[kinds.index("trigger"):][:5] == ["trigger", "collected", "trained", "pruned",
                                                       kinds[kinds.index("pruned") + 1]]
        trigger = next(e for e in ctrl.events if e.kind == "trigger")
        assert trigger.numbers["trigger"] == "drift"
        assert "swapped" in kinds, [e.line() for e in ctrl.events]  # its time: bench/adapt.py --only cycle
        if "swapped" in kinds:
            _version, made_by = daemon.deployed[-1]
            assert made_by["strategy"] == "magnitude" and made_by["kl"] <= CFG.kl_budget
            assert made_by["validation"]["agreement_lower"] >= CFG.fidelity_floor
            assert made_by["kl_curve"] and made_by["parent_sha256"]
            assert daemon.model.engines[0].taps is ctrl.taps  # the new version is tapped too
            assert ctrl.state == State.PROBATION
            run_until(ctrl, lambda: ctrl.state == State.SERVING)
            after = [e.kind for e in ctrl.events][kinds.index("swapped") + 1:]
            assert after and after[0] in ("kept", "rolled_back"), [e.line() for e in ctrl.events]


def test_bad_candidate_in_probation_is_rolled_back():
    content = default_model_path("digits_mlp").read_bytes()
    daemon = FakeDaemon(content)
    ctrl = Controller(content, dataclasses.replace(CFG, probation_s=30), current=lambda: daemon.model,
                      deploy=daemon.deploy)
    ctrl.attach(daemon.model)
    # Serve a wrecked model as if an adaptation had swapped it in.
    from edged.adapt.calibration import Calibration
    from edged.adapt.compress import Compressor, MagnitudeStrategy
    from edged.model.tflite import write_tflite
    from edged.sparse.block_csr import BlockShape

    images, _ = load_digits_test()
    spec = daemon.model.engines[0].inputs[0]
    x = digits_input(images[:64], spec.dtype, spec.scale, spec.zero_point, spec.shape)
    comp = Compressor(read_tflite(content), Calibration(x), MagnitudeStrategy(), BlockShape(16, 4))
    bad = write_tflite(comp.candidate({0: 0.97, 1: 0.97}))
    daemon.deploy(bad, {"test": "bad"})
    ctrl.attach(daemon.model)
    ctrl._previous, ctrl._serving_content = content, bad
    ctrl.state = State.PROBATION
    ctrl._probation_until = ctrl.clock() + 30
    with Traffic(daemon):
        run_until(ctrl, lambda: any(e.kind == "rolled_back" for e in ctrl.events))
    assert daemon.deployed[-1][1]["rollback"] is True
    assert daemon.model.content == content and ctrl.state == State.SERVING


def test_crash_inside_an_adaptation_keeps_serving_and_backs_off(monkeypatch):
    content = default_model_path("digits_mlp").read_bytes()
    daemon = FakeDaemon(content)
    ctrl = Controller(content, CFG, current=lambda: daemon.model, deploy=daemon.deploy)
    ctrl.attach(daemon.model)

    def boom(*_a, **_k):
        raise RuntimeError("retrainer exploded")

    monkeypatch.setattr("edged.adapt.controller.Controller._pool", boom)
    with Traffic(daemon):
        assert ctrl.adapt("timer", "test") == "error"
    error = [e for e in ctrl.events if e.kind == "error"][-1]
    assert "retrainer exploded" in error.numbers["error"] and ctrl._backoff > 0
    assert ctrl.state == State.SERVING and daemon.deployed == []
    assert not ctrl._may_adapt()


def test_collect_times_out_without_traffic():
    content = default_model_path("digits_mlp").read_bytes()
    daemon = FakeDaemon(content)
    ctrl = Controller(content, dataclasses.replace(CFG, collect_timeout_s=0.2), current=lambda: daemon.model,
                      deploy=daemon.deploy)
    assert ctrl.adapt("timer", "test") == "aborted"
    assert "samples arrived" in ctrl.events[-1].reason


def test_models_it_cannot_adapt_are_refused():
    from edged.errors import EdgedError
    from edged.model.builder import GraphBuilder
    from edged.model.tflite import write_tflite

    b = GraphBuilder()
    x = b.input("x", np.float32, (1, 4))
    y = b.tensor("y", np.float32, (1, 4))
    b.op("LOGISTIC", [x], [y])
    b.output(y)
    with pytest.raises(EdgedError, match="int8 input"):
        Controller(write_tflite(b.build()), CFG, current=lambda: None, deploy=lambda c, m: None)


@pytest.mark.parametrize("strategy", ["hmatrix", "pattern"])
def test_other_strategies_adapt_through_the_same_cycle(strategy):
    content = default_model_path("digits_mlp").read_bytes()
    daemon = FakeDaemon(content)
    cfg = dataclasses.replace(CFG, strategy=strategy, kl_budget=0.1, fidelity_floor=0.5)
    ctrl = Controller(content, cfg, current=lambda: daemon.model, deploy=daemon.deploy)
    ctrl.attach(daemon.model)
    with Traffic(daemon):
        outcome = ctrl.adapt("timer", "test")
    assert outcome in ("swapped", "rejected"), [e.line() for e in ctrl.events]
    pruned = next(e for e in ctrl.events if e.kind == "pruned")
    assert pruned.numbers["kl"] <= 0.1
    if outcome == "swapped" and strategy == "hmatrix":  # adapting on the native engine: the op itself
        served = daemon.model.engines[0].graph
        assert any(op.custom_code == "EDGED_HMATRIX" for op in served.operators)
    ctrl.stop()


def test_the_cycle_reconstructs_the_pruned_candidate_on_the_tapped_window():
    """prune -> reconstruct -> fine-tune -> validate -> swap: fine-tuning starts from the reconstructed
    candidate, closer to the master than its masks alone, and each phase's time is in the swap's event."""
    content = default_model_path("digits_mlp").read_bytes()
    daemon = FakeDaemon(content)
    ctrl = Controller(content, dataclasses.replace(CFG, kl_budget=0.1), current=lambda: daemon.model,
                      deploy=daemon.deploy)
    ctrl.attach(daemon.model)
    with Traffic(daemon) as traffic:
        traffic.shift = "noise"
        outcome = ctrl.adapt("timer", "test")
    ctrl.stop()
    lines = [e.line() for e in ctrl.events]
    kinds = [e.kind for e in ctrl.events]
    assert kinds[kinds.index("pruned") + 1] == "reconstructed", lines
    rebuilt = next(e for e in ctrl.events if e.kind == "reconstructed").numbers
    assert rebuilt["kept"] and rebuilt["kl_after"] < rebuilt["kl_before"] / 2, lines
    assert outcome == "swapped", lines
    made_by = daemon.deployed[-1][1]
    assert made_by["reconstructed"] and made_by["kl"] <= rebuilt["kl_after"] < made_by["pruned_kl"]
    tuned = next(e for e in ctrl.events if e.kind == "finetuned").numbers  # from the reconstructed one
    assert tuned["kl_before"] == rebuilt["kl_after"]
    assert kinds.index("finetuned") > kinds.index("reconstructed")
    swapped = next(e for e in ctrl.events if e.kind == "swapped").numbers
    phases = ("collect_s", "score_s", "prune_s", "reconstruct_s", "finetune_s", "validate_s", "swap_s",
              "worker_other_s")
    assert all(swapped[p] >= 0 for p in phases), swapped
    assert sum(swapped[p] for p in phases) <= swapped["cycle_s"] + 1e-6


def test_probation_judges_only_rows_the_new_version_served():
    """Rows tapped while a cycle ran were served by the version before the swap: the monitors skip
    them, so probation and the rebuilt drift reference see the new version's traffic alone."""
    content = default_model_path("digits_mlp").read_bytes()
    daemon = FakeDaemon(content)
    ctrl = Controller(content, CFG, current=lambda: daemon.model, deploy=daemon.deploy)
    ctrl.attach(daemon.model)
    traffic = Traffic(daemon)
    deploy = daemon.deploy

    def quiet_deploy(candidate: bytes, made_by: dict):
        traffic.__exit__()  # nothing is served from here on but the rows below
        return deploy(candidate, made_by)

    ctrl.deploy_fn = quiet_deploy
    with traffic:
        traffic.shift = "noise"
        outcome = ctrl.adapt("timer", "test")
    ctrl.stop()
    assert outcome == "swapped", [e.line() for e in ctrl.events]
    assert ctrl.taps.total(ctrl.input_tensor) > 2 * 128  # a backlog served by the master while it ran
    rows = traffic.batch(np.random.default_rng(1))
    daemon.model.engines[0].infer([np.concatenate([rows, rows])])  # 16 rows served by the new version
    ctrl.step()
    assert ctrl.watch.fidelity.reading().samples == 16
    assert ctrl.watch.drift._filled == 16 and not ctrl.watch.drift.calibrated
