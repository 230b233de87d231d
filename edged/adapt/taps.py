"""Activation taps: copies of chosen int8 intermediate tensors from a sample of served requests.

The native engine keeps every intermediate tensor of a run in its arena, so a
tap is a copy of a view after the run, done only for a sampled fraction of
requests, into a preallocated ring buffer per tensor. Memory is capped up
front (the rings never grow), and readers get copies, so the serving path
never waits on the retrainer beyond one short lock.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edged.model.ir import Graph

PRUNABLE = ("FULLY_CONNECTED", "CONV_2D")


class Ring:
    """A fixed-size ring of int8 rows (one row = one sample's tensor, flattened)."""

    def __init__(self, rows: int, features: int) -> None:
        if rows < 1 or features < 1:
            raise ValueError(f"a ring needs rows and features >= 1, got {rows} x {features}")
        self.data = np.zeros((rows, features), dtype=np.int8)
        self.next = 0
        self.count = 0
        self.total = 0  # rows ever written

    def push(self, rows: np.ndarray) -> None:
        r = rows.reshape(rows.shape[0], -1)
        n = r.shape[0]
        cap = self.data.shape[0]
        if n >= cap:
            r = r[n - cap :]
            n = cap
        first = min(n, cap - self.next)
        self.data[self.next : self.next + first] = r[:first]
        self.data[: n - first] = r[first:]
        self.next = (self.next + n) % cap
        self.count = min(cap, self.count + n)
        self.total += rows.shape[0]

    def latest(self, n: int | None = None) -> np.ndarray:
        """A copy of the newest ``n`` rows (all held rows by default), oldest first."""
        n = self.count if n is None else min(n, self.count)
        idx = (self.next - n + np.arange(n)) % self.data.shape[0]
        return self.data[idx].copy()


@dataclass
class TapSpec:
    tensor: int
    name: str
    features: int  # elements per sample


def default_taps(graph: Graph) -> list[TapSpec]:
    """The inputs of every prunable FULLY_CONNECTED / CONV_2D (so the penultimate layer's output too)."""
    seen = []
    for op in graph.operators:
        if op.opcode in PRUNABLE and graph.tensors[op.inputs[1]].data is not None:
            t = op.inputs[0]
            tensor = graph.tensors[t]
            if tensor.dtype == np.int8 and t not in seen:
                seen.append(t)
    return [TapSpec(t, graph.tensors[t].name, int(np.prod(graph.tensors[t].shape[1:]))) for t in seen]


class Taps:
    """Sampled, memory-capped capture of tapped tensors; safe to call from serving threads."""

    def __init__(self, specs: list[TapSpec], sample_rate: float = 0.1, memory_bytes: int = 8 << 20,
                 seed: int | None = None) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample rate must be within [0, 1], got {sample_rate}")
        if not specs:
            raise ValueError("no tensors to tap")
        per_row = sum(s.features for s in specs)
        rows = memory_bytes // per_row
        if rows < 1:
            raise ValueError(
                f"{memory_bytes} bytes cannot hold one sample of the tapped tensors ({per_row} bytes)"
            )
        self.specs = specs
        self.sample_rate = sample_rate
        self.rings = {s.tensor: Ring(int(rows), s.features) for s in specs}
        self.sampled = 0
        self.seen = 0
        self.skipped = 0
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    @property
    def memory_bytes(self) -> int:
        return sum(r.data.nbytes for r in self.rings.values())

    def decide(self) -> bool:
        """Whether this request is sampled (probability sample_rate); counts requests seen."""
        self.seen += 1
        if self.sample_rate <= 0 or self._rng.random() >= self.sample_rate:
            return False
        self.sampled += 1
        return True

    def record(self, view: Callable[[int], np.ndarray]) -> None:
        """After a sampled run: copy each tapped tensor (``view(tensor)``, [batch, ...]).

        A version whose tensor has another size (units removed by pattern pruning) skips that
        tap rather than fail the request; ``skipped`` counts it."""
        with self._lock:
            rows = {t: view(t) for t in self.rings}
            if any(r[0].size != self.rings[t].data.shape[1] for t, r in rows.items()):
                self.skipped += 1
                return
            for t, ring in self.rings.items():
                ring.push(rows[t])

    def window(self, tensor: int, n: int | None = None) -> np.ndarray:
        """A copy of the newest ``n`` samples of ``tensor`` [n, features]."""
        with self._lock:
            return self.rings[tensor].latest(n)

    def total(self, tensor: int) -> int:
        """Samples of ``tensor`` ever recorded."""
        with self._lock:
            return self.rings[tensor].total

    def since(self, seen: int, tensors: list[int]) -> tuple[int, list[np.ndarray]]:
        """Rows recorded after the first ``seen`` ever (at most what the rings hold), for each of
        ``tensors``, read together so the rows line up; returns the new total and the rows."""
        with self._lock:
            total = self.rings[tensors[0]].total
            n = min(total - seen, self.rings[tensors[0]].count)
            return total, [self.rings[t].latest(n) for t in tensors]
