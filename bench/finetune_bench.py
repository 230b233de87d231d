"""Fine-tuning measurements for bench/adapt.py (``--only finetune``, ``--only adapt``).

Data: the bundled digits training split (the bundled models' own, 1437 images) as calibration data
or traffic, the bundled test split (360 images) held out. Accuracies are the native int8 engine's.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from edged.adapt.calibration import Calibration
from edged.adapt.compress import STRATEGIES, Compressor
from edged.config import AdaptSection
from edged.corruptions import corrupt
from edged.data import default_model_path, digits_for, load_digits_test, load_digits_train
from edged.model.tflite import read_tflite
from edged.runtime.native import NativeEngine
from edged.sparse.block_csr import BlockShape
from edged.train.finetune import FinetuneConfig, finetune

SPARSITY = 0.9
CALIB_ROWS = 512  # what the compressor (and its reconstruction) sees, as in the daemon's window
LABELLED_SHARE = 0.3
# A fixed amount of work, not of time: on a shared machine a time budget buys 1 epoch or 20, and the
# accuracies would measure the load. The cap only guards against a runaway run.
EPOCHS = FinetuneConfig().epochs
# What the daemon trains on labelled feedback with, and the distillation mix it would otherwise use.
LABEL_WEIGHT = AdaptSection().label_weight
MIXED_LABEL_WEIGHT = 0.8
TIME_CAP_S = 600.0


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(train images, train labels, test images, test labels, where the training rows come from)."""
    train, y = load_digits_train()
    test, yt = load_digits_test()
    return train, y, test, yt, f"digits training split ({len(train)} images)"


def accuracy(graph, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(NativeEngine(graph, layout="dense").infer([x])[0], 1) == y))


def finetune_rows(models: list[str], sparsity: float = SPARSITY) -> list[dict]:
    """Dense int8, pruned (unstructured, 16x4) + reconstruction, and + fine-tuning (distillation
    alone, and with the calibration labels), held-out accuracy."""
    train_images, train_labels, test_images, test_labels, source = digits_split()
    print(f"\nfine-tuning (obs + reconstruction at {sparsity:.0%}; compressor sees {CALIB_ROWS} images, "
          f"fine-tuning all of the {source} for {EPOCHS} epochs; accuracy on "
          f"{len(test_images)} test images)")
    print(f"{'model':<11} {'block':>5} {'dense':>7} {'recon':>7} {'+ft':>7} {'+ft+y':>7} {'recon s':>8} "
          f"{'ft s':>6} {'epochs':>6}")
    rows = []
    for name in models:
        graph = read_tflite(default_model_path(name))
        x, xt = digits_for(graph, train_images), digits_for(graph, test_images)
        dense = accuracy(graph, xt, test_labels)
        for block in (BlockShape(1, 1), BlockShape(16, 4)):
            t0 = time.perf_counter()
            comp = Compressor(graph, Calibration(x[:CALIB_ROWS]), STRATEGIES["obs"](), block,
                              reconstruct=True)
            result = comp.search(sparsity=sparsity, steps=8)
            recon_s = time.perf_counter() - t0
            cfg = FinetuneConfig(time_budget_s=TIME_CAP_S, epochs=EPOCHS, seed=0)
            distilled = finetune(result.graph, graph, x, config=cfg)
            supervised = finetune(result.graph, graph, x, train_labels, cfg)
            row = {"model": name, "block": str(block), "sparsity": result.sparsity, "dense": dense,
                   "reconstructed": accuracy(result.graph, xt, test_labels),
                   "finetuned": accuracy(distilled.graph, xt, test_labels),
                   "finetuned_labels": accuracy(supervised.graph, xt, test_labels),
                   "reconstruct_s": recon_s, "finetune_s": distilled.seconds, "epochs": distilled.epochs}
            rows.append(row)
            print(f"{name:<11} {row['block']:>5} {dense:>7.2%} {row['reconstructed']:>7.2%} "
                  f"{row['finetuned']:>7.2%} {row['finetuned_labels']:>7.2%} {recon_s:>8.1f} "
                  f"{row['finetune_s']:>6.1f} {row['epochs']:>6}", flush=True)
    return rows


def drifted(images: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """``mix``: contrast loss, then sensor noise, then translation, each at severity 0.5 (at 1.0 the
    three together leave even a classifier trained on them at chance); single kinds at 1.0."""
    if kind == "mix":
        out = corrupt(images, "contrast", 0.5, seed)
        out = corrupt(out, "noise", 0.5, seed + 1)
        return corrupt(out, "translate", 0.5, seed + 2)
    return corrupt(images, kind, 1.0, seed)


def adapt_rows(models: list[str], kinds: tuple[str, ...] = ("mix", "contrast", "blur"),
               sparsity: float = SPARSITY) -> list[dict]:
    """Frozen master vs static pruned (clean calibration) vs adapted (pruned + reconstructed on the
    drifted traffic, fine-tuned with labels on 30 % of it at the daemon's label weight), held-out
    drifted test images; the same with distillation mixed in ("+distil"); and the unpruned master
    fine-tuned the daemon's way ("dense ft"), what this traffic teaches with no pruning at all."""
    train_images, train_labels, test_images, test_labels, source = digits_split()
    print(f"\nadaptation under drift ({sparsity:.0%} unstructured; traffic: the drifted {source}, labels on "
          f"{LABELLED_SHARE:.0%} of it, {EPOCHS} epochs of fine-tuning, label weight {LABEL_WEIGHT} "
          f"(+distil: {MIXED_LABEL_WEIGHT}); accuracy on {len(test_images)} drifted test images)")
    print(f"{'model':<11} {'drift':<9} {'master':>7} {'static':>7} {'adapted':>8} {'vs master':>9} "
          f"{'vs static':>9} {'cycle s':>8} {'+distil':>8} {'dense ft':>8}")
    block = BlockShape(1, 1)
    rows = []
    for name in models:
        graph = read_tflite(default_model_path(name))
        clean = digits_for(graph, train_images)
        static = Compressor(graph, Calibration(clean[:CALIB_ROWS]), STRATEGIES["obs"](), block,
                            reconstruct=True).search(sparsity=sparsity, steps=8).graph
        for kind in kinds:
            x = digits_for(graph, drifted(train_images, kind, 10))
            xt = digits_for(graph, drifted(test_images, kind, 20))
            rng = np.random.default_rng(0)
            y = np.where(rng.random(len(x)) < LABELLED_SHARE, train_labels, -1)
            t0 = time.perf_counter()
            pruned = Compressor(graph, Calibration(x[:CALIB_ROWS]), STRATEGIES["obs"](), block,
                                reconstruct=True).search(sparsity=sparsity, steps=8).graph
            cfg = FinetuneConfig(time_budget_s=TIME_CAP_S, epochs=EPOCHS, label_weight=LABEL_WEIGHT, seed=0)
            tuned = finetune(pruned, graph, x, y, cfg)
            adapted = tuned.graph
            cycle_s = time.perf_counter() - t0
            mixed_cfg = dataclasses.replace(cfg, label_weight=MIXED_LABEL_WEIGHT)
            mixed = finetune(pruned, graph, x, y, mixed_cfg).graph
            # What the same traffic and labels buy with no pruning at all: the room adaptation has.
            dense_tuned = finetune(graph, graph, x, y, cfg).graph
            row = {"model": name, "drift": kind, "master": accuracy(graph, xt, test_labels),
                   "dense_adapted": accuracy(dense_tuned, xt, test_labels),
                   "static": accuracy(static, xt, test_labels), "adapted": accuracy(adapted, xt, test_labels),
                   "adapted_distil": accuracy(mixed, xt, test_labels), "sparsity": sparsity,
                   "reconstructed_only": accuracy(pruned, xt, test_labels), "cycle_s": cycle_s,
                   "labelled": int(np.sum(y >= 0)), "finetune_s": tuned.seconds, "epochs": tuned.epochs}
            rows.append(row)
            print(f"{name:<11} {kind:<9} {row['master']:>7.1%} {row['static']:>7.1%} {row['adapted']:>8.1%} "
                  f"{(row['adapted'] - row['master']) * 100:>+8.1f}p "
                  f"{(row['adapted'] - row['static']) * 100:>+8.1f}p {cycle_s:>8.1f} "
                  f"{row['adapted_distil']:>8.1%} {row['dense_adapted']:>8.1%}", flush=True)
    return rows
