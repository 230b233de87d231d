"""DE-HM against a truncated SVD, per weight matrix: bytes, error and layer latency, one run.

    python bench/hmatrix.py [--json OUT.json]

Table 1, per FULLY_CONNECTED of the bundled models and a synthetic kernel
matrix (the structure H-matrices are made for: full rank near the diagonal,
numerically low rank away from it; plain, and with rows and columns shuffled
so only the reordering can find it): the H-matrix at each tolerance (leaves,
bytes of the int8 factors with their float32 scales, relative Frobenius
error), the SVD's error at the same bytes, and the SVD's bytes at the same
tolerance.

Table 2, batch-1 latency of one 1024x1024 layer, medians of interleaved
rounds in µs: the H-matrix as edged's EDGED_HMATRIX op and the SVD at the
same tolerance (also EDGED_HMATRIX, one leaf) on the native kernels, against
the dense int8 layer on the native engine and on LiteRT.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from edged.adapt.calibration import prunable_ops
from edged.adapt.hmatrix import HMatrixBuilder, svd_at_bytes, truncated_svd, truncation_rank
from edged.adapt.hmatrix_op import to_hmatrix_ops
from edged.adapt.requantize import float_weights, set_float_weights
from edged.data import default_model_path
from edged.kernel_bench import fc_layer, interleaved, litert_runner, native_runner
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.kernels import best_variant
from edged.runtime.layout import choose_layout
from edged.runtime.prepared import prepare_graph

TOLERANCES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8)


def kernel_matrix(n: int = 1024, shuffled: bool = False) -> np.ndarray:
    t = np.linspace(0, 1, n)
    w = 0.05 * np.exp(-200 * np.abs(t[:, None] - t[None, :]))
    if shuffled:
        rng = np.random.default_rng(0)
        w = w[rng.permutation(n)][:, rng.permutation(n)]
    return w


def equal_bytes() -> list[dict]:
    layers = []
    for name in ("digits_mlp", "digits_cnn"):
        graph = read_tflite(default_model_path(name))
        layers += [(f"{name} #{i}", float_weights(graph, i)) for i in prunable_ops(graph)
                   if graph.operators[i].opcode == "FULLY_CONNECTED"]
    layers += [("kernel matrix", kernel_matrix()), ("kernel, shuffled", kernel_matrix(shuffled=True))]
    out = []
    print("DE-HM vs truncated SVD (relative Frobenius error of the int8 forms)")
    print(f"{'layer':<28} {'eps':>5} {'low-rank/dense':>15} {'bytes':>9} {'dense':>9} "
          f"{'H error':>8} {'SVD error':>9} {'SVD bytes at eps':>16}")
    for label, w in layers:
        builder = HMatrixBuilder(w, reorder=True)
        spectrum = np.linalg.svd(w, compute_uv=False)
        for eps in TOLERANCES:
            h = builder.build(eps)
            svd = svd_at_bytes(w, h.nbytes)
            svd_bytes = truncated_svd(w, truncation_rank(spectrum, eps)).nbytes
            err = [float(np.linalg.norm(w - f.to_float()) / np.linalg.norm(w)) for f in (h, svd)]
            counts = h.counts()
            row = {"layer": f"{label} {w.shape[0]}x{w.shape[1]}", "eps": eps, **counts,
                   "reordered": h.row_order is not None, "bytes": h.nbytes, "dense_bytes": w.size,
                   "hmatrix_error": err[0], "svd_error": err[1], "svd_bytes_at_eps": svd_bytes}
            out.append(row)
            leaves = f"{counts['low_rank']}/{counts['dense']}"
            note = "  reordered" if row["reordered"] else ""
            print(f"{row['layer']:<28} {eps:>5g} {leaves:>15} {h.nbytes:>9} {w.size:>9} "
                  f"{err[0]:>8.3f} {err[1]:>9.3f} {svd_bytes:>16}{note}")
    return out


def latency() -> list[dict]:
    variant = best_variant()
    mlp = read_tflite(default_model_path("digits_mlp"))
    cases = [("kernel matrix", kernel_matrix(), (0.05, 0.1, 0.3)),
             ("digits_mlp #1", float_weights(mlp, 1), (0.5, 0.8))]
    rng = np.random.default_rng(0)
    out = []
    print("\nbatch-1 latency of one 1024x1024 layer (µs, medians of interleaved rounds)")
    print(f"{'layer':<16} {'eps':>5} {'H bytes':>8} {'H op':>7} {'SVD op':>7} {'dense':>7} {'LiteRT':>7} "
          f"{'H/LiteRT':>8} {'H/SVD':>6}")
    for label, w, tolerances in cases:
        layer = fc_layer(*w.shape)
        set_float_weights(layer.graph, 0, w)
        calib = rng.integers(-128, 128, (256, w.shape[1])).astype(np.int8)
        builder = HMatrixBuilder(w, reorder=True)
        spectrum = np.linalg.svd(w, compute_uv=False)
        for eps in tolerances:
            h = builder.build(eps)
            svd = truncated_svd(w, max(1, truncation_rank(spectrum, eps)))
            runners = {"dense": native_runner(layer.graph, variant, None, 1),
                       "litert": litert_runner(write_tflite(layer.graph), 1)}
            for name, form in (("h", h), ("svd", svd)):
                g = to_hmatrix_ops(layer.graph, calib, {0: form}, min_saving=-1.0)[0]
                step = prepare_graph(g).steps[0]
                choice = choose_layout(g, step, variant)  # measured, as the engine would
                runners[name] = native_runner(g, variant, choice.layout if choice else None, 1)
            us = interleaved(runners, rounds=9, target_s=0.5)
            row = {"layer": label, "eps": eps, "hmatrix_bytes": h.nbytes, "svd_bytes": svd.nbytes,
                   **{f"{k}_us": v for k, v in us.items()}}
            out.append(row)
            print(f"{label:<16} {eps:>5g} {h.nbytes:>8} {us['h']:>7.2f} {us['svd']:>7.2f} "
                  f"{us['dense']:>7.2f} {us['litert']:>7.2f} {us['h'] / us['litert']:>8.3f} "
                  f"{us['h'] / us['svd']:>6.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write both tables to this JSON file")
    args = ap.parse_args(argv)
    result = {"equal_bytes": equal_bytes(), "latency": latency()}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
