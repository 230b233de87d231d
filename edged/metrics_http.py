"""The scrape endpoint: ``/metrics`` for Prometheus, ``/healthz`` for probes.

One thread serves every connection through a selector: it reads a request head
without blocking, answers once the head is complete, and closes any connection
that has not finished its exchange within ``deadline_s`` of being accepted.
An idle or trickling (slowloris) connection therefore costs a buffer, never a
thread, and the daemon's thread count stays within the unit's ``TasksMax``
whatever the clients do. At most ``max_connections`` are open: past that the
oldest is closed, so a new scrape always gets in. Each response closes its
connection (``Connection: close``); Prometheus simply reconnects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("edged.metrics")

DEADLINE_S = 10.0  # Prometheus' default scrape timeout
MAX_CONNECTIONS = 128
MAX_HEAD_BYTES = 8192
_ACCEPTS_PER_TURN = 64
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

# (ready, fields) for /healthz: 200 with the fields as JSON when ready, else 503.
HealthProbe = Callable[[], tuple[bool, dict]]


@dataclass
class _Connection:
    sock: socket.socket
    accepted: float
    head: bytearray = field(default_factory=bytearray)
    out: memoryview | None = None


def _bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family, _, _, _, address = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
    sock = socket.create_server(address, family=family, backlog=128)
    sock.setblocking(False)
    return sock


class MetricsHTTPServer:
    """Serves ``registry`` on HOST:PORT from one thread; ``shutdown()`` then ``server_close()``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        listen: str,
        health: HealthProbe | None = None,
        *,
        deadline_s: float = DEADLINE_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.registry = registry
        self.health = health
        self.deadline_s = deadline_s
        self.max_connections = max_connections
        self._listener = _bind(listen)  # errors (address in use) surface in the caller
        self.server_address = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._connections: dict[int, _Connection] = {}  # by fd, in accept order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edged-metrics-http", daemon=True)

    def start(self) -> MetricsHTTPServer:
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join(5)

    def server_close(self) -> None:
        for conn in list(self._connections.values()):
            self._close(conn)
        self._selector.close()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except Exception:  # a bug must not end scraping for the daemon's lifetime
                log.exception("metrics HTTP loop failed; continuing")
                time.sleep(0.1)

    def _turn(self) -> None:
        now = time.monotonic()
        oldest = next(iter(self._connections.values()), None)
        timeout = 1.0 if oldest is None else max(0.0, min(1.0, oldest.accepted + self.deadline_s - now))
        for key, mask in self._selector.select(timeout):
            if key.fileobj is self._listener:
                self._accept()
            elif key.fileobj is self._wake_r:
                self._wake_r.recv(64)
            else:
                conn = key.data
                if mask & selectors.EVENT_READ:
                    self._read(conn)
                if mask & selectors.EVENT_WRITE and self._connections.get(conn.sock.fileno()) is conn:
                    self._write(conn)
        self._expire(time.monotonic())

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: keep serving those already open
                log.warning("metrics HTTP: accept failed: %s", exc)
                return
            while len(self._connections) >= self.max_connections:
                self._close(next(iter(self._connections.values())))
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic())
            self._connections[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _expire(self, now: float) -> None:
        for conn in list(self._connections.values()):  # accept order: stop at the first in time
            if conn.accepted + self.deadline_s > now:
                break
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        self._connections.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.head += data
        end = conn.head.find(b"\r\n\r\n")
        if end < 0:
            end = conn.head.find(b"\n\n")
        if end >= 0:
            self._respond(conn, bytes(conn.head[:end]))
        elif len(conn.head) > MAX_HEAD_BYTES:
            self._respond_with(conn, 431, "text/plain", b"request head too large\n", head_only=False)

    def _write(self, conn: _Connection) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._close(conn)

    # ------------------------------------------------------------ HTTP

    def _respond(self, conn: _Connection, head: bytes) -> None:
        lines = head.decode("latin-1").splitlines()
        parts = lines[0].split() if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._respond_with(conn, 400, "text/plain", b"bad request line\n", head_only=False)
            return
        method, target = parts[0], parts[1]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            self._respond_with(conn, 405, "text/plain", b"only GET and HEAD\n", head_only, allow=True)
            return
        path = urlsplit(target).path
        try:
            if path == "/metrics":
                encoder, content_type = choose_encoder(headers.get("accept", ""))
                self._respond_with(conn, 200, content_type, encoder(self.registry), head_only)
            elif path == "/healthz":
                ready, fields = self.health() if self.health is not None else (True, {})
                body = (json.dumps({"ready": ready, **fields}) + "\n").encode()
                self._respond_with(conn, 200 if ready else 503, "application/json", body, head_only)
            else:
                body = b"not found: the paths are /metrics and /healthz\n"
                self._respond_with(conn, 404, "text/plain", body, head_only)
        except Exception:
            log.exception("metrics HTTP: %s failed", path)
            self._respond_with(conn, 500, "text/plain", b"internal error\n", head_only)

    def _respond_with(
        self,
        conn: _Connection,
        status: int,
        content_type: str,
        body: bytes,
        head_only: bool,
        allow: bool = False,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            *(["Allow: GET, HEAD"] if allow else []),
            "Connection: close",
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        conn.out = memoryview(head if head_only else head + body)
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)  # the rest of its input is ignored
        self._write(conn)
