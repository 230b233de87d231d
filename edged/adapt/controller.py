"""The pruning controller: watch the served data, re-derive a sparse model from the dense master
when it pays, prove it, swap it in, and take it back if it degrades.

States: serving -> collecting -> training -> pruning (and reconstruction, fine-tuning) -> validating
-> swapping -> probation -> serving, with rollback from probation. One adaptation at a
time, at most one per ``min_interval_s``; every decision is an ``Event`` with
its reason and numbers, counted in metrics and, for swaps, written to the
model store's lineage. The controller never raises into the daemon: a crash
inside an adaptation is logged with its trace, counted, and backed off, and
the served model stays.

What the served traffic says comes from ``TriggerWatch`` (edged.adapt.triggers):
from activation taps (a sampled copy of the model input and output) and the
feedback log, a reason to adapt or, in probation, the fidelity breach that
rolls back. The controller acts only through ``deploy``, the daemon's
validated hot swap.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from edged.adapt.calibration import prunable_ops
from edged.adapt.monitors import FidelityReading
from edged.adapt.triggers import TriggerWatch
from edged.adapt.validation import Rows, Verdict, validation_job
from edged.adapt.worker import compress_job, init_worker
from edged.config import AdaptSection
from edged.errors import EdgedError
from edged.model.ir import Graph
from edged.model.rounding import configured_rounding
from edged.model.tflite import read_tflite, write_tflite
from edged.sparse.block_csr import BlockShape

log = logging.getLogger("edged.adapt")


class State(str, Enum):
    SERVING = "serving"
    COLLECTING = "collecting"
    TRAINING = "training"
    PRUNING = "pruning"
    VALIDATING = "validating"
    SWAPPING = "swapping"
    PROBATION = "probation"

    # Not enum.StrEnum (Python 3.11+): str() and f-strings give the bare value all the same.
    def __str__(self) -> str:
        return self.value


@dataclass
class Event:
    at: float  # time.time()
    kind: str  # trigger, collected, trained, pruned, validated, rejected, swapped, rolled_back, error, ...
    state: str
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        nums = ", ".join(f"{k}={_fmt(v)}" for k, v in self.numbers.items())
        return f"{self.kind:<11} [{self.state}] {self.reason}" + (f" ({nums})" if nums else "")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class AdaptationAbortedError(Exception):
    """An adaptation stopped for a reason that is not a bug (no data, rejected candidate)."""


class Controller:
    """Runs adaptations for one served model family; see the module docstring."""

    def __init__(
        self, master: bytes, cfg: AdaptSection, *, current: Callable[[], Any],
        deploy: Callable[[bytes, dict], Any], feedback=None, metrics=None,
        on_event: Callable[[Event], None] | None = None, clock: Callable[[], float] = time.monotonic,
        layout: str = "auto",
    ) -> None:
        self.cfg = cfg
        # The served model's native weight layout (model.layout): validation times a candidate, and
        # the version it would replace, as they are served.
        self.layout = layout
        self.master_bytes = master
        self.master: Graph = read_tflite(master, name="master")
        if self.master.input_tensors[0].dtype != np.int8 or self.master.output_tensors[0].dtype != np.int8:
            raise EdgedError("adaptation needs a model with int8 input and output tensors")
        if not prunable_ops(self.master):
            raise EdgedError("adaptation needs a model with FULLY_CONNECTED or CONV_2D layers to prune")
        from edged.runtime.native import NativeEngine

        self.master_engine = NativeEngine(self.master, "master", layout="dense")
        self.current, self.deploy_fn, self.metrics = current, deploy, metrics
        self.on_event = on_event
        self.clock = clock
        self.watch = TriggerWatch(self.master, self.master_engine, cfg, current=current, feedback=feedback,
                                  metrics=metrics, clock=clock)
        # The watch's taps also give an adaptation its fresh rows.
        self.taps, self.input_tensor = self.watch.taps, self.watch.input_tensor
        self.kl_budget = cfg.kl_budget
        self.state = State.SERVING
        self.events: deque[Event] = deque(maxlen=2000)
        self._last_adaptation = -float("inf")
        self._backoff = 0.0
        self._probation_until = 0.0
        self._serving_content = master  # bytes of the served version
        self._previous: bytes | None = None  # what probation rolls back to
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._block_choice: dict[int, BlockShape] | None = None
        self._workers: ProcessPoolExecutor | None = None
        # A version accepted for beating the master on labels disagrees with it on purpose: fidelity
        # to the master neither rolls it back nor triggers; feedback accuracy still watches it.
        self._judged_by_labels = False

    # ------------------------------------------------------------ wiring

    def attach(self, model: Any) -> None:
        """Tap every native engine of a served model (the master's tensors: same graph layout)."""
        for engine in getattr(model, "engines", []):
            if hasattr(engine, "taps"):
                engine.taps = self.taps

    def start(self) -> None:
        self.attach(self.current())
        self._thread = threading.Thread(target=self._loop, name="edged-adapt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None

    def _pool(self) -> ProcessPoolExecutor:
        """One worker process, started once (spawn: no forked copy of the serving threads)."""
        if self._workers is None:
            self._workers = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=init_worker,
                                                initargs=(self.cfg.nice, self.cfg.worker_threads,
                                                          configured_rounding()))
        return self._workers

    def _loop(self) -> None:
        try:  # lower this thread's priority only (Linux: a thread id is a process id to setpriority)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.cfg.nice)
        except (OSError, AttributeError) as exc:
            log.info("adaptation thread keeps the daemon's priority: %s", exc)
        try:  # measure the block-shape advice and start the worker now, not inside an adaptation
            self._blocks()
            self._pool().submit(int).result()
        except Exception:
            self._error("measuring block shapes", traceback.format_exc())
        while not self._stop.wait(0.1):
            try:
                self.step()
            except Exception:
                self._error("monitoring", traceback.format_exc())

    # ------------------------------------------------------------ events

    def _emit(self, kind: str, reason: str, **numbers: Any) -> Event:
        event = Event(time.time(), kind, self.state.value, reason, numbers)
        self.events.append(event)
        log.info("adapt %s", event.line())
        if self.metrics is not None:
            self.metrics.adaptation_event(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def _set_state(self, state: State) -> None:
        self.state = state
        if self.metrics is not None:
            self.metrics.adaptation_state(state.value)

    def _error(self, where: str, trace: str) -> None:
        self._backoff = min(max(2 * self._backoff, self.cfg.min_interval_s, 1.0), 3600.0)
        self._last_adaptation = self.clock()
        log.error("adaptation failed while %s; backing off %.0f s\n%s", where, self._backoff, trace)
        self._set_state(State.SERVING)
        self._emit("error", f"crash while {where}; still serving the current model",
                   backoff_s=self._backoff, error=trace.strip().splitlines()[-1])
        if self.metrics is not None:
            self.metrics.adaptations.labels("error").inc()

    # ------------------------------------------------------------ serving: what the watch reports

    def step(self) -> None:
        """One look at what was served since the last step; may run a whole adaptation."""
        judge_fidelity = not self._served_is_master and not self._judged_by_labels
        trigger = self.watch.traffic_trigger(judge_fidelity, self.kl_budget)
        if trigger is not None and trigger.kind == "fidelity" and self.state == State.PROBATION:
            self._rollback(trigger.reading)
            return
        if self.state == State.PROBATION and self.clock() >= self._probation_until:
            self._set_state(State.SERVING)
            self._emit("kept", "probation passed", agreement=self.watch.fidelity.reading().agreement)
        trigger = trigger or self.watch.demand_trigger(self._last_adaptation)
        if trigger is None:
            return
        # A model answering worse than it should asks for a candidate closer to the master;
        # resource pressure, for a sparser one.
        if trigger.kind in ("fidelity", "accuracy"):
            self._tighten_budget()
        elif trigger.kind == "pressure":
            self.kl_budget = min(self.kl_budget * 1.5, self.cfg.max_kl_budget)
        if self.state == State.SERVING and self._may_adapt():
            self.adapt(trigger.kind, trigger.reason)

    def _tighten_budget(self) -> None:
        self.kl_budget = max(self.kl_budget / 2, self.cfg.kl_budget / 8)

    def _may_adapt(self) -> bool:
        wait = max(self.cfg.min_interval_s, self._backoff)
        return self.clock() - self._last_adaptation >= wait

    # ------------------------------------------------------------ one adaptation

    def adapt(self, kind: str, reason: str) -> str:
        """Run one adaptation now; returns its outcome (swapped, rejected, aborted, error)."""
        self._last_adaptation = self.clock()
        self._emit("trigger", reason, trigger=kind, kl_budget=self.kl_budget)
        labelled = self.watch.labelled
        if kind == "drift" and len(labelled):
            # The inputs changed: labels of rows from before describe the old world, and a candidate
            # trained and judged on them would learn it. Labels of the new inputs refill the rows,
            # and the accuracy they show (accuracy_floor) triggers the cycle that learns from them.
            self._emit("labels_dropped", "labelled rows from before the drift", rows=len(labelled))
            labelled.clear()
        t0 = time.perf_counter()
        try:
            outcome = self._adapt(kind, t0)
        except AdaptationAbortedError as exc:
            outcome = "aborted"
            self._emit("aborted", str(exc))
        except Exception:
            self._error(self.state.value, traceback.format_exc())
            return "error"
        if self.state != State.PROBATION:
            self._set_state(State.SERVING)
        if outcome != "swapped":
            self._backoff = 0.0
        if self.metrics is not None:
            self.metrics.adaptations.labels(outcome).inc()
            self.metrics.adaptation_seconds.observe(time.perf_counter() - t0)
        return outcome

    def _adapt(self, kind: str, t0: float) -> str:
        cfg = self.cfg
        phases: dict[str, float] = {}  # wall seconds of each phase, in order
        self._set_state(State.COLLECTING)
        x = self._collect(cfg.calib_samples)
        held = max(8, len(x) // 4)
        calib, check = x[:-held], x[-held:]
        phases["collect"] = time.perf_counter() - t0
        self._emit("collected", "fresh window", samples=len(x), seconds=phases["collect"])

        # Training and pruning run in a worker process: they are numpy- and Python-heavy, and in
        # this process they would hold the GIL against the serving threads.
        self._set_state(State.TRAINING)
        (x_train, y_train), labelled_check = self.watch.labelled.split(cfg.min_labelled)
        pruning = cfg.strategy in ("magnitude", "wanda", "qsa")
        finetune = None
        if cfg.finetune and pruning:
            finetune = {"time_s": cfg.finetune_time_s, "memory_bytes": cfg.finetune_memory_bytes,
                        "label_weight": cfg.label_weight, "x": x_train, "y": y_train}
        t_job = time.perf_counter()
        job = self._pool().submit(compress_job, self.master_bytes, calib, cfg.strategy, self._blocks(),
                                  self.kl_budget, cfg.reconstruct and pruning, finetune)
        try:
            done = job.result(timeout=max(60.0, 10 * cfg.collect_timeout_s))
        except ValueError as exc:
            raise AdaptationAbortedError(f"no candidate: {exc}") from exc
        worker_s = time.perf_counter() - t_job
        if self.metrics is not None:
            self.metrics.training_seconds.observe(done["train_s"])
        phases["score"] = done["train_s"]
        self._emit("trained", f"{cfg.strategy} scores on {len(calib)} samples", seconds=done["train_s"])
        self._set_state(State.PRUNING)
        phases["prune"] = done["prune_s"]
        self._emit("pruned", "KL-budget search", sparsity=done["sparsity"], kl=done["pruned_kl"],
                   kl_budget=self.kl_budget, seconds=done["prune_s"], layers=done["layer_sparsity"])
        if "reconstruct" in done:
            phases["reconstruct"] = done["reconstruct"]["seconds"]
            self._emit("reconstructed", f"kept weights solved again on {len(calib)} samples",
                       **done["reconstruct"])
        if "finetune" in done:
            phases["finetune"] = done["finetune"]["seconds"]
            how = ("distillation" if not len(y_train) else
                   "feedback labels" if cfg.label_weight >= 1.0 else "feedback labels + distillation")
            self._emit("finetuned", how,
                       **done["finetune"])
        # Process start-up, transfers, and the worker's own reading and writing of the model.
        phases["worker_other"] = max(0.0, worker_s - sum(phases[k] for k in phases if k != "collect"))

        self._set_state(State.VALIDATING)
        t_check = time.perf_counter()
        verdict = self._validate(done["content"], check, labelled_check)
        phases["validate"] = time.perf_counter() - t_check
        numbers = verdict.numbers
        if not verdict.ok:
            self._emit("rejected", verdict.why, **numbers, cycle_s=time.perf_counter() - t0,
                       **_phase_numbers(phases))
            return "rejected"
        self._emit("validated", "held-back window", **numbers, seconds=phases["validate"])

        self._set_state(State.SWAPPING)
        t_swap = time.perf_counter()
        content = done["content"]
        previous = self._serving_content
        made_by = {
            "strategy": cfg.strategy, "trigger": kind, "kl_budget": self.kl_budget, "kl": done["kl"],
            "pruned_kl": done["pruned_kl"], "reconstructed": done.get("reconstruct", {}).get("kept", False),
            "sparsity": done["sparsity"], "layers": done["layers"], "kl_curve": done["curve"],
            "validation": numbers, "parent_sha256": _sha(previous),
        }
        model = self.deploy_fn(content, made_by)
        self.attach(model)
        self.watch.restart()
        self._previous, self._serving_content = previous, content
        self._judged_by_labels = verdict.judged_by_labels
        self._set_state(State.PROBATION)
        self._probation_until = self.clock() + cfg.probation_s
        phases["swap"] = time.perf_counter() - t_swap
        self._emit("swapped", f"serving version {getattr(model, 'version', '?')}", sparsity=done["sparsity"],
                   kl=done["kl"], cycle_s=time.perf_counter() - t0, **_phase_numbers(phases))
        return "swapped"

    def _collect(self, n: int) -> np.ndarray:
        """The next ``n`` tapped model inputs (rows arriving after this call)."""
        deadline = self.clock() + self.cfg.collect_timeout_s
        start_total = self.taps.total(self.input_tensor)
        while True:
            total = self.taps.total(self.input_tensor)
            if total - start_total >= n:
                break
            if self.clock() > deadline or self._stop.is_set():
                raise AdaptationAbortedError(f"only {total - start_total} of {n} samples arrived in "
                            f"{self.cfg.collect_timeout_s:.0f} s")
            time.sleep(0.02)
        _, (x,) = self.taps.since(total - n, [self.input_tensor])
        self.watch.mark_seen(total)
        return x.reshape((-1, *self.master.input_tensors[0].shape[1:]))

    def _blocks(self) -> dict[int, BlockShape] | BlockShape:
        if self.cfg.block != "auto":
            return BlockShape.parse(self.cfg.block)
        if self._block_choice is None:
            from edged.runtime.advice import fastest_blocks

            self._block_choice = fastest_blocks(self.master_engine.plan, prunable_ops(self.master), 0.8)
        return self._block_choice

    def _validate(self, candidate: Graph | bytes, x: np.ndarray, labelled: Rows | None = None) -> Verdict:
        """The candidate judged in the worker process (edged.adapt.validation): fidelity to the
        master on the held-back rows ``x`` or, with labelled rows held out of training, accuracy
        against the master's; and batch-1 latency against the served version."""
        content = candidate if isinstance(candidate, bytes) else write_tflite(candidate)
        job = self._pool().submit(validation_job, self.master_bytes, content, self._serving_content, x,
                                  labelled, self.cfg.fidelity_floor, self.kl_budget, self.layout)
        return job.result(timeout=max(60.0, 10 * self.cfg.collect_timeout_s))

    @property
    def _served_is_master(self) -> bool:
        return self._serving_content == self.master_bytes

    def _rollback(self, reading: FidelityReading) -> None:
        previous = self._previous or self.master_bytes
        self._set_state(State.SWAPPING)
        model = self.deploy_fn(previous, {"rollback": True, "agreement_upper": reading.agreement_upper,
                                          "output_kl": reading.output_kl})
        self.attach(model)
        self.watch.restart()
        self._serving_content, self._previous = previous, None
        self._judged_by_labels = False
        if self.metrics is not None and self._served_is_master:
            self.metrics.fidelity(1.0, 0.0)
        self._set_state(State.SERVING)
        self._tighten_budget()
        version = getattr(model, "version", "?")
        self._emit("rolled_back", f"fidelity fell in probation; serving version {version}",
                   agreement=reading.agreement, agreement_upper=reading.agreement_upper,
                   kl_budget=self.kl_budget)
        if self.metrics is not None:
            self.metrics.adaptations.labels("rolled_back").inc()


def _phase_numbers(phases: dict[str, float]) -> dict[str, float]:
    return {f"{name}_s": seconds for name, seconds in phases.items()}


def _sha(content: bytes) -> str:
    import hashlib

    return hashlib.sha256(content).hexdigest()

