"""The daemon process: start and stop order, signals, reload and hot swap.

Start: config -> logging -> metrics registry -> model (store, load, warm-up)
-> ZAP authenticator -> server (bind, workers) -> metrics HTTP -> READY=1 ->
watchdog. Stop (SIGTERM/SIGINT): STOPPING=1 -> refuse new requests and drain
in-flight ones within ``server.drain_timeout_s`` -> close the server -> the
rest in reverse. SIGHUP reloads: RELOADING=1, re-read the config and the model,
load and warm a new version beside the old one, swap one reference, READY=1.
A failed reload keeps the old model and says why.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import prometheus_client
import zmq

from edged.config import RELOADABLE, Config, changed_keys, check_config, load_config
from edged.errors import EdgedError
from edged.metrics import Metrics, serve_http
from edged.runtime.probe import probe_model
from edged.serve.feedback import FeedbackLog
from edged.serve.served import ServedModel, load_model, read_model_file
from edged.serve.server import Server
from edged.store import ModelStore, StoreError, StoreWriteError, sha256_hex
from edged.systemd import Notifier, Watchdog, watchdog_interval

log = logging.getLogger("edged")

HEALTH_STALL_S = 10.0  # /healthz: an I/O loop or batch stuck this long is unhealthy (without a watchdog)


def default_model() -> Path:
    try:
        from edged.data import default_model_path
    except ImportError as exc:
        raise EdgedError(
            "no model configured (model.path / --model) and the bundled models are not installed"
        ) from exc
    return Path(default_model_path())


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        fmt = "%(levelname)s %(name)s: %(message)s"
        if not os.environ.get("JOURNAL_STREAM"):  # journald adds its own timestamps
            fmt = "%(asctime)s " + fmt
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    root.setLevel(level.upper())


class App:
    def __init__(self, config_path: str | None = None, overrides: dict[str, Any] | None = None) -> None:
        self.config_path = config_path
        self.overrides = overrides or {}
        self.cfg: Config = load_config(config_path, self.overrides)
        self.notifier = Notifier.from_env()
        self.context = zmq.Context()
        self.server: Server | None = None
        self.metrics = Metrics(snapshot=lambda: self.server.snapshot() if self.server else None)
        self.feedback = FeedbackLog(self.cfg.server.feedback_window)
        self.auth = None
        self.http = None
        self.watchdog: Watchdog | None = None
        self.watchdog_timeout: float | None = None
        self._wake = threading.Event()
        self._swap_lock = threading.Lock()  # serializes reload and deploy; never taken by requests
        self._stop_requested = False
        self._reload_requested = False
        self.controller = None  # edged.adapt.controller.Controller when adapt.enabled
        self._adapt_metrics = None  # registered once, kept across controllers
        self.on_adapt_event = None  # callback for adaptation events (the demo prints them)

    # ------------------------------------------------------------ model resolution

    def _source(self, cfg: Config) -> tuple[Path, str]:
        path = Path(cfg.model.path) if cfg.model.path else default_model()
        name = cfg.model.name or path.name.removesuffix(".tflite")
        return path, name

    def _load(self, cfg: Config, content: bytes, name: str, version: str, probe: bool = False) -> ServedModel:
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

    def _import(self, cfg: Config, store: ModelStore, name: str, source: Path, content: bytes) -> ServedModel:
        """Store new source bytes as a version, load it, then make it current."""
        digest = sha256_hex(content)
        existed = store.find(name, digest) is not None
        version = store.add(
            name, content, parent=store.current(name), made_by={"kind": "import", "source": str(source)}
        )
        try:
            model = self._load(cfg, content, name, version.version, probe=True)
        except EdgedError:
            if not existed and store.current(name) != version.version:
                store.remove(name, version.version)
            raise
        store.set_current(name, version.version, source_sha256=digest)
        log.info("imported %s as %s version %s", source, name, version.version)
        return model

    def _load_version(self, cfg: Config, store: ModelStore, name: str, version: str) -> ServedModel:
        try:
            content = store.get(name, version).path.read_bytes()
        except (StoreError, OSError) as exc:
            self.metrics.load_failures.inc()
            raise EdgedError(f"{name} version {version}: {exc}") from exc
        return self._load(cfg, content, name, version)

    def _from_store(self, cfg: Config, store: ModelStore, name: str) -> ServedModel:
        """The current version, or loudly the last good one if current is corrupt."""
        current = store.current(name)
        errors = []
        for v in store.candidates(name):
            try:
                model = self._load_version(cfg, store, name, v)
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
        source, name = self._source(cfg)
        same = serving is not None and serving.name == name and serving.engine_kind == cfg.model.engine
        if not cfg.store.state_dir:
            content = read_model_file(source)
            digest = sha256_hex(content)
            if same and serving.sha256 == digest:
                return None
            return self._load(cfg, content, name, digest[:12], probe=True)
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
                return self._import(cfg, store, name, source, content)
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
        return self._load_version(cfg, store, name, store.current(name) or "")

    def _start_from_store(
        self, cfg: Config, store: ModelStore, name: str, source: Path, content: bytes | None
    ) -> ServedModel:
        """The stored version to start with; if none loads, the configured file re-imported."""
        try:
            return self._from_store(cfg, store, name)
        except EdgedError as exc:
            if content is None:
                raise
            log.error("%s; re-importing %s", exc, source)
        try:
            model = self._import(cfg, store, name, source, content)
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
        return self._load(cfg, content, name, sha256_hex(content)[:12], probe=True)

    def _prune(self, cfg: Config, name: str) -> None:
        """Keep store.keep_versions versions; never fatal (a read-only store keeps them all)."""
        if not cfg.store.state_dir:
            return
        serving = self.server.model.version if self.server is not None else None
        try:
            removed = ModelStore(cfg.store.state_dir).prune(name, cfg.store.keep_versions, serving)
        except (StoreError, OSError) as exc:
            log.warning("cannot prune old versions of %s: %s", name, exc)
            return
        if removed:
            self.metrics.store_pruned.inc(len(removed))
            log.info("pruned %s version(s) %s", name, ", ".join(removed))

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.cfg
        setup_logging(cfg.log.level)
        prometheus_client.disable_created_metrics()  # _created series only add noise here
        self.notifier.status("loading model")
        model = self.resolve(cfg, None)
        assert model is not None
        curve_keys = None
        if cfg.security.curve:
            from edged.serve.auth import Authenticator, load_keypair

            curve_keys = load_keypair(cfg.security.server_secret_key)
            self.auth = Authenticator(
                self.context,
                cfg.security.authorized_keys_dir,
                on_disconnect=self.metrics.curve_disconnects.inc,
            )
            self.auth.start()
        self.server = Server(
            model, cfg.server, self.metrics, self.feedback, context=self.context, curve_keys=curve_keys
        )
        if self.auth is not None:
            self.server.peer_guard = self.auth.guard
        if cfg.metrics.listen:
            try:
                self.http = serve_http(self.metrics, cfg.metrics.listen, health=self.http_health)
            except OSError as exc:
                raise EdgedError(f"metrics.listen: cannot listen on {cfg.metrics.listen}: {exc}") from exc
        self.server.start()
        self.server.ready = True  # right after bind: requests that waited for the bind are served
        self._prune(cfg, model.name)
        status = self.status_line()
        log.info("%s", status)
        self.notifier.ready(status)
        self._start_adaptation(model)
        timeout = self.watchdog_timeout = watchdog_interval()
        if timeout is not None:
            self.watchdog = Watchdog(self.notifier, timeout, lambda: self.server.healthy(timeout / 2))
            self.watchdog.start()

    def _start_adaptation(self, served: ServedModel) -> None:
        """When adapt.enabled, adapt from the dense master: the configured model file, not
        whatever adapted version the store serves. Never fatal: adaptation just stays off."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        if not self.cfg.adapt.enabled:
            return
        if served.engine_kind != "native":
            log.warning("adaptation needs the native engine; it stays off with %s", served.engine_kind)
            return
        try:
            master = read_model_file(self._source(self.cfg)[0])
        except (EdgedError, OSError) as exc:
            log.warning("adaptation stays off: cannot read the master model: %s", exc)
            return
        from edged.adapt.controller import Controller
        from edged.adapt.metrics import AdaptMetrics

        if self._adapt_metrics is None:
            self._adapt_metrics = AdaptMetrics(self.metrics.registry)
        try:
            self.controller = Controller(
                master, self.cfg.adapt, current=lambda: self.server.model, deploy=self.deploy,
                feedback=self.feedback, metrics=self._adapt_metrics, on_event=self.on_adapt_event,
            )
        except EdgedError as exc:
            log.warning("adaptation stays off: %s", exc)
            return
        self.controller.start()
        a = self.cfg.adapt
        log.info("adaptation on: %s strategy, KL budget %g", a.strategy, a.kl_budget)

    def http_health(self) -> tuple[bool, dict]:
        """For /healthz: ready, and no I/O loop or worker stalled (the watchdog's test)."""
        server = self.server
        if server is None:
            return False, {"state": "starting"}
        state = "draining" if server.draining else ("serving" if server.ready else "starting")
        stall_s = self.watchdog_timeout / 2 if self.watchdog_timeout else HEALTH_STALL_S
        healthy = server.healthy(stall_s)
        model = server.model
        fields = {
            "state": state if healthy else "stalled",
            "model_name": model.name,
            "model_version": model.version,
        }
        return state == "serving" and healthy, fields

    def status_line(self) -> str:
        m = self.server.model
        curve = " (CURVE)" if self.cfg.security.curve else ""
        metrics = f", metrics on http://{self.cfg.metrics.listen}/metrics" if self.cfg.metrics.listen else ""
        return (
            f"serving {m.name} version {m.version} ({m.engine_kind}) on {self.server.endpoint}{curve}"
            f"{metrics}"
        )

    def reload(self) -> bool:
        """Re-read config and model; swap if the model changed. False if it failed."""
        with self._swap_lock:
            return self._reload()

    def _reload(self) -> bool:
        assert self.server is not None
        self.notifier.reloading("reloading configuration and model")
        old = self.server.model
        try:
            new_cfg = load_config(self.config_path, self.overrides)
            changed = changed_keys(self.cfg, new_cfg)
            ignored = [k for k in changed if k not in RELOADABLE]
            if ignored:
                log.warning("reload: %s change(s) need a restart; ignored now", ", ".join(ignored))
            applied = self._merge(new_cfg)
            check_config(applied)  # e.g. curve stays on (restart-only) but the keys dir went missing
            if self.auth is not None:
                from edged.serve.auth import read_authorized_keys

                read_authorized_keys(applied.security.authorized_keys_dir)  # fail before anything moves
            model = self.resolve(applied, old)
            if self.auth is not None:  # last step that can fail: nothing is applied before it
                self.auth.reload(applied.security.authorized_keys_dir)
            self.cfg = applied
            setup_logging(applied.log.level)
            self.server.settings = applied.server
            if model is not None:
                self.server.swap(model)
                self.metrics.swaps.inc()
                log.info("swapped %s version %s -> %s", model.name, old.version, model.version)
                self._start_adaptation(model)  # a new master from the config
            self._prune(applied, self.server.model.name)
            self.metrics.reloads.labels("swapped" if model else "unchanged").inc()
            ok = True
            status = self.status_line()
        except (EdgedError, OSError) as exc:
            self.metrics.reloads.labels("failed").inc()
            ok = False
            status = f"reload failed, still serving {old.name} version {old.version}: {exc}"
            log.error("%s", status)
        self.notifier.ready(status[:400])
        return ok

    def deploy(self, content: bytes, made_by: dict[str, Any]) -> ServedModel:
        """Serve new model bytes (e.g. an adapted candidate) as the next version.

        Stores them as a child of the served version, loads and warms them,
        points ``current`` at them, then swaps. The source pointer is kept, so a
        later reload keeps serving this version until ``model.path`` changes.
        Raises EdgedError and keeps the old model if anything fails.
        """
        with self._swap_lock:
            assert self.server is not None
            cfg, old = self.cfg, self.server.model
            if not cfg.store.state_dir:
                model = self._load(cfg, content, old.name, sha256_hex(content)[:12])
            else:
                store = ModelStore(cfg.store.state_dir)
                pointer = store.pointer(old.name) or {}
                try:
                    version = store.add(old.name, content, parent=old.version, made_by=made_by)
                    model = self._load(cfg, content, old.name, version.version)
                    store.set_current(old.name, version.version, source_sha256=pointer.get("source_sha256"))
                except StoreWriteError:
                    self.metrics.store_write_failures.inc()
                    raise
            self.server.swap(model)
            self.metrics.swaps.inc()
            log.info("deployed %s version %s -> %s (%s)", old.name, old.version, model.version, made_by)
            self._prune(cfg, model.name)
            self.notifier.status(self.status_line())
            return model

    def _merge(self, new: Config) -> Config:
        """``new`` with the keys that need a restart kept at their running values."""
        sections = {}
        for f in dataclasses.fields(Config):
            old_sec, new_sec = getattr(self.cfg, f.name), getattr(new, f.name)
            keep = {
                k.name: getattr(old_sec, k.name)
                for k in dataclasses.fields(old_sec)
                if f"{f.name}.{k.name}" not in RELOADABLE
            }
            sections[f.name] = dataclasses.replace(new_sec, **keep)
        return Config(**sections)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        in_flight = self.server.in_flight if self.server else 0
        self.notifier.stopping(f"draining {in_flight} request(s)")
        if self.server is not None:
            if not self.server.drain(self.cfg.server.drain_timeout_s):
                log.warning("drain timed out with %d request(s) in flight", self.server.in_flight)
            self.server.close()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        if self.auth is not None:
            self.auth.stop()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.notifier.close()
        self.context.term()
        log.info("stopped")

    def _abort_start(self) -> None:
        """Undo a partial or broken start, without draining, so that the process can exit with the error."""
        if self.controller is not None:
            self.controller.stop()
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.server is not None:
            self.server.close(timeout_s=1)
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        if self.auth is not None:
            self.auth.stop()
        self.context.destroy(linger=0)

    # ------------------------------------------------------------ main loop

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stop_requested = True
        self._wake.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self.start()
        except BaseException:
            self._abort_start()
            raise
        return self.serve_until_stopped()

    def serve_until_stopped(self) -> int:
        """The main loop after ``start``: reloads on request; returns the exit status.

        A server thread that died (a bug no handler caught) ends the process with
        status 1: readiness is already down, and without a watchdog nothing else
        would restart a daemon that can no longer answer.
        """
        while not self._stop_requested:
            self._wake.wait(1.0)
            self._wake.clear()
            dead = self.server.dead_threads() if self.server is not None else []
            if dead:
                log.error("server thread(s) %s died; exiting so that the service restarts",
                          ", ".join(dead))
                self.notifier.stopping(f"server thread(s) {', '.join(dead)} died")
                self._abort_start()
                return 1
            if self._reload_requested and not self._stop_requested:
                self._reload_requested = False
                self.reload()
        self.stop()
        return 0
