"""Ground truth for earlier predictions: the input of accuracy monitoring.

Workers record the top-1 prediction of each classification request under its
id; a later ``feedback`` message with that id and the true label is matched
against it. Both the record and the matched events are bounded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeedbackEvent:
    request_id: str
    model_name: str
    model_version: str
    predicted: tuple[int, ...]
    label: tuple[int, ...]
    inputs: np.ndarray | None = None  # the request's first input, when the log keeps inputs

    @property
    def correct(self) -> int:
        return sum(p == t for p, t in zip(self.predicted, self.label, strict=True))


class FeedbackLog:
    def __init__(self, capacity: int = 4096, keep_events: int = 4096, keep_inputs: bool = False) -> None:
        self.capacity = capacity
        # Labelled inputs are what fine-tuning and validation under drift learn from (edged.adapt).
        self.keep_inputs = keep_inputs
        self._pending: OrderedDict[str, tuple[str, str, np.ndarray, np.ndarray | None]] = OrderedDict()
        self.events: deque[FeedbackEvent] = deque(maxlen=keep_events)
        self.total = 0  # events ever matched
        self._lock = threading.Lock()

    def record(self, request_id: str, model_name: str, model_version: str, output: np.ndarray,
               inputs: np.ndarray | None = None) -> None:
        """Remember a [batch, classes] output (its argmax is taken only if feedback comes), and with
        ``keep_inputs`` a copy of the request's input batch."""
        self.record_many(model_name, model_version, [(request_id, output, inputs)])

    def record_many(self, model_name: str, model_version: str,
                    requests: list[tuple[str, np.ndarray, np.ndarray | None]]) -> None:
        """``record`` for each (request id, output, inputs) of one batch, under one lock round."""
        if self.capacity <= 0:
            return
        keep = self.keep_inputs
        entries = [
            (rid, (model_name, model_version, output,
                   np.array(inputs, copy=True) if keep and inputs is not None else None))
            for rid, output, inputs in requests
            if output.ndim == 2
        ]
        pending = self._pending
        with self._lock:
            for rid, entry in entries:
                if rid in pending:  # a reused id: its newest request is the one feedback names
                    del pending[rid]
                pending[rid] = entry
            while len(pending) > self.capacity:
                pending.popitem(last=False)

    def match(self, request_id: str, label: int | list[int]) -> tuple[str, FeedbackEvent | None]:
        """Outcome ("correct", "incorrect", "unmatched", "mismatch") and the event, if any."""
        labels = (label,) if isinstance(label, int) else tuple(label)
        with self._lock:
            entry = self._pending.get(request_id)
            if entry is None:
                return "unmatched", None
            name, version, output, inputs = entry
            predicted = tuple(int(c) for c in np.argmax(output, axis=1))
            if len(labels) != len(predicted):
                return "mismatch", None
            del self._pending[request_id]
            event = FeedbackEvent(request_id, name, version, predicted, labels, inputs)
            self.events.append(event)
            self.total += 1
        return ("correct" if event.correct == len(labels) else "incorrect"), event

    def since(self, seen: int) -> tuple[int, list[FeedbackEvent]]:
        """Events matched after the first ``seen`` (those still kept) and the new total."""
        with self._lock:
            new = min(self.total - seen, len(self.events))
            return self.total, list(self.events)[len(self.events) - new :] if new > 0 else []
