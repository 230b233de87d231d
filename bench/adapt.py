"""Accuracy vs compression of the bundled models under edged's compressor, in one run.

    python bench/adapt.py [--json OUT.json] [--only compression|drift|cycle|taps|reconstruct|finetune|adapt]

The bundled digits test split (360 images) is cut in two: the first half is
the calibration data the compressor sees, the second half is held out and
gives the accuracy. For each model, strategy, block shape and target
sparsity: held-out accuracy, output KL on the calibration half, and the
compression ratio (bytes of weights + indices + quantization parameters as
served, over the float32 weight bytes).

Then, under drift (noise, contrast, translation, blur): a static mask cut
on clean calibration data against dynamic re-pruning cut on the drifted
window, at equal sparsity, both scored on held-out drifted images.

``cycle`` (bench/cycle_bench.py): a few full adaptation cycles of the wide MLP
inside a real daemon under steady ZeroMQ traffic: each phase's wall time and the
total, and serving p50/p99 during a cycle against steady (medians over cycles).

``finetune``: held-out accuracy of pruned + reconstructed models with and without fine-tuning
(edged.train). ``adapt``: under drift, with labels on 30 % of the traffic, the adapted model (pruned,
reconstructed and fine-tuned on the drifted traffic) against the frozen master and a statically
pruned model of the same sparsity, on held-out drifted images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from edged.adapt.calibration import Calibration
from edged.adapt.compress import STRATEGIES, Compressor, float_bytes, served_bytes
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite
from edged.sparse.block_csr import BlockShape

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
BLOCKS = (BlockShape(1, 1), BlockShape(16, 4))
STRATEGY_NAMES = ("magnitude", "wanda", "qsa", "qsa+bc")  # +bc: with bias correction


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--only", choices=("compression", "drift", "cycle", "taps", "reconstruct", "qsa",
                                       "finetune", "adapt"))
    ap.add_argument("--models", default="digits_mlp,digits_cnn", help="reconstruct: the models to measure")
    ap.add_argument("--cycles", type=int, default=3, help="cycle: adaptations to measure (medians over them)")
    ap.add_argument("--rate", type=float, default=300.0,
                    help="cycle: requests per second per client (2 clients; 0 = back to back)")
    ap.add_argument("--strategy", default="magnitude", help="cycle: the daemon's adapt.strategy")
    ap.add_argument("--nice", type=int, default=10, help="cycle: the daemon's adapt.nice")
    ap.add_argument("--sparsity", type=float, default=0.9, help="finetune, adapt: the sparsity pruned to")
    args = ap.parse_args(argv)
    results = {}
    if args.only in (None, "compression"):
        results["compression"] = compression()
    if args.only in (None, "drift"):
        results["drift"] = drift()
    if args.only in (None, "cycle"):
        from cycle_bench import run_cycles

        results["cycle"] = run_cycles(args.cycles, rate=args.rate, strategy=args.strategy, nice=args.nice)
    if args.only in (None, "taps"):
        results["taps"] = taps()
    if args.only in (None, "reconstruct"):
        results["reconstruct"] = reconstruct(args.models.split(","))
    if args.only in (None, "qsa"):
        results["qsa"] = qsa_quality(args.models.split(","))
    if args.only in (None, "finetune"):
        from finetune_bench import finetune_rows

        results["finetune"] = finetune_rows(args.models.split(","), args.sparsity)
    if args.only in (None, "adapt"):
        from finetune_bench import adapt_rows

        results["adapt"] = adapt_rows(args.models.split(","), sparsity=args.sparsity)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


def compression() -> list[dict]:
    images, labels = load_digits_test()
    rows = []
    print(f"{'model':<11} {'strategy':<10} {'block':>5} {'target':>6} {'sparsity':>8} {'KL':>8} "
          f"{'accuracy':>8} {'ratio':>6}")
    for name in ("digits_mlp", "digits_cnn"):
        graph = read_tflite(default_model_path(name))
        x = digits_for(graph, images)
        half = len(x) // 2
        calib, held = Calibration(x[:half], labels[:half]), Calibration(x[half:], labels[half:])
        judge = Compressor(graph, held, STRATEGIES["magnitude"]())
        base = {"model": name, "strategy": "int8", "block": "-", "target": 0.0, "sparsity": 0.0, "kl": 0.0,
                "accuracy": judge.accuracy(graph), "ratio": float_bytes(graph) / served_bytes(graph)}
        rows.append(base)
        _print(base)
        for strategy in STRATEGY_NAMES:
            for block in BLOCKS:
                correct = strategy.endswith("+bc")
                comp = Compressor(graph, calib, STRATEGIES[strategy.removesuffix("+bc")](), block,
                                  bias_correction=correct)
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
    return rows


UNSTRUCTURED = BlockShape(1, 1)


def drift(sparsity: float = 0.7, block: BlockShape = UNSTRUCTURED) -> list[dict]:
    """Static mask (clean calibration) vs dynamic re-pruning (drifted window) at equal sparsity."""
    from edged.corruptions import KINDS, corrupt

    images, labels = load_digits_test()
    half = len(images) // 2
    rows = []
    print(f"\n{'model':<11} {'strategy':<10} {'corruption':<10} {'master':>7} {'static':>7} {'dynamic':>8} "
          f"{'gain':>6} {'sparsity s/d':>13}   (held-out accuracy, {block} masks, target {sparsity:.0%})")
    for name in ("digits_mlp", "digits_cnn"):
        graph = read_tflite(default_model_path(name))
        clean = digits_for(graph, images)
        for strategy in ("magnitude", "wanda", "qsa"):
            calib = Calibration(clean[:half], labels[:half])
            static_result = Compressor(graph, calib, STRATEGIES[strategy](), block).search(
                sparsity=sparsity, steps=10)
            for kind in KINDS:
                shifted = digits_for(graph, corrupt(images, kind, 1.0, seed=3))
                judge = Calibration(shifted[half:], labels[half:])
                held = Compressor(graph, judge, STRATEGIES["magnitude"]())
                window = Calibration(shifted[:half], labels[:half])
                dyn_result = Compressor(graph, window, STRATEGIES[strategy](), block).search(
                    sparsity=sparsity, steps=10)
                row = {"model": name, "strategy": strategy, "corruption": kind,
                       "master": held.accuracy(graph), "static": held.accuracy(static_result.graph),
                       "dynamic": held.accuracy(dyn_result.graph),
                       "static_sparsity": static_result.sparsity, "dynamic_sparsity": dyn_result.sparsity}
                rows.append(row)
                print(f"{name:<11} {strategy:<10} {kind:<10} {row['master']:>7.1%} {row['static']:>7.1%} "
                      f"{row['dynamic']:>8.1%} {(row['dynamic'] - row['static']) * 100:>+6.1f} "
                      f"{row['static_sparsity']:>6.1%}/{row['dynamic_sparsity']:.1%}")
    return rows


def _print(r: dict) -> None:
    print(f"{r['model']:<11} {r['strategy']:<10} {r['block']:>5} {r['target']:>6.0%} {r['sparsity']:>8.1%} "
          f"{r['kl']:>8.4f} {r['accuracy']:>8.2%} {r['ratio']:>6.2f}")



def taps(runs: int = 5000) -> list[dict]:
    """Batch-1 p50 of the native engine with no taps, 10 % and 100 % of requests tapped, interleaved."""
    import numpy as np

    from edged.adapt.taps import Taps, TapSpec
    from edged.benchmark import measure, sample_inputs
    from edged.runtime.native import NativeEngine

    rows = []
    print(f"\n{'model':<11} {'no taps':>9} {'10 %':>9} {'100 %':>9}   "
          f"(batch-1 p50 us, {runs} interleaved runs, the controller's taps: model input and output)")
    for name in ("digits_mlp", "digits_cnn"):
        graph = read_tflite(default_model_path(name))
        engines = {"none": NativeEngine(graph), "10": NativeEngine(graph), "100": NativeEngine(graph)}
        specs = [TapSpec(t, graph.tensors[t].name, int(np.prod(graph.tensors[t].shape[1:])))
                 for t in (graph.inputs[0], graph.outputs[0])]
        engines["10"].taps = Taps(specs, 0.1, seed=0)
        engines["100"].taps = Taps(specs, 1.0, seed=0)
        stats = measure(engines, sample_inputs(engines["none"], 1), runs=runs)
        row = {"model": name, **{k: s.p50_us for k, s in stats.items()}}
        rows.append(row)
        print(f"{name:<11} {row['none']:>9.2f} {row['10']:>9.2f} {row['100']:>9.2f}   "
              f"(10 %: {row['10'] / row['none'] - 1:+.1%})")
    return rows

RECONSTRUCT_POINTS = ((BlockShape(1, 1), 0.5), (BlockShape(1, 1), 0.8), (BlockShape(1, 1), 0.9),
                      (BlockShape(16, 4), 0.9), (BlockShape(4, 4), 0.9))


def _bundled_setup(name: str, calib_images, test_images, test_labels):
    """A bundled model, its calibration set, and a Compressor scoring accuracy on the held-out images."""
    graph = read_tflite(default_model_path(name))
    held = Calibration(digits_for(graph, test_images), test_labels)
    calib = Calibration(digits_for(graph, calib_images))
    return graph, calib, Compressor(graph, held, STRATEGIES["magnitude"]())


def _digits_split():
    """Calibration images (the training split the bundled models were trained on) and the held-out
    test split."""
    from finetune_bench import digits_split

    train, _, images, labels, source = digits_split()
    return train, images, labels, source


def reconstruct(models: list[str]) -> list[dict]:
    """Held-out accuracy of dense int8, pruned (mask only) and pruned + reconstructed, at equal
    sparsity, and the written file's bytes against the float32 weights."""
    from edged.model.tflite import write_tflite

    calib_images, test_images, test_labels, source = _digits_split()
    print(f"\nreconstruction (obs strategy; calibration: {source}; "
          f"accuracy on {len(test_images)} test images)")
    print(f"{'model':<11} {'block':>5} {'target':>6} {'recon':>5} {'sparsity':>8} {'accuracy':>8} "
          f"{'file B':>8} {'fp32/file':>9} {'s':>6}")
    rows = []
    for name in models:
        graph, calib, judge = _bundled_setup(name, calib_images, test_images, test_labels)
        fp32 = float_bytes(graph)
        dense = {"model": name, "block": "-", "target": 0.0, "reconstruct": False, "sparsity": 0.0,
                 "accuracy": judge.accuracy(graph), "file_bytes": len(write_tflite(graph)), "seconds": 0.0}
        for block, target in RECONSTRUCT_POINTS:
            for rebuild in (False, True):
                t0 = time.perf_counter()
                comp = Compressor(graph, calib, STRATEGIES["obs"](), block, reconstruct=rebuild)
                try:
                    result = comp.search(sparsity=target, steps=8)
                except ValueError as exc:
                    print(f"{name:<11} {block!s:>5} {target:>6.0%}  skipped: {exc}")
                    continue
                rows.append({"model": name, "block": str(block), "target": target, "reconstruct": rebuild,
                             "sparsity": result.sparsity, "accuracy": judge.accuracy(result.graph),
                             "file_bytes": len(_written(result.graph)), "seconds": time.perf_counter() - t0})
                _print_reconstruct(rows[-1], fp32)
        rows.append(dense)
        _print_reconstruct(dense, fp32)
    return rows


class _ShuffledQsa:
    """QSA's score with each layer's feature importances shuffled: what QSA's ranking adds."""

    name = "qsa-shuffled"

    def __init__(self, trained: dict, seed: int) -> None:
        self.trained, self.seed = trained, seed

    def scores(self, weights, stats):
        import numpy as np

        from edged.adapt.compress import QsaStrategy

        imp = np.random.default_rng(self.seed + stats.op_index).permutation(self.trained[stats.op_index])
        weight = stats.input_norm * (QsaStrategy.floor + imp)
        flat = np.abs(weights.reshape(weights.shape[0], -1).astype(np.float64)) * weight
        return flat.reshape(weights.shape)


def qsa_quality(models: list[str], targets=(0.7, 0.8, 0.9)) -> list[dict]:
    """QSA trained to a plateau against magnitude, Wanda and QSA with shuffled importances: held-out
    accuracy after unstructured pruning (masks only) at equal sparsity, and each autoencoder's
    reconstruction loss curve."""
    from edged.adapt.compress import QsaStrategy

    calib_images, test_images, test_labels, source = _digits_split()
    print(f"\nQSA vs other scores (calibration: {source}; accuracy on {len(test_images)} test images, "
          "unstructured masks, no reconstruction)")
    rows = []
    for name in models:
        graph, calib, judge = _bundled_setup(name, calib_images, test_images, test_labels)
        qsa = QsaStrategy()
        scorers = {"magnitude": STRATEGIES["magnitude"](), "wanda": STRATEGIES["wanda"](), "qsa": qsa}
        scorers_extra = {}
        for label, scorer in scorers.items():
            comp = Compressor(graph, calib, scorer, UNSTRUCTURED, reconstruct=False)
            if label == "qsa":
                for op, r in qsa.results.items():
                    curve = [round(h[0], 4) for h in r.history]
                    print(f"{name} op #{op}: {r.epochs} epochs in {r.seconds:.1f} s, "
                          f"{'plateau' if r.converged else 'budget'}; reconstruction MSE by epoch "
                          f"{curve[:5]} ... {curve[-1]}", flush=True)
                    rows.append({"model": name, "op": op, "mse_curve": curve, "converged": r.converged})
                trained = {op: r.importance for op, r in qsa.results.items()}
                scorers_extra = {f"qsa-shuffled{s}": _ShuffledQsa(trained, 1000 * s) for s in (1, 2, 3)}
            rows.append(_qsa_row(name, label, comp, judge, targets))
        for label, scorer in scorers_extra.items():
            comp = Compressor(graph, calib, scorer, UNSTRUCTURED, reconstruct=False)
            rows.append(_qsa_row(name, label, comp, judge, targets))
    return rows


def _qsa_row(name: str, label: str, comp, judge, targets) -> dict:
    acc = {t: judge.accuracy(comp.search(sparsity=t, steps=8).graph) for t in targets}
    print(f"{name:<11} {label:<14} " + " ".join(f"{t:.0%}: {a:6.2%}" for t, a in acc.items()), flush=True)
    return {"model": name, "strategy": label, "accuracy": {str(t): a for t, a in acc.items()}}


def _written(graph) -> bytes:
    """The file as `edged compress` writes it (each pruned weight in its smallest sparse layout)."""
    import copy

    from edged.model.tflite import write_tflite
    from edged.sparse.storage import store_weights

    g = copy.deepcopy(graph)
    store_weights(g)
    return write_tflite(g)


def _print_reconstruct(r: dict, fp32: int) -> None:
    print(f"{r['model']:<11} {r['block']:>5} {r['target']:>6.0%} {'yes' if r['reconstruct'] else 'no':>5} "
          f"{r['sparsity']:>8.1%} {r['accuracy']:>8.2%} {r['file_bytes']:>8} {fp32 / r['file_bytes']:>8.1f}x "
          f"{r['seconds']:>6.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
