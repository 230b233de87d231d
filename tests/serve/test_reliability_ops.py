"""Operations under hostile conditions, against real daemon processes.

Reload with an empty or partial config, a state directory that refuses writes
or holds only corrupt versions, version retention, a metrics endpoint under
idle and trickling connections, and CURVE keys removed while their clients
are connected.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry, Counter

from edged.model.tflite import read_tflite, write_tflite
from edged.serve.client import Client, RequestTimeoutError
from edged.store import ModelStore, sha256_hex
from tests.serve.conftest import MODEL, expected_outputs, sample_x

TASKS_MAX = 64  # systemd/edged.service


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def reloads(d) -> dict[str, float]:
    return {r: d.metric("edged_reloads_total", result=r) for r in ("failed", "swapped", "unchanged")}


def sighup_and_wait(d) -> dict[str, float]:
    """Send SIGHUP and wait until the daemon has finished that reload; returns the counts."""
    before = sum(reloads(d).values())
    d.signal(signal.SIGHUP)

    def done() -> dict[str, float] | None:
        counts = reloads(d)
        return counts if sum(counts.values()) > before else None

    return wait_for(done, what="the reload")


def model_variant(k: int) -> bytes:
    """The fixture model with its largest weight tensor rotated by k: same I/O, other outputs."""
    graph = read_tflite(MODEL)
    t = max((t for t in graph.tensors if t.data is not None and t.dtype == np.int8), key=lambda t: t.size)
    t.data = np.ascontiguousarray(np.roll(t.data, k))
    return write_tflite(graph)


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


# -- 4. reload with an empty or partial config --------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "no_model_section"])
def test_sighup_with_empty_or_partial_config_keeps_model_and_config(daemons, tmp_path, damage):
    d = daemons(sections={"server": {"max_batch": 4}}).start()
    before = d.health()
    x = sample_x(4)
    with d.client() as c:
        y0 = c.infer(x).outputs[0]
    text = d.config.read_text()
    # an editor or `>` caught mid-write: nothing, or everything but the [model] table
    d.config.write_text("" if damage == "empty" else "[server]" + text.split("[server]", 1)[1])
    counts = sighup_and_wait(d)
    assert counts["failed"] == 1 and counts["swapped"] == 0
    after = d.health()
    assert (after["model_name"], after["model_version"]) == (before["model_name"], before["model_version"])
    with d.client() as c:
        np.testing.assert_array_equal(c.infer(x).outputs[0], y0)
        assert c.metadata()["max_batch"] == 4  # the running config, not the defaults
    log = d.log()
    assert str(d.config) in log and "[model] path" in log
    d.config.write_text(text)  # repaired: the next reload succeeds
    assert sighup_and_wait(d)["unchanged"] == 1


# -- 5. a state directory that refuses writes, or holds only corrupt versions ----------


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def refusing_writes(state_dir: Path, kind: str, name: str):
    """Make the store under ``state_dir`` refuse writes: read-only (EROFS, or EACCES without
    root) or full (ENOSPC, tmpfs; root only). Yields once the stored versions are in place."""
    models = state_dir / "models" / name
    if kind == "full":
        if os.geteuid() != 0:
            pytest.skip("a full file system needs a tmpfs mount (root)")
        keep = state_dir.with_name("seeded")
        shutil.copytree(state_dir, keep)
        shutil.rmtree(state_dir)
        state_dir.mkdir()
        if not _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state_dir)):
            pytest.skip("cannot mount a tmpfs here")
        try:
            shutil.copytree(keep, state_dir, dirs_exist_ok=True)
            with contextlib.suppress(OSError), open(state_dir / "filler", "wb") as f:  # fill it up
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            yield
        finally:
            subprocess.run(["umount", "-l", str(state_dir)], check=False)
        return
    if os.geteuid() == 0:
        if not (_mount("--bind", str(state_dir), str(state_dir))
                and _mount("-o", "remount,ro,bind", str(state_dir))):
            subprocess.run(["umount", "-l", str(state_dir)], check=False)
            pytest.skip("cannot remount read-only here")
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(state_dir)], check=False)
        return
    modes = [(p, p.stat().st_mode) for p in (state_dir / "models", models)]
    for p, _ in modes:
        p.chmod(0o555)
    try:
        yield
    finally:
        for p, mode in modes:
            p.chmod(mode)


def _seed(state_dir: Path, content: bytes, name: str = "conv8x8_int8io") -> None:
    """What an earlier run leaves: ``content`` imported as version 1 and current."""
    store = ModelStore(state_dir)
    v = store.add(name, content, parent=None, made_by={"kind": "import", "source": "earlier"})
    store.set_current(name, v.version, source_sha256=sha256_hex(content))


@pytest.mark.parametrize("kind", ["read_only", "full"])
def test_store_refusing_writes_at_start_serves_the_stored_version(daemons, tmp_path, kind):
    state = tmp_path / "state"
    _seed(state, MODEL.read_bytes())
    new_model = tmp_path / "conv8x8_int8io.tflite"  # same name, new bytes: an import is due
    new_model.write_bytes(model_variant(7))
    x = sample_x(4)
    with refusing_writes(state, kind, "conv8x8_int8io"):
        probe = state / "models" / "conv8x8_int8io" / "probe"
        with pytest.raises(OSError) as refused:
            probe.write_bytes(bytes(64 << 10))
        assert refused.value.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES)
        d = daemons(new_model, state_dir=state).start()
        assert d.health()["model_version"] == "1"
        with d.client() as c:
            y = c.infer(x).outputs[0]
        np.testing.assert_array_equal(y, expected_outputs(MODEL.read_bytes(), x, tmp_path))
        assert d.metric("edged_store_write_failures_total") >= 1
        assert "cannot store" in d.log() and "Traceback" not in d.log()
        # a reload cannot store the file either: it fails, counted, and version 1 keeps serving
        assert sighup_and_wait(d)["failed"] == 1
        assert d.health()["model_version"] == "1"
        d.stop()


def test_all_stored_versions_corrupt_reimports_the_intact_configured_file(daemons, tmp_path):
    state = tmp_path / "state"
    content = MODEL.read_bytes()
    _seed(state, content)
    store = ModelStore(state)
    v2 = store.add("conv8x8_int8io", model_variant(3), parent="1", made_by={"kind": "prune"})
    store.set_current("conv8x8_int8io", v2.version, source_sha256=sha256_hex(content))  # adapted
    for v in ("1", "2"):  # bit rot in every stored version
        path = state / "models" / "conv8x8_int8io" / v / "model.tflite"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    d = daemons(MODEL, state_dir=state).start()
    h = d.health()
    assert h["model_version"] == "3"
    x = sample_x(4)
    with d.client() as c:
        np.testing.assert_array_equal(c.infer(x).outputs[0], expected_outputs(content, x, tmp_path))
    assert d.metric("edged_store_repairs_total") == 1
    assert ModelStore(state).get("conv8x8_int8io", "3").sha256 == sha256_hex(content)


def test_store_keeps_keep_versions_but_never_the_served_one_or_its_predecessor(daemons, tmp_path):
    state = tmp_path / "state"
    model = tmp_path / "m.tflite"
    model.write_bytes(MODEL.read_bytes())
    d = daemons(model, state_dir=state, sections={"store": {"keep_versions": 1}}).start()
    versions = state / "models" / "m"
    for k in (1, 2, 3):
        staged = tmp_path / "staged.tflite"
        staged.write_bytes(model_variant(k))
        os.replace(staged, model)
        assert sighup_and_wait(d)["swapped"] == k
        assert d.health()["model_version"] == str(k + 1)
    # 4 is served (and the newest); 3 is its predecessor, what a rollback returns to
    assert sorted(p.name for p in versions.iterdir() if p.name.isdigit()) == ["3", "4"]
    assert d.metric("edged_store_pruned_versions_total") == 2
    assert ModelStore(state).last_good_predecessor("m", "4") == "3"


# -- 6. the metrics endpoint ---------------------------------------------------------------


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_idle_and_trickling_connections_add_no_threads_nor_block_scrapes(daemons):
    d = daemons().start()
    pid = d.proc.pid
    base = threads_of(pid)
    idle = [socket.create_connection(("127.0.0.1", d.metrics_port)) for _ in range(150)]
    trickling = [socket.create_connection(("127.0.0.1", d.metrics_port)) for _ in range(50)]
    stop = threading.Event()

    def trickle() -> None:  # slowloris: a never-ending request head, one byte at a time
        for s in trickling:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
        while not stop.wait(0.2):
            for s in trickling:
                with contextlib.suppress(OSError):
                    s.sendall(b"X")

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(1.0)
        threads = threads_of(pid)
        assert threads <= base + 2 and threads < TASKS_MAX, (base, threads)
        for _ in range(3):
            start = time.monotonic()
            assert "edged_requests_total" in d.scrape()
            assert time.monotonic() - start < 5
        assert threads_of(pid) <= base + 2
    finally:
        stop.set()
        t.join()
        for s in idle + trickling:
            s.close()


def test_idle_connection_is_closed_by_the_server(daemons):
    d = daemons().start()
    s = socket.create_connection(("127.0.0.1", d.metrics_port))
    s.settimeout(25)
    try:
        start = time.monotonic()
        assert s.recv(1) == b""  # closed: idle past the deadline (10 s)
        assert time.monotonic() - start < 20
    finally:
        s.close()


def test_only_metrics_and_healthz_are_served(daemons):
    d = daemons().start()
    port = d.metrics_port
    status, body = _get(port, "/metrics")
    assert status == 200 and "edged_requests_total" in body
    status, body = _get(port, "/healthz")
    assert status == 200 and json.loads(body)["ready"] is True
    for path in ("/", "/foo", "/metrics/extra", "/favicon.ico", "/healthz/x"):
        status, body = _get(port, path)
        assert status == 404 and "edged_" not in body, path
    assert _get(port, "/metrics", "POST")[0] == 405
    status, body = _get(port, "/metrics", "HEAD")
    assert status == 200 and body == ""


def test_healthz_reports_not_ready_with_503():
    from edged.metrics_http import MetricsHTTPServer

    registry = CollectorRegistry()
    Counter("x_events", "Events", registry=registry).inc()
    state = {"ready": False}
    server = MetricsHTTPServer(
        registry, "127.0.0.1:0", lambda: (state["ready"], {"state": "draining"}), deadline_s=2
    ).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/healthz", timeout=5)
        assert info.value.code == 503 and json.loads(info.value.read())["state"] == "draining"
        state["ready"] = True
        with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            assert "x_events_total 1.0" in r.read().decode()
        s = socket.create_connection(("127.0.0.1", server.server_address[1]))
        s.settimeout(10)
        assert s.recv(1) == b""  # closed after deadline_s
        s.close()
    finally:
        server.shutdown()
        server.server_close()


def test_connections_past_the_bound_close_the_oldest_and_scrapes_get_in():
    from edged.metrics_http import MetricsHTTPServer

    registry = CollectorRegistry()
    Counter("x_events", "Events", registry=registry).inc()
    server = MetricsHTTPServer(registry, "127.0.0.1:0", max_connections=4).start()
    port = server.server_address[1]
    held = []
    try:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for s in held:
            s.settimeout(10)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert "x_events_total 1.0" in r.read().decode()
        assert held[0].recv(1) == b""  # the oldest made room
    finally:
        for s in held:
            s.close()
        server.shutdown()
        server.server_close()


# -- 7. CURVE: a removed key loses its open connection -------------------------------------


class CurveSetup:
    """A CURVE daemon whose authorized_keys_dir allows the given client names."""

    def __init__(self, daemons, tmp_path: Path, names: tuple[str, ...]) -> None:
        from edged.cli import main
        from edged.serve.auth import load_keypair, load_public_key

        keys, self.allowed, self.clients = tmp_path / "keys", tmp_path / "allowed", tmp_path / "clients"
        assert main(["keys", "generate", str(keys), "--name", "server"]) == 0
        self.allowed.mkdir()
        for name in names:
            assert main(["keys", "generate", str(self.clients), "--name", name]) == 0
            shutil.copy(self.clients / f"{name}.key", self.allowed / f"{name}.key")
        self.d = daemons(
            sections={
                "security": {
                    "curve": True,
                    "server_secret_key": str(keys / "server.key_secret"),
                    "authorized_keys_dir": str(self.allowed),
                }
            }
        )
        self.d.start(wait_ready=False)
        self.server_key = load_public_key(keys / "server.key")
        self._load_keypair = load_keypair

    def keypair(self, name: str) -> tuple[bytes, bytes]:
        return self._load_keypair(self.clients / f"{name}.key_secret")

    def client(self, name: str, timeout_ms: int = 500, retries: int = 40) -> Client:
        return Client(self.d.endpoint, timeout_ms=timeout_ms, retries=retries,
                      server_public_key=self.server_key, client_keys=self.keypair(name))


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_removed_curve_key_loses_its_open_connection_on_reload(daemons, tmp_path):
    setup = CurveSetup(daemons, tmp_path, ("kept", "removed", "silent"))
    d, allowed = setup.d, setup.allowed
    silent = _raw_curve_dealer(d.endpoint, setup.server_key, setup.keypair("silent"))
    try:
        with setup.client("kept") as kept, setup.client("removed") as removed:
            assert kept.health()["ready"] and removed.health()["ready"]
            x = sample_x(2)
            removed.infer(x)
            (allowed / "removed.key").unlink()
            (allowed / "silent.key").unlink()
            assert sighup_and_wait(d)["unchanged"] == 1
            assert kept.infer(x).outputs[0].shape == (2, 10)  # untouched
            removed.retries = 0
            with pytest.raises(RequestTimeoutError):
                removed.health()
            with pytest.raises(RequestTimeoutError):
                removed.infer(x)
            # a session that was open but had sent nothing: its first message is dropped
            silent.send_multipart([b"EDGED1", b'{"id": "s", "op": "health"}'])
            assert silent.poll(1500) == 0
            assert kept.health()["ready"]
    finally:
        silent.close(linger=0)
    assert d.metric("edged_curve_disconnects_total") >= 2
    assert d.metric("edged_requests_total", op="infer", status="ok") == 2


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_reload_of_a_config_truncated_before_security_fails_and_keeps_the_keys(daemons, tmp_path):
    setup = CurveSetup(daemons, tmp_path, ("board",))
    d = setup.d
    with setup.client("board") as board:
        assert board.health()["ready"]
        # CURVE stays on (restart-only); the keys must not be read from "" (the daemon's cwd)
        text = d.config.read_text()
        d.config.write_text(text.split("[security]", 1)[0])
        assert sighup_and_wait(d)["failed"] == 1
        assert "security.authorized_keys_dir" in d.log()
    with setup.client("board") as fresh:  # a new connection: a new handshake against the kept keys
        assert fresh.health()["ready"]


def _raw_curve_dealer(endpoint: str, server_key: bytes, keypair: tuple[bytes, bytes]) -> zmq.Socket:
    """A CURVE DEALER whose handshake has completed and which has sent nothing yet."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.curve_serverkey = server_key
    s.curve_publickey, s.curve_secretkey = keypair
    monitor = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    s.connect(endpoint)
    try:
        assert monitor.poll(30_000), "no CURVE handshake"
    finally:
        s.disable_monitor()
        monitor.close(linger=0)
    return s
