"""The serving core: a ROUTER socket, a bounded queue, micro-batching workers.

Threads and the sockets each one owns:

- the I/O thread (its methods are in io_thread.py) owns the ROUTER (clients)
  and a PULL (replies from workers). It decodes requests, answers
  ``metadata``/``health``/``feedback`` itself, validates ``infer`` requests
  against the served model and queues them, or replies OVERLOADED at once
  when the queue is full (by count or bytes) or when the work queued ahead
  means the request's deadline cannot be met. It forwards worker replies to
  clients; ROUTER_MANDATORY turns an unreachable peer into a counted drop.
- each worker owns a PUSH to the I/O thread. It takes a micro-batch from the
  queue, reads the current model reference once, runs the batch (the C call
  releases the GIL) and pushes one reply per request, naming the version.

When every worker is idle and the model is fast, the requests of one I/O
turn run right on the I/O thread as one batch, if their estimated time (rows
x batch-1 time) is within ``inline_max_us``: for a model that takes tens of
microseconds, handing them to another thread would cost more than running
them. A large request always goes to a worker and never holds up the I/O
thread.

Admission is the one place backlog is counted: the ROUTER buffers at most
``recv_hwm`` requests per client, and the I/O thread reads them promptly into
the queue, where every request is either admitted with a deadline it can meet
or refused. The wait ahead of a request is estimated from the rows queued and
running and the measured time per row.

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

import logging
import threading
import time
from dataclasses import dataclass

import zmq

from edged.config import ServerSection
from edged.errors import EdgedError
from edged.metrics import Metrics, ServerSnapshot
from edged.serve import protocol as p
from edged.serve.batching import BatchQueue, Job
from edged.serve.execute import BatchRunner, error_frames
from edged.serve.feedback import FeedbackLog
from edged.serve.io_thread import CLOSE_LINGER_MS, IOThread
from edged.serve.served import ServedModel

log = logging.getLogger("edged.server")

_REPLIES = "inproc://edged-replies-{}"
_ROW_TIME_WEIGHT = 0.2  # of the newest batch in the moving average of the time per row


@dataclass
class _WorkerState:
    busy_since_ns: int = 0  # 0 when idle
    busy_rows: int = 0  # rows of the batch it is running
    finished: int = 0  # jobs answered (only this worker writes it)
    batches: int = 0


class Server(IOThread):
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
        self._client_gap_ns = 0  # how long the I/O loop last waited for a client message
        self._leftover: list[Job] = []
        self._replies = _REPLIES.format(id(self))
        self._runner = BatchRunner(metrics, self.feedback, settings.workers + 1)
        # Under CURVE: edged.serve.auth.PeerGuard, which drops messages of removed client keys.
        self.peer_guard = None

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
            self._io_thread.join(max(1.0, end - time.monotonic()) + CLOSE_LINGER_MS / 1000)

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

    # ------------------------------------------------------------ workers

    def settle_metrics(self, timeout_s: float = 0.05) -> bool:
        """Have every serving thread apply its pending metric updates, waiting up to ``timeout_s``;
        called before a scrape, so that it counts every request answered before it."""
        self._runner.ask_flush()
        end = time.monotonic() + timeout_s
        while not all(self._runner.settled(i) for i in range(self._inline_index + 1)):
            if time.monotonic() >= end:
                return False
            time.sleep(0.0002)
        return True

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
