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
from edged.serve import protocol as p
from edged.serve.batching import Job
from edged.serve.feedback import FeedbackLog
from edged.serve.served import ServedModel

Send = Callable[[list], None]


def error_frames(job: Job, code: p.ErrorCode, message: str) -> list:
    return [*job.envelope, *p.encode_reply(p.ErrorReply(job.request_id, code.value, message))]


class BatchRunner:
    def __init__(self, metrics: Metrics, feedback: FeedbackLog) -> None:
        self.metrics = metrics
        self.feedback = feedback
        self._children: dict[tuple[str, str], tuple] = {}

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
        if len(live) == 1:
            inputs = live[0].inputs
        else:
            inputs = [np.concatenate([j.inputs[k] for j in live]) for k in range(len(model.inputs))]
        t0 = time.monotonic_ns()
        try:
            outputs = _infer_in_chunks(model.engine(engine_index), inputs, max_rows)
        except InputError as exc:
            for job in live:
                self.fail(send, job, model, p.ErrorCode.BAD_INPUT, str(exc))
            return
        t1 = time.monotonic_ns()
        total = sum(j.samples for j in live)
        if any(o.shape[0] != total for o in outputs):
            raise RuntimeError(f"engine returned batch {[o.shape[0] for o in outputs]} for {total} samples")
        ok, inferences, samples, executions = self._labels(model)
        m = self.metrics
        m.inference_seconds.observe((t1 - t0) / 1e9)
        m.batch_requests.observe(len(live))
        executions.inc()
        inferences.inc(len(live))
        samples.inc(total)
        specs = model.outputs
        start = 0
        for job in live:
            end = start + job.samples
            outs = [p.Tensor(spec.name, o[start:end]) for spec, o in zip(specs, outputs, strict=True)]
            if self.feedback.capacity:
                self.feedback.record(job.request_id, model.name, model.version, outputs[0][start:end])
            done = time.monotonic_ns()
            timing = {
                "queue": (t0 - job.arrival_ns) // 1000,
                "inference": (t1 - t0) // 1000,
                "total": (done - job.arrival_ns) // 1000,
            }
            send(
                [
                    *job.envelope,
                    *p.encode_reply(p.InferReply(job.request_id, model.name, model.version, outs, timing)),
                ]
            )
            job.answered = True
            ok.inc()
            m.queue_seconds.observe((t0 - job.arrival_ns) / 1e9)
            m.request_seconds.observe((done - job.arrival_ns) / 1e9)
            start = end


def _infer_in_chunks(engine, inputs: list[np.ndarray], max_rows: int) -> list[np.ndarray]:
    rows = inputs[0].shape[0]
    if rows <= max_rows:
        return engine.infer(inputs)
    parts = [engine.infer([x[i : i + max_rows] for x in inputs]) for i in range(0, rows, max_rows)]
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
    if all(n is None for n in names):
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
    for spec, t in zip(specs, ordered, strict=True):
        want = p.datatype_of(spec.dtype)
        if t.datatype != want:
            raise InputError(f"input '{spec.name}': expected datatype {want}, got {t.datatype}")
        shape = t.array.shape
        if len(shape) != len(spec.shape) + 1 or tuple(shape[1:]) != spec.shape:
            expected = ", ".join(["N", *map(str, spec.shape)])
            raise InputError(f"input '{spec.name}': expected shape [{expected}], got {list(shape)}")
        if shape[0] < 1:
            raise InputError(f"input '{spec.name}' has an empty batch")
        if shape[0] > max_rows:
            raise InputError(
                f"input '{spec.name}' has a batch of {shape[0]} rows; server.max_request_batch is "
                f"{max_rows}: split the request"
            )
        if shape[0] != ordered[0].array.shape[0]:
            raise InputError(f"inputs disagree on the batch size ({ordered[0].array.shape[0]} vs {shape[0]})")
        if t.array.dtype.kind == "f" and not np.all(np.isfinite(t.array)):
            raise InputError(f"input '{spec.name}' contains NaN or infinite values")
    return [t.array for t in ordered]
