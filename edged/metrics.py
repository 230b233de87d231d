"""Prometheus metrics of the daemon, in an explicit registry.

Events (requests, executions, swaps) are counted where they happen. State
(queue depth, the served model, process CPU and memory) is read at scrape time
by collectors, so a scrape never sees a stale gauge and the hot path updates
nothing it does not have to. Names follow Prometheus conventions: the
``edged_`` prefix, base units (seconds, bytes), ``_total`` on counters.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Sub-millisecond resolution for the fast path, up to seconds for stalls.
LATENCY_BUCKETS = (
    25e-6,
    50e-6,
    100e-6,
    200e-6,
    400e-6,
    800e-6,
    1.6e-3,
    3.2e-3,
    6.4e-3,
    12.8e-3,
    25.6e-3,
    51.2e-3,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class ServerSnapshot:
    """What the state collector reports; produced by the server at scrape time."""

    ready: bool
    queue_depth: int
    queue_capacity: int
    in_flight: int
    workers: int
    workers_busy: int
    model_name: str
    model_version: str
    engine: str
    sha256: str
    model_bytes: int
    weight_bytes: int
    sparsity: float
    loaded_at: float


class StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], ServerSnapshot | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        if s is None:
            return

        def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
            g = GaugeMetricFamily(name, doc, labels=list(labels) if labels else None)
            g.add_metric(list(labels.values()) if labels else [], value)
            return g

        mv = {"model": s.model_name, "version": s.model_version}
        yield gauge("edged_ready", "1 when the daemon accepts inference requests", float(s.ready))
        yield gauge("edged_queue_depth", "Requests waiting for a worker", s.queue_depth)
        yield gauge("edged_queue_capacity", "Bound of the request queue", s.queue_capacity)
        yield gauge("edged_requests_in_flight", "Admitted infer requests not yet answered", s.in_flight)
        yield gauge("edged_workers", "Inference worker threads", s.workers)
        yield gauge("edged_workers_busy", "Workers executing a batch now", s.workers_busy)
        yield gauge(
            "edged_model_info",
            "The served model version (value 1)",
            1,
            {**mv, "engine": s.engine, "sha256": s.sha256},
        )
        yield gauge("edged_model_size_bytes", "Size of the served .tflite file", s.model_bytes, mv)
        yield gauge("edged_model_weight_bytes", "Bytes of int8 weight tensors", s.weight_bytes, mv)
        yield gauge("edged_model_sparsity_ratio", "Fraction of int8 weights that are zero", s.sparsity, mv)
        yield gauge(
            "edged_model_loaded_timestamp_seconds", "When the served version was loaded", s.loaded_at, mv
        )


class ProcessCollector(Collector):
    """CPU, memory and load from psutil; CPU temperature only where the board has a sensor."""

    def __init__(self, pid: int | None = None) -> None:
        self._proc = psutil.Process(pid or os.getpid())
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock, self._proc.oneshot():
            cpu = self._proc.cpu_times()
            mem = self._proc.memory_info()
            threads = self._proc.num_threads()
            fds = self._proc.num_fds() if hasattr(self._proc, "num_fds") else None
        c = CounterMetricFamily("edged_process_cpu_seconds", "CPU time used by the daemon", labels=["mode"])
        c.add_metric(["user"], cpu.user)
        c.add_metric(["system"], cpu.system)
        yield c
        yield GaugeMetricFamily("edged_process_resident_memory_bytes", "Resident set size", value=mem.rss)
        yield GaugeMetricFamily("edged_process_virtual_memory_bytes", "Virtual memory size", value=mem.vms)
        yield GaugeMetricFamily("edged_process_threads", "OS threads of the daemon", value=threads)
        if fds is not None:
            yield GaugeMetricFamily("edged_process_open_fds", "Open file descriptors", value=fds)
        load = os.getloadavg()
        for minutes, value in zip((1, 5, 15), load, strict=True):
            yield GaugeMetricFamily(
                f"edged_system_load{minutes}", f"System load average over {minutes} min", value=value
            )
        temps = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
        if temps:  # absent, not zero, on boards without a sensor
            t = GaugeMetricFamily(
                "edged_cpu_temperature_celsius",
                "Temperature sensors read by psutil",
                labels=["sensor", "label"],
            )
            for sensor, entries in sorted(temps.items()):
                for i, e in enumerate(entries):
                    t.add_metric([sensor, e.label or str(i)], e.current)
            yield t


class SettleCollector(Collector):
    """Registered first, so a scrape runs it before any other collector: it has the serving
    threads apply the metric updates they batch (edged.serve.tally); it yields nothing."""

    def __init__(self, settle: Callable[[], object]) -> None:
        self._settle = settle

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self._settle()
        return iter(())


class Metrics:
    """Every metric of the daemon, registered in one explicit registry."""

    def __init__(
        self,
        snapshot: Callable[[], ServerSnapshot | None] | None = None,
        registry: CollectorRegistry | None = None,
        settle: Callable[[], object] | None = None,
    ) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        if settle is not None:
            r.register(SettleCollector(settle))
        mv = ["model", "version"]
        self.requests = Counter(
            "edged_requests", "Requests answered, by op and reply status", ["op", "status", *mv], registry=r
        )
        self.inferences = Counter("edged_inferences", "Infer requests executed", mv, registry=r)
        self.samples = Counter("edged_inference_samples", "Samples (batch rows) executed", mv, registry=r)
        self.executions = Counter("edged_executions", "Engine calls; one per micro-batch", mv, registry=r)
        self.batch_requests = Histogram(
            "edged_batch_requests", "Requests per engine call", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "edged_queue_duration_seconds",
            "Admission to start of execution",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "edged_inference_duration_seconds", "Engine time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.request_seconds = Histogram(
            "edged_request_duration_seconds",
            "Receipt to reply of infer requests",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bad_messages = Counter(
            "edged_bad_messages", "Malformed messages, by reason", ["reason"], registry=r
        )
        self.internal_errors = Counter(
            "edged_internal_errors",
            "Unexpected exceptions the server survived, by the thread that caught them",
            ["thread"],
            registry=r,
        )
        self.shed = Counter(
            "edged_requests_shed",
            "Infer requests refused OVERLOADED before queueing, by reason",
            ["reason"],
            registry=r,
        )
        self.replies_dropped = Counter(
            "edged_replies_dropped", "Replies that could not be delivered", ["reason"], registry=r
        )
        self.swaps = Counter("edged_model_swaps", "Hot swaps to a new model version", registry=r)
        self.load_failures = Counter(
            "edged_model_load_failures", "Model versions that failed to load", registry=r
        )
        self.reloads = Counter("edged_reloads", "Reloads (SIGHUP), by result", ["result"], registry=r)
        self.store_write_failures = Counter(
            "edged_store_write_failures", "Model store writes the file system refused", registry=r
        )
        self.store_repairs = Counter(
            "edged_store_repairs", "Configured model re-imported because no stored version loaded", registry=r
        )
        self.store_pruned = Counter("edged_store_pruned_versions", "Old model versions deleted", registry=r)
        self.curve_disconnects = Counter(
            "edged_curve_disconnects", "Connections closed because their client key was removed", registry=r
        )
        self.feedback = Counter(
            "edged_feedback", "Ground-truth labels received, by outcome", ["outcome", *mv], registry=r
        )
        if snapshot is not None:
            r.register(StateCollector(snapshot))
        r.register(ProcessCollector())


def serve_http(metrics: Metrics, listen: str, health=None):
    """Start the scrape endpoint on HOST:PORT; returns the server (call .shutdown(), .server_close())."""
    from edged.metrics_http import MetricsHTTPServer

    return MetricsHTTPServer(metrics.registry, listen, health).start()
