"""The `edged` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

from edged.errors import EdgedError
from edged.model.rounding import ROUNDING_MODES, set_default_rounding

ENGINE_CHOICES = ("native", "litert")
LAYOUT_HELP = (
    "native weight layout of FC/CONV layers: auto (measure dense and block-sparse, keep the fastest), "
    "cost (cost model, no measuring), dense, or a block shape such as 16x4 (default auto)"
)


ROUNDING_HELP = (
    "requantization rounding of FULLY_CONNECTED / CONV_2D (and the forms of HARD_SWISH, SOFTMAX, "
    "DEQUANTIZE) in the native engine: auto (what LiteRT does on this machine: single on aarch64, "
    "double elsewhere), double (LiteRT's x86-64 build) or single (its aarch64 build) (default auto)"
)


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

    engine = load_engine(args.model, args.engine, args.layout)
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


def print_profile(profile) -> None:
    """Per-operator and per-opcode medians of a native run (edged.runtime.profile)."""
    print(f"native per operator (median of each kernel run alone; whole run {profile.total_p50_us:.1f} us, "
          f"of which {profile.overhead_us:.1f} us outside the kernels):")
    print(f"{'op':>5} {'opcode':<20} {'output':<18} {'us':>8}")
    by_opcode: dict[str, float] = {}
    for o in profile.ops:
        print(f"{o.index:>5} {o.opcode:<20} {'x'.join(map(str, o.output_shape)):<18} {o.p50_us:>8.1f}")
        by_opcode[o.opcode] = by_opcode.get(o.opcode, 0.0) + o.p50_us
    total = sum(by_opcode.values()) or 1.0
    for opcode, us in sorted(by_opcode.items(), key=lambda kv: -kv[1]):
        print(f"      {opcode:<20} {us:>8.1f} us  {100 * us / total:5.1f} %")


def cmd_bench(args: argparse.Namespace) -> int:
    from edged.benchmark import measure, sample_inputs
    from edged.runtime.engine import load_engine

    if args.kernels:
        from edged.kernel_bench import report

        return report(quick=args.quick, json_path=args.json_out)
    if args.model is None:
        raise EdgedError("edged bench needs a MODEL (or --kernels for the sparse kernel benchmark)")

    names = ENGINE_CHOICES if args.engine == "both" else (args.engine,)
    engines = {name: load_engine(args.baseline if name == "litert" and args.baseline else args.model,
                                 name, args.layout) for name in names}
    if args.engine == "both":
        # What a LiteRT user gets by default; "litert" is its builtin kernels (the arithmetic edged matches).
        from edged.runtime.litert import LiteRTEngine

        engines["litert_xnnpack"] = LiteRTEngine.from_file(args.baseline or args.model, delegates=True)
    inputs = sample_inputs(next(iter(engines.values())), batch=args.batch)
    stats = measure(engines, inputs, runs=args.runs)
    result: dict = {"model": str(args.model), "engines": {n: s.as_dict() for n, s in stats.items()}}
    if args.baseline:
        result["litert_model"] = str(args.baseline)
    if args.engine == "both":
        result["native_over_litert_p50"] = round(stats["native"].p50_us / stats["litert"].p50_us, 3)
        result["native_over_litert_xnnpack_p50"] = round(
            stats["native"].p50_us / stats["litert_xnnpack"].p50_us, 3
        )
    native = engines.get("native")
    if native is not None:
        result["native_layouts"] = {str(i): c.to_json() for i, c in native.plan.layouts.items()}
    profile = None
    if args.per_op:
        if native is None:
            raise EdgedError("--per-op profiles the native engine: use --engine native or both")
        from edged.runtime.profile import profile_run

        profile = profile_run(native, inputs, runs=args.runs)
        result["native_per_op"] = [dataclasses.asdict(o) for o in profile.ops]
    if not args.json:
        print(f"{args.model}: batch {args.batch}, {args.runs} interleaved runs per engine")
        if args.baseline and "litert" in engines:
            print(f"litert runs the baseline {args.baseline}")
        print(f"{'engine':<8} {'p50 us':>10} {'p99 us':>10} {'per s':>10}")
        for name, s in stats.items():
            print(f"{name:<8} {s.p50_us:>10.1f} {s.p99_us:>10.1f} {s.per_s:>10.0f}")
        if "native_over_litert_p50" in result:
            print(f"native / litert p50 = {result['native_over_litert_p50']:.3f}, "
                  f"native / litert+xnnpack p50 = {result['native_over_litert_xnnpack_p50']:.3f}")
        if profile is not None:
            print_profile(profile)
        for c in native.plan.layouts.values() if native is not None else ():
            print(f"native op #{c.step} {c.opcode} {c.shape[0]}x{c.shape[1]}: {c.sparsity * 100:.0f}% zeros, "
                  f"{c.name} weights ({c.how})")
    else:
        print(json.dumps(result))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edged.benchmark import measure
    from edged.data import default_model_path, digits_input, load_digits_test
    from edged.runtime.engine import load_engine

    model = args.model or str(default_model_path())
    engine = load_engine(model, args.engine, args.layout)
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


def cmd_serve(args: argparse.Namespace) -> int:
    from edged.app import App

    overrides = {
        "model.path": args.model,
        "server.bind": args.bind,
        "metrics.listen": args.metrics,
        "store.state_dir": args.state_dir,
        "model.engine": args.engine,
        "model.layout": args.layout,
        "model.rounding": args.rounding,
    }
    return App(args.config, overrides).run()


def cmd_compress(args: argparse.Namespace) -> int:
    from edged.cli_compress import compress

    return compress(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from edged.demo import run_demo

    run_demo(clean_s=args.clean_s, shifted_s=args.shifted_s, plot=args.plot or None, strategy=args.strategy)
    return 0


def _client(args: argparse.Namespace):
    from edged.serve.auth import load_keypair, load_public_key
    from edged.serve.client import Client

    if bool(args.server_key) != bool(args.client_key):
        raise EdgedError("CURVE needs both --server-key and --client-key")
    server_key = load_public_key(args.server_key) if args.server_key else None
    keys = load_keypair(args.client_key) if args.client_key else None
    return Client(
        args.endpoint,
        timeout_ms=args.timeout_ms,
        retries=args.retries,
        server_public_key=server_key,
        client_keys=keys,
    )


def _digits_batch(client, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n bundled digits test images, quantized for the served model's input."""
    from edged.data import digits_input, load_digits_test
    from edged.serve.protocol import DATATYPES

    spec = client.metadata()["inputs"][0]
    params = spec.get("parameters", {})
    images, labels = load_digits_test()
    x = digits_input(
        images[:n],
        DATATYPES[spec["datatype"]],
        params.get("scale"),
        params.get("zero_point"),
        tuple(spec["shape"][1:]),
    )
    return x, labels[:n]


def cmd_client_infer(args: argparse.Namespace) -> int:
    labels = None
    if args.input:
        try:
            x = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EdgedError(f"{args.input}: cannot read input array: {exc}") from exc
    with _client(args) as client:
        if not args.input:
            x, labels = _digits_batch(client, args.digits)
        t0 = time.perf_counter()
        result = client.infer(x, retry=args.retry)
        elapsed = time.perf_counter() - t0
    y = result.outputs[0]
    if args.output:
        np.save(args.output, y)
        print(
            f"wrote {args.output}: {y.dtype} {list(y.shape)} from {result.model_name} "
            f"version {result.model_version}"
        )
        return 0
    print(
        f"{result.model_name} version {result.model_version}: batch {x.shape[0]} in "
        f"{elapsed * 1e3:.2f} ms round trip (server: {result.timing_us})"
    )
    print(f"output '{result.names[0]}': {y.dtype} {list(y.shape)}")
    if y.ndim == 2:
        top = np.argmax(y, axis=1)
        shown = ", ".join(str(int(c)) for c in top[:16])
        print(f"argmax per sample: {shown}{' ...' if len(top) > 16 else ''}")
        if labels is not None:
            truth = ", ".join(str(int(c)) for c in labels[:16])
            print(f"true labels:       {truth}{' ...' if len(labels) > 16 else ''}")
    return 0


def cmd_client_info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.health() if args.client_command == "health" else client.metadata()
    print(json.dumps(info, indent=2))
    return 0 if args.client_command != "health" or info.get("ready") else 1


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from edged.serve.auth import generate_keys

    public, secret = generate_keys(args.dir, args.name)
    print(f"public key  {public}  (give this file to the other side)")
    print(f"secret key  {secret}  (keep private, mode 0600)")
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
    p.add_argument("--layout", default="auto", help=LAYOUT_HELP)
    p.add_argument("--rounding", choices=ROUNDING_MODES, default=None, help=ROUNDING_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="batch-1 latency and throughput, engines interleaved")
    p.add_argument("model", nargs="?")
    p.add_argument(
        "--kernels", action="store_true",
        help="instead: sparse vs dense int8 kernels vs LiteRT per layer, block shape and sparsity",
    )
    p.add_argument("--quick", action="store_true", help="with --kernels: fewer layers and sparsities")
    p.add_argument("--json-out", help="with --kernels: also write the results to this JSON file")
    p.add_argument("--engine", choices=(*ENGINE_CHOICES, "both"), default="both")
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--layout", default="auto", help=LAYOUT_HELP)
    p.add_argument("--baseline",
                   help="LiteRT runs this model instead of MODEL (same inputs and outputs): the source of a "
                        "model only the native engine runs, e.g. one written with --export hmatrix")
    p.add_argument("--per-op", action="store_true",
                   help="also time each native kernel on its own (median per operator, and per opcode)")
    p.add_argument("--rounding", choices=ROUNDING_MODES, default=None, help=ROUNDING_HELP)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="classify the bundled digits test split: accuracy and latency")
    p.add_argument("model", nargs="?", help="default: the bundled digits MLP")
    p.add_argument("--engine", choices=ENGINE_CHOICES, default="native")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--layout", default="auto", help=LAYOUT_HELP)
    p.add_argument("--rounding", choices=ROUNDING_MODES, default=None, help=ROUNDING_HELP)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compress", help="prune and re-quantize a model on calibration data")
    p.add_argument("model")
    p.add_argument("--strategy", default="magnitude",
                   help="magnitude, wanda, qsa (pruning), hmatrix or svd (low-rank), pattern (unit removal, "
                        "3x3 kernel patterns; default magnitude)")
    p.add_argument("--tolerance", type=float,
                   help="hmatrix / svd: one relative Frobenius error for every layer, in (0, 1)")
    p.add_argument("--policy", choices=("greedy", "learned"), default="greedy",
                   help="pattern: allocate from sensitivity (greedy) or with the GATv2/REINFORCE policy")
    p.add_argument("--time-budget-s", type=float, default=20.0,
                   help="pattern --policy learned: training time in seconds")
    p.add_argument("--export", choices=("factors", "dense", "hmatrix"), default="factors",
                   help="hmatrix / svd: layers whose rank pays become two FULLY_CONNECTED (factors, the "
                        "default), every layer stays one re-densified int8 matrix (dense), or each "
                        "becomes edged's EDGED_HMATRIX op (hmatrix: the H-matrix itself, smallest and "
                        "fastest, native engine only)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--sparsity", type=float, help="fraction of prunable weights to remove, in (0, 1)")
    target.add_argument("--kl-budget", type=float, help="largest mean output KL allowed vs the input model")
    p.add_argument("--block", default="auto",
                   help="block shape of the masks: auto (fastest here at that sparsity), 1x1, 16x4, ...")
    p.add_argument("--calib", required=True, help=".npz with x (inputs, model dtype) and optional y (labels)")
    p.add_argument("-o", "--output", required=True, help="the compressed .tflite to write")
    p.add_argument("--reconstruct", action=argparse.BooleanOptionalAction, default=True,
                   help="magnitude, wanda, qsa, obs: solve the kept weights again so each layer's outputs "
                        "on the calibration data stay as close to the input model's as the mask allows "
                        "(default on)")
    p.add_argument("--storage", choices=("sparse", "litert-kernel", "dense"), default="sparse",
                   help="how weights with zeros are stored: sparse (default: the smallest TFLite sparse "
                        "layout per weight, 1x16 FULLY_CONNECTED weights on LiteRT's sparse kernel and any "
                        "other layout behind a DENSIFY op), litert-kernel (only that 1x16 layout), dense")
    p.add_argument("--sparse-encoding", action="store_true",
                   help="same as --storage litert-kernel; for hmatrix / svd --export factors, also leave the "
                        "zeros between leaves out of the 'pays' count")
    p.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=True,
                   help="magnitude, wanda, qsa, obs: after pruning, train the kept weights with 8-bit fake "
                        "quantisation toward the input model's outputs (and the calibration labels y, if "
                        "given); the checkpoint with the lowest held-out loss is written (default on)")
    p.add_argument("--finetune-time-s", type=float, default=10.0, help="fine-tuning time budget in seconds")
    p.add_argument("--finetune-epochs", type=int, default=30, help="fine-tuning: at most this many epochs")
    p.add_argument("--finetune-memory-mb", type=float, default=256.0, help="fine-tuning memory budget in MiB")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning: seed of the held-out split and batches")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("demo", help="the adaptation loop live: daemon, clean then drifted traffic, swaps")
    p.add_argument("--clean-s", type=float, default=12.0, help="seconds of clean traffic (default 12)")
    p.add_argument("--shifted-s", type=float, default=45.0, help="seconds of drifted traffic (default 45)")
    p.add_argument("--strategy", default="magnitude", help="adaptation strategy: magnitude, wanda or qsa")
    p.add_argument("--plot", default="edged-demo.png", help='PNG to write ("" for none)')
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="run the inference daemon (ZeroMQ, Prometheus metrics, systemd)")
    p.add_argument("--config", help="TOML config file (example: systemd/edged.toml)")
    p.add_argument("--model", help="the .tflite model to serve (default: the bundled model)")
    p.add_argument("--bind", help="ZeroMQ endpoint (default tcp://127.0.0.1:5555)")
    p.add_argument(
        "--metrics", help='HOST:PORT of the Prometheus endpoint, "" to disable (default 127.0.0.1:9464)'
    )
    p.add_argument("--state-dir", help="directory of the versioned model store")
    p.add_argument("--engine", choices=ENGINE_CHOICES, help="inference engine (default native)")
    p.add_argument("--layout", default=None, help=LAYOUT_HELP)
    p.add_argument("--rounding", choices=ROUNDING_MODES, default=None, help=ROUNDING_HELP)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("client", help="talk to a running daemon")
    csub = p.add_subparsers(dest="client_command", required=True)
    for name, helptext in (
        ("infer", "run a batch (.npy file or bundled digits images) on the daemon"),
        ("health", "is the daemon live and ready (exit 1 if not ready)"),
        ("metadata", "inputs and outputs of the served model"),
    ):
        c = csub.add_parser(name, help=helptext)
        c.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5555")
        if name == "infer":
            what = c.add_mutually_exclusive_group(required=True)
            what.add_argument("--input", help=".npy array, batch axis first, in the input's dtype")
            what.add_argument(
                "--digits",
                type=int,
                metavar="N",
                help="send the first N images of the bundled digits test split",
            )
            c.add_argument("--output", help="write the first output to this .npy file")
            c.add_argument(
                "--retry",
                action="store_true",
                help="resend after a timeout even though the request may have run",
            )
        c.add_argument("--timeout-ms", type=int, default=5000)
        c.add_argument("--retries", type=int, default=2)
        c.add_argument("--server-key", help="CURVE: the server's public .key file")
        c.add_argument("--client-key", help="CURVE: this client's .key_secret file")
        c.set_defaults(func=cmd_client_infer if name == "infer" else cmd_client_info)

    p = sub.add_parser("keys", help="CURVE key files")
    ksub = p.add_subparsers(dest="keys_command", required=True)
    k = ksub.add_parser("generate", help="write NAME.key (public) and NAME.key_secret into DIR")
    k.add_argument("dir")
    k.add_argument("--name", default="server")
    k.set_defaults(func=cmd_keys_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "rounding", None):
        set_default_rounding(args.rounding)
    try:
        return args.func(args)
    except EdgedError as exc:
        print(f"edged: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
