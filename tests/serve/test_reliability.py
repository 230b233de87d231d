"""Hostile traffic against real ZeroMQ sockets: the server answers, stays up and
bounded, and reports a dead thread instead of hiding it."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import zmq
from prometheus_client import generate_latest

from edged.config import ServerSection
from edged.metrics import Metrics
from edged.runtime.engine import Engine, TensorSpec
from edged.serve import protocol as p
from edged.serve.served import ServedModel
from edged.serve.server import Server

from .conftest import sample_x


class GatedEngine(Engine):
    """Doubles int8 rows into int32; blocks while ``gate`` is closed; records batch sizes."""

    name = "gated"

    def __init__(self, dtype: type = np.int8) -> None:
        inputs = [TensorSpec("x", np.dtype(dtype), (4,))]
        super().__init__(inputs, [TensorSpec("y", np.dtype(np.int32), (4,))], "gated")
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[int] = []
        self.raise_next: BaseException | None = None
        self.entered = threading.Event()  # set when a batch reaches the engine

    def _run(self, inputs):
        self.entered.set()
        self.gate.wait(20)
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc
        self.batches.append(inputs[0].shape[0])
        return [inputs[0].astype(np.int32) * 2]


def start_core(engine: Engine, batch1_us: float = 0.0, **settings) -> tuple[Server, Metrics, zmq.Context]:
    ctx = zmq.Context()
    model = ServedModel("gated", "1", [engine], "gated", batch1_us=batch1_us)
    base = {"bind": "tcp://127.0.0.1:*", "workers": 1, "queue_size": 8, "max_batch": 8, "max_delay_us": 0}
    server_ref: list[Server] = []
    metrics = Metrics(snapshot=lambda: server_ref[0].snapshot() if server_ref else None)
    server = Server(model, ServerSection(**{**base, **settings}), metrics, context=ctx)
    server_ref.append(server)
    server.start()
    server.ready = True
    return server, metrics, ctx


@pytest.fixture
def cores():
    made: list[tuple[Server, Engine, zmq.Context]] = []

    def make(engine: Engine | None = None, **kw):
        engine = engine or GatedEngine()
        server, metrics, ctx = start_core(engine, **kw)
        made.append((server, engine, ctx))
        return server, engine, metrics, ctx

    yield make
    for server, engine, ctx in made:
        if isinstance(engine, GatedEngine):
            engine.gate.set()
        server.close(timeout_s=5)
        ctx.destroy(linger=0)


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def send_header(sock: zmq.Socket, header: dict, *tensors: bytes) -> None:
    sock.send_multipart([p.TAG, json.dumps(header).encode(), *tensors])


def infer_header(rid: str, shape: list[int], datatype: object = "INT8", timeout_ms: int = 0) -> dict:
    h: dict = {"id": rid, "op": "infer", "inputs": [{"datatype": datatype, "shape": shape}]}
    if timeout_ms:
        h["parameters"] = {"timeout_ms": timeout_ms}
    return h


def reply(sock: zmq.Socket, timeout_ms: int = 5000) -> tuple[dict, list[bytes]]:
    assert sock.poll(timeout_ms), "no reply"
    frames = sock.recv_multipart()
    return json.loads(frames[1]), frames[2:]


def health(sock: zmq.Socket, rid: str = "h", timeout_ms: int = 3000) -> dict:
    send_header(sock, {"id": rid, "op": "health"})
    return reply(sock, timeout_ms)[0]


def scrape(metrics: Metrics, name: str) -> float:
    total = 0.0
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rpartition(" ")[2])
    return total


# ---------------------------------------------------------------- wrong types in a message


@pytest.mark.parametrize("datatype", [["INT8"], {"INT8": 1}, 8, None])
def test_wrong_typed_datatype_is_bad_message_and_serving_goes_on(shared_daemon, datatype):
    ctx = zmq.Context()
    sock = dealer(ctx, shared_daemon.endpoint)
    try:
        x = sample_x(1)
        send_header(sock, infer_header("bad", list(x.shape), datatype), x.tobytes())
        header, _ = reply(sock)
        assert (header["id"], header["error"]["code"]) == ("bad", "BAD_MESSAGE")
        assert "datatype" in header["error"]["message"]
        send_header(sock, infer_header("good", list(x.shape)), x.tobytes())
        header, tensors = reply(sock)
        assert header["status"] == "ok" and len(tensors) == 1
        assert health(sock)["ready"] is True
    finally:
        sock.close()
        ctx.term()


def test_a_model_with_an_int64_input_gets_metadata_and_clear_errors(cores):
    server, _, _, ctx = cores(GatedEngine(np.int64))
    sock = dealer(ctx, server.endpoint)
    send_header(sock, {"id": "m", "op": "metadata"})
    meta, _ = reply(sock)
    assert meta["status"] == "ok"
    assert meta["inputs"][0]["datatype"] == "INT64" and meta["inputs"][0]["unsupported"] is True
    assert meta["outputs"][0]["datatype"] == "INT32" and "unsupported" not in meta["outputs"][0]
    x = np.zeros((1, 4), np.int32)
    send_header(sock, infer_header("i", [1, 4], "INT32"), x.tobytes())
    header, _ = reply(sock)
    assert header["error"]["code"] == "BAD_INPUT" and "INT64" in header["error"]["message"]
    assert health(sock)["ready"] is True


def test_a_handler_bug_is_answered_internal_and_counted(cores, monkeypatch):
    server, _, metrics, ctx = cores()
    sock = dealer(ctx, server.endpoint)

    def broken(*_args, **_kw):
        raise KeyError("a bug")

    monkeypatch.setattr(server.feedback, "match", broken)
    send_header(sock, {"id": "f", "op": "feedback", "label": 3})
    header, _ = reply(sock)
    assert (header["id"], header["error"]["code"]) == ("f", "INTERNAL")
    assert scrape(metrics, "edged_internal_errors_total") == 1
    assert health(sock)["ready"] is True


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_io_thread_drops_readiness_and_health(cores, monkeypatch):
    server, _, metrics, ctx = cores()
    sock = dealer(ctx, server.endpoint)
    assert server.healthy(60) and server.ready

    def fatal(*_args, **_kw):
        raise SystemExit("the I/O thread ends")  # not an Exception: nothing may swallow it

    monkeypatch.setattr(p, "decode_request", fatal)
    send_header(sock, {"id": "h", "op": "health"})
    server._io_thread.join(5)
    assert not server._io_thread.is_alive()
    assert not server.healthy(60)  # the watchdog stops pinging at once, not after a stall limit
    assert not server.ready
    assert scrape(metrics, "edged_ready") == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_drops_readiness_and_health(cores):
    server, engine, metrics, ctx = cores()
    sock = dealer(ctx, server.endpoint)
    engine.raise_next = SystemExit("the worker ends")
    send_header(sock, infer_header("r", [1, 4]), np.zeros((1, 4), np.int8).tobytes())
    server._threads[0].join(5)
    assert not server._threads[0].is_alive()
    assert not server.healthy(60) and not server.ready
    assert scrape(metrics, "edged_ready") == 0
    assert health(sock)["ready"] is False


# ---------------------------------------------------------------- request size


def test_a_huge_batch_is_refused_at_once(daemons):
    d = daemons(sections={"server": {"max_message_bytes": 8 << 20}}).start()
    ctx = zmq.Context()
    sock = dealer(ctx, d.endpoint)
    try:
        x = np.zeros((50_000, 8, 8, 1), np.int8)  # 3.2 MB, the size of the message, not of the work
        send_header(sock, infer_header("huge", list(x.shape)), x.tobytes())
        header, _ = reply(sock)
        assert header["error"]["code"] == "BAD_INPUT"
        assert "max_request_batch" in header["error"]["message"]
        assert health(sock)["ready"] is True
    finally:
        sock.close()
        ctx.term()


def test_a_message_over_max_message_bytes_is_refused(cores):
    server, _, _, ctx = cores(max_message_bytes=4096)
    sock = dealer(ctx, server.endpoint)
    x = np.zeros((600, 4), np.int8)  # each frame is below the limit, the message is not
    header = {"id": "big", "op": "infer", "inputs": [{"datatype": "INT8", "shape": [600, 4]}] * 2}
    send_header(sock, header, x.tobytes(), x.tobytes())
    got, _ = reply(sock)
    assert got["error"]["code"] == "BAD_MESSAGE" and "limit is 4096" in got["error"]["message"]


def test_a_long_lone_request_never_runs_on_the_io_thread(cores):
    # batch1_us makes the model look fast: a 1-row request would run inline.
    server, engine, _, ctx = cores(batch1_us=2.0, inline_max_us=300)
    sock = dealer(ctx, server.endpoint)
    engine.gate.clear()
    send_header(sock, infer_header("long", [200, 4]), np.ones((200, 4), np.int8).tobytes())
    assert engine.entered.wait(5)
    assert health(sock)["live"] is True  # answered while the engine is held
    engine.gate.set()
    header, tensors = reply(sock)
    assert header["status"] == "ok"
    assert np.frombuffer(tensors[0], "<i4").reshape(200, 4).tolist() == [[2] * 4] * 200


def test_a_request_larger_than_max_batch_runs_in_slices(cores):
    server, engine, _, ctx = cores(max_batch=8)
    sock = dealer(ctx, server.endpoint)
    x = (np.arange(80) % 100).astype(np.int8).reshape(20, 4)
    send_header(sock, infer_header("r", [20, 4]), x.tobytes())
    header, tensors = reply(sock)
    assert header["status"] == "ok"
    np.testing.assert_array_equal(np.frombuffer(tensors[0], "<i4").reshape(20, 4), x.astype(np.int32) * 2)
    assert engine.batches == [8, 8, 4]  # the engine's buffers never grow past max_batch rows


# ---------------------------------------------------------------- overload


def test_requests_whose_deadline_cannot_be_met_are_refused_at_once(cores):
    # 20 ms per row, one worker, one row per batch: a 500 ms deadline fits about 25
    # requests ahead of it. The queue itself would hold all of them.
    server, engine, metrics, ctx = cores(batch1_us=20_000.0, max_batch=1, queue_size=1000)
    engine.gate.clear()
    socks = [dealer(ctx, server.endpoint) for _ in range(4)]
    x = np.zeros((1, 4), np.int8).tobytes()
    for i in range(100):
        for k, sock in enumerate(socks):
            send_header(sock, infer_header(f"{k}-{i}", [1, 4], timeout_ms=500), x)
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    codes: dict[str, str] = {}

    def collect(until: float, quiet_s: float = 30.0) -> None:
        """Replies until all 400 came, none came for ``quiet_s``, or ``until``."""
        last = time.monotonic()
        while len(codes) < 400 and time.monotonic() < min(until, last + quiet_s):
            for sock, _ in poller.poll(100):
                while sock.poll(0):
                    header = json.loads(sock.recv_multipart()[1])
                    codes[header["id"]] = header.get("error", {}).get("code", "ok")
                    last = time.monotonic()

    collect(time.monotonic() + 15, quiet_s=1.0)  # the engine is held: only refusals arrive
    shed = [rid for rid, code in codes.items() if code == "OVERLOADED"]
    assert set(codes.values()) == {"OVERLOADED"}
    assert 400 - 40 <= len(shed) <= 400 - 20  # about 26 admitted (one running, 25 queued)
    assert scrape(metrics, "edged_requests_shed_total") == len(shed)
    assert len(server.queue) <= 30
    engine.gate.set()
    collect(time.monotonic() + 30)  # nothing hangs: every request gets one reply
    assert len(codes) == 400
    assert set(codes.values()) <= {"OVERLOADED", "ok", "DEADLINE_EXCEEDED"}


def test_a_flood_beyond_the_queue_gets_overloaded_replies_while_the_engine_is_held(cores):
    server, engine, metrics, ctx = cores(queue_size=1000, queue_max_bytes=1024, recv_hwm=32)
    engine.gate.clear()
    socks = [dealer(ctx, server.endpoint) for _ in range(4)]
    x = np.zeros((16, 4), np.int8).tobytes()  # 64 bytes: the byte bound queues 16 of them
    for i in range(300):
        for k, sock in enumerate(socks):
            send_header(sock, infer_header(f"{k}-{i}", [16, 4]), x)
    replies = 0
    end = time.monotonic() + 20
    while replies < 1200 - 17 and time.monotonic() < end:  # all but the queued and the running one
        for sock in socks:
            while sock.poll(10):
                header = json.loads(sock.recv_multipart()[1])
                assert header["error"]["code"] == "OVERLOADED", header
                replies += 1
    assert 1200 - 17 <= replies <= 1200 - 16
    assert scrape(metrics, "edged_requests_shed_total") == replies
    assert server.queue.nbytes <= 1024
    engine.gate.set()
    for sock in socks:
        sock.close()


def test_the_daemon_exits_with_status_1_when_a_server_thread_died(tmp_path, monkeypatch):
    """Without a watchdog nothing else would restart a daemon whose I/O thread is gone."""
    from edged.app import App
    from tests.serve.conftest import ENGINE, free_port

    app = App(None, {
        "model.path": "",
        "model.engine": ENGINE,
        "server.bind": f"tcp://127.0.0.1:{free_port()}",
        "metrics.listen": "",
        "store.state_dir": str(tmp_path / "state"),
    })
    app.start()

    def fatal(*_args, **_kw):
        raise SystemExit("the I/O thread ends")

    monkeypatch.setattr(p, "decode_request", fatal)
    ctx = zmq.Context()
    sock = dealer(ctx, app.server.endpoint)
    try:
        send_header(sock, {"id": "h", "op": "health"})
        assert app.serve_until_stopped() == 1
    finally:
        sock.close(linger=0)
        ctx.term()
