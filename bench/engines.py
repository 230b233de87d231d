"""Native engine vs LiteRT on the bundled models, interleaved in one run.

    python bench/engines.py [--runs N] [--fixtures] [--variant NAME] [--json OUT.json] [MODEL ...]

Models: the bundled ones, or the files given; ``--fixtures`` adds the models
the TF Lite converter made from standard Keras architectures
(tests/fixtures/converter and tests/fixtures/dynamic_batch). Reports batch-1
p50/p99 per engine and the native/LiteRT p50 ratios, against LiteRT's builtin
kernels (the arithmetic edged reproduces) and against LiteRT with its default
XNNPACK delegate (what a LiteRT user gets by default). ``--variant avx2``
plans the native GEMMs for a variant other than the CPU's best (e.g. the
AVX2 path a CPU without AVX-512 VNNI runs).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from edged.benchmark import measure, sample_inputs
from edged.data import default_model_path
from edged.runtime.kernels import VARIANT_NAMES, available_variants
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine

MODELS = ("digits_mlp", "digits_cnn")
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def bench_model(path: Path, runs: int, batch: int, variant: int | None = None) -> dict:
    engines = {
        "native": NativeEngine.from_file(path, variant=variant),
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
    parser.add_argument("--fixtures", action="store_true", help="add the converter-made fixture models")
    names = {VARIANT_NAMES[v]: v for v in available_variants()}
    parser.add_argument(
        "--variant", choices=sorted(names), help="native kernel variant (default: the best here)"
    )
    parser.add_argument("models", nargs="*", type=Path, help="model files (default: the bundled models)")
    args = parser.parse_args()
    paths = args.models or [default_model_path(m) for m in MODELS]
    if args.fixtures:
        paths += sorted((FIXTURES / "converter").glob("*_int8io.tflite"))
        paths += sorted((FIXTURES / "dynamic_batch").glob("*.tflite"))
    results = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "variant": args.variant,
        "models": [bench_model(m, args.runs, args.batch, names.get(args.variant)) for m in paths],
    }
    print(
        "| model | native p50 us | LiteRT builtin p50 us | LiteRT XNNPACK p50 us "
        "| native / builtin | native / XNNPACK |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results["models"]:
        e = r["engines"]
        print(
            f"| {Path(r['model']).stem} | {e['native']['p50_us']:.1f} | {e['litert']['p50_us']:.1f} | "
            f"{e['litert_xnnpack']['p50_us']:.1f} | {r['native_over_litert_p50']:.2f} | "
            f"{r['native_over_litert_xnnpack_p50']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
