"""Per-layer weight layout: dense, or block-sparse in the block shape that runs fastest here.

Pruned weights only pay if the sparse kernel beats the dense one on this CPU
for this layer, and which block shape wins depends on the kernel variant, the
layer's shape and where its zeros fall. So the planner measures: each
FULLY_CONNECTED / CONV_2D with zero weights is timed dense and in every block
shape that would skip enough work, as a one-op plan run in C, interleaved
rounds, medians. Results are cached per (weights, layer geometry, variant,
CPU), so a model is tuned once per machine. Without measurement (``"cost"``)
a cost model picks, from the bytes each layout streams.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edged.runtime.kernels import VARIANT_NAMES, lib
from edged.sparse.block_csr import BLOCK_SHAPES, BlockShape, block_occupancy

# A sparse layout is tried only when it skips at least this share of the
# blocks; denser than that, no kernel here beats dense.
MAX_TRIED_DENSITY = 0.6
# Sparse must beat dense by this margin to be chosen: below it, the difference
# is within this machine's timing noise and dense is the safer default.
MIN_GAIN = 1.05
CACHE_VERSION = 1

# Cost model: time per kept weight byte of each block shape relative to the
# dense kernel of the same variant (1.0 = as fast per byte as dense). x86
# values are medians over 50-95 % sparsity of the 1024x1024 batch-1 layer
# (`python bench/kernels.py`, `make -C kernels bench`); the Arm values are
# estimates from the kernels' instruction counts per block (no Arm board
# timed). Shapes a variant has no SIMD path for run the reference kernel and
# are left out.
COST_PER_BYTE = {
    "avx512vnni": {"16x4": 1.0, "8x4": 1.6, "4x4": 2.6, "1x16": 3.0, "1x4": 7.0, "1x1": 10.0},
    "avx2": {"16x4": 1.0, "8x4": 0.9, "1x16": 1.3, "1x4": 3.0},
    "neondot": {"16x4": 1.1, "8x4": 1.3, "4x4": 1.6, "1x16": 1.6, "1x4": 3.0},
    "neon": {"16x4": 1.2, "8x4": 1.3, "4x4": 1.5, "1x16": 1.6},
    "ref": {"1x4": 1.2, "1x16": 1.0, "4x4": 1.0, "8x4": 1.0, "16x4": 1.0},
}


@dataclass
class LayerLayout:
    """What the planner chose for one matmul layer, and why."""

    step: int  # operator index in the graph
    opcode: str
    shape: tuple[int, int]  # (out_c, depth) of the weight matrix
    sparsity: float  # fraction of zero weights
    layout: BlockShape | None  # None: dense
    how: str  # "too few zero blocks", "measured", "cost model", "forced", "cached"
    timings_us: dict[str, float] = field(default_factory=dict)  # median per candidate, "dense" included

    @property
    def name(self) -> str:
        return "dense" if self.layout is None else str(self.layout)

    def to_json(self) -> dict:
        d = asdict(self)
        d["layout"] = self.name
        return d


POLICIES = ("auto", "cost", "dense")
LayoutPolicy = str | BlockShape  # one of POLICIES, or a block shape forced on every layer with zeros


def parse_policy(text: str) -> LayoutPolicy:
    """'auto', 'cost', 'dense' or a block shape such as '16x4'; ValueError otherwise."""
    if text in POLICIES:
        return text
    try:
        return BlockShape.parse(text)
    except ValueError:
        raise ValueError(
            f"weight layout must be one of {', '.join(POLICIES)} or a block shape like 16x4, got {text!r}"
        ) from None


def candidate_blocks(weights: np.ndarray) -> list[tuple[BlockShape, float]]:
    """Block shapes worth trying for ``weights``, with the share of blocks each keeps."""
    out = []
    for block in BLOCK_SHAPES:
        density = float(block_occupancy(weights, block).mean())
        if density <= MAX_TRIED_DENSITY:
            out.append((block, density))
    return out


def cost_model_choice(weights: np.ndarray, variant: int) -> tuple[BlockShape | None, dict[str, float]]:
    """The layout the cost model predicts fastest, and its relative costs (dense = 1)."""
    costs = {"dense": 1.0}
    table = COST_PER_BYTE.get(VARIANT_NAMES[variant], {})
    for block, density in candidate_blocks(weights):
        factor = table.get(str(block))
        if factor is not None:
            costs[str(block)] = density * factor
    best = min(costs, key=costs.get)
    return (None if best == "dense" else BlockShape.parse(best)), costs


_DEFAULT_CACHES: dict[Path, TuneCache] = {}
_DEFAULT_LOCK = threading.Lock()


class TuneCache:
    """Autotune results on disk (JSON), keyed by layer fingerprint; best effort.

    A cache that cannot be read or written is ignored: tuning then simply
    happens again, which is slower but never wrong.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._data: dict[str, Any] | None = None
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read

    @classmethod
    def default(cls) -> TuneCache:
        """The process-wide cache in $EDGED_CACHE_DIR, else $XDG_CACHE_HOME/edged, else ~/.cache/edged."""
        root = os.environ.get("EDGED_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edged"
        )
        path = Path(root) / "autotune.json"
        with _DEFAULT_LOCK:
            cache = _DEFAULT_CACHES.get(path)
            if cache is None:
                cache = _DEFAULT_CACHES[path] = cls(path)
        return cache

    def _read_file(self) -> dict[str, Any]:
        """The layers the file holds now ({} if none or unreadable); remembers its stamp."""
        if self.path is None:
            return {}
        try:
            st = self.path.stat()
            self._stamp = (st.st_mtime_ns, st.st_size)
            data = json.loads(self.path.read_text())
            if data.get("version") == CACHE_VERSION and isinstance(data.get("layers"), dict):
                return data["layers"]
        except (OSError, ValueError, AttributeError):
            pass
        return {}

    def _changed_on_disk(self) -> bool:
        if self.path is None:
            return False
        try:
            st = self.path.stat()
        except OSError:
            return False
        return (st.st_mtime_ns, st.st_size) != self._stamp

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._read_file()
        return self._data

    def get(self, key: str) -> dict | None:
        hit = self._load().get(key)
        if hit is None and self._changed_on_disk():
            # Another process (the adaptation worker, which plans every candidate it validates)
            # may have measured this layer since: merge its results rather than measure again.
            with _DEFAULT_LOCK:
                self._data = {**self._read_file(), **self._load()}
            hit = self._data.get(key)
        return hit

    def put(self, key: str, value: dict) -> None:
        with _DEFAULT_LOCK:
            # Keep what another process wrote since this one last read or wrote the file.
            on_disk = self._read_file() if self._changed_on_disk() else {}
            self._data = {**on_disk, **self._load(), key: value}
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "layers": self._data}))
            os.replace(tmp, self.path)
            st = self.path.stat()
            self._stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            pass


@functools.cache
def cpu_fingerprint() -> str:
    """The CPU model and the build of the kernels: timings are only valid for both."""
    from edged import _kernels

    try:
        st = os.stat(_kernels.__file__)
        build = f"{st.st_size}:{st.st_mtime_ns}"
    except (OSError, TypeError):
        build = "?"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "CPU part")):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.machine()}|{model}|{build}"


def layer_key(step, weights: np.ndarray, variant: int) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(weights).tobytes())
    geometry = {k: v for k, v in vars(step.params).items() if not isinstance(v, np.ndarray)}
    h.update(repr((step.opcode, weights.shape, sorted(geometry.items()), VARIANT_NAMES[variant],
                   cpu_fingerprint(), [str(b) for b in BLOCK_SHAPES])).encode())
    return h.hexdigest()


def time_layouts(graph, step, variant: int, layouts: list[BlockShape | None], rounds: int = 7,
                 target_s: float = 0.01, batch: int = 1) -> dict[str, float]:
    """Median µs per run of the one-op plan of ``step`` in each layout, measured interleaved.

    Each layout gets about ``target_s`` of running in total, in ``rounds``
    rounds that alternate between layouts so drift in the machine's speed
    hits them all alike."""
    from edged.runtime.plan import single_op_executor

    executors = [single_op_executor(graph, step, variant, layout, batch) for layout in layouts]
    ops = [ex.native_ops() for ex in executors]
    reps = [_calibrate(op, target_s / rounds, batch) for op in ops]
    samples: list[list[float]] = [[] for _ in layouts]
    for _ in range(rounds):
        for i, op in enumerate(ops):
            t0 = time.perf_counter()
            _run(op, reps[i], batch)
            samples[i].append((time.perf_counter() - t0) / reps[i] * 1e6)
    return {("dense" if lay is None else str(lay)): float(np.median(s))
            for lay, s in zip(layouts, samples, strict=True)}


def _calibrate(ops: tuple[Any, int], seconds: float, batch: int) -> int:
    """Repetitions of ``ops`` that take about ``seconds`` (at least 1)."""
    reps = 1
    while True:
        t0 = time.perf_counter()
        _run(ops, reps, batch)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds / 4 or reps >= 1 << 16:
            return max(1, int(reps * seconds / max(elapsed, 1e-9)))
        reps *= 4


def _run(ops: tuple[Any, int], reps: int, batch: int) -> None:
    status = lib.edged_run_repeat(ops[0], ops[1], batch, reps)
    if status != 0:
        raise RuntimeError(f"native kernel rejected descriptor {status - 1} while tuning")


def choose_layout(graph, step, variant: int, policy: LayoutPolicy = "auto",
                  cache: TuneCache | None = None) -> LayerLayout | None:
    """Pick the weight layout of ``step``; None when the op has no matmul weights.

    policy: "auto" (measure, cached), "cost" (cost model only), "dense", or a
    BlockShape to force on every layer that has zeros.
    """
    matmul = getattr(step.module, "matmul_weights", None)
    weights = matmul(step.params) if matmul else None
    if weights is None:
        return None
    shape = (int(weights.shape[0]), int(weights.shape[1]))
    sparsity = 1.0 - np.count_nonzero(weights) / weights.size
    record = LayerLayout(step.index, step.opcode, shape, float(sparsity), None, "too few zero blocks")
    if policy == "dense" or sparsity == 0.0:
        record.how = "forced" if policy == "dense" else "too few zero blocks"
        return record
    if isinstance(policy, BlockShape):
        record.layout, record.how = policy, "forced"
        return record
    if policy == "cost":
        record.layout, _ = cost_model_choice(weights, variant)
        record.how = "cost model"
        return record
    if policy != "auto":
        raise ValueError(f"unknown layout policy {policy!r}: auto, cost, dense or a block shape like 16x4")
    candidates = [block for block, _ in candidate_blocks(weights)]
    if not candidates:
        return record
    cache = cache if cache is not None else TuneCache.default()
    key = layer_key(step, weights, variant)
    hit = cache.get(key)
    if hit is not None:
        timings = hit["timings_us"]
        record.how = "cached"
    else:
        timings = time_layouts(graph, step, variant, [None, *candidates])
        cache.put(key, {"timings_us": timings})
        record.how = "measured"
    record.timings_us = timings
    best = min(timings, key=timings.get)
    if best != "dense" and timings[best] * MIN_GAIN < timings["dense"]:
        record.layout = BlockShape.parse(best)
    return record
