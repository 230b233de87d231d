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

Writes that the file system refuses (read-only, full, no permission) raise
``StoreWriteError``, so the daemon can keep serving what is stored. ``prune``
keeps the newest versions, and never the served one or its last good
predecessor (the version a rollback returns to).
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


class StoreWriteError(StoreError):
    """The state directory refused a write (EROFS, ENOSPC, EACCES, ...)."""


@contextlib.contextmanager
def _writing(what: str):
    try:
        yield
    except OSError as exc:
        raise StoreWriteError(f"cannot write {what}: {exc.strerror or exc}") from exc


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
        try:
            return sorted((p.name for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=int)
        except OSError as exc:
            raise StoreError(f"cannot list the versions in {d}: {exc.strerror or exc}") from exc

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
            try:
                return self.get(name, existing)
            except StoreError as exc:  # its bytes rotted: store them afresh as a new version
                log.error("%s; storing the bytes again as a new version", exc)
        d = self._dir(name)
        with _writing(f"a new version of {name} in {d}"):
            return self._write_version(d, name, content, digest, parent, made_by)

    def _write_version(
        self, d: Path, name: str, content: bytes, digest: str, parent: str | None, made_by: dict[str, Any]
    ) -> Version:
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
        with _writing(f"the current pointer of {name} in {d}"):
            try:
                _write_synced(tmp, json.dumps(data).encode())
                os.replace(tmp, d / POINTER_FILE)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            _fsync_dir(d)

    def remove(self, name: str, version: str) -> None:
        """Delete a version that is not current (e.g. one that failed to load)."""
        if self.current(name) == version:
            raise StoreError(f"{name} version {version} is current; it cannot be removed")
        shutil.rmtree(self._dir(name) / version, ignore_errors=True)

    def parent(self, name: str, version: str) -> str | None:
        try:
            parent = json.loads((self._dir(name) / version / META_FILE).read_text()).get("parent")
        except (OSError, ValueError, AttributeError):
            return None
        return parent if isinstance(parent, str) else None

    def last_good_predecessor(self, name: str, version: str) -> str | None:
        """The nearest ancestor of ``version`` whose files check out (the rollback target)."""
        chain = self._ancestors_to_last_good(name, version)
        return chain[-1] if chain else None

    def _ancestors_to_last_good(self, name: str, version: str) -> list[str]:
        """Ancestors of ``version``, nearest first, up to the first that checks out ([] if none)."""
        chain: list[str] = []
        v = self.parent(name, version)
        while v is not None and v not in chain and v != version:
            chain.append(v)
            try:
                self.get(name, v)
                return chain
            except StoreError:
                v = self.parent(name, v)
        return []

    def prune(self, name: str, keep: int, serving: str | None = None) -> list[str]:
        """Delete all but the ``keep`` newest versions; returns the deleted ones.

        Never deleted: the current version, the served one (``serving``) and the
        last good predecessor of each (with any corrupt versions between them).
        A version that cannot be deleted stays (the next prune tries again).
        """
        versions = self.versions(name)
        protected = set(versions[-keep:]) if keep > 0 else set()
        for v in {self.current(name), serving} - {None}:
            protected.add(v)
            # corrupt versions between it and its last good predecessor stay: they link the two
            protected.update(self._ancestors_to_last_good(name, v))
        removed = []
        for v in versions:
            if v in protected:
                continue
            try:
                # renamed first, so a crash mid-delete leaves a temporary to clean, not half a version
                doomed = self._dir(name) / f"{_TMP_PREFIX}pruned-{v}"
                os.rename(self._dir(name) / v, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            except OSError as exc:
                log.warning("cannot prune %s version %s: %s", name, v, exc.strerror or exc)
                continue
            removed.append(v)
        return removed

    def candidates(self, name: str) -> list[str]:
        """Versions to try on start: current, its ancestors, then the rest newest first."""
        order: list[str] = []
        versions = self.versions(name)
        v = self.current(name)
        while v is not None and v not in order and v in versions:
            order.append(v)
            v = self.parent(name, v)
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
