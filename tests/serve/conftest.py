"""Fixtures for the daemon tests: real subprocesses on loopback ports, always cleaned up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.engine import load_engine
from edged.serve.client import Client

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "converter"
MODEL = FIXTURES / "conv8x8_int8io.tflite"
START_TIMEOUT_S = 30


def _pick_engine() -> str:
    """The native engine when it runs here, else LiteRT (named in the pytest header).

    EDGED_TEST_ENGINE=litert runs the daemon tests on LiteRT instead.
    """
    if os.environ.get("EDGED_TEST_ENGINE"):
        return os.environ["EDGED_TEST_ENGINE"]
    try:
        e = load_engine(MODEL, "native")
        e.infer([np.zeros((1, *e.inputs[0].shape), e.inputs[0].dtype)])
        return "native"
    except Exception:
        return "litert"


ENGINE = _pick_engine()


def pytest_report_header(config) -> str:
    return f"edged daemon tests run with engine: {ENGINE}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def variant_bytes(path: Path = MODEL) -> bytes:
    """The model with its largest weight tensor flipped: same I/O, different outputs."""
    graph = read_tflite(path)
    t = max((t for t in graph.tensors if t.data is not None and t.dtype == np.int8), key=lambda t: t.size)
    t.data = np.ascontiguousarray(t.data[::-1])
    return write_tflite(graph)


def expected_outputs(content: bytes, x: np.ndarray, tmp: Path) -> np.ndarray:
    """Sample by sample at batch 1, with the engine the daemon uses."""
    path = tmp / f"expected-{abs(hash(content))}.tflite"
    path.write_bytes(content)
    if ENGINE == "litert":  # the daemon serves LiteRT with its default XNNPACK delegate
        from edged.runtime.litert import LiteRTEngine

        engine = LiteRTEngine(content, str(path), delegates=True)
    else:
        engine = load_engine(path, ENGINE)
    return np.concatenate([engine.infer([x[i : i + 1]])[0] for i in range(len(x))])


def sample_x(n: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 8, 8, 1)).astype(np.int8)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, table in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Daemon:
    """`edged serve` in a subprocess with its own config, ports and log file."""

    def __init__(
        self,
        workdir: Path,
        model: Path | None,
        *,
        state_dir: Path | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        name: str = "daemon",
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.metrics_port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        cfg: dict[str, dict[str, Any]] = {
            "model": {"engine": ENGINE, "warmup_runs": 1, **({"path": str(model)} if model else {})},
            "server": {"bind": self.endpoint, "workers": 2, "drain_timeout_s": 5.0},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
        }
        if state_dir is not None:
            cfg["store"] = {"state_dir": str(state_dir)}
        for section, table in (sections or {}).items():
            cfg.setdefault(section, {}).update(table)
        self.config = write_config(workdir / f"{name}.toml", cfg)
        self.log_path = workdir / f"{name}.log"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        cmd = [sys.executable, "-m", "edged.cli", "serve", "--config", str(self.config)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict:
        end = time.monotonic() + timeout
        with Client(self.endpoint, timeout_ms=300, retries=0) as c:
            while time.monotonic() < end:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    h = c.health()
                    if h.get("ready"):
                        return h
                except Exception:
                    time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def client(self, **kw: Any) -> Client:
        kw.setdefault("timeout_ms", 5000)
        return Client(self.endpoint, **kw)

    def health(self) -> dict:
        with self.client(timeout_ms=2000) as c:
            return c.health()

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        total = 0.0
        for line in self.scrape().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, rest = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def daemons(tmp_path):
    """Factory for daemons; every one is stopped (or killed) at teardown."""
    made: list[Daemon] = []

    def make(model: Path | None = MODEL, **kw: Any) -> Daemon:
        d = Daemon(tmp_path, model, name=f"daemon{len(made)}", **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        try:
            d.stop(timeout=10)
        finally:
            d.kill()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory):
    """One daemon for the read-only tests of a module."""
    tmp = tmp_path_factory.mktemp("shared")
    d = Daemon(tmp, MODEL, sections={"server": {"queue_size": 64}}).start()
    yield d
    try:
        d.stop(timeout=10)
    finally:
        d.kill()
