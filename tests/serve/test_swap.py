"""Hot swap and the model store with a real daemon: swaps under load, failed
reloads, SIGKILL in the middle of a swap, a corrupt current version at start."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np

from edged.serve.client import Client
from edged.store import ModelStore, sha256_hex
from tests.serve.conftest import MODEL, expected_outputs, sample_x, variant_bytes

NAME = "model"  # the store name: the source file is <work>/model.tflite


def replace_file(path: Path, content: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def wait_version(d, version_not: str | None = None, version: str | None = None, timeout: float = 10) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = d.health()["model_version"]
        if (version is None or v == version) and (version_not is None or v != version_not):
            return v
        time.sleep(0.01)
    raise AssertionError(f"daemon still on version {v}:\n{d.log()}")


def wait_metric(d, name: str, at_least: float, timeout: float = 10, **labels: str) -> None:
    end = time.monotonic() + timeout
    while d.metric(name, **labels) < at_least:
        assert time.monotonic() < end, f"{name}{labels} stayed below {at_least}:\n{d.log()}"
        time.sleep(0.02)


def setup_sources(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    a, b = MODEL.read_bytes(), variant_bytes(MODEL)
    source = tmp_path / f"{NAME}.tflite"
    source.write_bytes(a)
    return source, a, b


def test_twenty_swaps_under_load_fail_nothing_and_replies_name_their_version(daemons, tmp_path):
    source, a, b = setup_sources(tmp_path)
    state = tmp_path / "state"
    x = sample_x(16)
    expected = {c: expected_outputs(c, x, tmp_path) for c in (a, b)}
    assert not np.array_equal(expected[a], expected[b]), "the variant must change the outputs"
    d = daemons(
        source,
        state_dir=state,
        sections={"server": {"max_batch": 8, "max_delay_us": 500, "queue_size": 1024}},
    ).start()
    stop = threading.Event()
    replies: list[tuple[str, int, int, np.ndarray]] = []
    failures: list[str] = []

    def load(seed: int) -> None:
        rng = random.Random(seed)
        with d.client(timeout_ms=10_000, retries=0) as c:
            while not stop.is_set():
                i = rng.randrange(15)
                n = rng.choice((1, 1, 2))
                try:
                    r = c.infer(x[i : i + n])
                    replies.append((r.model_version, i, n, r.outputs[0]))
                except Exception as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load, args=(s,), daemon=True) for s in range(4)]
    for t in threads:
        t.start()
    version = wait_version(d)
    try:
        for k in range(20):
            time.sleep(0.05)
            replace_file(source, b if k % 2 == 0 else a)
            d.signal(signal.SIGHUP)
            version = wait_version(d, version_not=version)
    finally:
        time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(15)
    assert not failures, failures[:5]
    store = ModelStore(state)
    sha = {v: store.get(NAME, v).sha256 for v in store.versions(NAME)}
    content_of = {v: (a if s == sha256_hex(a) else b) for v, s in sha.items()}
    assert sorted(content_of) == ["1", "2"]  # re-imports of the same bytes reuse the version
    seen = set()
    for v, i, n, out in replies:
        np.testing.assert_array_equal(out, expected[content_of[v]][i : i + n], err_msg=f"version {v}")
        seen.add(v)
    assert seen == {"1", "2"} and len(replies) > 200
    assert d.metric("edged_model_swaps_total") == 20
    assert d.metric("edged_requests_total", op="infer", status="ok") >= len(replies)


def test_sighup_with_corrupt_model_keeps_serving_the_old_one(daemons, tmp_path):
    source, a, _ = setup_sources(tmp_path)
    state = tmp_path / "state"
    d = daemons(source, state_dir=state).start()
    assert wait_version(d) == "1"
    failed_before = d.metric("edged_model_load_failures_total")
    replace_file(source, a[: len(a) // 2])  # truncated
    d.signal(signal.SIGHUP)
    wait_metric(d, "edged_reloads_total", 1, result="failed")
    assert d.metric("edged_model_load_failures_total") == failed_before + 1
    assert d.health()["model_version"] == "1"
    with d.client() as c:
        assert c.infer(sample_x(2)).model_version == "1"
    assert "reload failed, still serving model version 1" in d.log()
    assert ModelStore(state).versions(NAME) == ["1"]  # the bad import was not kept
    replace_file(source, b"\x00" * 300)  # garbage, not even a flatbuffer
    d.signal(signal.SIGHUP)
    wait_metric(d, "edged_reloads_total", 2, result="failed")
    assert d.health()["ready"]


def test_sigkill_during_swap_then_restart_serves_a_complete_version(daemons, tmp_path):
    source, a, b = setup_sources(tmp_path)
    state = tmp_path / "state"
    x = sample_x(4)
    expected = {c: expected_outputs(c, x, tmp_path) for c in (a, b)}
    by_sha = {sha256_hex(a): a, sha256_hex(b): b}
    served = set()
    for k, delay in enumerate((0.0, 0.004, 0.015, 0.04)):
        d = daemons(source, state_dir=state).start()
        replace_file(source, b if k % 2 == 0 else a)
        d.signal(signal.SIGHUP)
        time.sleep(delay)
        d.kill()  # SIGKILL, somewhere in the reload
        store = ModelStore(state)
        restarted = daemons(source, state_dir=state).start()
        v = restarted.health()["model_version"]
        content = by_sha[store.get(NAME, v).sha256]  # the served version is complete and verified
        with restarted.client() as c:
            np.testing.assert_array_equal(c.infer(x).outputs[0], expected[content])
        assert not [p for p in (state / "models" / NAME).iterdir() if p.name.startswith(".tmp-")]
        served.add(v)
        restarted.stop()
    assert served <= {"1", "2"}


def test_corrupt_current_version_falls_back_loudly_at_start(daemons, tmp_path):
    source, _, b = setup_sources(tmp_path)
    state = tmp_path / "state"
    d = daemons(source, state_dir=state).start()
    replace_file(source, b)
    d.signal(signal.SIGHUP)
    assert wait_version(d, version="2") == "2"
    assert d.stop() == 0
    v2 = state / "models" / NAME / "2" / "model.tflite"
    data = bytearray(v2.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the hash no longer matches
    v2.write_bytes(bytes(data))
    d2 = daemons(source, state_dir=state).start()
    assert d2.health()["model_version"] == "1"
    assert "CURRENT VERSION 2 OF model IS CORRUPT; serving last good version 1" in d2.log()
    assert d2.metric("edged_model_load_failures_total") >= 1
    assert json.loads((state / "models" / NAME / "current").read_text())["version"] == "2"


def test_sighup_rereads_config(daemons, tmp_path):
    d = daemons(sections={"server": {"max_batch": 4}}).start()
    with d.client() as c:
        assert c.metadata()["max_batch"] == 4
    text = (
        d.config.read_text().replace("max_batch = 4", "max_batch = 8").replace("workers = 2", "workers = 3")
    )
    d.config.write_text(text)
    d.signal(signal.SIGHUP)
    wait_metric(d, "edged_reloads_total", 1, result="unchanged")
    with d.client() as c:
        assert c.metadata()["max_batch"] == 8
    assert "server.workers change(s) need a restart" in d.log()
    d.config.write_text(text.replace("max_batch = 8", "max_batch = 0"))
    d.signal(signal.SIGHUP)
    wait_metric(d, "edged_reloads_total", 1, result="failed")
    assert "server.max_batch: must be between 1 and 4096, got 0" in d.log()
    assert d.health()["ready"]


def test_deploy_in_process_keeps_the_version_across_reload(tmp_path):
    """The API the adaptation loop uses: deploy bytes as a child version, in one swap."""
    from edged.app import App
    from tests.serve.conftest import ENGINE, free_port

    source, _, b = setup_sources(tmp_path)
    state = tmp_path / "state"
    overrides = {
        "model.path": str(source),
        "model.engine": ENGINE,
        "server.bind": f"tcp://127.0.0.1:{free_port()}",
        "metrics.listen": "",
        "store.state_dir": str(state),
    }
    app = App(None, overrides)
    app.start()
    try:
        model = app.deploy(b, {"kind": "prune", "sparsity": 0.5})
        assert app.server.model is model and model.version == "2"
        meta = ModelStore(state).get(NAME, "2").meta
        assert meta["parent"] == "1" and meta["made_by"]["kind"] == "prune"
        assert app.reload() and app.server.model.version == "2"  # the source did not change
        with Client(app.server.endpoint, timeout_ms=3000) as c:
            assert c.infer(sample_x(1)).model_version == "2"
    finally:
        app.stop()
