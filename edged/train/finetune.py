"""Fine-tuning of a pruned int8 model on its float shadow, then back to int8.

Three signals, mixed per row:

* distillation (always): KL between the dense master's and the student's
  softened outputs (temperature T, scaled by T²), on tapped or calibration
  inputs: no labels needed;
* labels (feedback, or calibration ``y``): cross-entropy on the rows that have
  one (-1 marks a row without), weighted ``label_weight`` against
  ``1 - label_weight`` for distillation;
* optional pseudo-labels: unlabelled rows the master is at least
  ``pseudo_threshold`` sure of take its top class as a label.

A seeded share of the rows is held out; the held-out loss is measured before
the first step and after every epoch, and the parameters with the lowest one
are what is exported, so fine-tuning never returns a model worse on held-out
data than the one it was given. Training stops at the epoch limit, the time
budget, or when ``stop`` is set (``stop_on_sigterm`` sets it on SIGTERM), and
always exports the best checkpoint, re-quantized through
``edged.adapt.requantize``: an ordinary int8 model. Pruned weights stay
exactly zero throughout.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edged.adapt.reconstruct import check_calibration
from edged.errors import EdgedError
from edged.model.ir import Graph
from edged.train.graph import TrainGraph
from edged.train.optim import Adam


class LabelError(EdgedError):
    """Labels that do not fit the model or its inputs (count, dtype, class out of range)."""


class BudgetError(EdgedError):
    """A fine-tuning budget nothing can be done within."""


@dataclass
class FinetuneConfig:
    time_budget_s: float = 10.0
    memory_budget_bytes: int = 256 << 20
    # 30 epochs at 3e-3 with T = 4: at 1e-3 and 10 epochs a 90 % pruned digits CNN in 16x4 blocks was
    # still 2–5 points short of where these settings take it (bench/adapt.py --only finetune).
    epochs: int = 30
    batch: int = 64
    lr: float = 3e-3  # Adam
    temperature: float = 4.0
    label_weight: float = 0.5  # share of a labelled row's loss from its label
    pseudo_threshold: float | None = None  # master confidence that makes a pseudo-label; None = off
    recalibrate: bool = True  # measure activation ranges again on the data (drifted inputs clip)
    holdout: float = 0.2  # share of rows held out to pick the best checkpoint
    seed: int = 0


@dataclass
class FinetuneResult:
    graph: Graph  # the best checkpoint, re-quantized to int8
    initial_loss: float  # held-out loss of the model given
    best_loss: float  # held-out loss of the model returned
    steps: int
    epochs: int
    seconds: float
    stopped: str  # epochs, time, stop
    batch: int
    labelled: int  # training rows with a label (feedback or pseudo)
    pseudo: int
    history: list[float] = field(default_factory=list)  # held-out loss after each epoch

    @property
    def improved(self) -> bool:
        return self.best_loss < self.initial_loss


def check_labels(labels: np.ndarray | None, rows: int, classes: int) -> np.ndarray:
    """Labels as int64 [rows] with -1 for none, or LabelError saying what is wrong."""
    if labels is None:
        return np.full(rows, -1, dtype=np.int64)
    y = np.asarray(labels)
    if y.shape != (rows,):
        raise LabelError(f"labels are {list(y.shape)}; the inputs need {rows} labels, one per row")
    if y.dtype.kind not in "iu":
        raise LabelError(f"labels must be integers (-1 for none), got {y.dtype}")
    bad = (y < -1) | (y >= classes)
    if np.any(bad):
        raise LabelError(f"label {int(y[np.argmax(bad)])} is out of range: the model has {classes} classes "
                         "(0..{}; -1 marks a row without a label)".format(classes - 1))
    return y.astype(np.int64)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def loss_and_gradient(logits: np.ndarray, teacher: np.ndarray, labels: np.ndarray, temperature: float,
                      label_weight: float) -> tuple[float, np.ndarray]:
    """Mean over rows of (1 - a)·T²·KL(p_t ‖ p_s at T) + a·CE(label) (a = label_weight where the row has
    a label, else 0 and the KL term weighs 1 - label_weight as well), and its gradient in the logits."""
    t = temperature
    p_t = _softmax(teacher / t)
    log_s = np.log(np.maximum(_softmax(logits / t), 1e-30))
    p_s = np.exp(log_s)
    kl = np.sum(p_t * (np.log(np.maximum(p_t, 1e-30)) - log_s), axis=1) * t * t
    grad = (1.0 - label_weight) * t * (p_s - p_t)
    loss = (1.0 - label_weight) * kl
    has = labels >= 0
    if np.any(has):
        p = _softmax(logits[has])
        rows = np.arange(int(has.sum()))
        loss[has] += label_weight * -np.log(np.maximum(p[rows, labels[has]], 1e-30))
        p[rows, labels[has]] -= 1.0
        grad[has] += label_weight * p
    n = len(logits)
    return float(loss.sum() / n), (grad / n).astype(logits.dtype)


def _batch_size(student: TrainGraph, config: FinetuneConfig, fixed_bytes: int) -> int:
    """The largest batch up to ``config.batch`` the memory budget holds: parameters with their
    gradients, Adam moments and best copy, the data and teacher outputs, and per-row activations."""
    params = 5 * student.parameter_bytes() + fixed_bytes
    per_row = student.activation_bytes_per_row()
    room = config.memory_budget_bytes - params
    if room < per_row:
        raise BudgetError(f"a memory budget of {config.memory_budget_bytes} bytes cannot fine-tune this "
                          f"model: its parameters, optimizer state and data take {params} bytes, a row of "
                          f"activations {per_row}")
    return int(min(config.batch, room // per_row))


def finetune(student: Graph, teacher: Graph, x: np.ndarray, labels: np.ndarray | None = None,
             config: FinetuneConfig | None = None, stop: threading.Event | None = None,
             progress: Callable[[str], None] | None = None) -> FinetuneResult:
    """Fine-tune ``student`` (pruned; its zero weights stay zero) toward ``teacher`` (the dense master)
    and ``labels`` on inputs ``x``; see the module docstring."""
    cfg = config or FinetuneConfig()
    if cfg.time_budget_s <= 0:
        raise BudgetError(f"the fine-tuning time budget must be positive, got {cfg.time_budget_s}")
    if not 0 <= cfg.label_weight <= 1 or cfg.temperature <= 0 or not 0 < cfg.holdout < 1:
        raise ValueError("label_weight must be in [0, 1], temperature positive, holdout in (0, 1)")
    x = check_calibration(student, x)
    t0 = time.perf_counter()
    say = progress or (lambda _m: None)
    model = TrainGraph(student)
    master = TrainGraph(teacher)
    targets = master.predict(x)
    classes = targets.shape[1]
    y = check_labels(labels, len(x), classes).copy()
    pseudo = 0
    if cfg.pseudo_threshold is not None:
        confident = (y < 0) & (_softmax(targets).max(axis=1) >= cfg.pseudo_threshold)
        y[confident] = np.argmax(targets[confident], axis=1)
        pseudo = int(confident.sum())
    if len(x) < 4:
        raise BudgetError(f"fine-tuning needs at least 4 input rows, got {len(x)}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(x))
    held = order[: max(1, round(cfg.holdout * len(x)))]
    train = order[len(held) :]
    batch = _batch_size(model, cfg, x.nbytes + targets.nbytes)

    def held_loss() -> float:
        return loss_and_gradient(model.predict(x[held]), targets[held], y[held], cfg.temperature,
                                 cfg.label_weight)[0]

    initial = best = held_loss()
    best_params = model.snapshot()
    optimizer = Adam(lr=cfg.lr)
    steps = epochs = 0
    history: list[float] = []
    stopped = "epochs"
    for epoch in range(cfg.epochs):
        if stop is not None and stop.is_set():
            stopped = "stop"
            break
        if cfg.recalibrate:
            model.recalibrate(x[train])
        shuffled = train[rng.permutation(len(train))]
        for s in range(0, len(shuffled), batch):
            if stop is not None and stop.is_set():
                stopped = "stop"
                break
            if time.perf_counter() - t0 > cfg.time_budget_s:
                stopped = "time"
                break
            rows = shuffled[s : s + batch]
            logits = model.forward(x[rows], train=True)
            _, grad = loss_and_gradient(logits, targets[rows], y[rows], cfg.temperature, cfg.label_weight)
            optimizer.step(model.params, model.backward(grad), model.masks)
            steps += 1
        if stopped == "epochs":
            epochs = epoch + 1
        loss = held_loss()  # a partial last epoch counts too
        history.append(loss)
        say(f"epoch {epoch + 1}: held-out loss {loss:.4f} (best {min(best, loss):.4f})")
        if loss < best:
            best, best_params = loss, model.snapshot()
        if stopped != "epochs":
            break
    model.restore(best_params)
    return FinetuneResult(model.export(), initial, best, steps, epochs, time.perf_counter() - t0, stopped,
                          batch, int(np.sum(y[train] >= 0)), pseudo, history)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[threading.Event]:
    """An Event SIGTERM sets while the block runs (main thread only; elsewhere a plain Event), so an
    interrupted fine-tuning still returns its best checkpoint."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
