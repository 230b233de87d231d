"""Accuracy vs compression of the bundled models under edged's compressor, in one run.

    python bench/adapt.py [--json OUT.json]

The bundled digits test split (360 images) is cut in two: the first half is
the calibration data the compressor sees, the second half is held out and
gives the accuracy. For each model, strategy, block shape and target
sparsity: held-out accuracy, output KL on the calibration half, and the
compression ratio (bytes of weights + indices + quantization parameters as
served, over the float32 weight bytes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from edged.adapt.calibration import Calibration
from edged.adapt.compress import STRATEGIES, Compressor, float_bytes, served_bytes
from edged.data import default_model_path, digits_input, load_digits_test
from edged.model.tflite import read_tflite
from edged.sparse.block_csr import BlockShape

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
BLOCKS = (BlockShape(1, 1), BlockShape(16, 4))
STRATEGY_NAMES = ("magnitude", "wanda", "qsa")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    images, labels = load_digits_test()
    rows = []
    print(f"{'model':<11} {'strategy':<10} {'block':>5} {'target':>6} {'sparsity':>8} {'KL':>8} "
          f"{'accuracy':>8} {'ratio':>6}")
    for name in ("digits_mlp", "digits_cnn"):
        graph = read_tflite(default_model_path(name))
        t = graph.input_tensors[0]
        x = digits_input(images, t.dtype, float(t.quant.scale[0]), int(t.quant.zero_point[0]), t.shape[1:])
        half = len(x) // 2
        calib, held = Calibration(x[:half], labels[:half]), Calibration(x[half:], labels[half:])
        judge = Compressor(graph, held, STRATEGIES["magnitude"]())
        base = {"model": name, "strategy": "int8", "block": "-", "target": 0.0, "sparsity": 0.0, "kl": 0.0,
                "accuracy": judge.accuracy(graph), "ratio": float_bytes(graph) / served_bytes(graph)}
        rows.append(base)
        _print(base)
        for strategy in STRATEGY_NAMES:
            for block in BLOCKS:
                comp = Compressor(graph, calib, STRATEGIES[strategy](), block)
                for target in SPARSITIES:
                    t0 = time.perf_counter()
                    try:
                        result = comp.search(sparsity=target, steps=10)
                    except ValueError as exc:
                        print(f"{name:<11} {strategy:<10} {block!s:>5} {target:>6.0%}  skipped: {exc}")
                        continue
                    row = {"model": name, "strategy": strategy, "block": str(block), "target": target,
                           "sparsity": result.sparsity, "kl": result.kl,
                           "accuracy": judge.accuracy(result.graph),
                           "ratio": float_bytes(graph) / served_bytes(result.graph),
                           "seconds": time.perf_counter() - t0,
                           "layers": {str(p.op_index): p.sparsity for p in result.layers}}
                    rows.append(row)
                    _print(row)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


def _print(r: dict) -> None:
    print(f"{r['model']:<11} {r['strategy']:<10} {r['block']:>5} {r['target']:>6.0%} {r['sparsity']:>8.1%} "
          f"{r['kl']:>8.4f} {r['accuracy']:>8.2%} {r['ratio']:>6.2f}")


if __name__ == "__main__":
    sys.exit(main())
