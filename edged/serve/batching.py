"""The bounded request queue and the micro-batcher the workers pull from.

The I/O thread puts admitted requests with ``put_nowait``; a queue full by
count or by bytes refuses them, and the caller replies OVERLOADED at once. The
queue keeps the rows and bytes it holds, for admission by deadline and for
memory. A worker takes the oldest request, then
adds compatible ones in arrival order until the batch holds ``max_batch``
samples, waiting at most ``max_delay_us`` past the first request's arrival --
and only while other requests are in flight, since waiting for requests nobody
has sent would only add latency.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Job:
    """One admitted infer request."""

    envelope: list  # routing frames to put in front of the reply
    request_id: str
    inputs: list[np.ndarray]  # in model input order, validated at admission
    signature: tuple  # per-sample dtypes and shapes; only equal signatures batch together
    arrival_ns: int
    deadline_ns: int
    samples: int = field(init=False)
    nbytes: int = field(init=False)
    answered: bool = field(default=False, init=False)  # set once its reply is handed on
    queued: bool = field(default=False, init=False)  # handed to the queue (a worker answers it)

    def __post_init__(self) -> None:
        self.samples = int(self.inputs[0].shape[0])
        self.nbytes = sum(x.nbytes for x in self.inputs)


class BatchQueue:
    def __init__(self, capacity: int, max_bytes: int = 1 << 62) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.rows = 0  # samples of the queued jobs
        self.nbytes = 0  # input bytes of the queued jobs
        self._items: deque[Job] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, job: Job) -> str | None:
        """Queue ``job``; None, or why not: "closed", "queue_full" or "queue_bytes"."""
        with self._cond:
            if self._closed:
                return "closed"
            if len(self._items) >= self.capacity:
                return "queue_full"
            if self._items and self.nbytes + job.nbytes > self.max_bytes:
                return "queue_bytes"
            self._items.append(job)
            self.rows += job.samples
            self.nbytes += job.nbytes
            self._cond.notify()
        return None

    def _pop(self) -> Job:
        job = self._items.popleft()
        self.rows -= job.samples
        self.nbytes -= job.nbytes
        return job

    def close(self) -> list[Job]:
        """Stop accepting, wake every worker, and return the jobs nobody took."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self.rows = self.nbytes = 0
            self._cond.notify_all()
        return left

    def get_batch(
        self,
        max_samples: int,
        max_delay_ns: int,
        others_pending: Callable[[int], bool],
        idle_timeout: float = 0.1,
    ) -> list[Job]:
        """Jobs to run together; [] after ``idle_timeout`` with nothing queued or once closed.

        ``others_pending(n)`` says whether requests beyond the n in this batch
        are in flight, i.e. whether waiting can fill the batch.
        """
        with self._cond:
            if not self._items:
                if self._closed:
                    return []
                self._cond.wait(idle_timeout)
                if not self._items:
                    return []
            first = self._pop()
            batch, samples = [first], first.samples
            wait_until = first.arrival_ns + max_delay_ns
            while samples < max_samples:
                if self._items:
                    head = self._items[0]
                    if head.signature != first.signature or samples + head.samples > max_samples:
                        break
                    batch.append(self._pop())
                    samples += head.samples
                    continue
                remaining = wait_until - time.monotonic_ns()
                if remaining <= 0 or self._closed or not others_pending(len(batch)):
                    break
                self._cond.wait(remaining / 1e9)
            if self._items:
                self._cond.notify()  # leave the rest to another worker
            return batch
