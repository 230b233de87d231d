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
from typing import Any

import prometheus_client
import zmq

from edged.config import RELOADABLE, Config, changed_keys, check_config, load_config
from edged.errors import EdgedError
from edged.metrics import Metrics, serve_http
from edged.model.rounding import set_default_rounding
from edged.resolve import ModelResolver
from edged.serve.feedback import FeedbackLog
from edged.serve.served import ServedModel, read_model_file
from edged.serve.server import Server
from edged.store import ModelStore, StoreWriteError, sha256_hex
from edged.systemd import Notifier, Watchdog, watchdog_interval

log = logging.getLogger("edged")

HEALTH_STALL_S = 10.0  # /healthz: an I/O loop or batch stuck this long is unhealthy (without a watchdog)


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
        self.metrics = Metrics(snapshot=lambda: self.server.snapshot() if self.server else None,
                               settle=lambda: self.server.settle_metrics() if self.server else None)
        self.models = ModelResolver(self.metrics, self.notifier)
        self.feedback = FeedbackLog(self.cfg.server.feedback_window, keep_inputs=self.cfg.adapt.enabled)
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

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.cfg
        set_default_rounding(cfg.model.rounding)  # restart-only: every engine of the process follows it
        setup_logging(cfg.log.level)
        prometheus_client.disable_created_metrics()  # _created series only add noise here
        self.notifier.status("loading model")
        model = self.models.resolve(cfg, None)
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
        self.models.prune(cfg, model.name, self.server.model.version)
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
            master = read_model_file(self.models.source(self.cfg)[0])
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
                layout=self.cfg.model.layout,
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
            model = self.models.resolve(applied, old)
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
            self.models.prune(applied, self.server.model.name, self.server.model.version)
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
                model = self.models.load(cfg, content, old.name, sha256_hex(content)[:12])
            else:
                store = ModelStore(cfg.store.state_dir)
                pointer = store.pointer(old.name) or {}
                try:
                    version = store.add(old.name, content, parent=old.version, made_by=made_by)
                    model = self.models.load(cfg, content, old.name, version.version)
                    store.set_current(old.name, version.version, source_sha256=pointer.get("source_sha256"))
                except StoreWriteError:
                    self.metrics.store_write_failures.inc()
                    raise
            self.server.swap(model)
            self.metrics.swaps.inc()
            log.info("deployed %s version %s -> %s (%s)", old.name, old.version, model.version, made_by)
            self.models.prune(cfg, model.name, self.server.model.version)
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
