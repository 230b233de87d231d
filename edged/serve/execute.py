"""Running admitted requests: input matching, one engine call per micro-batch, replies.

``match_inputs`` checks a request against the served model before it is
queued. ``BatchRunner.run`` executes a micro-batch on one model version --
the one the caller read once -- splits the outputs per request and hands each
reply to ``send`` (a worker's PUSH, or the ROUTER for inline runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from edged.errors import InputError
from edged.metrics import Metrics
from edged.runtime.engine import Engine
from edged.serve import protocol as p
from edged.serve.batching import Job
from edged.serve.feedback import FeedbackLog
from edged.serve.served import ServedModel
from edged.serve.tally import Tally

Send = Callable[[list], None]


def error_frames(job: Job, code: p.ErrorCode, message: str) -> list:
    return [*job.envelope, *p.encode_reply(p.ErrorReply(job.request_id, code.value, message))]


class BatchRunner:
    """Runs micro-batches for ``threads`` threads; thread ``i`` passes ``engine_index=i``."""

    def __init__(self, metrics: Metrics, feedback: FeedbackLog, threads: int) -> None:
        self.metrics = metrics
        self.feedback = feedback
        self._children: dict[tuple[str, str], tuple] = {}
        self._tallies = [Tally(metrics) for _ in range(threads)]

    def pending(self, engine_index: int) -> bool:
        """Whether that thread has metric updates not yet applied."""
        return self._tallies[engine_index].requests > 0

    def settled(self, engine_index: int) -> bool:
        """Whether that thread has applied the updates of every request it answered."""
        return self._tallies[engine_index].settled

    def due(self, engine_index: int) -> bool:
        """Whether that thread's metric updates should be applied now (by count, age or a scrape)."""
        return self._tallies[engine_index].due(time.monotonic_ns())

    def ask_flush(self) -> None:
        """Have every thread apply its metric updates at its next chance (a scrape is coming)."""
        for tally in self._tallies:
            tally.ask()

    def flush(self, engine_index: int) -> None:
        """Apply that thread's metric updates; call it from that thread (or once it stopped)."""
        self._tallies[engine_index].flush()

    def _labels(self, model: ServedModel) -> tuple:
        """Metric children of a version, looked up once (label lookups cost more than increments)."""
        key = (model.name, model.version)
        children = self._children.get(key)
        if children is None:
            m = self.metrics
            children = (
                m.requests.labels("infer", "ok", *key),
                m.inferences.labels(*key),
                m.samples.labels(*key),
                m.executions.labels(*key),
            )
            self._children[key] = children
        return children

    def fail(self, send: Send, job: Job, model: ServedModel, code: p.ErrorCode, message: str) -> None:
        self.metrics.requests.labels("infer", code.value, model.name, model.version).inc()
        send(error_frames(job, code, message))
        job.answered = True

    def run(self, model: ServedModel, engine_index: int, jobs: list[Job], send: Send, max_rows: int) -> None:
        """Execute jobs as one batch on ``model``; every job gets exactly one reply.

        The engine never sees more than ``max_rows`` rows in one call: a request
        larger than that runs in slices, so the engine's buffers stay at the
        size warm-up gave them.
        """
        now = time.monotonic_ns()
        live = []
        for job in jobs:
            if job.deadline_ns < now:
                waited = (now - job.arrival_ns) // 1000
                self.fail(
                    send,
                    job,
                    model,
                    p.ErrorCode.DEADLINE_EXCEEDED,
                    f"waited {waited} us in the queue, past its deadline",
                )
            elif job.signature != model.signature:
                self.fail(
                    send,
                    job,
                    model,
                    p.ErrorCode.BAD_INPUT,
                    f"the model changed to version {model.version}, whose inputs differ",
                )
            else:
                live.append(job)
        if not live:
            return
        engine = model.engine(engine_index)
        t0 = time.monotonic_ns()
        try:
            if len(live) == 1 or engine.per_sample:
                # A model that runs sample by sample gains nothing from one joined batch.
                per_job = [_checked_rows(_infer_in_chunks(engine, job.inputs, max_rows), job.samples)
                           for job in live]
            else:
                inputs = [np.concatenate([j.inputs[k] for j in live]) for k in range(len(model.inputs))]
                total = sum(j.samples for j in live)
                outputs = _checked_rows(_infer_in_chunks(engine, inputs, max_rows), total)
                per_job = _split_rows(outputs, [job.samples for job in live])
        except InputError as exc:
            for job in live:
                self.fail(send, job, model, p.ErrorCode.BAD_INPUT, str(exc))
            return
        t1 = time.monotonic_ns()
        # Replies first: bookkeeping after the last send is off every client's critical path.
        metas = model.output_wire
        inference_us = (t1 - t0) // 1000
        tally = self._tallies[engine_index]
        tally.answering(len(live))  # a scrape that follows a reply waits for these updates
        for job, buffers in zip(live, per_job, strict=True):
            arrival = job.arrival_ns
            timing = (f'"queue": {(t0 - arrival) // 1000}, "inference": {inference_us}, '
                      f'"total": {(time.monotonic_ns() - arrival) // 1000}')
            body = model.reply_body(tuple([b.shape for b in buffers]))
            send([*job.envelope, *p.infer_reply_frames(job.request_id, body, metas, buffers, timing)])
            job.answered = True
        done = time.monotonic_ns()
        total = live[0].samples if len(live) == 1 else sum(j.samples for j in live)
        tally.batch(self._labels(model), len(live), total, (t1 - t0) / 1e9)
        for job in live:
            tally.queue_s.append((t0 - job.arrival_ns) / 1e9)
            tally.request_s.append((done - job.arrival_ns) / 1e9)
        if self.feedback.capacity and per_job[0][0].ndim == 2:
            keep = self.feedback.keep_inputs
            self.feedback.record_many(
                model.name, model.version,
                [(job.request_id, outs[0], job.inputs[0] if keep else None)
                 for job, outs in zip(live, per_job, strict=True)],
            )
        if tally.due(done):
            tally.flush()


def _checked_rows(outputs: list[np.ndarray], rows: int) -> list[np.ndarray]:
    if any(o.shape[0] != rows for o in outputs):
        raise RuntimeError(f"engine returned batch {[o.shape[0] for o in outputs]} for {rows} samples")
    return outputs


def _split_rows(outputs: list[np.ndarray], rows: list[int]) -> list[list[np.ndarray]]:
    """The outputs of one joined batch, cut back into each request's rows."""
    parts, start = [], 0
    for n in rows:
        parts.append([o[start : start + n] for o in outputs])
        start += n
    return parts


def _infer_in_chunks(engine: Engine, inputs: list[np.ndarray], max_rows: int) -> list[np.ndarray]:
    # match_inputs made Engine.validate's checks at admission (count, dtype, shape, finite
    # values; frombuffer and concatenate give C-contiguous arrays), so the engine runs as is.
    rows = inputs[0].shape[0]
    if rows <= max_rows:
        return engine._run(inputs)
    parts = [engine._run([x[i : i + max_rows] for x in inputs]) for i in range(0, rows, max_rows)]
    return [np.concatenate(outs) for outs in zip(*parts, strict=True)]


def match_inputs(model: ServedModel, tensors: list[p.Tensor], max_rows: int) -> list[np.ndarray]:
    """Request tensors in model input order, checked against the model; raises InputError.

    ``max_rows`` bounds the batch (rows) of one request (``server.max_request_batch``).
    """
    if model.wire_problem is not None:
        raise InputError(model.wire_problem)
    specs = model.inputs
    if len(tensors) != len(specs):
        raise InputError(f"the model takes {len(specs)} input(s), got {len(tensors)}")
    names = [t.name for t in tensors]
    if names.count(None) == len(names):
        ordered = tensors
    else:
        by_name = {t.name: t for t in tensors}
        known = [s.name for s in specs]
        for n in names:
            if n is None:
                raise InputError("name every input or none")
            if n not in known:
                raise InputError(f"unknown input {n!r}; the model's inputs are {', '.join(map(repr, known))}")
        if len(by_name) != len(tensors):
            raise InputError("an input is named twice")
        ordered = [by_name[s.name] for s in specs]
    batch = ordered[0].array.shape[0]
    for (name, want, sample_shape, is_float), t in zip(model.input_wire, ordered, strict=True):
        a = t.array
        if a.dtype != want:
            raise InputError(
                f"input '{name}': expected datatype {p.datatype_name(want)}, got {p.datatype_name(a.dtype)}"
            )
        shape = a.shape
        if shape[1:] != sample_shape:  # the decoder guarantees a rank of at least 1
            expected = ", ".join(["N", *map(str, sample_shape)])
            raise InputError(f"input '{name}': expected shape [{expected}], got {list(shape)}")
        rows = shape[0]
        if rows < 1:
            raise InputError(f"input '{name}' has an empty batch")
        if rows > max_rows:
            raise InputError(
                f"input '{name}' has a batch of {rows} rows; server.max_request_batch is "
                f"{max_rows}: split the request"
            )
        if rows != batch:
            raise InputError(f"inputs disagree on the batch size ({batch} vs {rows})")
        if is_float and not np.isfinite(a).all():
            raise InputError(f"input '{name}' contains NaN or infinite values")
    return [t.array for t in ordered]
