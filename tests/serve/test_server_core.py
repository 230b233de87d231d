"""The serving core in-process, with a stub engine the test can hold: overload,
deadlines, micro-batching, the watchdog's view of progress, client retries."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import numpy as np
import pytest
import zmq

from edged.config import ServerSection
from edged.metrics import Metrics
from edged.runtime.engine import Engine, TensorSpec
from edged.serve import protocol as p
from edged.serve.client import Client, RemoteError, RequestTimeoutError
from edged.serve.served import ServedModel
from edged.serve.server import Server
from edged.systemd import Notifier, Watchdog


class HeldEngine(Engine):
    """Doubles its int8 input into int32; blocks while ``gate`` is closed."""

    name = "held"

    def __init__(self) -> None:
        self.model = "held"
        self.inputs = [TensorSpec("x", np.dtype(np.int8), (4,))]
        self.outputs = [TensorSpec("y", np.dtype(np.int32), (4,))]
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[int] = []
        self.fail_next = False

    def _run(self, inputs):
        self.gate.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("engine bug")
        self.batches.append(inputs[0].shape[0])
        return [inputs[0].astype(np.int32) * 2]


@pytest.fixture
def core():
    ctx = zmq.Context()
    engine = HeldEngine()
    model = ServedModel("held", "1", [engine], "held")
    settings = ServerSection(bind="tcp://127.0.0.1:*", workers=1, queue_size=3, max_batch=8, max_delay_us=0)
    server = Server(model, settings, Metrics(), context=ctx)
    server.start()
    server.ready = True
    yield server, engine, ctx
    engine.gate.set()
    server.close(timeout_s=5)
    ctx.destroy(linger=0)


def send(sock, rid, x, timeout_ms=None):
    header = {"id": rid, "op": "infer", "inputs": [{"datatype": "INT8", "shape": list(x.shape)}]}
    if timeout_ms:
        header["parameters"] = {"timeout_ms": timeout_ms}
    sock.send_multipart([p.TAG, json.dumps(header).encode(), x.tobytes()])


def receive(sock, timeout_ms=3000) -> dict:
    assert sock.poll(timeout_ms), "no reply"
    frames = sock.recv_multipart()
    return {"header": json.loads(frames[1]), "tensors": frames[2:]}


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_overload_deadline_and_batching(core):
    server, engine, ctx = core
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server.endpoint)
    x = np.arange(4, dtype=np.int8).reshape(1, 4)
    engine.gate.clear()
    send(sock, "r1", x)
    wait_for(lambda: server.snapshot().workers_busy == 1)
    send(sock, "r2", x, timeout_ms=50)
    send(sock, "r3", x + 1)
    send(sock, "r4", x + 2)
    send(sock, "r5", x)
    first = receive(sock, 2000)["header"]  # while the worker is held: r5 is refused at once
    assert (first["id"], first["error"]["code"]) == ("r5", "OVERLOADED")
    time.sleep(0.1)
    engine.gate.set()
    replies = {r["header"]["id"]: r for r in (receive(sock) for _ in range(4))}
    assert replies["r2"]["header"]["error"]["code"] == "DEADLINE_EXCEEDED"
    for rid, add in (("r1", 0), ("r3", 1), ("r4", 2)):
        h = replies[rid]["header"]
        assert h["status"] == "ok" and h["model_version"] == "1"
        got = np.frombuffer(replies[rid]["tensors"][0], "<i4").reshape(h["outputs"][0]["shape"])
        np.testing.assert_array_equal(got, (x + add).astype(np.int32) * 2)
    assert engine.batches == [1, 2]  # r3 and r4 ran as one micro-batch
    sock.close(linger=0)


def test_bad_input_messages_say_expected_and_got(core):
    server, _, ctx = core
    with Client(server.endpoint, context=ctx, timeout_ms=2000) as c:
        with pytest.raises(RemoteError) as info:
            c.infer(np.zeros((1, 5), np.int8))
        assert info.value.code == "BAD_INPUT" and "expected shape [N, 4], got [1, 5]" in info.value.message
        with pytest.raises(RemoteError, match="expected datatype INT8, got FP32"):
            c.infer(np.zeros((1, 4), np.float32))
        with pytest.raises(RemoteError, match="unknown input 'z'"):
            c.infer({"z": np.zeros((1, 4), np.int8)})
        with pytest.raises(RemoteError, match="takes 1 input"):
            c.infer([np.zeros((1, 4), np.int8)] * 2)
        assert c.infer({"x": np.ones((3, 4), np.int8)}).outputs[0].tolist() == [[2] * 4] * 3


def test_engine_failure_is_internal_and_the_worker_survives(core):
    server, engine, ctx = core
    with Client(server.endpoint, context=ctx, timeout_ms=2000) as c:
        engine.fail_next = True
        with pytest.raises(RemoteError) as info:
            c.infer(np.zeros((2, 4), np.int8))
        assert info.value.code == "INTERNAL"
        assert c.infer(np.ones((1, 4), np.int8)).outputs[0].tolist() == [[2] * 4]


def test_watchdog_pings_only_while_workers_progress(core, tmp_path):
    server, engine, ctx = core
    path = str(tmp_path / "notify.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(0.05)
    # The I/O loop beats every 100 ms when idle: a stall limit well above that
    # keeps a loaded CI machine from looking stuck.
    dog = Watchdog(Notifier(path), 0.2, lambda: server.healthy(0.5))
    dog.start()

    def pings_during(seconds: float) -> int:
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                n += rx.recv(256) == b"WATCHDOG=1"
        return n

    try:
        assert pings_during(1.0) >= 2
        engine.gate.clear()
        c = Client(server.endpoint, context=ctx, timeout_ms=5000)
        t = threading.Thread(target=lambda: c.infer(np.zeros((1, 4), np.int8)), daemon=True)
        t.start()
        wait_for(lambda: server.snapshot().workers_busy == 1)
        pings_during(0.7)  # pings go on until the batch has run longer than the stall limit
        assert pings_during(0.8) == 0  # the worker is stuck: no pings, systemd would restart us
        engine.gate.set()
        t.join(5)
        assert pings_during(1.0) >= 2
        c.close()
    finally:
        dog.stop()
        rx.close()


class FakeServer:
    """A ROUTER that records requests and answers according to a script."""

    def __init__(self, ctx, script):
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.script = list(script)  # "silent" | "overloaded" | "ok"
        self.received: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            if not self.sock.poll(20):
                continue
            ident, _tag, head, *_ = self.sock.recv_multipart()
            header = json.loads(head)
            self.received.append(header)
            action = self.script.pop(0) if self.script else "silent"
            if action == "overloaded":
                reply = p.ErrorReply(header["id"], "OVERLOADED", "full")
            elif action == "ok":
                reply = (
                    p.InfoReply(header["id"], {"live": True})
                    if header["op"] != "infer"
                    else p.InferReply(header["id"], "m", "1", [p.Tensor("y", np.zeros((1, 2), np.int8))], {})
                )
            else:
                continue
            self.sock.send_multipart([ident, *p.encode_reply(reply)])

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close(linger=0)


def test_client_never_resends_a_request_that_may_have_run():
    ctx = zmq.Context()
    fake = FakeServer(ctx, ["silent"] * 10)
    try:
        with Client(fake.endpoint, context=ctx, timeout_ms=150, retries=2) as c:
            with pytest.raises(RequestTimeoutError, match="not resent"):
                c.infer(np.zeros((1, 2), np.int8))
            time.sleep(0.1)
            assert [r["op"] for r in fake.received] == ["infer"]
            with pytest.raises(RequestTimeoutError):
                c.health()  # read-only: retried
            time.sleep(0.1)
            assert [r["op"] for r in fake.received] == ["infer", "health", "health", "health"]
            fake.received.clear()
            with pytest.raises(RequestTimeoutError):
                c.infer(np.zeros((1, 2), np.int8), retry=True)  # caller says it is idempotent
            time.sleep(0.1)
            assert len(fake.received) == 3
    finally:
        fake.close()
        ctx.destroy(linger=0)


def test_client_retries_requests_that_did_not_run():
    ctx = zmq.Context()
    fake = FakeServer(ctx, ["overloaded", "overloaded", "ok"])
    try:
        with Client(fake.endpoint, context=ctx, timeout_ms=1000, retries=2, backoff_ms=1) as c:
            result = c.infer(np.zeros((1, 2), np.int8))
        assert result.model_version == "1" and len(fake.received) == 3
        assert len({r["id"] for r in fake.received}) == 1
    finally:
        fake.close()
        ctx.destroy(linger=0)


def _counted(registry, name: str) -> float:
    from prometheus_client import generate_latest

    return sum(float(line.rpartition(" ")[2]) for line in generate_latest(registry).decode().splitlines()
               if line.startswith((name + "{", name + " ")))


@contextlib.contextmanager
def serving(model: ServedModel, settings: ServerSection, metrics: Metrics):
    """A started, ready server on ``model`` and a DEALER connected to it."""
    ctx = zmq.Context()
    server = Server(model, settings, metrics, context=ctx)
    server.start()
    server.ready = True
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server.endpoint)
    try:
        yield server, sock
    finally:
        sock.close(linger=0)
        server.close(timeout_s=5)
        ctx.destroy(linger=0)


def test_a_scrape_counts_every_request_answered_before_it():
    """The I/O thread applies its metric updates in bulk, not after every request; a scrape
    (the settle collector) has them applied first, so it never misses an answered request."""
    holder: dict[str, Server] = {}
    metrics = Metrics(settle=lambda: holder["server"].settle_metrics())
    model = ServedModel("held", "1", [HeldEngine()], "held", batch1_us=1.0)  # runs inline
    with serving(model, ServerSection(bind="tcp://127.0.0.1:*"), metrics) as (server, sock):
        holder["server"] = server
        x = np.arange(4, dtype=np.int8).reshape(1, 4)
        for i in range(1, 31):
            send(sock, f"r{i}", x)
            assert receive(sock)["header"]["status"] == "ok"
            assert _counted(metrics.registry, "edged_requests_total") == i
            assert _counted(metrics.registry, "edged_request_duration_seconds_count") == i


def test_metric_updates_wait_for_their_count_their_age_or_a_scrape():
    from edged.serve.tally import FLUSH_AFTER_NS, FLUSH_EVERY, Tally

    tally = Tally(Metrics())
    now = tally.last_flush_ns
    assert not tally.due(now)  # nothing to apply
    tally.batch((), 1, 1, 1e-6)
    assert not tally.due(now + 1000)
    assert tally.due(now + FLUSH_AFTER_NS + 1)
    tally.ask()
    assert tally.due(now + 1000)
    tally.requests = FLUSH_EVERY
    tally.asked = False
    assert tally.due(now + 1000)


def test_a_reply_sent_before_its_updates_are_collected_keeps_the_tally_unsettled():
    """Replies go out before their metric updates are collected: a scrape in between must wait."""
    from edged.serve.execute import BatchRunner
    from edged.serve.feedback import FeedbackLog

    runner = BatchRunner(Metrics(), FeedbackLog(), 1)
    tally, children = runner._tallies[0], runner._labels(ServedModel("m", "1", [HeldEngine()], "held"))
    assert tally.settled
    tally.answering(2)
    assert not tally.settled and not tally.due(tally.last_flush_ns)  # nothing to apply yet
    tally.batch(children, 2, 2, 1e-6)
    assert tally.in_hand == 0 and not tally.settled
    tally.flush()
    assert tally.settled


class PinnedEngine(HeldEngine):
    """A model whose shapes pin the batch at 1: joining requests would save nothing."""

    per_sample = True


def test_requests_to_a_model_that_pins_its_batch_run_one_by_one():
    engine = PinnedEngine()
    model = ServedModel("pinned", "1", [engine], "held")
    settings = ServerSection(bind="tcp://127.0.0.1:*", workers=1, max_batch=8, max_delay_us=0)
    with serving(model, settings, Metrics()) as (server, sock):
        x = np.arange(4, dtype=np.int8).reshape(1, 4)
        engine.gate.clear()
        send(sock, "r1", x)
        wait_for(lambda: server.snapshot().workers_busy == 1)
        for i in range(2, 5):
            send(sock, f"r{i}", x + i)
        wait_for(lambda: server.snapshot().queue_depth == 3)
        engine.gate.set()
        replies = {r["header"]["id"]: r for r in (receive(sock) for _ in range(4))}
        for i in range(2, 5):
            h = replies[f"r{i}"]["header"]
            got = np.frombuffer(replies[f"r{i}"]["tensors"][0], "<i4").reshape(h["outputs"][0]["shape"])
            np.testing.assert_array_equal(got, (x + i).astype(np.int32) * 2)
        assert engine.batches == [1, 1, 1, 1]  # r2..r4 left the queue together, and ran one by one
