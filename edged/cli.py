"""The `edged` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edged.errors import EdgedError

ENGINE_CHOICES = ("native", "litert")


def _load_graph(path: str):
    from edged.model.tflite import read_tflite

    return read_tflite(path)


def cmd_inspect(args: argparse.Namespace) -> int:
    from edged.summary import describe_model, format_model

    info = describe_model(_load_graph(args.model), args.model)
    print(json.dumps(info) if args.json else format_model(info))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edged.runtime.engine import load_engine

    engine = load_engine(args.model, args.engine)
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EdgedError(f"{args.input}: cannot read input array: {exc}") from exc
    t0 = time.perf_counter()
    outputs = engine.infer([x])
    elapsed = time.perf_counter() - t0
    y = outputs[0]
    if args.output:
        np.save(args.output, y)
        print(f"wrote {args.output}: {y.dtype} {list(y.shape)}")
    else:
        print(f"engine {engine.name}: batch {x.shape[0]} in {elapsed * 1e3:.2f} ms")
        print(f"output '{engine.outputs[0].name}': {y.dtype} {list(y.shape)}")
        if y.ndim == 2:
            top = np.argmax(y, axis=1)
            shown = ", ".join(str(int(c)) for c in top[:16])
            print(f"argmax per sample: {shown}{' ...' if len(top) > 16 else ''}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edged.benchmark import measure, sample_inputs
    from edged.runtime.engine import load_engine

    names = ENGINE_CHOICES if args.engine == "both" else (args.engine,)
    engines = {name: load_engine(args.model, name) for name in names}
    inputs = sample_inputs(next(iter(engines.values())), batch=args.batch)
    stats = measure(engines, inputs, runs=args.runs)
    result: dict = {"model": str(args.model), "engines": {n: s.as_dict() for n, s in stats.items()}}
    if args.engine == "both":
        result["native_over_litert_p50"] = round(stats["native"].p50_us / stats["litert"].p50_us, 3)
    if not args.json:
        print(f"{args.model}: batch {args.batch}, {args.runs} interleaved runs per engine")
        print(f"{'engine':<8} {'p50 us':>10} {'p99 us':>10} {'per s':>10}")
        for name, s in stats.items():
            print(f"{name:<8} {s.p50_us:>10.1f} {s.p99_us:>10.1f} {s.per_s:>10.0f}")
        if "native_over_litert_p50" in result:
            print(f"native / litert p50 = {result['native_over_litert_p50']:.3f}")
    else:
        print(json.dumps(result))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edged.benchmark import measure
    from edged.data import default_model_path, digits_input, load_digits_test
    from edged.runtime.engine import load_engine

    model = args.model or str(default_model_path())
    engine = load_engine(model, args.engine)
    images, labels = load_digits_test()
    spec = engine.inputs[0]
    x = digits_input(images, spec.dtype, spec.scale, spec.zero_point, spec.shape)
    t0 = time.perf_counter()
    y = engine.infer([x])[0]
    elapsed = time.perf_counter() - t0
    accuracy = float(np.mean(np.argmax(y, axis=1) == labels))
    stats = measure({engine.name: engine}, [x[:1]], runs=args.runs)[engine.name]
    print(f"model     {model}")
    print(f"engine    {engine.name}")
    print(f"accuracy  {accuracy * 100:.2f}% on the {len(labels)} bundled digits test images")
    print(f"batch     {len(labels)} images in {elapsed * 1e3:.1f} ms")
    print(f"latency   batch 1: p50 {stats.p50_us:.1f} us, p99 {stats.p99_us:.1f} us ({stats.per_s:.0f}/s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description="int8 edge inference runtime")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="ops, tensors, shapes and quantization of a model")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("run", help="run a model on a batch stored in a .npy file")
    p.add_argument("model")
    p.add_argument("--input", required=True, help=".npy array, batch axis first, in the input's dtype")
    p.add_argument("--output", help="write the model output to this .npy file")
    p.add_argument("--engine", choices=ENGINE_CHOICES, default="native")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="batch-1 latency and throughput, engines interleaved")
    p.add_argument("model")
    p.add_argument("--engine", choices=(*ENGINE_CHOICES, "both"), default="both")
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="classify the bundled digits test split: accuracy and latency")
    p.add_argument("model", nargs="?", help="default: the bundled digits MLP")
    p.add_argument("--engine", choices=ENGINE_CHOICES, default="native")
    p.add_argument("--runs", type=int, default=300)
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgedError as exc:
        print(f"edged: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
