"""Train, quantize and export the bundled digits models (numpy only).

Regenerate everything in this folder from the repo root with::

    python models/train_digits.py

It needs scikit-learn (for ``load_digits`` and ``train_test_split`` only) and
ai-edge-litert (to check the exported models); the models themselves are
trained with plain numpy: Adam, cross-entropy, a small L2 penalty.

Outputs (next to this script):

* ``digits_mlp.tflite``  int8 MLP 64 -> 1024 -> 1024 -> 10, softmax
* ``digits_cnn.tflite``  int8 CNN conv3x3(16) -> conv3x3(32) -> maxpool2 -> fc(10), softmax
* ``digits_test.npz``    the test split: ``images`` uint8 [N, 8, 8] (0..16), ``labels`` int64 [N]
* ``digits_train.npz``   the training split, same arrays (1437 images)
* ``digits_models.json`` parameters, file sizes and test accuracies
* ``README.md``          the same numbers as a table

Quantization is post-training full-integer, as the TFLite converter does it:
int8 input with scale 1/255 and zero point -128, symmetric per-channel int8
weights, int32 biases at input_scale * weight_scale, asymmetric int8
activations from min/max calibration over the training set, and a softmax
output with scale 1/256 and zero point -128.

Everything is seeded, so a rerun on the same machine and numpy build gives the
same files byte for byte (float summation order in BLAS may differ elsewhere).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run from a checkout without installing edged
    sys.path.insert(0, str(REPO))

from edged.data import digits_input  # noqa: E402
from edged.model.builder import GraphBuilder  # noqa: E402
from edged.model.quant import round_half_away  # noqa: E402
from edged.model.tflite import read_tflite, write_tflite  # noqa: E402

sys.path.insert(0, str(HERE))  # the float networks live next to this script
from digits_nets import CNN, MLP, accuracy, train  # noqa: E402

SEED = 0
INPUT_SCALE = 1.0 / 255.0
INPUT_ZERO_POINT = -128
SOFTMAX_SCALE = 1.0 / 256.0
SOFTMAX_ZERO_POINT = -128


# ------------------------------------------------------------------ data


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # [1797, 8, 8], values 0..16
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.2, random_state=0, stratify=labels)
    return x_tr, x_te, y_tr, y_te


def to_float(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / np.float32(16.0)).astype(np.float32)


# ------------------------------------------------------------------ quantization


def activation_qparams(values: list[np.ndarray]) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) from a min/max range that includes 0."""
    lo = min(0.0, min(float(v.min()) for v in values))
    hi = max(0.0, max(float(v.max()) for v in values))
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(round_half_away(np.float64(-128.0 - lo / scale)), -128, 127))
    return scale, zp


def calibrate(model, x: np.ndarray, batch: int = 256) -> list[tuple[float, int]]:
    chunks = [model.activations(x[s : s + batch]) for s in range(0, len(x), batch)]
    return [activation_qparams([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel (axis 0) int8: scale_c = max|W_c| / 127."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.abs(flat).max(axis=1)
    scales = np.where(amax > 0, amax / 127.0, 1e-9).astype(np.float32)
    q = round_half_away(flat / scales.astype(np.float64)[:, None])
    return np.clip(q, -127, 127).astype(np.int8).reshape(w.shape), scales


def quantize_bias(b: np.ndarray, in_scale: float, w_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bias_scales = (np.float64(np.float32(in_scale)) * w_scales.astype(np.float64)).astype(np.float32)
    q = round_half_away(b.astype(np.float64) / bias_scales.astype(np.float64))
    return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32), bias_scales


class Exporter:
    """Adds quantized layers to a GraphBuilder, tracking the running (tensor, scale, zero point)."""

    def __init__(self, name: str, description: str, input_shape: tuple[int, ...]) -> None:
        self.b = GraphBuilder(name=name, description=description)
        self.x = self.b.input("input", np.int8, input_shape, INPUT_SCALE, INPUT_ZERO_POINT)
        self.scale = float(np.float32(INPUT_SCALE))
        self.zp = INPUT_ZERO_POINT

    def _weights(self, prefix: str, w: np.ndarray, bias: np.ndarray) -> tuple[int, int]:
        wq, ws = quantize_weights(w)
        bq, bs = quantize_bias(bias, self.scale, ws)
        w_idx = self.b.const(f"{prefix}/weights", wq, ws, 0, axis=0)
        b_idx = self.b.const(f"{prefix}/bias", bq, bs, 0, axis=0)
        return w_idx, b_idx

    def _advance(self, prefix: str, shape: tuple[int, ...], qp: tuple[float, int]) -> int:
        y = self.b.tensor(f"{prefix}/out", np.int8, shape, qp[0], qp[1])
        self.x, self.scale, self.zp = y, float(np.float32(qp[0])), qp[1]
        return y

    def dense(self, prefix: str, w: np.ndarray, bias: np.ndarray, qp, activation: str) -> None:
        w_idx, b_idx = self._weights(prefix, w, bias)
        x = self.x
        y = self._advance(prefix, (1, w.shape[0]), qp)
        self.b.op(
            "FULLY_CONNECTED",
            [x, w_idx, b_idx],
            [y],
            version=5,
            fused_activation_function=activation,
            weights_format="DEFAULT",
            keep_num_dims=False,
        )

    def conv3x3(self, prefix: str, w: np.ndarray, bias: np.ndarray, qp, hw: tuple[int, int]) -> None:
        w_idx, b_idx = self._weights(prefix, w, bias)
        x = self.x
        y = self._advance(prefix, (1, *hw, w.shape[0]), qp)
        self.b.op(
            "CONV_2D",
            [x, w_idx, b_idx],
            [y],
            version=3,
            padding="SAME",
            stride_w=1,
            stride_h=1,
            dilation_w_factor=1,
            dilation_h_factor=1,
            fused_activation_function="RELU",
        )

    def maxpool2(self, prefix: str, shape: tuple[int, ...]) -> None:
        x = self.x
        y = self._advance(prefix, shape, (self.scale, self.zp))  # max pool keeps the quantization
        self.b.op(
            "MAX_POOL_2D",
            [x],
            [y],
            version=2,
            padding="VALID",
            stride_w=2,
            stride_h=2,
            filter_width=2,
            filter_height=2,
            fused_activation_function="NONE",
        )

    def reshape(self, prefix: str, shape: tuple[int, ...]) -> None:
        # The new shape leaves the batch free (-1), as the TFLite converter writes a Keras Flatten:
        # a batch of N requests then runs as one, not sample by sample.
        x = self.x
        new_shape = [-1, *shape[1:]]
        s = self.b.const(f"{prefix}/shape", np.array(new_shape, np.int32))
        y = self._advance(prefix, shape, (self.scale, self.zp))
        self.b.op("RESHAPE", [x, s], [y], version=1, new_shape=new_shape)

    def softmax(self, n: int) -> None:
        x = self.x
        y = self._advance("softmax", (1, n), (SOFTMAX_SCALE, SOFTMAX_ZERO_POINT))
        self.b.op("SOFTMAX", [x], [y], version=2, beta=1.0)

    def finish(self, path: Path) -> int:
        self.b.output(self.x)
        return len(write_tflite(self.b.build(), path))


def export_mlp(model: MLP, qps: list[tuple[float, int]], path: Path) -> int:
    e = Exporter("digits_mlp", "edged digits MLP 64-1024-1024-10, int8 post-training quantized", (1, 64))
    p = model.params
    for i in range(model.n_layers):
        act = "RELU" if i < model.n_layers - 1 else "NONE"
        e.dense(f"dense{i + 1}", p[f"d{i}W"], p[f"d{i}b"], qps[i], act)
    e.softmax(10)
    return e.finish(path)


def export_cnn(model: CNN, qps: list[tuple[float, int]], path: Path) -> int:
    e = Exporter(
        "digits_cnn",
        "edged digits CNN conv16-conv32-maxpool-fc10, int8 post-training quantized",
        (1, 8, 8, 1),
    )
    p = model.params
    e.conv3x3("conv1", p["c1W"], p["c1b"], qps[0], (8, 8))
    e.conv3x3("conv2", p["c2W"], p["c2b"], qps[1], (8, 8))
    e.maxpool2("maxpool", (1, 4, 4, model.c2))
    e.reshape("flatten", (1, 16 * model.c2))
    e.dense("dense", p["fcW"], p["fcb"], qps[2], "NONE")
    e.softmax(10)
    return e.finish(path)


# ------------------------------------------------------------------ checking


def evaluate_int8(path: Path, images: np.ndarray, labels: np.ndarray) -> dict:
    """Run the exported model with LiteRT (builtin kernels) and the numpy reference engine."""
    from edged.runtime.litert import LiteRTEngine
    from edged.runtime.reference import ReferenceEngine

    litert = LiteRTEngine.from_file(path)
    spec = litert.inputs[0]
    x = digits_input(images, spec.dtype, spec.scale, spec.zero_point, spec.shape)
    y_lite = litert.infer([x])[0]
    y_ref = ReferenceEngine(read_tflite(path), str(path)).run([x])[0]
    diff = int(np.count_nonzero(y_lite.astype(np.int32) != y_ref.astype(np.int32)))
    return {
        "int8_test_accuracy_litert": float(np.mean(np.argmax(y_lite, axis=1) == labels)),
        "int8_test_accuracy_reference": float(np.mean(np.argmax(y_ref, axis=1) == labels)),
        "litert_vs_reference_mismatched_outputs": diff,
        "litert_vs_reference_max_abs_diff": int(np.abs(y_lite.astype(np.int32) - y_ref).max()),
    }


README_HEAD = """\
# Bundled digits models

Two small int8 classifiers for the scikit-learn `load_digits` images (1797 real
8x8 handwritten digits, pixel values 0..16), used by `edged eval`, the benchmarks
and the tests. They install with the package as `edged.models`; `edged.data`
finds them (`default_model_path("digits_mlp")`, `load_digits_test()`, `load_digits_train()`,
`digits_input(...)`).

| file | contents |
|---|---|
| `digits_mlp.tflite` | {mlp_ops} |
| `digits_cnn.tflite` | {cnn_ops} |
| `digits_test.npz` | the test split: `images` uint8 [N,8,8] (raw 0..16), `labels` int64 [N] |
| `digits_train.npz` | the training split (1437 images), same arrays: calibration and traffic for benchmarks |
| `digits_models.json` | the numbers of the table below |
| `train_digits.py` | the script that made all of the above (data, calibration, int8 export, checks) |
| `digits_nets.py` | the float networks and their numpy training (Adam, cross-entropy) |

## How they were made

* Data: `sklearn.datasets.load_digits()`, split with
  `train_test_split(test_size=0.2, random_state=0, stratify=y)`
  ({n_train} train / {n_test} test images). Features are `x / 16` in [0, 1].
* Training: plain numpy (no deep learning framework), seed {seed}, He
  initialisation, Adam with a cosine learning-rate decay, softmax cross-entropy,
  L2 weight decay on the weights. MLP: {mlp_epochs} epochs, batch {mlp_batch},
  lr {mlp_lr}, L2 {mlp_l2}. CNN: {cnn_epochs} epochs, batch {cnn_batch},
  lr {cnn_lr}, L2 {cnn_l2}.
* Quantization: post-training full-integer, like the TFLite converter:
  * input int8, scale 1/255, zero point -128 (`q = round(x/16 * 255) - 128`,
    computed in float32 like TFLite's QUANTIZE; see `edged.data.digits_input`);
  * weights symmetric per output channel (axis 0 of the TFLite layouts
    FC `[out, in]` and CONV `[out, kh, kw, in]`), `scale_c = max|W_c| / 127`;
  * biases int32 `round(b / (input_scale * weight_scale_c))`;
  * activations asymmetric int8 from the min/max (widened to include 0) of the
    float model over the whole training set: `scale = (max - min) / 255`,
    `zero_point = round(-128 - min / scale)`; max pool and reshape keep their
    input's quantization; the pre-softmax logits get their own range;
  * softmax output int8 with scale 1/256 and zero point -128 (what LiteRT requires).
* Writing: `edged.model.builder.GraphBuilder` + `edged.model.tflite.write_tflite`.
* Checking: the int8 accuracies are measured on the test split with LiteRT's
  builtin kernels (no XNNPACK) and with edged's numpy reference engine.

## Regenerate

From the repo root (needs scikit-learn and ai-edge-litert; scikit-learn is only
needed for regeneration, not to use the models):

    python models/train_digits.py

The script is seeded; on the same machine and numpy build it rewrites the same
bytes. Runtime is well under two minutes on two cores.

## Results (test split, {n_test} images)

"""
TABLE_HEAD = (
    "| model | params | file bytes | float accuracy | int8 accuracy (LiteRT) "
    "| int8 accuracy (reference) | LiteRT vs reference |\n|---|---:|---:|---:|---:|---:|---|\n"
)
MLP_OPS = (
    "int8 MLP: input [1,64] -> FULLY_CONNECTED 1024 relu -> FULLY_CONNECTED 1024 relu "
    "-> FULLY_CONNECTED 10 -> SOFTMAX"
)
CNN_OPS = (
    "int8 CNN: input [1,8,8,1] -> CONV_2D 3x3 SAME 16 relu -> CONV_2D 3x3 SAME 32 relu "
    "-> MAX_POOL_2D 2x2/2 -> RESHAPE [-1,512] -> FULLY_CONNECTED 10 -> SOFTMAX"
)


def write_readme(path: Path, results: dict, meta: dict) -> None:
    text = README_HEAD.format(**meta, mlp_ops=MLP_OPS, cnn_ops=CNN_OPS) + TABLE_HEAD
    for name, r in results.items():
        same = (
            "identical"
            if r["litert_vs_reference_mismatched_outputs"] == 0
            else f"{r['litert_vs_reference_mismatched_outputs']} outputs differ"
        )
        text += (
            f"| `{name}` | {r['params']:,} | {r['file_bytes']:,} | {100 * r['float_test_accuracy']:.2f}% "
            f"| {100 * r['int8_test_accuracy_litert']:.2f}% | {100 * r['int8_test_accuracy_reference']:.2f}% "
            f"| {same} |\n"
        )
    text += (
        "\n`params` counts trainable weights and biases. The int8 accuracies are `argmax` of the "
        "int8 softmax output; LiteRT vs reference compares the raw int8 outputs element by element.\n"
    )
    path.write_text(text)


MLP_CFG = {"epochs": 30, "batch": 64, "lr": 1e-3, "l2": 1e-4}
CNN_CFG = {"epochs": 40, "batch": 32, "lr": 2e-3, "l2": 1e-4}


def main() -> int:
    t0 = time.perf_counter()
    x_tr_img, x_te_img, y_tr, y_te = load_split()
    x_tr, x_te = to_float(x_tr_img), to_float(x_te_img)
    print(f"digits: {len(x_tr)} train, {len(x_te)} test")

    np.savez_compressed(
        HERE / "digits_test.npz", images=x_te_img.astype(np.uint8), labels=y_te.astype(np.int64)
    )
    np.savez_compressed(
        HERE / "digits_train.npz", images=x_tr_img.astype(np.uint8), labels=y_tr.astype(np.int64)
    )

    results: dict[str, dict] = {}
    rng = np.random.default_rng(SEED)

    mlp = MLP(rng)
    train(mlp, x_tr.reshape(-1, 64), y_tr, rng, label="mlp", **MLP_CFG)
    mlp_path = HERE / "digits_mlp.tflite"
    size = export_mlp(mlp, calibrate(mlp, x_tr.reshape(-1, 64)), mlp_path)
    results["digits_mlp"] = {
        "params": int(sum(v.size for v in mlp.params.values())),
        "file_bytes": size,
        "float_test_accuracy": accuracy(mlp, x_te.reshape(-1, 64), y_te),
        **evaluate_int8(mlp_path, x_te_img, y_te),
    }
    print(f"  mlp done at {time.perf_counter() - t0:.1f} s: {results['digits_mlp']}")

    cnn = CNN(rng)
    train(cnn, x_tr.reshape(-1, 8, 8, 1), y_tr, rng, label="cnn", **CNN_CFG)
    cnn_path = HERE / "digits_cnn.tflite"
    size = export_cnn(cnn, calibrate(cnn, x_tr.reshape(-1, 8, 8, 1)), cnn_path)
    results["digits_cnn"] = {
        "params": int(sum(v.size for v in cnn.params.values())),
        "file_bytes": size,
        "float_test_accuracy": accuracy(cnn, x_te.reshape(-1, 8, 8, 1), y_te),
        **evaluate_int8(cnn_path, x_te_img, y_te),
    }
    print(f"  cnn done at {time.perf_counter() - t0:.1f} s: {results['digits_cnn']}")

    for r in results.values():
        for k, v in r.items():
            if isinstance(v, float):
                r[k] = round(v, 6)
    summary = {
        "dataset": "sklearn.datasets.load_digits, "
        "train_test_split(test_size=0.2, random_state=0, stratify=y)",
        "n_train": len(x_tr),
        "n_test": len(x_te),
        "seed": SEED,
        "models": results,
    }
    (HERE / "digits_models.json").write_text(json.dumps(summary, indent=2) + "\n")
    meta = {
        "n_train": len(x_tr),
        "n_test": len(x_te),
        "seed": SEED,
        **{f"mlp_{k}": v for k, v in MLP_CFG.items()},
        **{f"cnn_{k}": v for k, v in CNN_CFG.items()},
    }
    write_readme(HERE / "README.md", results, meta)

    bad = [n for n, r in results.items() if r["litert_vs_reference_mismatched_outputs"]]
    if bad:
        print(f"WARNING: LiteRT and the reference engine disagree on {', '.join(bad)}", file=sys.stderr)
    written = sorted(p.name for p in HERE.iterdir() if p.suffix in (".tflite", ".npz", ".json", ".md"))
    print(f"wrote {', '.join(written)} in {time.perf_counter() - t0:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
