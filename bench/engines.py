"""Native engine vs LiteRT on the bundled models, interleaved in one run.

    python bench/engines.py [--runs N] [--json OUT.json]

Reports batch-1 p50/p99 per engine and the native/LiteRT p50 ratios, against
LiteRT's builtin kernels (the arithmetic edged reproduces) and against LiteRT
with its default XNNPACK delegate (what a LiteRT user gets by default).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from edged.benchmark import measure, sample_inputs
from edged.data import default_model_path
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine

MODELS = ("digits_mlp", "digits_cnn")


def bench_model(name: str, runs: int, batch: int) -> dict:
    path = default_model_path(name)
    engines = {
        "native": NativeEngine.from_file(path),
        "litert": LiteRTEngine.from_file(path),
        "litert_xnnpack": LiteRTEngine.from_file(path, delegates=True),
    }
    stats = measure(engines, sample_inputs(engines["native"], batch=batch), runs=runs)
    return {
        "model": str(path),
        "batch": batch,
        "engines": {n: s.as_dict() for n, s in stats.items()},
        "native_over_litert_p50": round(stats["native"].p50_us / stats["litert"].p50_us, 3),
        "native_over_litert_xnnpack_p50": round(stats["native"].p50_us / stats["litert_xnnpack"].p50_us, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "models": [bench_model(m, args.runs, args.batch) for m in MODELS],
    }
    print(f"{'model':<12} {'engine':<16} {'p50 us':>9} {'p99 us':>9} {'per s':>9}")
    for r in results["models"]:
        name = r["model"].rsplit("/", 1)[-1]
        for engine, s in r["engines"].items():
            print(f"{name:<12} {engine:<16} {s['p50_us']:>9.1f} {s['p99_us']:>9.1f} {s['per_s']:>9.0f}")
        print(
            f"{'':<12} native/litert p50 {r['native_over_litert_p50']:.3f}, "
            f"native/litert+xnnpack p50 {r['native_over_litert_xnnpack_p50']:.3f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
