"""Compression strategies side by side on the bundled models: accuracy, bytes and latency, one run.

    python bench/strategies.py [--json OUT.json] [--plot OUT.png]

int8 only; pruning by magnitude and by QSA (unstructured, at several
sparsities); truncated SVD and DE-HM H-matrices (at several tolerances);
pattern pruning (whole channels, 3x3 kernel patterns, planner block shapes)
allocated greedily from sensitivity under a KL budget ("pattern") and by the
GATv2/REINFORCE policy ("learned", 10 s of training each).
Calibration is the first half of the bundled test split, accuracy the second
half, clean and under sensor noise. Bytes are the weights as served: dense
int8, block-CSR where pruning leaves it smaller, and for the low-rank forms the
exported model (two FULLY_CONNECTED where the rank pays, else re-densified),
and for "hmatrix-op" the same H-matrices as edged's EDGED_HMATRIX layer (native
engine only); "KL .05" is the per-layer tolerance the KL-budget search picks.
bench/hmatrix.py compares DE-HM with a truncated SVD per layer.
Latency: batch-1 p50 on the exported model over the int8 model's, interleaved,
on the native engine and (where it runs the file) on LiteRT.
"""

from __future__ import annotations

import argparse
import json
import sys

from edged.adapt.calibration import Calibration
from edged.adapt.compress import (
    STRATEGIES,
    Compressor,
    float_bytes,
    served_bytes,
)
from edged.adapt.factorize import HMatrixCompressor, SvdCompressor
from edged.adapt.lowrank_export import split_hmatrix
from edged.adapt.patterns import PatternCompressor
from edged.adapt.policy import measured_latency, train_policy
from edged.benchmark import measure
from edged.corruptions import corrupt
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine
from edged.sparse.block_csr import BlockShape

SPARSITIES = (0.5, 0.7, 0.9)
TOLERANCES = (0.3, 0.5, 0.8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the rows to this JSON file")
    ap.add_argument("--plot", help="write the Pareto plot (needs matplotlib) to this PNG")
    args = ap.parse_args(argv)
    images, labels = load_digits_test()
    half = len(images) // 2
    noisy = corrupt(images, "noise", 1.0, seed=7)
    rows = []
    print(f"{'model':<11} {'strategy':<10} {'budget':>7} {'accuracy':>9} {'noise acc':>9} {'KL':>8} "
          f"{'bytes':>9} {'ratio':>6} {'latency':>8} {'LiteRT':>7}")
    for name in ("digits_mlp", "digits_cnn"):
        graph = read_tflite(default_model_path(name))
        x, xn = digits_for(graph, images), digits_for(graph, noisy)
        calib = Calibration(x[:half], labels[:half])
        clean_judge = Compressor(graph, Calibration(x[half:], labels[half:]), STRATEGIES["magnitude"]())
        noise_judge = Compressor(graph, Calibration(xn[half:], labels[half:]), STRATEGIES["magnitude"]())
        base, base_litert = NativeEngine(graph), LiteRTEngine(write_tflite(graph))
        candidates = [("int8", "-", graph, 0.0, served_bytes(graph))]
        for strategy in ("magnitude", "qsa"):
            comp = Compressor(graph, calib, STRATEGIES[strategy](), BlockShape(1, 1))
            for s in SPARSITIES:
                g = comp.candidate({i: s for i in comp.layers})
                candidates.append((strategy, f"{s:.0%}", g, comp.kl(g), served_bytes(g)))
        for label, cls in (("svd", SvdCompressor), ("hmatrix", HMatrixCompressor)):
            comp = cls(graph, calib)
            as_op = cls(graph, calib, export="hmatrix")
            budgets = [(f"eps {eps:g}", {i: eps for i in comp.layers}) for eps in TOLERANCES]
            try:
                found = comp.search(kl_budget=0.05, steps=8)
                budgets.append(("KL .05", {p.op_index: p.sparsity for p in found.layers if p.sparsity > 0}))
            except ValueError as exc:
                print(f"  {name} {label} KL .05: {exc}")
            for budget, levels in budgets:
                # served as exported: FULLY_CONNECTED pieces where the rank pays, else as it was
                forms = {i: comp.form(i, eps) for i, eps in levels.items()}
                g = split_hmatrix(graph, calib.x, forms)[0] if levels else graph
                candidates.append((label, budget, g, comp.kl(g), served_bytes(g)))
                if label == "hmatrix" and levels:  # the same forms as edged's EDGED_HMATRIX op
                    g = as_op.candidate(levels)
                    candidates.append(("hmatrix-op", budget, g, as_op.kl(g), served_bytes(g)))
        patterns = PatternCompressor(graph, calib)
        curves, latency = patterns.sensitivity(), measured_latency(patterns)
        for budget in (0.02, 0.05, 0.1):
            found = patterns.search(kl_budget=budget, steps=6)
            chosen = {p.op_index: p.sparsity for p in found.layers}
            candidates.append(("pattern", f"KL {budget:g}", found.graph, found.kl, served_bytes(found.graph)))
            learned = train_policy(patterns, budget, time_budget_s=10.0, curves=curves, latency=latency)
            g = patterns.candidate(learned.levels)
            candidates.append(("learned", f"KL {budget:g}", g, learned.kl, served_bytes(g)))
            for label, levels in (("greedy", chosen), ("learned", learned.levels)):
                picks = ", ".join(f"#{i} {patterns.action(i, lv)}" for i, lv in levels.items())
                print(f"  {name} KL {budget:g} {label}: {picks}")
        for strategy, budget, g, kl, nbytes in candidates:
            engines = {"c": NativeEngine(g), "b": base, "lb": base_litert}
            if strategy != "hmatrix-op":  # LiteRT runs everything else as it is
                engines["lc"] = LiteRTEngine(write_tflite(g))
            stats = measure(engines, [x[:1]], runs=400)
            row = {"model": name, "strategy": strategy, "budget": budget,
                   "accuracy": clean_judge.accuracy(g), "noise_accuracy": noise_judge.accuracy(g), "kl": kl,
                   "bytes": int(nbytes), "ratio": float_bytes(graph) / nbytes,
                   "latency_ratio": stats["c"].p50_us / stats["b"].p50_us,
                   "litert_latency_ratio": stats["lc"].p50_us / stats["lb"].p50_us if "lc" in stats else None}
            rows.append(row)
            litert = f"{row['litert_latency_ratio']:>7.2f}" if "lc" in stats else f"{'-':>7}"
            print(f"{name:<11} {strategy:<10} {budget:>7} {row['accuracy']:>9.1%} "
                  f"{row['noise_accuracy']:>9.1%} {kl:>8.4f} {row['bytes']:>9} {row['ratio']:>6.2f} "
                  f"{row['latency_ratio']:>8.2f} {litert}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        print(_plot(rows, args.plot))
    return 0


def _plot(rows: list[dict], path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed"
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for col, model in enumerate(("digits_mlp", "digits_cnn")):
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            pts = [r for r in rows if r["model"] == model and r["strategy"] == strategy]
            for ax, key in ((axes[0][col], "bytes"), (axes[1][col], "latency_ratio")):
                pts = sorted(pts, key=lambda r, key=key: r[key])  # a front, not the run order
                ax.plot([r[key] for r in pts], [r["accuracy"] for r in pts], "o-", label=strategy)
        axes[0][col].set_title(model)
        axes[0][col].set_xlabel("weight bytes as served")
        axes[1][col].set_xlabel("native p50 / int8 p50")
        for ax in axes[:, col]:
            ax.set_ylabel("held-out accuracy")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return f"plot written to {path}"


if __name__ == "__main__":
    sys.exit(main())
