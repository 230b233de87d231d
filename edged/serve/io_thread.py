"""The I/O thread of the server: reading requests, answering or refusing them, replies.

``IOThread`` holds the methods the I/O thread runs; ``Server`` (server.py)
owns the state and the threads. The I/O thread reads every message promptly,
answers ``metadata``/``health``/``feedback`` itself, and admits an ``infer``
request -- into the queue, or into a batch it runs itself when that is
fastest -- or refuses it at once (see server.py for the rules). No message
can stop it: an exception while handling one is answered INTERNAL and
counted.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

import zmq

from edged.config import ServerSection
from edged.errors import InputError
from edged.metrics import Metrics
from edged.serve import protocol as p
from edged.serve.batching import BatchQueue, Job
from edged.serve.execute import BatchRunner, error_frames, match_inputs
from edged.serve.feedback import FeedbackLog
from edged.serve.served import ServedModel
from edged.serve.sockets import readable, recv_frames, send_frames

if TYPE_CHECKING:
    from edged.serve.auth import PeerGuard

log = logging.getLogger("edged.server")

_MAX_RECV_PER_TURN = 64
_NO_GAP = 1 << 62  # no client message came while the loop waited
_IDLE_WAIT_MS = 100  # the loop wakes this often with nothing to do (shutdown, heartbeat)
_QUIET_FLUSH_MS = 1  # with metric updates pending, this long without a message applies them
CLOSE_LINGER_MS = 1000


class IOThread:
    """The I/O thread's part of ``Server``, which sets these attributes."""

    model: ServedModel
    settings: ServerSection
    metrics: Metrics
    feedback: FeedbackLog
    queue: BatchQueue
    draining: bool
    ready: bool
    io_heartbeat_ns: int
    _ready: bool
    _stop_io: threading.Event
    _admitted: int
    _forwarded: int
    _leftover: list[Job]
    _runner: BatchRunner
    _workers: list
    _inline_index: int
    _row_ns: float
    _client_gap_ns: int
    peer_guard: PeerGuard | None

    def _io_loop(self, router: zmq.Socket, pull: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        try:
            while not self._stop_io.is_set():
                self.io_heartbeat_ns = time.monotonic_ns()
                try:
                    self._turn(poller, router, pull)
                except zmq.ContextTerminated:
                    raise
                except Exception:
                    # Not tied to one message (those are answered in _handle_safely):
                    # keep turning, but not in a hot loop if it repeats.
                    log.exception("I/O loop turn failed")
                    self.metrics.internal_errors.labels("io").inc()
                    time.sleep(0.01)
            self._forward(router, pull)
            self._runner.flush(self._inline_index)
            self._refuse_unread(router)
            for job in self._leftover:
                self._send(
                    router,
                    error_frames(job, p.ErrorCode.UNAVAILABLE, "the server shut down before running it"),
                )
                self._count("infer", p.ErrorCode.UNAVAILABLE.value, self.model)
                self._forwarded += 1
        except Exception:
            log.exception("I/O thread failed")
            raise
        finally:
            router.close(linger=CLOSE_LINGER_MS)
            pull.close(linger=0)

    def _turn(self, poller: zmq.Poller, router: zmq.Socket, pull: zmq.Socket) -> None:
        # Metrics of inline runs are applied after a quiet millisecond, or when due: never
        # before a reply, and not in every short gap between requests (each flush costs
        # about as much as a few requests, CPU the clients on this machine may need).
        pending = self._runner.pending(self._inline_index)
        events = self._wait(poller, router, _QUIET_FLUSH_MS if pending else _IDLE_WAIT_MS)
        if pending and (not events or self._runner.due(self._inline_index)):
            self._runner.flush(self._inline_index)
        if pull in events:
            self._forward(router, pull)
        if router in events:
            admitted = []
            for _ in range(_MAX_RECV_PER_TURN):
                # Trying is cheaper than asking first: a ZMQ_EVENTS query makes
                # a syscall every time, a receive only when nothing is queued.
                try:
                    frames = self._recv(router)
                except zmq.Again:
                    break
                if frames is None:  # a removed CURVE key's message, dropped
                    continue
                job = self._handle_safely(router, frames)
                if job is not None:
                    admitted.append(job)
            if admitted:
                try:
                    self._dispatch(router, admitted)
                except Exception:
                    log.exception("dispatching %d request(s) failed", len(admitted))
                    self.metrics.internal_errors.labels("io").inc()
                    for job in admitted:
                        if not job.answered and not job.queued:
                            self._answer_internal(router, job.envelope, job.request_id)

    def _wait(self, poller: zmq.Poller, router: zmq.Socket, timeout_ms: int) -> dict:
        """The next events; under dense traffic, spin on the ROUTER before blocking.

        Waking a thread blocked in poll costs tens of microseconds on a busy or
        virtualised machine: more than a small model's inference. So when the
        last client message came within ``busy_poll_us`` of the loop going idle
        and no worker reply is outstanding (only a client can bring work), the
        loop checks the ROUTER in a tight loop for up to that long first: CPU
        for latency, the trade Linux's busy_poll makes, and only while traffic
        is dense enough for it to pay.
        """
        spin_ns = self.settings.busy_poll_us * 1000
        idle_since = time.monotonic_ns()
        if spin_ns and self._client_gap_ns <= spin_ns and self._admitted == self._forwarded:
            end = idle_since + spin_ns
            while True:
                if readable(router):
                    self._client_gap_ns = time.monotonic_ns() - idle_since
                    return {router: zmq.POLLIN}
                if time.monotonic_ns() >= end:
                    break
                os.sched_yield()  # spinning, but a client or worker on this core may run
        events = dict(poller.poll(timeout_ms))
        self._client_gap_ns = time.monotonic_ns() - idle_since if router in events else _NO_GAP
        return events

    def _recv(self, router: zmq.Socket) -> list | None:
        if self.peer_guard is None:
            return recv_frames(router)
        return self.peer_guard.recv(router)

    def _handle_safely(self, router: zmq.Socket, frames: list) -> Job | None:
        """``_handle``, except that a bug in it costs one INTERNAL reply, not the I/O thread."""
        try:
            return self._handle(router, frames)
        except Exception:
            log.exception("handling a message failed")
            self.metrics.internal_errors.labels("io").inc()
            split = 2 if len(frames) >= 2 and len(frames[1]) == 0 else 1
            self._answer_internal(router, frames[:split], _peek_id(frames[split:]))
            return None

    def _answer_internal(self, router: zmq.Socket, envelope: list, request_id: str | None) -> None:
        try:
            self._count("unknown", p.ErrorCode.INTERNAL.value, None)
            reply = p.ErrorReply(request_id, p.ErrorCode.INTERNAL.value, "internal error")
            self._reply(router, envelope, reply)
        except Exception:
            log.exception("could not answer INTERNAL")

    def _refuse_unread(self, router: zmq.Socket) -> None:
        """At shutdown: answer what clients already sent, until they pause (at most 1 s)."""
        end = time.monotonic() + 1.0
        while time.monotonic() < end and router.poll(50, zmq.POLLIN):
            while True:
                try:
                    frames = router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                job = self._handle_safely(router, frames)  # draining: infer requests are refused here
                assert job is None

    def _forward(self, router: zmq.Socket, pull: zmq.Socket) -> None:
        while True:
            try:
                frames = recv_frames(pull)
            except zmq.Again:
                return
            self._forwarded += 1
            self._send(router, frames)

    def _send(self, router: zmq.Socket, frames: list) -> None:
        try:
            send_frames(router, frames)
        except zmq.Again:
            self.metrics.replies_dropped.labels("peer_queue_full").inc()
        except zmq.ZMQError as exc:
            reason = "peer_gone" if exc.errno == zmq.EHOSTUNREACH else "send_error"
            if reason == "send_error":
                log.warning("reply not sent: %s", exc)
            self.metrics.replies_dropped.labels(reason).inc()

    def _reply(self, router: zmq.Socket, envelope: list, reply: p.Reply) -> None:
        self._send(router, [*envelope, *p.encode_reply(reply)])

    def _count(self, op: str, status: str, model: ServedModel | None) -> None:
        name, version = (model.name, model.version) if model is not None else ("", "")
        self.metrics.requests.labels(op, status, name, version).inc()

    def _handle(self, router: zmq.Socket, frames: list) -> Job | None:
        """Answer or reject one message; an admitted infer request comes back as a Job."""
        now = time.monotonic_ns()
        split = 2 if len(frames) >= 2 and len(frames[1]) == 0 else 1  # REQ peers add an empty delimiter
        envelope = frames[:split]
        model = self.model
        try:
            req = p.decode_request(frames[split:], self.settings.max_message_bytes)
        except p.ProtocolError as exc:
            self.metrics.bad_messages.labels(exc.reason).inc()
            log.debug("bad message: %s", exc.message)
            self._count("unknown", exc.code.value, None)
            self._reply(router, envelope, p.error_reply(exc))
            return None
        if isinstance(req, p.HealthRequest):
            state = "draining" if self.draining else ("serving" if self.ready else "starting")
            fields = {
                "live": True,
                "ready": self.ready and not self.draining,
                "state": state,
                "model_name": model.name,
                "model_version": model.version,
                "queue_depth": len(self.queue),
            }
            self._reply(router, envelope, p.InfoReply(req.id, fields))
        elif isinstance(req, p.MetadataRequest):
            fields = {**model.describe(), "max_batch": self.settings.max_batch}
            self._reply(router, envelope, p.InfoReply(req.id, fields))
        elif isinstance(req, p.FeedbackRequest):
            outcome, event = self.feedback.match(req.id, req.label)
            name, version = (event.model_name, event.model_version) if event else ("", "")
            self.metrics.feedback.labels(outcome, name, version).inc()
            self._reply(
                router, envelope, p.InfoReply(req.id, {"matched": event is not None, "outcome": outcome})
            )
        else:
            return self._admit(router, envelope, req, model, now)
        self._count(req.op, "ok", model)
        return None

    def _refuse(
        self,
        router: zmq.Socket,
        envelope: list,
        request_id: str,
        model: ServedModel,
        code: p.ErrorCode,
        message: str,
    ) -> None:
        self._count("infer", code.value, model)
        self._reply(router, envelope, p.ErrorReply(request_id, code.value, message))

    def _admit(
        self, router: zmq.Socket, envelope: list, req: p.InferRequest, model: ServedModel, now: int
    ) -> Job | None:
        if self.draining or not self._ready:  # a dead thread shows in health and readiness
            self._refuse(
                router,
                envelope,
                req.id,
                model,
                p.ErrorCode.UNAVAILABLE,
                "the server is shutting down" if self.draining else "the server is not ready yet",
            )
            return None
        try:
            arrays = match_inputs(model, req.inputs, self.settings.max_request_batch)
        except InputError as exc:
            self._refuse(router, envelope, req.id, model, p.ErrorCode.BAD_INPUT, str(exc))
            return None
        timeout_ms = req.timeout_ms or self.settings.request_timeout_ms
        return Job(envelope, req.id, arrays, model.signature, now, now + timeout_ms * 1_000_000)

    def _dispatch(self, router: zmq.Socket, jobs: list[Job]) -> None:
        """Queue the jobs of one I/O turn, or run them right here as one batch when that is fastest.

        When no worker is busy and nothing is queued, and the turn's requests
        fit one batch whose estimated time (rows x batch-1 time, an upper
        bound) is within ``inline_max_us``, they run on the I/O thread: for a
        model that takes microseconds a hand-off to a worker would cost more
        than the inference. Longer work goes through the queue and the workers.
        """
        s, model = self.settings, self.model
        rows = jobs[0].samples if len(jobs) == 1 else sum(j.samples for j in jobs)
        if (
            rows <= s.max_batch
            and 0 < model.batch1_us * rows <= s.inline_max_us
            and len(self.queue) == 0
            and all(w.busy_since_ns == 0 for w in self._workers)
        ):
            state = self._workers[self._inline_index]
            self._admitted += len(jobs)
            state.busy_since_ns = time.monotonic_ns()

            def send(frames: list) -> None:
                self._forwarded += 1
                self._send(router, frames)

            try:
                self._runner.run(self.model, self._inline_index, jobs, send, s.max_batch)
            except Exception:
                log.exception("inline batch failed")
                self.metrics.internal_errors.labels("io").inc()
                for job in jobs:
                    if not job.answered:
                        send(error_frames(job, p.ErrorCode.INTERNAL, "internal error"))
            finally:
                state.finished += len(jobs)
                state.batches += 1
                state.busy_since_ns = 0
            return
        for job in jobs:
            wait_ns = self._wait_ahead_ns()
            if job.arrival_ns + wait_ns > job.deadline_ns:
                self._shed(
                    router,
                    job,
                    model,
                    "deadline",
                    f"about {wait_ns / 1e6:.1f} ms of work is queued ahead, past the request's deadline; "
                    "retry later",
                )
                continue
            self._admitted += 1
            refused = self.queue.put_nowait(job)
            job.queued = refused is None
            if refused == "closed":  # shutting down since this turn's requests were read
                self._admitted -= 1
                self._refuse(
                    router,
                    job.envelope,
                    job.request_id,
                    model,
                    p.ErrorCode.UNAVAILABLE,
                    "the server is shutting down",
                )
                job.answered = True
            elif refused is not None:
                self._admitted -= 1
                detail = (
                    f"{self.queue.capacity} requests"
                    if refused != "queue_bytes"
                    else f"{self.queue.max_bytes} bytes"
                )
                self._shed(router, job, model, refused, f"the request queue is full ({detail}); retry later")

    def _wait_ahead_ns(self) -> float:
        """Estimated time until a request queued now starts: rows ahead x time per row / workers."""
        rows = self.queue.rows + sum(w.busy_rows for w in self._workers)
        return rows * self._row_ns / self._inline_index if rows else 0.0

    def _shed(self, router: zmq.Socket, job: Job, model: ServedModel, reason: str, message: str) -> None:
        self.metrics.shed.labels(reason).inc()
        self._refuse(router, job.envelope, job.request_id, model, p.ErrorCode.OVERLOADED, message)
        job.answered = True


def _peek_id(frames: list) -> str | None:
    """The request id of a message, if its header has a readable one (for error replies)."""
    try:
        rid = json.loads(bytes(frames[1])).get("id")
    except Exception:
        return None
    return rid if isinstance(rid, str) and len(rid) <= p.MAX_ID_CHARS else None
