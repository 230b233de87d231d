"""CURVE: an authorized client is served, anyone else gets no reply at all."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zmq

from edged.cli import main
from edged.serve.auth import load_keypair, load_public_key
from edged.serve.client import Client, RequestTimeoutError
from tests.serve.conftest import sample_x

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


def test_curve_authorized_and_unauthorized(daemons, tmp_path, capsys):
    keys, allowed, mine, theirs = (tmp_path / n for n in ("keys", "allowed", "mine", "theirs"))
    assert main(["keys", "generate", str(keys), "--name", "server"]) == 0
    assert main(["keys", "generate", str(mine), "--name", "board1"]) == 0
    assert main(["keys", "generate", str(theirs), "--name", "intruder"]) == 0
    assert "secret key" in capsys.readouterr().out
    assert (keys / "server.key_secret").stat().st_mode & 0o077 == 0
    assert main(["keys", "generate", str(keys), "--name", "server"]) == 2  # never overwrites a key
    allowed.mkdir()
    shutil.copy(mine / "board1.key", allowed / "board1.key")
    d = daemons(
        sections={
            "security": {
                "curve": True,
                "server_secret_key": str(keys / "server.key_secret"),
                "authorized_keys_dir": str(allowed),
            }
        }
    )
    server_key = load_public_key(keys / "server.key")
    good = dict(server_public_key=server_key, client_keys=load_keypair(mine / "board1.key_secret"))
    d.start(wait_ready=False)
    d.wait_ready = lambda: None  # the helper's plain client cannot talk to a CURVE server
    with Client(d.endpoint, timeout_ms=500, retries=40, **good) as c:
        assert c.health()["ready"]
        result = c.infer(sample_x(2))
        assert result.outputs[0].shape == (2, 10)
    bad = dict(server_public_key=server_key, client_keys=load_keypair(theirs / "intruder.key_secret"))
    with Client(d.endpoint, timeout_ms=800, retries=0, **bad) as c, pytest.raises(RequestTimeoutError):
        c.health()
    with Client(d.endpoint, timeout_ms=800, retries=0) as c, pytest.raises(RequestTimeoutError):
        c.health()  # no CURVE at all
    ctx = zmq.Context()
    try:  # a raw plaintext DEALER gets nothing either
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(d.endpoint)
        s.send_multipart([b"EDGED1", b'{"id": "x", "op": "health"}'])
        assert s.poll(500) == 0
        s.close()
    finally:
        ctx.term()
    assert np.isfinite(d.metric("edged_requests_total", op="infer", status="ok"))
    assert d.metric("edged_requests_total", op="infer", status="ok") == 1
