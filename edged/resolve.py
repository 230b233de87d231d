"""Which model version to serve: the configured file, the versioned store, and the fallbacks between them.

At start the current stored version is served, loudly the last good one if it
is corrupt, and the configured file re-imported if none loads; a new configured
file is imported as a version, probed in a child process first. A store that
refuses writes is not fatal: what is stored, or else the file itself, unstored,
is served. Every load failure is counted and comes out as an ``EdgedError``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edged.config import Config
from edged.errors import EdgedError
from edged.metrics import Metrics
from edged.runtime.probe import probe_model
from edged.serve.served import ServedModel, load_model, read_model_file
from edged.store import ModelStore, StoreError, StoreWriteError, sha256_hex
from edged.systemd import Notifier

log = logging.getLogger("edged")


def default_model() -> Path:
    try:
        from edged.data import default_model_path
    except ImportError as exc:
        raise EdgedError(
            "no model configured (model.path / --model) and the bundled models are not installed"
        ) from exc
    return Path(default_model_path())


class ModelResolver:
    """Finds, stores and loads the versions the daemon serves; holds no model itself."""

    def __init__(self, metrics: Metrics, notifier: Notifier) -> None:
        self.metrics = metrics
        self.notifier = notifier

    def source(self, cfg: Config) -> tuple[Path, str]:
        path = Path(cfg.model.path) if cfg.model.path else default_model()
        name = cfg.model.name or path.name.removesuffix(".tflite")
        return path, name

    def load(self, cfg: Config, content: bytes, name: str, version: str, probe: bool = False) -> ServedModel:
        """Load and warm a version; ``probe`` first tries bytes from outside in a child process."""
        s = cfg.server
        try:
            if probe:
                probe_model(content, cfg.model.engine, f"{name} version {version}")
            return load_model(
                content,
                name=name,
                version=version,
                engine=cfg.model.engine,
                workers=s.workers + 1,
                max_batch=s.max_batch,
                warmup_runs=cfg.model.warmup_runs,
                layout=cfg.model.layout,
            )
        except Exception as exc:
            self.metrics.load_failures.inc()
            if isinstance(exc, EdgedError | OSError | ValueError):
                raise EdgedError(f"{name} version {version}: {exc}") from exc
            raise EdgedError(f"{name} version {version}: {type(exc).__name__}: {exc}") from exc

    def import_file(
        self, cfg: Config, store: ModelStore, name: str, source: Path, content: bytes
    ) -> ServedModel:
        """Store new source bytes as a version, load it, then make it current."""
        digest = sha256_hex(content)
        existed = store.find(name, digest) is not None
        version = store.add(
            name, content, parent=store.current(name), made_by={"kind": "import", "source": str(source)}
        )
        try:
            model = self.load(cfg, content, name, version.version, probe=True)
        except EdgedError:
            if not existed and store.current(name) != version.version:
                store.remove(name, version.version)
            raise
        store.set_current(name, version.version, source_sha256=digest)
        log.info("imported %s as %s version %s", source, name, version.version)
        return model

    def load_version(self, cfg: Config, store: ModelStore, name: str, version: str) -> ServedModel:
        try:
            content = store.get(name, version).path.read_bytes()
        except (StoreError, OSError) as exc:
            self.metrics.load_failures.inc()
            raise EdgedError(f"{name} version {version}: {exc}") from exc
        return self.load(cfg, content, name, version)

    def from_store(self, cfg: Config, store: ModelStore, name: str) -> ServedModel:
        """The current version, or loudly the last good one if current is corrupt."""
        current = store.current(name)
        errors = []
        for v in store.candidates(name):
            try:
                model = self.load_version(cfg, store, name, v)
            except EdgedError as exc:
                log.error("model %s version %s is unusable: %s", name, v, exc)
                errors.append(str(exc))
                continue
            if v != current:
                msg = (
                    f"CURRENT VERSION {current} OF {name} IS CORRUPT; serving last good version {v} "
                    f"({'; '.join(errors) or 'no current pointer'})"
                )
                log.error("%s", msg)
                self.notifier.status(msg[:400])
            return model
        detail = "; ".join(errors) or "none stored"
        raise EdgedError(f"no loadable version of {name} in {store.root}: {detail}")

    def resolve(self, cfg: Config, serving: ServedModel | None) -> ServedModel | None:
        """The model to serve under ``cfg``; None if it is the one already served."""
        source, name = self.source(cfg)
        same = serving is not None and serving.name == name and serving.engine_kind == cfg.model.engine
        if not cfg.store.state_dir:
            content = read_model_file(source)
            digest = sha256_hex(content)
            if same and serving.sha256 == digest:
                return None
            return self.load(cfg, content, name, digest[:12], probe=True)
        store = ModelStore(cfg.store.state_dir)
        if serving is None and store.clean_temporary(name):
            log.warning("removed leftovers of an interrupted store write for %s", name)
        pointer = store.pointer(name)
        try:
            content = read_model_file(source)
        except EdgedError as exc:
            if serving is not None or not store.versions(name):
                raise
            log.error("%s; serving the store's versions", exc)
            content = None
        if content is not None and (pointer is None or pointer.get("source_sha256") != sha256_hex(content)):
            try:
                return self.import_file(cfg, store, name, source, content)
            except StoreWriteError as exc:
                self.metrics.store_write_failures.inc()
                if same and serving.sha256 == sha256_hex(content):
                    log.warning("cannot store %s: %s; it is already served, unstored", source, exc)
                    return None
                if serving is not None:
                    raise
                if not store.versions(name):
                    return self._unstored(cfg, name, source, content, exc)
                log.warning("cannot store %s: %s; serving the stored versions", source, exc)
            except EdgedError as exc:
                if serving is not None or not store.versions(name):
                    raise
                log.error("cannot import %s: %s; serving the store's versions", source, exc)
        if serving is None:
            return self._start_from_store(cfg, store, name, source, content)
        if same and pointer is not None and pointer["version"] == serving.version:
            return None
        return self.load_version(cfg, store, name, store.current(name) or "")

    def _start_from_store(
        self, cfg: Config, store: ModelStore, name: str, source: Path, content: bytes | None
    ) -> ServedModel:
        """The stored version to start with; if none loads, the configured file re-imported."""
        try:
            return self.from_store(cfg, store, name)
        except EdgedError as exc:
            if content is None:
                raise
            log.error("%s; re-importing %s", exc, source)
        try:
            model = self.import_file(cfg, store, name, source, content)
        except StoreWriteError as exc:
            self.metrics.store_write_failures.inc()
            return self._unstored(cfg, name, source, content, exc)
        self.metrics.store_repairs.inc()
        msg = f"NO STORED VERSION OF {name} LOADED; re-imported {source} as version {model.version}"
        log.error("%s", msg)
        self.notifier.status(msg[:400])
        return model

    def _unstored(self, cfg: Config, name: str, source: Path, content: bytes, exc: Exception) -> ServedModel:
        """Serve the configured file without a store version: better than not serving."""
        log.warning("%s; serving %s unstored (it is not kept across restarts)", exc, source)
        return self.load(cfg, content, name, sha256_hex(content)[:12], probe=True)

    def prune(self, cfg: Config, name: str, serving: str | None) -> None:
        """Keep store.keep_versions versions, never ``serving``; never fatal (a read-only store keeps all)."""
        if not cfg.store.state_dir:
            return
        try:
            removed = ModelStore(cfg.store.state_dir).prune(name, cfg.store.keep_versions, serving)
        except (StoreError, OSError) as exc:
            log.warning("cannot prune old versions of %s: %s", name, exc)
            return
        if removed:
            self.metrics.store_pruned.inc(len(removed))
            log.info("pruned %s version(s) %s", name, ", ".join(removed))
