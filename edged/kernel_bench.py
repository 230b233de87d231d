"""Sparse vs dense int8 matmul kernels against LiteRT, one layer at a time, in one run.

For each layer (synthetic FULLY_CONNECTED layers of the sizes that matter and
the matmul layers of the bundled models), batch, sparsity and block shape, it
times in interleaved rounds: edged's block-sparse kernel, edged's dense
kernel, LiteRT's builtin dense int8 kernel on a one-layer .tflite and, for
1x16 blocks of a FULLY_CONNECTED layer, LiteRT running the same weights from
a file in TFLite's sparse encoding. Times are medians in microseconds; edged's
kernels run through ``edged_run_repeat`` (no Python in the loop), LiteRT
through ``Interpreter.invoke`` (its Python call included, as its users pay it).
A STREAM-like copy/add measurement gives this machine's single-core memory
bandwidth, so the effective GB/s of each kernel can be read against it.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edged.model.builder import GraphBuilder
from edged.model.ir import Graph
from edged.model.tflite import write_tflite
from edged.runtime.advice import synthetic_weights
from edged.runtime.kernels import VARIANT_NAMES, best_variant, lib
from edged.runtime.plan import single_op_executor
from edged.runtime.prepared import prepare_graph
from edged.sparse.block_csr import BLOCK_SHAPES, BlockShape, pack_block_csr

SIZES = ((1024, 1024), (4096, 1024), (1024, 4096))  # (out_c, depth) of synthetic FC layers
SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)
BATCHES = (1, 16)
TFLITE_BLOCK = BlockShape(1, 16)


@dataclass
class Layer:
    name: str
    graph: Graph  # a one-op model
    macs_per_sample: int  # dense multiply-accumulates per sample


@dataclass
class Row:
    layer: str
    shape: tuple[int, int]
    batch: int
    sparsity: float
    block: str
    native_sparse_us: float
    native_dense_us: float
    litert_dense_us: float | None
    litert_sparse_us: float | None = None
    sparse_bytes: int = 0
    gbps: float = 0.0  # bytes streamed by the sparse kernel (values, indices, activations) per second
    dense_equiv_gops: float = 0.0  # 2 * dense MACs per second of the sparse kernel
    notes: list[str] = field(default_factory=list)

    @property
    def speedup_vs_dense(self) -> float:
        return self.native_dense_us / self.native_sparse_us

    @property
    def speedup_vs_litert(self) -> float | None:
        return self.litert_dense_us / self.native_sparse_us if self.litert_dense_us else None


def fc_layer(out_c: int, depth: int, seed: int = 0) -> Layer:
    """A one-layer int8 FULLY_CONNECTED model with per-channel symmetric weights."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, depth), 0.05, -3)
    w_scale = rng.uniform(0.002, 0.01, out_c)
    w = b.const("w", rng.integers(-127, 128, (out_c, depth)).astype(np.int8), w_scale, 0)
    bias = b.const("b", rng.integers(-2000, 2000, out_c).astype(np.int32), np.float32(0.05) * w_scale, 0)
    y = b.tensor("y", np.int8, (1, out_c), 0.2, 5)
    b.op("FULLY_CONNECTED", [x, w, bias], [y], version=5, fused_activation_function="RELU")
    b.output(y)
    return Layer(f"fc {out_c}x{depth}", b.build(), out_c * depth)


def model_layers(graph: Graph, label: str) -> list[Layer]:
    """Every FULLY_CONNECTED / CONV_2D of ``graph`` as a one-op model of its own."""
    layers = []
    for i, op in enumerate(graph.operators):
        if op.opcode not in ("FULLY_CONNECTED", "CONV_2D"):
            continue
        one = single_op_graph(graph, i)
        w = one.tensors[one.operators[0].inputs[1]]
        out = one.tensors[one.operators[0].outputs[0]]
        rows = int(np.prod(out.shape[1:-1], dtype=np.int64)) if op.opcode == "CONV_2D" else 1
        macs = rows * int(np.prod(w.shape, dtype=np.int64))
        layers.append(Layer(f"{label} #{i} {op.opcode.lower()}", one, macs))
    return layers


def single_op_graph(graph: Graph, index: int) -> Graph:
    """Operator ``index`` of ``graph`` alone: its activations become the model's inputs and output."""
    op = copy.deepcopy(graph.operators[index])
    used = [t for t in op.inputs + op.outputs if t >= 0]
    remap = {t: k for k, t in enumerate(dict.fromkeys(used))}
    tensors = [copy.deepcopy(graph.tensors[t]) for t in remap]
    op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
    op.outputs = [remap[t] for t in op.outputs]
    inputs = [remap[t] for t in graph.operators[index].inputs if t >= 0 and graph.tensors[t].data is None]
    return Graph(tensors, [op], inputs, op.outputs)


def with_weights(layer: Layer, weights: np.ndarray) -> Graph:
    g = copy.deepcopy(layer.graph)
    g.tensors[g.operators[0].inputs[1]].data = weights
    return g


def interleaved(runners: dict[str, Callable[[int], None]], rounds: int = 7,
                target_s: float = 0.01) -> dict[str, float]:
    """Median µs per call of each runner (runner(reps) makes reps calls), rounds interleaved."""
    reps = {}
    for name, run in runners.items():
        n = 1
        while True:
            t0 = time.perf_counter()
            run(n)
            elapsed = time.perf_counter() - t0
            if elapsed >= target_s / rounds / 4 or n >= 1 << 16:
                break
            n *= 4
        reps[name] = max(1, int(n * target_s / rounds / max(elapsed, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(reps[name])
            samples[name].append((time.perf_counter() - t0) / reps[name] * 1e6)
    return {name: float(np.median(s)) for name, s in samples.items()}


def native_runner(graph: Graph, variant: int, layout: BlockShape | None, batch: int) -> Callable[[int], None]:
    prepared = prepare_graph(graph)
    ex = single_op_executor(graph, prepared.steps[0], variant, layout, batch)
    ops, count = ex.native_ops()

    def run(reps: int) -> None:
        if lib.edged_run_repeat(ops, count, batch, reps) != 0:
            raise RuntimeError("native kernel rejected its descriptor")

    run.keep = ex  # the executor owns the buffers the descriptors point at
    return run


def litert_runner(content: bytes, batch: int) -> Callable[[int], None]:
    from edged.runtime.litert import make_interpreter

    interp = make_interpreter(content, delegates=False)
    detail = interp.get_input_details()[0]
    interp.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    rng = np.random.default_rng(0)
    interp.set_tensor(detail["index"], rng.integers(-128, 128, detail["shape"]).astype(detail["dtype"]))

    def run(reps: int) -> None:
        for _ in range(reps):
            interp.invoke()

    return run


def litert_sparse_content(graph: Graph) -> tuple[bytes | None, str | None]:
    """The one-layer model with its FC weights in TFLite's 1x16 sparse encoding, or why not."""
    try:
        from edged.sparse.tflite_encoding import sparsify_fc_weights
    except ImportError as exc:  # pragma: no cover
        return None, str(exc)
    g = copy.deepcopy(graph)
    try:
        if not sparsify_fc_weights(g):
            return None, "weights not eligible for TFLite's sparse encoding"
        return write_tflite(g), None
    except ValueError as exc:  # the encoder explains what it refused
        return None, str(exc)


def stream_bandwidth(mib: float = 64, reps: int = 5) -> dict[str, float]:
    """Single-thread bandwidth in GB/s (best of ``reps``), STREAM-style copy and add.

    With the default 64 MiB arrays this is memory bandwidth; ``cache_copy_gbps``
    repeats the copy on 256 KiB arrays, the size of the sparse layers' streams,
    which stay in cache when a layer runs back to back."""
    def copy_add(n: int, loops: int) -> tuple[float, float]:
        a, b, c = np.ones(n), np.full(n, 2.0), np.zeros(n)
        best_copy = best_add = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(loops):
                np.copyto(c, a)
            best_copy = min(best_copy, (time.perf_counter() - t0) / loops)
            t0 = time.perf_counter()
            for _ in range(loops):
                np.add(a, b, out=c)
            best_add = min(best_add, (time.perf_counter() - t0) / loops)
        return 2 * a.nbytes / best_copy / 1e9, 3 * a.nbytes / best_add / 1e9

    copy, add = copy_add(int(mib * 1024 * 1024 // 8), 1)
    cache_copy, _ = copy_add(256 * 1024 // 8, 200)
    return {"copy_gbps": copy, "add_gbps": add, "array_mib": mib, "cache_copy_gbps": cache_copy}


def bench_layer(layer: Layer, batch: int, sparsities, blocks, variant: int, target_s: float) -> list[Row]:
    out_c = layer.graph.tensors[layer.graph.operators[0].inputs[1]].shape[0]
    w_shape = layer.graph.tensors[layer.graph.operators[0].inputs[1]].shape
    depth = int(np.prod(w_shape[1:]))
    dense_content = write_tflite(layer.graph)
    litert_dense = litert_runner(dense_content, batch)
    is_fc = layer.graph.operators[0].opcode == "FULLY_CONNECTED"
    rows = []
    for s in sparsities:
        for block in blocks:
            w = synthetic_weights(w_shape, block, s, seed=1)
            g = with_weights(layer, w)
            runners = {
                "sparse": native_runner(g, variant, block, batch),
                "dense": native_runner(g, variant, None, batch),
                "litert": litert_dense,
            }
            note = []
            if is_fc and block == TFLITE_BLOCK:
                content, why = litert_sparse_content(g)
                if content is not None:
                    runners["litert_sparse"] = litert_runner(content, batch)
                else:
                    note.append(f"LiteRT sparse: {why}")
            t = interleaved(runners, target_s=target_s)
            csr = pack_block_csr(w.reshape(out_c, depth), block)
            in_rows = layer.macs_per_sample // (out_c * depth)
            streamed = csr.nbytes + batch * in_rows * (depth + out_c)
            rows.append(Row(
                layer.name, (out_c, depth), batch, s, str(block), t["sparse"], t["dense"], t["litert"],
                t.get("litert_sparse"), csr.nbytes,
                streamed / t["sparse"] / 1e3, 2 * layer.macs_per_sample * batch / t["sparse"] / 1e3, note,
            ))
    return rows


def run(layers: list[Layer], batches=BATCHES, sparsities=SPARSITIES, blocks=BLOCK_SHAPES,
        target_s: float = 0.01, progress: Callable[[str], None] | None = None) -> dict:
    variant = best_variant()
    stream = stream_bandwidth()
    rows: list[Row] = []
    for layer in layers:
        for batch in batches:
            if progress:
                progress(f"{layer.name}, batch {batch}")
            rows.extend(bench_layer(layer, batch, sparsities, blocks, variant, target_s))
    return {"variant": VARIANT_NAMES[variant], "stream": stream, "rows": rows}


def row_json(r: Row) -> dict:
    d = dataclasses.asdict(r)
    d["speedup_vs_dense"] = round(r.speedup_vs_dense, 3)
    d["speedup_vs_litert"] = round(r.speedup_vs_litert, 3) if r.speedup_vs_litert else None
    for k in ("native_sparse_us", "native_dense_us", "litert_dense_us", "litert_sparse_us", "gbps",
              "dense_equiv_gops"):
        if d[k] is not None:
            d[k] = round(d[k], 3)
    return d


def format_table(result: dict) -> str:
    s = result["stream"]
    lines = [
        f"kernel variant {result['variant']}; STREAM-like single-core bandwidth: "
        f"copy {s['copy_gbps']:.1f} GB/s, add {s['add_gbps']:.1f} GB/s ({s['array_mib']} MiB arrays); "
        f"copy of 256 KiB (cache-resident) {s['cache_copy_gbps']:.1f} GB/s",
        f"{'layer':<22} {'batch':>5} {'sparse':>6} {'block':>5} {'native sp':>10} {'native dn':>10} "
        f"{'litert dn':>10} {'litert sp':>10} {'x dense':>8} {'x litert':>8} {'GB/s':>7} {'GOPS':>7}",
    ]
    for r in result["rows"]:
        lit_sp = f"{r.litert_sparse_us:10.2f}" if r.litert_sparse_us else f"{'-':>10}"
        vs_lit = f"{r.speedup_vs_litert:8.2f}" if r.speedup_vs_litert else f"{'-':>8}"
        lines.append(
            f"{r.layer:<22} {r.batch:>5} {r.sparsity * 100:>5.0f}% {r.block:>5} {r.native_sparse_us:>10.2f} "
            f"{r.native_dense_us:>10.2f} {r.litert_dense_us:>10.2f} {lit_sp} {r.speedup_vs_dense:>8.2f} "
            f"{vs_lit} {r.gbps:>7.1f} {r.dense_equiv_gops:>7.1f}"
        )
    return "\n".join(lines)


def target_summary(result: dict) -> list[str]:
    """The issue's kernel targets, computed from the rows (whichever were measured)."""
    rows: list[Row] = result["rows"]
    out = []

    def pick(layer, batch, sparsity, block=None):
        c = [r for r in rows if r.layer == layer and r.batch == batch and abs(r.sparsity - sparsity) < 1e-9
             and (block is None or r.block == block)]
        return c

    c = pick("fc 1024x1024", 1, 0.9)
    if c:
        best = max((r for r in c if r.block != "1x1"), key=lambda r: r.speedup_vs_litert or 0)
        out.append(f"1024x1024 b1 90% best block {best.block}: {best.speedup_vs_litert:.2f}x LiteRT dense "
                   f"(target >= 3)")
        un = [r for r in c if r.block == "1x1"]
        if un:
            out.append(f"1024x1024 b1 90% unstructured: {un[0].speedup_vs_litert:.2f}x LiteRT dense "
                       f"(target >= 1.5)")
    b1 = [r for r in rows if r.layer == "fc 1024x1024" and r.batch == 1]
    if b1:
        wins = sorted({r.sparsity for r in b1 if r.speedup_vs_dense > 1.0 and r.sparsity > 0})
        out.append(
            f"1024x1024 b1: sparse beats native dense from {wins[0] * 100:.0f}% sparsity (target <= 60%)"
            if wins else "1024x1024 b1: sparse never beats native dense"
        )
    c = pick("fc 4096x1024", 1, 0.9)
    if c:
        best = min(c, key=lambda r: r.native_sparse_us)
        stream, cached = result["stream"]["copy_gbps"], result["stream"]["cache_copy_gbps"]
        out.append(f"4096x1024 b1 90% {best.block}: {best.gbps:.1f} GB/s effective = "
                   f"{best.gbps / stream * 100:.0f}% of STREAM copy {stream:.1f} GB/s (target >= 50%); "
                   f"{best.gbps / cached * 100:.0f}% of a cache-resident copy ({cached:.1f} GB/s)")
    return out


def pruned_hidden_layers(graph: Graph, block: BlockShape, sparsity: float) -> Graph:
    """A copy of ``graph`` with ``sparsity`` of the blocks of every hidden FULLY_CONNECTED layer
    (all but the classifier) pruned by L1 norm."""
    from edged.sparse.masks import block_magnitude_mask

    g = copy.deepcopy(graph)
    fcs = [op for op in g.operators if op.opcode == "FULLY_CONNECTED"]
    for op in fcs[:-1]:
        w = g.tensors[op.inputs[1]]
        w.data = np.where(block_magnitude_mask(w.data, block, sparsity), w.data, np.int8(0))
    return g


def model_bench(graph: Graph, runs: int = 2000) -> dict:
    """Whole-model batch-1 latency: native (measured layouts) vs LiteRT dense, builtin and XNNPACK."""
    from edged.benchmark import measure, sample_inputs
    from edged.runtime.litert import LiteRTEngine
    from edged.runtime.native import NativeEngine

    content = write_tflite(graph)
    native = NativeEngine(graph)
    engines = {"native": native, "litert": LiteRTEngine(content),
               "litert_xnnpack": LiteRTEngine(content, delegates=True)}
    stats = measure(engines, sample_inputs(native, batch=1), runs=runs)
    return {
        "engines": {n: s.as_dict() for n, s in stats.items()},
        "layouts": {str(k): c.name for k, c in native.plan.layouts.items()},
        "native_over_litert_p50": round(stats["native"].p50_us / stats["litert"].p50_us, 3),
        "native_over_litert_xnnpack_p50": round(stats["native"].p50_us / stats["litert_xnnpack"].p50_us, 3),
    }


def report(quick: bool = False, json_path: str | None = None) -> int:
    """Run the whole kernel benchmark, print the table and the targets; optionally write JSON."""
    import json
    import platform
    import sys

    from edged.data import default_model_path
    from edged.model.tflite import read_tflite

    layers = [fc_layer(*s) for s in (SIZES[:1] if quick else SIZES)]
    for name in ("digits_mlp", "digits_cnn"):
        layers += model_layers(read_tflite(default_model_path(name)), name)
    sparsities = (0.0, 0.5, 0.9) if quick else (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)
    result = run(layers, sparsities=sparsities, progress=lambda m: print(f"  {m}", file=sys.stderr))
    print(format_table(result))
    print()
    for line in target_summary(result):
        print(line)
    mlp = pruned_hidden_layers(read_tflite(default_model_path("digits_mlp")), BlockShape(16, 4), 0.9)
    whole = model_bench(mlp, runs=500 if quick else 3000)
    e = whole["engines"]
    layouts = ", ".join(f"#{k} {v}" for k, v in whole["layouts"].items())
    print(
        f"pruned MLP (90% of hidden 16x4 blocks), batch 1 p50: native {e['native']['p50_us']:.1f} us "
        f"({layouts}), LiteRT {e['litert']['p50_us']:.1f} us, "
        f"LiteRT+XNNPACK {e['litert_xnnpack']['p50_us']:.1f} us; native/LiteRT = "
        f"{whole['native_over_litert_p50']:.3f} (target <= 0.7), native/XNNPACK = "
        f"{whole['native_over_litert_xnnpack_p50']:.3f}"
    )
    if json_path:
        out = {"machine": platform.platform(), "processor": platform.processor(),
               "variant": result["variant"], "stream": result["stream"],
               "rows": [row_json(r) for r in result["rows"]],
               "targets": target_summary(result), "pruned_mlp": whole}
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0
