"""`edged compress` on every converter-made and bundled model: the file it writes loads and runs on
the native engine and LiteRT, stays close to the source, and is smaller once weights are pruned."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edged.cli import main
from edged.data import digits_for, load_digits_test
from edged.model.tflite import read_tflite
from edged.runtime.native import NativeEngine

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(
    [*(ROOT / "tests/fixtures/dynamic_batch").glob("*.tflite"),
     *(ROOT / "tests/fixtures/converter").glob("*.tflite"),
     *(ROOT / "models").glob("*.tflite")]
)
# Top-1 agreement with the source on 8 inputs at 30 % sparsity: the lowest measured
# is 0.75 (flatten_cnn on noise inputs), most models 1.0; broken weights give about 0.1.
MIN_AGREEMENT = 0.6
# Models whose output is not a class score (the autoencoder): correlation of the outputs.
MIN_CORRELATION = 0.9
try:
    import ai_edge_litert  # noqa: F401

    HAVE_LITERT = True
except ImportError:
    HAVE_LITERT = False


def _inputs(path: Path) -> np.ndarray:
    """Digits for the digits models, the converter's recorded inputs, else seeded noise in range."""
    graph = read_tflite(path)
    if path.parent.name == "models":
        return digits_for(graph, load_digits_test()[0][:8])
    recorded = path.with_suffix(".io.npz")
    if recorded.exists():
        return np.load(recorded)["x"]
    spec = graph.input_tensors[0]
    rng = np.random.default_rng(0)
    if spec.dtype == np.int8:
        return rng.integers(-128, 128, (8, *spec.shape[1:])).astype(np.int8)
    return rng.uniform(-1, 1, (8, *spec.shape[1:])).astype(np.float32)


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_compress_writes_a_smaller_model_both_engines_run_close_to_the_source(path, tmp_path, capsys):
    x = _inputs(path)
    np.savez(tmp_path / "calib.npz", x=x)
    out = tmp_path / "out.tflite"
    # Reconstruction keeps the small converter models close (masks alone flip their top-1); on the
    # larger ones it takes minutes here, and masks alone already keep them close.
    rebuild = "--reconstruct" if path.stat().st_size < 60_000 else "--no-reconstruct"
    assert main(["compress", str(path), "--sparsity", "0.3", "--block", "1x16", rebuild,
                 "--finetune-epochs", "2", "--calib", str(tmp_path / "calib.npz"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    sparsity = float(re.search(r"sparsity ([\d.]+)% of prunable weights", text).group(1))
    assert sparsity > 25
    assert out.stat().st_size < path.stat().st_size
    assert f"file: {out.stat().st_size} bytes" in text
    if HAVE_LITERT:  # the native engine and LiteRT agree on the written file
        assert re.search(r"LiteRT.s builtin kernels.*\b(\d+)/\1 calibration outputs bit-identical", text)

    source, compressed = NativeEngine.from_file(path), NativeEngine.from_file(out)
    before, after = source.infer([x])[0], compressed.infer([x])[0]
    assert after.shape == before.shape and np.all(np.isfinite(after.astype(np.float64)))
    before, after = (a.reshape(len(x), -1).astype(np.float64) for a in (before, after))
    if before.shape[1] > 100:  # a regression head (the anomaly autoencoder's 640 outputs): correlation
        assert np.corrcoef(before.ravel(), after.ravel())[0, 1] >= MIN_CORRELATION
    else:
        assert np.mean(before.argmax(1) == after.argmax(1)) >= MIN_AGREEMENT
