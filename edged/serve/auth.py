"""CURVE encryption and client authentication for the ZeroMQ endpoint.

Keys are ZeroMQ certificate files (``zmq.auth``): ``NAME.key`` holds the
public key, ``NAME.key_secret`` both keys. The server loads its secret file;
clients are allowed by putting their ``.key`` files in one directory, checked
by pyzmq's ZAP authenticator thread. A client whose key is not there fails the
handshake and gets no reply at all.
"""

from __future__ import annotations

import logging
import os
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


class Authenticator:
    """The ZAP handler: allows CURVE clients whose public key is in ``keys_dir``."""

    def __init__(self, context: zmq.Context, keys_dir: str | os.PathLike) -> None:
        self.keys_dir = Path(keys_dir)
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("edged.zap"))

    def start(self) -> None:
        self._auth.start()
        self.reload()

    def reload(self, keys_dir: str | os.PathLike | None = None) -> int:
        """Re-read the allowed keys (on SIGHUP); returns how many there are."""
        if keys_dir is not None:
            self.keys_dir = Path(keys_dir)
        self._auth.configure_curve(domain=ZAP_DOMAIN, location=self.keys_dir)
        count = len(list(self.keys_dir.glob("*.key")))
        log.info("CURVE: %d authorized client key(s) in %s", count, self.keys_dir)
        return count

    def stop(self) -> None:
        self._auth.stop()
