"""`edged serve` as a subprocess on TCP loopback, driven by a client written here
from docs/protocol.md alone (not edged's own client)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.conftest import ENGINE, MODEL, ROOT, sample_x

GOLDEN = Path(__file__).parent / "golden" / "metrics.txt"
DTYPES = {"INT8": "<i1", "UINT8": "<u1", "INT16": "<i2", "INT32": "<i4", "FP16": "<f2", "FP32": "<f4"}


class MiniClient:
    """The protocol as docs/protocol.md states it: DEALER, tag, JSON header, raw tensors."""

    def __init__(self, endpoint: str, kind: int = zmq.DEALER) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout_ms: int = 5000) -> tuple[dict, list[bytes]]:
        assert self.sock.poll(timeout_ms), "no reply"
        frames = self.sock.recv_multipart()
        while frames and frames[0] == b"":  # a REQ-style envelope if we sent an empty first frame
            frames = frames[1:]
        assert frames[0] == b"EDGED1"
        return json.loads(frames[1]), frames[2:]

    def call(self, header: dict, *tensors: np.ndarray) -> tuple[dict, list[np.ndarray]]:
        self.send([b"EDGED1", json.dumps(header).encode(), *(t.tobytes() for t in tensors)])
        head, frames = self.recv()
        assert head["id"] == header["id"]
        if header["op"] != "infer" or head["status"] != "ok":  # only infer replies carry tensors
            assert not frames
            return head, []
        outs = [
            np.frombuffer(f, DTYPES[m["datatype"]]).reshape(m["shape"])
            for m, f in zip(head["outputs"], frames, strict=True)
        ]
        return head, outs

    def infer(self, x: np.ndarray, **params) -> tuple[dict, list[np.ndarray]]:
        header = {
            "id": uuid.uuid4().hex,
            "op": "infer",
            "inputs": [{"datatype": "INT8", "shape": list(x.shape)}],
        }
        if params:
            header["parameters"] = params
        return self.call(header, x)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()

    def __enter__(self) -> MiniClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def mini(shared_daemon):
    c = MiniClient(shared_daemon.endpoint)
    yield c
    c.close()


def test_outputs_equal_edged_run(shared_daemon, mini, tmp_path):
    x = sample_x(8)
    head, outs = mini.infer(x, timeout_ms=5000)
    assert head["status"] == "ok" and head["model_name"] == "conv8x8_int8io"
    assert set(head["timing_us"]) == {"queue", "inference", "total"}
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edged.cli",
            "run",
            str(MODEL),
            "--engine",
            ENGINE,
            "--input",
            str(tmp_path / "x.npy"),
            "--output",
            str(tmp_path / "y.npy"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    np.testing.assert_array_equal(outs[0], np.load(tmp_path / "y.npy"))
    for i in range(3):  # batch of one, in any order, same rows
        _, one = mini.infer(x[i : i + 1])
        np.testing.assert_array_equal(one[0], outs[0][i : i + 1])


def test_req_socket_metadata_health_feedback(shared_daemon, mini):
    req = MiniClient(shared_daemon.endpoint, zmq.REQ)
    try:
        head, _ = req.call({"id": "req-1", "op": "health"})
        assert head["live"] and head["ready"] and head["state"] == "serving"
    finally:
        req.close()
    meta, _ = mini.call({"id": "m", "op": "metadata"})
    assert meta["inputs"][0]["shape"] == [-1, 8, 8, 1] and meta["inputs"][0]["datatype"] == "INT8"
    assert meta["outputs"][0]["parameters"]["zero_point"] == -128
    head, outs = mini.infer(sample_x(1))
    label = int(np.argmax(outs[0][0]))
    fb, _ = mini.call({"id": head["id"], "op": "feedback", "label": label})
    assert fb["matched"] and fb["outcome"] == "correct"
    fb, _ = mini.call({"id": "never-sent", "op": "feedback", "label": 1})
    assert not fb["matched"] and fb["outcome"] == "unmatched"
    assert shared_daemon.metric("edged_feedback_total", outcome="correct") >= 1


def test_metrics_move_and_names_are_stable(shared_daemon, mini):
    before_ok = shared_daemon.metric("edged_requests_total", op="infer", status="ok")
    before_exec = shared_daemon.metric("edged_executions_total")
    for _ in range(5):
        mini.infer(sample_x(2))
    mini.call(
        {"id": "bad", "op": "infer", "inputs": [{"datatype": "INT8", "shape": [1, 3]}]}, np.zeros(3, np.int8)
    )
    text = shared_daemon.scrape()
    assert shared_daemon.metric("edged_requests_total", op="infer", status="ok") == before_ok + 5
    assert shared_daemon.metric("edged_requests_total", op="infer", status="BAD_INPUT") >= 1
    assert shared_daemon.metric("edged_executions_total") >= before_exec + 1
    assert shared_daemon.metric("edged_inference_samples_total") >= 10
    assert shared_daemon.metric("edged_process_resident_memory_bytes") > 1e6
    assert 'edged_request_duration_seconds_bucket{le="0.0001"}' in text  # sub-millisecond buckets
    families = sorted({tuple(line.split()[2:4]) for line in text.splitlines() if line.startswith("# TYPE")})
    optional = {"edged_cpu_temperature_celsius"}  # absent, not zero, without a sensor
    got = [f"{name} {kind}" for name, kind in families if name not in optional]
    assert got == sorted(GOLDEN.read_text().splitlines()), "metric names changed: update tests/serve/golden"


# -- malformed traffic ------------------------------------------------------------

frame = st.binary(max_size=48)
header_value = st.one_of(
    st.none(),
    st.integers(-3, 2**70),
    st.text(max_size=6),
    st.booleans(),
    st.lists(st.integers(-2, 2**64), max_size=4),
)


@st.composite
def malformed(draw) -> list[bytes]:
    kind = draw(st.sampled_from(["random", "tag", "json", "fields", "sizes", "count", "shape"]))
    good_shape = [1, 8, 8, 1]
    header = {"id": "h", "op": "infer", "inputs": [{"datatype": "INT8", "shape": good_shape}]}
    x = bytes(64)
    if kind == "random":
        return draw(st.lists(frame, min_size=1, max_size=5))
    if kind == "tag":
        return [draw(frame.filter(lambda b: b != b"EDGED1" and b != b"")), json.dumps(header).encode(), x]
    if kind == "json":
        return [b"EDGED1", draw(st.binary(min_size=1, max_size=40)).replace(b"{", b"["), x]
    if kind == "fields":
        key = draw(st.sampled_from(["id", "op", "inputs", "parameters", "datatype"]))
        value = draw(header_value)
        if key == "id" and isinstance(value, str):
            value = ""  # any other string is a valid id
        if key == "datatype":
            header["inputs"][0]["datatype"] = value if value != "INT8" else ["INT8"]
        else:
            header[key] = value
        return [b"EDGED1", json.dumps(header).encode(), x]
    if kind == "sizes":
        wrong = draw(st.binary(max_size=200).filter(lambda b: len(b) != 64))
        return [b"EDGED1", json.dumps(header).encode(), wrong]
    if kind == "count":
        return [b"EDGED1", json.dumps(header).encode(), *([x] * draw(st.sampled_from([0, 2, 3])))]
    shape = draw(st.lists(st.integers(0, 2**63), min_size=1, max_size=9).filter(lambda s: s != good_shape))
    header["inputs"][0]["shape"] = shape
    return [b"EDGED1", json.dumps(header).encode(), x]


@pytest.fixture(scope="module")
def hostile(shared_daemon):
    c = MiniClient(shared_daemon.endpoint)
    yield c
    c.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=malformed())
def test_malformed_traffic_gets_errors_and_valid_requests_keep_working(shared_daemon, hostile, frames):
    hostile.send(frames)
    head, tensors = hostile.recv(3000)
    assert head["status"] == "error" and not tensors
    assert head["error"]["code"] in {"BAD_MESSAGE", "BAD_INPUT", "UNKNOWN_OP"}
    ok, outs = hostile.infer(sample_x(1))
    assert ok["status"] == "ok" and outs[0].shape == (1, 10)


def test_malformed_counter_and_random_bytes(shared_daemon, hostile):
    before = shared_daemon.metric("edged_bad_messages_total")
    rng = np.random.default_rng(1)
    for _ in range(30):
        hostile.send([rng.bytes(int(rng.integers(1, 100))) for _ in range(int(rng.integers(1, 4)))])
        head, _ = hostile.recv(3000)
        assert head["status"] == "error"
    assert shared_daemon.metric("edged_bad_messages_total") >= before + 30
    assert hostile.infer(sample_x(1))[0]["status"] == "ok"


# -- lifecycle ----------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests_and_exits_zero(daemons):
    d = daemons(sections={"server": {"queue_size": 1024}}).start()
    c = MiniClient(d.endpoint)
    try:
        x = sample_x(1)
        for i in range(300):
            c.send(
                [
                    b"EDGED1",
                    json.dumps(
                        {"id": str(i), "op": "infer", "inputs": [{"datatype": "INT8", "shape": [1, 8, 8, 1]}]}
                    ).encode(),
                    x.tobytes(),
                ]
            )
        statuses = [c.recv(5000)[0]]  # requests are flowing: stop now
        d.signal(signal.SIGTERM)
        statuses += [c.recv(5000)[0] for _ in range(299)]  # every request is answered
    finally:
        c.close()
    assert d.proc.wait(15) == 0
    assert {s.get("error", {}).get("code", "ok") for s in statuses} <= {"ok", "UNAVAILABLE"}
    assert sum(s["status"] == "ok" for s in statuses) > 0
    assert "stopped" in d.log()


@pytest.mark.skipif(
    not (ROOT / "models" / "digits_cnn.tflite").exists() or not (ROOT / "edged" / "data.py").exists(),
    reason="bundled models not in this checkout",
)
def test_serves_the_bundled_model_by_default(daemons):
    d = daemons(model=None, sections={"model": {"path": ""}}).start()  # "" = the bundled model
    h = d.health()
    assert h["model_name"].startswith("digits_")
    c = MiniClient(d.endpoint)
    try:
        meta, _ = c.call({"id": "m", "op": "metadata"})
        shape = [2, *meta["inputs"][0]["shape"][1:]]
        _, outs = c.call(
            {"id": "i", "op": "infer", "inputs": [{"datatype": "INT8", "shape": shape}]},
            np.zeros(shape, np.int8),
        )
        assert outs[0].shape == (2, 10)
    finally:
        c.close()


def test_bad_config_fails_at_start_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nmax_batch = "many"\n')
    r = subprocess.run(
        [sys.executable, "-m", "edged.cli", "serve", "--config", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 2 and "server.max_batch" in r.stderr and "must be an integer" in r.stderr


def test_cli_client_commands(shared_daemon, tmp_path, capsys):
    from edged.cli import main

    ep = shared_daemon.endpoint
    assert main(["client", "health", ep]) == 0
    assert json.loads(capsys.readouterr().out)["ready"] is True
    assert main(["client", "metadata", ep]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"][0]["datatype"] == "INT8"
    x = sample_x(3)
    np.save(tmp_path / "x.npy", x)
    y_path = str(tmp_path / "y.npy")
    assert main(["client", "infer", ep, "--input", str(tmp_path / "x.npy"), "--output", y_path]) == 0
    assert "version" in capsys.readouterr().out
    with MiniClient(ep) as mini:
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), mini.infer(x)[1][0])
    np.save(tmp_path / "bad.npy", np.zeros((1, 64), np.int8))
    assert main(["client", "infer", ep, "--input", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert "BAD_INPUT: input 'serving_default_keras_tensor_5:0': " in err
    assert "expected shape [N, 8, 8, 1], got [1, 64]" in err
