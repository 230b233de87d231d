"""The I/O loop's busy polling: when it spins on the ROUTER and when it blocks in poll."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from edged.config import ConfigError, ServerSection, load_config
from edged.metrics import Metrics
from edged.serve import protocol as p
from edged.serve.served import ServedModel
from edged.serve.server import Server
from tests.serve.test_server_core import HeldEngine, receive, send


class CountingPoller(zmq.Poller):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def poll(self, timeout=None):
        self.calls += 1
        return super().poll(timeout)


@pytest.fixture
def pair():
    """A Server (not started) and a DEALER connected to a ROUTER it can wait on."""
    ctx = zmq.Context()
    model = ServedModel("held", "1", [HeldEngine()], "held")
    server = Server(model, ServerSection(busy_poll_us=5000), Metrics(), context=ctx)
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    poller = CountingPoller()
    poller.register(router, zmq.POLLIN)
    yield server, router, dealer, poller
    for s in (router, dealer):
        s.close(linger=0)
    ctx.destroy(linger=0)


def _queue_one(router, dealer) -> None:
    dealer.send_multipart([p.TAG, json.dumps({"id": "a", "op": "health"}).encode()])
    assert router.poll(3000), "the message did not arrive"  # poll does not consume it


def test_dense_traffic_is_found_by_spinning_without_a_poll(pair):
    server, router, dealer, poller = pair
    server._client_gap_ns = 0  # the last request came right away
    _queue_one(router, dealer)
    events = server._wait(poller, router, 100)
    assert events == {router: zmq.POLLIN}
    assert poller.calls == 0
    assert server._client_gap_ns < 5_000_000


def test_sparse_traffic_blocks_in_poll(pair):
    server, router, dealer, poller = pair
    server._client_gap_ns = 1 << 62  # the last wait saw no client message
    _queue_one(router, dealer)
    assert router in server._wait(poller, router, 100)
    assert poller.calls == 1


def test_no_spinning_while_a_worker_reply_is_outstanding(pair):
    server, router, dealer, poller = pair
    server._client_gap_ns = 0
    server._admitted = 1  # a worker holds a request: its reply comes on the other socket
    _queue_one(router, dealer)
    assert router in server._wait(poller, router, 100)
    assert poller.calls == 1


def test_busy_poll_zero_never_spins(pair):
    server, router, dealer, poller = pair
    server.settings = ServerSection(busy_poll_us=0)
    server._client_gap_ns = 0
    _queue_one(router, dealer)
    assert router in server._wait(poller, router, 100)
    assert poller.calls == 1


@pytest.mark.parametrize("busy_poll_us", [0, 200])
def test_requests_are_answered_with_and_without_busy_polling(busy_poll_us):
    ctx = zmq.Context()
    model = ServedModel("held", "1", [HeldEngine()], "held")
    settings = ServerSection(bind="tcp://127.0.0.1:*", workers=1, busy_poll_us=busy_poll_us)
    server = Server(model, settings, Metrics(), context=ctx)
    server.start()
    server.ready = True
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server.endpoint)
    try:
        for i in range(50):
            x = np.full((1, 4), i % 100, np.int8)
            send(sock, f"r{i}", x)
            reply = receive(sock)
            assert reply["header"]["status"] == "ok"
            np.testing.assert_array_equal(np.frombuffer(reply["tensors"][0], np.int32), x[0] * 2)
    finally:
        sock.close(linger=0)
        server.close(timeout_s=5)
        ctx.destroy(linger=0)


def test_busy_poll_us_is_checked(tmp_path):
    cfg = tmp_path / "edged.toml"
    cfg.write_text('[model]\npath = "m.tflite"\n[server]\nbusy_poll_us = 20000\n')
    with pytest.raises(ConfigError, match="busy_poll_us"):
        load_config(cfg)
    cfg.write_text('[model]\npath = "m.tflite"\n[server]\nbusy_poll_us = 0\n')
    assert load_config(cfg).server.busy_poll_us == 0
