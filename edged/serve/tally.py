"""Per-thread metric updates of the request path, applied to Prometheus in bulk.

prometheus_client takes a lock for every increment and searches a histogram's
buckets in Python: for a model that runs in tens of microseconds, the eight
updates a request makes cost as much as its inference. A ``Tally`` belongs to
one thread, collects those updates as plain numbers, and applies them after
``FLUSH_EVERY`` requests, after ``FLUSH_AFTER_NS``, when its thread goes
quiet, or when a scrape asks (``ask``) -- always after the replies went out.
A flush costs about as much as a few requests, so under dense traffic it
happens every few hundred of them, not whenever the thread has a moment.
"""

from __future__ import annotations

import time
from bisect import bisect_left

from prometheus_client import Histogram

from edged.metrics import Metrics

FLUSH_EVERY = 256  # requests
FLUSH_AFTER_NS = 50_000_000


def observe_all(histogram: Histogram, values: list[float]) -> None:
    """``histogram.observe(v)`` for every value, with one lock round per bucket touched."""
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:  # a prometheus_client whose internals differ: the public way
        for v in values:
            histogram.observe(v)
        return
    counts: dict[int, int] = {}
    for v in values:
        index = bisect_left(bounds, v)  # the first bucket whose upper bound is >= v, as observe()
        counts[index] = counts.get(index, 0) + 1
    for index, count in counts.items():
        buckets[index].inc(count)
    total.inc(sum(values))


class Tally:
    """Metric updates of one thread, not yet applied; only that thread touches it."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.requests = 0
        self.inference_s: list[float] = []
        self.batch_requests: list[float] = []
        self.queue_s: list[float] = []
        self.request_s: list[float] = []
        # per model version: its (ok, inferences, samples, executions) children and their increments
        self.counts: dict[tuple, list[int]] = {}
        self.last_flush_ns = time.monotonic_ns()
        self.asked = False  # set by a scrape (another thread): flush at the next chance
        self.in_hand = 0  # requests answered whose updates are not collected yet (replies go first)

    def ask(self) -> None:
        self.asked = True

    @property
    def settled(self) -> bool:
        """Whether every answered request's updates are applied (what a scrape waits for)."""
        return self.requests == 0 and self.in_hand == 0

    def answering(self, requests: int) -> None:
        """``requests`` replies are about to go out; ``batch`` collects their updates after."""
        self.in_hand += requests

    def batch(self, children: tuple, requests: int, rows: int, inference_s: float) -> None:
        counts = self.counts.get(children)
        if counts is None:
            counts = self.counts[children] = [0, 0, 0, 0]
        counts[0] += requests
        counts[1] += requests
        counts[2] += rows
        counts[3] += 1
        self.inference_s.append(inference_s)
        self.batch_requests.append(requests)
        self.requests += requests
        self.in_hand = max(self.in_hand - requests, 0)

    def due(self, now_ns: int) -> bool:
        return self.requests >= FLUSH_EVERY or (
            self.requests > 0 and (self.asked or now_ns - self.last_flush_ns > FLUSH_AFTER_NS)
        )

    def flush(self) -> None:
        m = self.metrics
        for children, counts in self.counts.items():
            for child, n in zip(children, counts, strict=True):
                if n:
                    child.inc(n)
        self.counts.clear()
        for histogram, values in (
            (m.inference_seconds, self.inference_s),
            (m.batch_requests, self.batch_requests),
            (m.queue_seconds, self.queue_s),
            (m.request_seconds, self.request_s),
        ):
            if values:
                observe_all(histogram, values)
                values.clear()
        self.requests = 0
        self.asked = False
        self.last_flush_ns = time.monotonic_ns()
