"""The daemon's configuration: a TOML file, then command-line flags on top.

Every key has a type, a default and a check. Unknown keys and bad values raise
``ConfigError`` naming the key (``server.max_batch``) at start, never a stack
trace later. ``systemd/edged.toml`` is an annotated example.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.errors import EdgedError
from edged.model.rounding import ROUNDING_MODES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ENGINES = ("native", "litert")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(EdgedError):
    """A configuration key is unknown or has a bad value."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"config: {key}: {reason}")


@dataclass(frozen=True)
class ModelSection:
    path: str = ""  # "" = the bundled default model
    name: str = ""  # "" = the file name without .tflite
    engine: str = "native"
    layout: str = "auto"  # native weight layout: auto (measured), cost, dense or a block shape like 16x4
    # FC/CONV requantization and the HARD_SWISH/SOFTMAX/DEQUANTIZE forms: auto (this machine's
    # LiteRT), double (its x86-64 build) or single (its aarch64 build)
    rounding: str = "auto"
    warmup_runs: int = 3


@dataclass(frozen=True)
class ServerSection:
    bind: str = "tcp://127.0.0.1:5555"
    workers: int = 2
    queue_size: int = 256
    queue_max_bytes: int = 32 * 1024 * 1024  # input bytes of queued requests; beyond, OVERLOADED
    recv_hwm: int = 64  # request messages ZeroMQ buffers per client before the I/O thread reads them
    send_hwm: int = 1024  # replies ZeroMQ buffers per client; beyond, replies are dropped (counted)
    max_batch: int = 16
    max_delay_us: int = 200
    inline_max_us: int = 300
    busy_poll_us: int = 200  # the I/O loop spins this long for the next request under dense traffic
    request_timeout_ms: int = 10_000
    max_request_batch: int = 256  # rows of one infer request; larger ones get BAD_INPUT
    max_message_bytes: int = 1024 * 1024
    drain_timeout_s: float = 10.0
    feedback_window: int = 4096


@dataclass(frozen=True)
class MetricsSection:
    listen: str = "127.0.0.1:9464"  # "" disables the HTTP endpoint


@dataclass(frozen=True)
class StoreSection:
    state_dir: str = ""  # "" = no model store: serve the model file directly
    keep_versions: int = 5  # newest versions kept; the served one and its predecessor always stay


@dataclass(frozen=True)
class SecuritySection:
    curve: bool = False
    server_secret_key: str = ""
    authorized_keys_dir: str = ""


@dataclass(frozen=True)
class AdaptSection:
    enabled: bool = False
    strategy: str = "magnitude"  # magnitude, wanda, qsa (pruning) or hmatrix, svd (low-rank)
    kl_budget: float = 0.05  # largest mean output KL of a candidate vs the dense master
    max_kl_budget: float = 0.5  # resource pressure raises the budget up to this
    block: str = "auto"  # mask block shape: auto (fastest here) or RxC
    sample_rate: float = 0.1  # fraction of requests tapped (p50 cost measured by bench/adapt.py --only taps)
    tap_memory_bytes: int = 8 << 20
    window: int = 256  # samples per drift window
    calib_samples: int = 512  # fresh samples an adaptation collects (a quarter held back for validation)
    collect_timeout_s: float = 60.0
    min_interval_s: float = 30.0  # at most one adaptation per interval
    period_s: float = 0.0  # adapt at least this often; 0 = only on triggers
    fidelity_floor: float = 0.9  # Wilson lower bound of top-1 agreement with the master
    accuracy_floor: float = 0.0  # Wilson lower bound of feedback accuracy; 0 = off
    probation_s: float = 10.0  # after a swap, fidelity below the floor rolls back
    latency_slo_us: float = 0.0  # batch-1 time above this pushes toward sparsity; 0 = off
    load_per_cpu: float = 0.0  # 1-min load per CPU above this pushes toward sparsity; 0 = off
    cpu_temp_c: float = 0.0  # hottest sensor above this pushes toward sparsity; 0 = off
    nice: int = 10  # niceness of the adaptation thread and of every thread of its worker process (Linux)
    worker_threads: int = 1  # BLAS threads of the worker process; 0 = numpy's default (one per core)
    reconstruct: bool = True  # solve a pruned candidate's kept weights again on the window (OBS)
    finetune: bool = True  # train a candidate's kept weights (distillation, feedback labels) first
    finetune_time_s: float = 8.0  # its time budget inside one adaptation
    finetune_memory_bytes: int = 256 << 20  # and its memory budget (the worker process)
    # A labelled row's loss share from its label (the rest: distillation from the master). Under drift
    # the master's outputs are what went wrong, so the default trusts the labels alone.
    label_weight: float = 1.0
    min_labelled: int = 30  # labelled feedback rows held out before validation judges by accuracy


@dataclass(frozen=True)
class LogSection:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    model: ModelSection = ModelSection()
    server: ServerSection = ServerSection()
    metrics: MetricsSection = MetricsSection()
    store: StoreSection = StoreSection()
    security: SecuritySection = SecuritySection()
    adapt: AdaptSection = AdaptSection()
    log: LogSection = LogSection()

    def get(self, key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(self, section), name)


_SECTION_TYPES = {f.name: type(f.default) for f in dataclasses.fields(Config)}
_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")
_TCP = re.compile(r"^tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5}|\*)$")


def _in(lo: float, hi: float):
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}, got {v}"

    return check


def _one_of(choices: tuple[str, ...]):
    def check(v: str) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"

    return check


def _layout_policy(v: str) -> str | None:
    from edged.runtime.layout import parse_policy

    try:
        parse_policy(v)
    except ValueError as exc:
        return str(exc)
    return None


def _block_shape(v: str) -> str | None:
    if v == "auto":
        return None
    from edged.sparse.block_csr import BlockShape

    try:
        BlockShape.parse(v)
    except ValueError as exc:
        return f"must be auto or a block shape like 16x4 ({exc})"
    return None


def _endpoint(v: str) -> str | None:
    m = _TCP.match(v)
    if m:
        return None if m.group(2) == "*" or 1 <= int(m.group(2)) <= 65535 else f"bad port in {v!r}"
    if v.startswith("ipc://") and len(v) > 6:
        return None
    return f"must be tcp://HOST:PORT or ipc://PATH, got {v!r}"


def _listen(v: str) -> str | None:
    if v == "":
        return None
    m = _HOSTPORT.match(v)
    if not m or int(m.group(2)) > 65535:
        return f'must be HOST:PORT (or "" to disable), got {v!r}'
    return None


_CHECKS = {
    "model.engine": _one_of(ENGINES),
    "model.layout": _layout_policy,
    "model.rounding": _one_of(ROUNDING_MODES),
    "adapt.strategy": _one_of(("magnitude", "wanda", "qsa", "hmatrix", "svd", "pattern")),
    "adapt.kl_budget": _in(1e-6, 10.0),
    "adapt.max_kl_budget": _in(1e-6, 10.0),
    "adapt.block": _block_shape,
    "adapt.sample_rate": _in(0.0, 1.0),
    "adapt.tap_memory_bytes": _in(4096, 1 << 34),
    "adapt.window": _in(8, 1_000_000),
    "adapt.calib_samples": _in(16, 1_000_000),
    "adapt.collect_timeout_s": _in(0.1, 86400),
    "adapt.min_interval_s": _in(0.0, 86400),
    "adapt.period_s": _in(0.0, 86400 * 7),
    "adapt.fidelity_floor": _in(0.0, 1.0),
    "adapt.accuracy_floor": _in(0.0, 1.0),
    "adapt.probation_s": _in(0.0, 86400),
    "adapt.latency_slo_us": _in(0.0, 1e9),
    "adapt.load_per_cpu": _in(0.0, 1000.0),
    "adapt.cpu_temp_c": _in(0.0, 200.0),
    "adapt.nice": _in(0, 19),
    "adapt.worker_threads": _in(0, 1024),
    "adapt.finetune_time_s": _in(0.1, 86400),
    "adapt.finetune_memory_bytes": _in(1 << 20, 1 << 40),
    "adapt.label_weight": _in(0.0, 1.0),
    "adapt.min_labelled": _in(1, 1_000_000),
    "model.warmup_runs": _in(0, 1000),
    "server.bind": _endpoint,
    "server.workers": _in(1, 64),
    "server.queue_size": _in(1, 1_000_000),
    "server.queue_max_bytes": _in(4096, 2**40),
    "server.recv_hwm": _in(1, 1_000_000),
    "server.send_hwm": _in(1, 1_000_000),
    "server.max_batch": _in(1, 4096),
    "server.max_delay_us": _in(0, 1_000_000),
    "server.inline_max_us": _in(0, 1_000_000),
    "server.busy_poll_us": _in(0, 10_000),
    "server.request_timeout_ms": _in(1, 3_600_000),
    "server.max_request_batch": _in(1, 1_000_000),
    "server.max_message_bytes": _in(1024, 2**31 - 1),
    "server.drain_timeout_s": _in(0, 600),
    "server.feedback_window": _in(0, 1_000_000),
    "metrics.listen": _listen,
    "store.keep_versions": _in(1, 1_000_000),
    "log.level": _one_of(LOG_LEVELS),
}


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Type-check one value; ints are accepted where floats are expected."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        raise ConfigError(key, f"must be {names[kind]}, got {type(value).__name__} {value!r}")
    check = _CHECKS.get(key)
    problem = check(value) if check else None
    if problem:
        raise ConfigError(key, problem)
    return value


def _field_types(section: str) -> dict[str, type]:
    cls = _SECTION_TYPES[section]
    return {f.name: type(f.default) for f in dataclasses.fields(cls)}


def _build(values: dict[str, dict[str, Any]]) -> Config:
    sections = {}
    for name, cls in _SECTION_TYPES.items():
        sections[name] = dataclasses.replace(cls(), **values.get(name, {}))
    cfg = Config(**sections)
    check_config(cfg)
    return cfg


def check_config(cfg: Config) -> None:
    """Checks across keys; run again on the merged config of a reload."""
    _check_security(cfg)


def _check_security(cfg: Config) -> None:
    sec = cfg.security
    if not sec.curve:
        return
    if not sec.server_secret_key:
        raise ConfigError("security.server_secret_key", "required when security.curve = true")
    if not Path(sec.server_secret_key).is_file():
        raise ConfigError("security.server_secret_key", f"no such file: {sec.server_secret_key}")
    if not sec.authorized_keys_dir:
        raise ConfigError("security.authorized_keys_dir", "required when security.curve = true")
    if not Path(sec.authorized_keys_dir).is_dir():
        raise ConfigError("security.authorized_keys_dir", f"no such directory: {sec.authorized_keys_dir}")


def parse_config(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
    """A Config from parsed TOML plus ``{"section.key": value}`` overrides."""
    values: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in _SECTION_TYPES:
            raise ConfigError(section, f"unknown section (known: {', '.join(_SECTION_TYPES)})")
        if not isinstance(table, dict):
            raise ConfigError(section, "must be a table ([section])")
        types = _field_types(section)
        for key, value in table.items():
            full = f"{section}.{key}"
            if key not in types:
                raise ConfigError(full, f"unknown key (known in [{section}]: {', '.join(types)})")
            values.setdefault(section, {})[key] = _coerce(full, value, types[key])
    for full, value in (overrides or {}).items():
        if value is None:
            continue
        section, key = full.split(".")
        values.setdefault(section, {})[key] = _coerce(full, value, _field_types(section)[key])
    return _build(values)


# Keys a config file must set (a flag may stand in): without them a truncated or
# emptied file would silently mean "the defaults", e.g. the bundled demo model.
REQUIRED = {"model.path": '"" serves the bundled model; or pass --model'}


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the TOML file (if any) and apply flag overrides.

    A file that is empty, or lacks a REQUIRED key that no flag supplies, is an
    error: on a reload it keeps the running config instead of resetting to defaults.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from exc
    cfg = parse_config(data, overrides)  # bad values first: they name the key
    if path is not None:
        _check_required(path, data, overrides or {})
    return cfg


def _check_required(path: str | Path, data: dict[str, Any], overrides: dict[str, Any]) -> None:
    if not data:
        raise ConfigError(
            "--config", f"{path} has no settings (empty or truncated?); it must set at least [model] path"
        )
    for key, hint in REQUIRED.items():
        section, name = key.split(".")
        table = data.get(section)
        if overrides.get(key) is None and not (isinstance(table, dict) and name in table):
            raise ConfigError(
                key,
                f"missing from {path} (truncated file?): set [{section}] {name} ({hint})",
            )


# Keys that take effect on reload (SIGHUP); the others need a restart.
RELOADABLE = frozenset(
    {
        "model.path",
        "model.name",
        "model.engine",
        "model.warmup_runs",
        "server.max_batch",
        "server.max_delay_us",
        "server.inline_max_us",
        "server.busy_poll_us",
        "server.request_timeout_ms",
        "log.level",
        "security.authorized_keys_dir",
        "store.keep_versions",
    }
)


def changed_keys(old: Config, new: Config) -> list[str]:
    out = []
    for section in _SECTION_TYPES:
        for key in _field_types(section):
            full = f"{section}.{key}"
            if old.get(full) != new.get(full):
                out.append(full)
    return out
