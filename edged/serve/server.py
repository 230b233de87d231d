"""The serving core: a ROUTER socket, a bounded queue, micro-batching workers.

Threads and the sockets each one owns:

- the I/O thread owns the ROUTER (clients) and a PULL (replies from workers).
  It decodes requests, answers ``metadata``/``health``/``feedback`` itself,
  validates ``infer`` requests against the served model and queues them, or
  replies OVERLOADED at once when the queue is full (by count or bytes) or
  when the work queued ahead means the request's deadline cannot be met. It forwards worker replies
  to clients; ROUTER_MANDATORY turns an unreachable peer into a counted drop.
- each worker owns a PUSH to the I/O thread. It takes a micro-batch from the
  queue, reads the current model reference once, runs the batch (the C call
  releases the GIL) and pushes one reply per request, naming the version.

A request that arrives alone while every worker is idle runs right on the I/O
thread when the model is fast (``inline_max_us``): for a model that takes tens
of microseconds, handing it to another thread would cost more than running it.
The estimate counts the request's rows, so a large request always goes to a
worker and never holds up the I/O thread.

Admission is the one place backlog is counted: the ROUTER buffers at most
``recv_hwm`` requests per client, and the I/O thread reads them
promptly into the queue, where every request is either admitted with a
deadline it can meet or refused. The wait ahead of a request is estimated
from the rows queued and running and the measured time per row.

No message can stop the I/O loop: an exception while handling one is logged,
counted (``edged_internal_errors_total``) and answered INTERNAL, and the loop
goes on. Should a thread die all the same, ``ready`` and ``healthy()`` turn
False, so the readiness gauge drops and the systemd watchdog restarts the
service.

A swap is one reference assignment (``server.model = new``); batches already
running finish on the model they read. Nothing on the request path takes a lock
that a swap or a reload holds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

import zmq

from edged.config import ServerSection
from edged.errors import EdgedError, InputError
from edged.metrics import Metrics, ServerSnapshot
from edged.serve import protocol as p
from edged.serve.batching import BatchQueue, Job
from edged.serve.execute import BatchRunner, error_frames, match_inputs
from edged.serve.feedback import FeedbackLog
from edged.serve.served import ServedModel

log = logging.getLogger("edged.server")

_REPLIES = "inproc://edged-replies-{}"
_MAX_RECV_PER_TURN = 64
_CLOSE_LINGER_MS = 1000
_ROW_TIME_WEIGHT = 0.2  # of the newest batch in the moving average of the time per row


@dataclass
class _WorkerState:
    busy_since_ns: int = 0  # 0 when idle
    busy_rows: int = 0  # rows of the batch it is running
    finished: int = 0  # jobs answered (only this worker writes it)
    batches: int = 0


class Server:
    def __init__(
        self,
        model: ServedModel,
        settings: ServerSection,
        metrics: Metrics,
        feedback: FeedbackLog | None = None,
        *,
        context: zmq.Context | None = None,
        curve_keys: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.model = model  # the one reference a swap replaces
        self.settings = settings  # replaced as a whole on reload
        self.metrics = metrics
        self.feedback = feedback or FeedbackLog(settings.feedback_window)
        self.ctx = context or zmq.Context.instance()
        self.curve_keys = curve_keys
        self.queue = BatchQueue(settings.queue_size, settings.queue_max_bytes)
        # Measured time per row (a batch's wall time over its rows), for admission by deadline.
        self._row_ns = model.batch1_us * 1e3
        self._ready = False
        self.draining = False
        self._closing = False
        self.endpoint: str | None = None
        self.io_heartbeat_ns = time.monotonic_ns()
        # One state per worker thread, plus the last one for inline runs on the I/O thread.
        self._workers = [_WorkerState() for _ in range(settings.workers + 1)]
        self._inline_index = settings.workers
        self._threads: list[threading.Thread] = []
        self._io_thread: threading.Thread | None = None
        self._stop_io = threading.Event()
        self._admitted = 0  # written by the I/O thread only
        self._forwarded = 0  # written by the I/O thread only
        self._leftover: list[Job] = []
        self._replies = _REPLIES.format(id(self))
        self._runner = BatchRunner(metrics, self.feedback, settings.workers + 1)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind (errors surface here), then start the workers and the I/O thread."""
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.MAXMSGSIZE, self.settings.max_message_bytes)
        router.setsockopt(zmq.RCVHWM, self.settings.recv_hwm)
        router.setsockopt(zmq.SNDHWM, self.settings.send_hwm)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.TCP_KEEPALIVE, 1)
        if self.curve_keys is not None:
            public, secret = self.curve_keys
            router.curve_server = True
            router.curve_publickey = public
            router.curve_secretkey = secret
            from edged.serve.auth import ZAP_DOMAIN

            router.zap_domain = ZAP_DOMAIN.encode()
        try:
            router.bind(self.settings.bind)
        except zmq.ZMQError as exc:
            router.close()
            raise EdgedError(f"server.bind: cannot bind {self.settings.bind}: {exc}") from exc
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        pull = self.ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(self._replies)
        for i in range(self._inline_index):
            t = threading.Thread(target=self._worker, args=(i,), name=f"edged-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._io_thread = threading.Thread(
            target=self._io_loop, args=(router, pull), name="edged-io", daemon=True
        )
        self._io_thread.start()

    @property
    def ready(self) -> bool:
        """Set by the owner once serving may start; False again as soon as a thread has died."""
        return self._ready and not self.dead_threads()

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value

    def dead_threads(self) -> list[str]:
        """Names of the server's threads that ended while it was meant to be serving."""
        if self._io_thread is None or self._closing:
            return []
        return [t.name for t in (self._io_thread, *self._threads) if not t.is_alive()]

    def swap(self, model: ServedModel) -> ServedModel:
        """Serve ``model`` from the next batch on; returns the previous model."""
        old, self.model = self.model, model
        if model.batch1_us > 0:
            self._row_ns = model.batch1_us * 1e3
        return old

    @property
    def in_flight(self) -> int:
        return self._admitted - self._forwarded

    def drain(self, timeout_s: float) -> bool:
        """Refuse new work (UNAVAILABLE) and wait for admitted requests to be answered."""
        self.draining = True
        self.ready = False
        end = time.monotonic() + timeout_s
        while self.in_flight > 0 and time.monotonic() < end:
            time.sleep(0.005)
        return self.in_flight == 0

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers, answer what is left with UNAVAILABLE, close the sockets."""
        self._closing = True
        self.draining = True
        self.ready = False
        self._leftover = self.queue.close()
        end = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.error("workers still busy at shutdown: %s", ", ".join(stuck))
        self._stop_io.set()
        if self._io_thread is not None:
            self._io_thread.join(max(1.0, end - time.monotonic()) + _CLOSE_LINGER_MS / 1000)

    def healthy(self, stall_s: float) -> bool:
        """False if a thread died, the I/O loop stopped turning or a worker is stuck in one batch."""
        if self.dead_threads():
            return False
        now = time.monotonic_ns()
        limit = int(stall_s * 1e9)
        if now - self.io_heartbeat_ns > limit:
            return False
        return all(w.busy_since_ns == 0 or now - w.busy_since_ns < limit for w in self._workers)

    def snapshot(self) -> ServerSnapshot:
        m = self.model
        return ServerSnapshot(
            self.ready,
            len(self.queue),
            self.queue.capacity,
            self.in_flight,
            self._inline_index,
            sum(w.busy_since_ns != 0 for w in self._workers),
            m.name,
            m.version,
            m.engine_kind,
            m.sha256,
            m.size_bytes,
            m.weight_bytes,
            m.sparsity,
            m.loaded_at,
        )

    # ------------------------------------------------------------ I/O thread

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
            router.close(linger=_CLOSE_LINGER_MS)
            pull.close(linger=0)

    def _turn(self, poller: zmq.Poller, router: zmq.Socket, pull: zmq.Socket) -> None:
        events = None
        if self._runner.pending(self._inline_index):
            # Metrics of inline runs are applied when nothing waits, i.e. not before a reply.
            events = dict(poller.poll(0))
            if not events:
                self._runner.flush(self._inline_index)
        if not events:
            events = dict(poller.poll(100))
        if pull in events:
            self._forward(router, pull)
        if router in events:
            admitted = []
            for _ in range(_MAX_RECV_PER_TURN):
                if not router.get(zmq.EVENTS) & zmq.POLLIN:
                    break
                job = self._handle_safely(router, router.recv_multipart(zmq.NOBLOCK))
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
                frames = pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._forwarded += 1
            self._send(router, frames)

    def _send(self, router: zmq.Socket, frames: list) -> None:
        try:
            router.send_multipart(frames, flags=zmq.NOBLOCK)
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
        if self.draining or not self.ready:
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

    # ------------------------------------------------------------ workers

    def _pending_beyond(self, n: int) -> bool:
        finished = sum(w.finished for w in self._workers)
        return self._admitted - finished > n

    def _worker(self, index: int) -> None:
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 1000)
        push.setsockopt(zmq.SNDHWM, 0)  # never block or drop a reply on the way to the I/O thread
        push.connect(self._replies)
        state = self._workers[index]

        def send(frames: list) -> None:
            push.send_multipart(frames)

        try:
            while True:
                s = self.settings
                try:
                    jobs = self.queue.get_batch(s.max_batch, s.max_delay_us * 1000, self._pending_beyond)
                except Exception:
                    log.exception("worker %d could not take a batch", index)
                    self.metrics.internal_errors.labels("worker").inc()
                    time.sleep(0.01)
                    continue
                if not jobs:
                    self._runner.flush(index)
                    if self.queue.closed:
                        return
                    continue
                rows = sum(j.samples for j in jobs)
                state.busy_rows = rows
                state.busy_since_ns = started = time.monotonic_ns()
                try:
                    # self.model is read once: the whole batch runs on, and names, that version
                    self._runner.run(self.model, index, jobs, send, s.max_batch)
                except Exception:  # a bug here must not kill the worker
                    log.exception("worker %d failed on a batch", index)
                    self.metrics.internal_errors.labels("worker").inc()
                    for job in jobs:
                        if not job.answered:
                            send(error_frames(job, p.ErrorCode.INTERNAL, "internal error"))
                finally:
                    per_row = (time.monotonic_ns() - started) / rows
                    self._row_ns += _ROW_TIME_WEIGHT * (per_row - self._row_ns)
                    state.finished += len(jobs)
                    state.batches += 1
                    state.busy_rows = 0
                    state.busy_since_ns = 0
                if len(self.queue) == 0:
                    self._runner.flush(index)
        finally:
            push.close()


def _peek_id(frames: list) -> str | None:
    """The request id of a message, if its header has a readable one (for error replies)."""
    try:
        rid = json.loads(bytes(frames[1])).get("id")
    except Exception:
        return None
    return rid if isinstance(rid, str) and len(rid) <= p.MAX_ID_CHARS else None
