"""The versioned model store: immutable versions and an atomic current pointer.

Layout under the state directory::

    models/<name>/<version>/model.tflite   the model bytes, never modified
    models/<name>/<version>/meta.json      sha256, size, parent, how it was made
    models/<name>/current                  {"version": ..., "source_sha256": ...}

A version appears by renaming a fully written and fsynced temporary directory,
so it is either complete or absent. The pointer is replaced by writing a
temporary file, fsyncing it, renaming it over ``current`` and fsyncing the
directory: after a crash it names the old or the new version, never half of
one. Versions are numbered 1, 2, 3, ... in the order they were added.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.errors import EdgedError

log = logging.getLogger("edged.store")

MODEL_FILE = "model.tflite"
META_FILE = "meta.json"
POINTER_FILE = "current"
_TMP_PREFIX = ".tmp-"


class StoreError(EdgedError):
    """A version or pointer is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    path: Path  # the model.tflite file
    meta: dict[str, Any]

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, content: bytes) -> None:
    with open(path, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def _valid_name(name: str) -> str:
    if not name or name.startswith(".") or "/" in name or "\0" in name or len(name) > 128:
        raise StoreError(f"invalid model name {name!r}")
    return name


class ModelStore:
    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.root = Path(state_dir) / "models"

    def _dir(self, name: str) -> Path:
        return self.root / _valid_name(name)

    def versions(self, name: str) -> list[str]:
        """Complete version ids, oldest first."""
        d = self._dir(name)
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=int)

    def get(self, name: str, version: str) -> Version:
        """A version after checking its files and hash; raises StoreError."""
        vdir = self._dir(name) / version
        try:
            meta = json.loads((vdir / META_FILE).read_text())
            content = (vdir / MODEL_FILE).read_bytes()
        except (OSError, ValueError) as exc:
            raise StoreError(f"{name} version {version}: unreadable: {exc}") from exc
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
            raise StoreError(f"{name} version {version}: meta.json has no sha256")
        actual = sha256_hex(content)
        if actual != meta["sha256"]:
            raise StoreError(
                f"{name} version {version}: model.tflite hash {actual[:12]} does not match "
                f"meta.json {meta['sha256'][:12]}"
            )
        return Version(name, version, vdir / MODEL_FILE, meta)

    def pointer(self, name: str) -> dict[str, Any] | None:
        """The current pointer, or None if there is none or it is unreadable."""
        path = self._dir(name) / POINTER_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("%s: unreadable current pointer %s: %s", name, path, exc)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            log.error("%s: current pointer %s has no version", name, path)
            return None
        return data

    def current(self, name: str) -> str | None:
        p = self.pointer(name)
        return p["version"] if p else None

    def find(self, name: str, sha256: str) -> str | None:
        """The newest complete version holding exactly these bytes."""
        for version in reversed(self.versions(name)):
            try:
                meta = json.loads((self._dir(name) / version / META_FILE).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("sha256") == sha256:
                return version
        return None

    def add(self, name: str, content: bytes, *, parent: str | None, made_by: dict[str, Any]) -> Version:
        """Store bytes as a new complete version (or return the one that has them)."""
        digest = sha256_hex(content)
        existing = self.find(name, digest)
        if existing is not None:
            return self.get(name, existing)
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"{_TMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        try:
            _write_synced(tmp / MODEL_FILE, content)
            while True:
                versions = self.versions(name)
                version = str(int(versions[-1]) + 1 if versions else 1)
                meta = {
                    "name": name,
                    "version": version,
                    "sha256": digest,
                    "size_bytes": len(content),
                    "parent": parent,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "made_by": made_by,
                }
                _write_synced(tmp / META_FILE, json.dumps(meta, indent=1).encode())
                _fsync_dir(tmp)
                try:
                    os.rename(tmp, d / version)  # fails if another writer took the number
                except OSError:
                    if (d / version).exists():
                        continue
                    raise
                _fsync_dir(d)
                return Version(name, version, d / version / MODEL_FILE, meta)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def set_current(self, name: str, version: str, *, source_sha256: str | None = None) -> None:
        """Point ``current`` at a version atomically (temp, fsync, rename, fsync dir)."""
        d = self._dir(name)
        if not (d / version).is_dir():
            raise StoreError(f"{name} has no version {version}")
        data = {
            "version": version,
            "source_sha256": source_sha256,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp = d / f"{_TMP_PREFIX}{POINTER_FILE}-{os.getpid()}-{time.monotonic_ns()}"
        _write_synced(tmp, json.dumps(data).encode())
        os.replace(tmp, d / POINTER_FILE)
        _fsync_dir(d)

    def remove(self, name: str, version: str) -> None:
        """Delete a version that is not current (e.g. one that failed to load)."""
        if self.current(name) == version:
            raise StoreError(f"{name} version {version} is current; it cannot be removed")
        shutil.rmtree(self._dir(name) / version, ignore_errors=True)

    def candidates(self, name: str) -> list[str]:
        """Versions to try on start: current, its ancestors, then the rest newest first."""
        order: list[str] = []
        versions = self.versions(name)
        v = self.current(name)
        while v is not None and v not in order and v in versions:
            order.append(v)
            try:
                parent = json.loads((self._dir(name) / v / META_FILE).read_text()).get("parent")
            except (OSError, ValueError, AttributeError):
                parent = None
            v = parent if isinstance(parent, str) else None
        order += [v for v in reversed(versions) if v not in order]
        return order

    def clean_temporary(self, name: str) -> int:
        """Remove leftovers of interrupted writes; returns how many."""
        d = self._dir(name)
        if not d.is_dir():
            return 0
        count = 0
        for p in d.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                with contextlib.suppress(OSError):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    count += 1
        return count
