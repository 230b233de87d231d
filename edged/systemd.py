"""sd_notify over ``NOTIFY_SOCKET`` and a watchdog that pings only on progress.

The notify protocol is one datagram of ``KEY=VALUE`` lines sent to the unix
socket systemd names in ``NOTIFY_SOCKET`` (a leading ``@`` means the abstract
namespace). Outside systemd the variable is unset and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("edged.systemd")


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends state changes to the service manager; thread-safe."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram; False (and a log line) if it could not be sent."""
        if self.address is None:
            return False
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(lines).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, addr)
                return True
            except OSError as exc:
                log.warning("sd_notify to %s failed: %s", self.address, exc)
                return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self, status: str | None = None) -> bool:
        lines = ["RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}"]
        return self.send(*lines, *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds if systemd expects pings from this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1e6 if value > 0 else None


class Watchdog:
    """Pings ``WATCHDOG=1`` every half timeout while ``healthy()`` says so.

    ``healthy`` is asked before every ping; when it returns False (a worker is
    stuck in one batch, the I/O loop stopped turning) the pings stop and
    systemd restarts the service once the timeout passes.
    """

    def __init__(self, notifier: Notifier, timeout_s: float, healthy: Callable[[], bool]) -> None:
        self.notifier = notifier
        self.timeout_s = timeout_s
        self.healthy = healthy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edged-watchdog", daemon=True)
        self.pings = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        withheld = False
        while not self._stop.wait(self.timeout_s / 2):
            if self.healthy():
                if withheld:
                    log.warning("watchdog: progress again, resuming pings")
                withheld = False
                self.notifier.watchdog()
                self.pings += 1
            elif not withheld:
                withheld = True
                log.error("watchdog: no progress; withholding pings so systemd restarts the service")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
