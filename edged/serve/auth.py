"""CURVE encryption and client authentication for the ZeroMQ endpoint.

Keys are ZeroMQ certificate files (``zmq.auth``): ``NAME.key`` holds the
public key, ``NAME.key_secret`` both keys. The server loads its secret file;
clients are allowed by putting their ``.key`` files in one directory, checked
by pyzmq's ZAP authenticator thread. A client whose key is not there fails the
handshake and gets no reply at all.

ZAP checks a key only at the handshake, so removing a key file would not end
a session that is already open. ``PeerGuard`` closes those: the server reads
each message's ``User-Id`` (the client key, set by ZAP) and ``SRCFD`` (its
connection), drops messages whose key is no longer allowed, and on reload shuts
down the connections it has seen from removed keys. The client reconnects and
fails the handshake.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from edged.errors import EdgedError

log = logging.getLogger("edged.auth")

ZAP_DOMAIN = "edged"  # the server socket's ZAP domain; the allowed keys are configured for it


class KeyFileError(EdgedError):
    """A key file is missing or not a ZeroMQ certificate."""


def generate_keys(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret (mode 0600) into directory."""
    if not zmq.has("curve"):
        raise EdgedError("this libzmq was built without CURVE support")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = (d / f"{name}.key"), (d / f"{name}.key_secret")
    for path in (public, secret):
        if path.exists():
            raise EdgedError(f"{path} exists; refusing to overwrite a key")
    old = os.umask(0o077)
    try:
        pub, sec = zmq.auth.create_certificates(d, name)
    finally:
        os.umask(old)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


def load_keypair(secret_file: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) from a .key_secret file."""
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{secret_file}: cannot read key: {exc}") from exc
    if secret is None:
        raise KeyFileError(f"{secret_file}: has no secret key (use the .key_secret file)")
    return public, secret


def load_public_key(path: str | os.PathLike) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: cannot read key: {exc}") from exc
    return public


def read_authorized_keys(keys_dir: str | os.PathLike) -> frozenset[str]:
    """The Z85 public keys of the ``*.key`` files in ``keys_dir``; raises KeyFileError."""
    d = Path(keys_dir)
    if not d.is_dir():
        raise KeyFileError(f"{d}: no such directory (security.authorized_keys_dir)")
    try:
        files = sorted(d.glob("*.key"))
    except OSError as exc:
        raise KeyFileError(f"{d}: cannot list keys: {exc.strerror or exc}") from exc
    return frozenset(load_public_key(f).decode("ascii") for f in files)


@dataclass(frozen=True)
class _Peer:
    routing_id: bytes
    user: str
    address: object  # getpeername() when first seen: a reused fd number has another one


def _shutdown_connection(fd: int, address: object) -> bool:
    """Shut a libzmq connection down by its fd; libzmq then closes it (the fd stays libzmq's)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        if sock.getpeername() != address:
            return False  # the connection closed and the fd number now belongs to another one
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        sock.detach()


def _peer_address(fd: int) -> object:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        return sock.getpeername()
    except OSError:
        return None
    finally:
        sock.detach()


class PeerGuard:
    """Ends the sessions of CURVE clients whose key was removed (see the module doc)."""

    def __init__(self, on_disconnect: Callable[[int], None] | None = None) -> None:
        self.allowed: frozenset[str] = frozenset()  # replaced whole on reload
        self._peers: dict[int, _Peer] = {}  # by fd; written by the I/O thread
        self._lock = threading.Lock()  # taken only when a new connection first speaks
        self._on_disconnect = on_disconnect

    def recv(self, router: zmq.Socket) -> list[bytes] | None:
        """The next message of ``router`` (NOBLOCK), or None if its sender's key was removed."""
        parts = router.recv_multipart(zmq.NOBLOCK, copy=False)
        last = parts[-1]
        try:
            user = last.get("User-Id")
        except zmq.ZMQError:  # no user id: not a CURVE session (the socket admits only CURVE)
            return [p.bytes for p in parts]
        try:
            fd = last.get(zmq.SRCFD)
        except zmq.ZMQError:  # a libzmq without it: removed keys are still refused, not closed
            fd = -1
        if user not in self.allowed:
            peer = self._peers.pop(fd, None)
            if fd >= 0 and _shutdown_connection(fd, peer.address if peer else _peer_address(fd)):
                self._count(1)
            log.warning("CURVE: dropped a message from removed key %s and closed its connection", user)
            return None
        if fd < 0:
            return [p.bytes for p in parts]
        routing_id = parts[0].bytes
        peer = self._peers.get(fd)
        if peer is None or peer.routing_id != routing_id or peer.user != user:
            with self._lock:
                self._peers[fd] = _Peer(routing_id, user, _peer_address(fd))
        return [p.bytes for p in parts]

    def close_removed(self) -> int:
        """Shut down the open sessions whose key is no longer allowed; returns how many."""
        with self._lock:
            peers = dict(self._peers)
        closed = 0
        for fd, peer in peers.items():
            if peer.user not in self.allowed and _shutdown_connection(fd, peer.address):
                closed += 1
                log.warning("CURVE: key %s was removed; closed its connection", peer.user)
        self._count(closed)
        return closed

    def _count(self, n: int) -> None:
        if n and self._on_disconnect is not None:
            self._on_disconnect(n)


class Authenticator:
    """The ZAP handler: allows CURVE clients whose public key is in ``keys_dir``."""

    def __init__(
        self,
        context: zmq.Context,
        keys_dir: str | os.PathLike,
        on_disconnect: Callable[[int], None] | None = None,
    ) -> None:
        self.keys_dir = Path(keys_dir)
        self.guard = PeerGuard(on_disconnect)
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("edged.zap"))

    def start(self) -> None:
        self._auth.start()
        self.reload()

    def reload(self, keys_dir: str | os.PathLike | None = None) -> int:
        """Re-read the allowed keys (on SIGHUP) and end sessions of removed ones.

        Returns how many keys are allowed. A missing directory or a bad key file
        raises KeyFileError and keeps the previous keys.
        """
        directory = Path(keys_dir) if keys_dir is not None else self.keys_dir
        keys = read_authorized_keys(directory)
        self.keys_dir = directory
        # the guard first: a removed key that handshakes in between is still refused
        self.guard.allowed = keys
        self._auth.configure_curve(domain=ZAP_DOMAIN, location=self.keys_dir)
        closed = self.guard.close_removed()
        log.info(
            "CURVE: %d authorized client key(s) in %s%s",
            len(keys),
            self.keys_dir,
            f"; closed {closed} connection(s) of removed keys" if closed else "",
        )
        return len(keys)

    def stop(self) -> None:
        self._auth.stop()
