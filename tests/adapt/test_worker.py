"""The adaptation worker's job: prune, reconstruct, fine-tune, as the controller runs it."""

from __future__ import annotations

import numpy as np

from edged.adapt.compress import output_probabilities
from edged.adapt.stats import mean_row_kl
from edged.adapt.worker import compress_job
from edged.corruptions import corrupt
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite
from edged.runtime.native import NativeEngine
from edged.sparse.block_csr import BlockShape

MLP = default_model_path("digits_mlp")


def _probs(graph, x: np.ndarray) -> np.ndarray:
    out = graph.output_tensors[0]
    values = NativeEngine(graph, layout="dense").infer([x])[0].reshape(len(x), -1).astype(np.float64)
    return output_probabilities(graph, (values - float(out.quant.zero_point[0])) * float(out.quant.scale[0]))


def test_reconstruction_in_the_job_brings_held_out_outputs_closer_to_the_master():
    """The same window and the same masks (the search is deterministic): the job with reconstruction
    returns a candidate whose outputs on drifted rows it never saw are closer to the master's."""
    content = MLP.read_bytes()
    master = read_tflite(content)
    images, _ = load_digits_test()
    x = digits_for(master, corrupt(images, "noise", 1.0, seed=4))
    window, held = x[:256], x[256:]
    masked = compress_job(content, window, "magnitude", BlockShape(1, 1), 0.1, False)
    rebuilt = compress_job(content, window, "magnitude", BlockShape(1, 1), 0.1, True)
    assert "reconstruct" not in masked
    record = rebuilt["reconstruct"]
    assert record["kept"] and record["kl_after"] < record["kl_before"] / 2, record
    assert rebuilt["layers"] == masked["layers"] and rebuilt["pruned_kl"] == masked["kl"]
    assert rebuilt["sparsity"] == masked["sparsity"]
    cand_masked, cand_rebuilt = read_tflite(masked["content"]), read_tflite(rebuilt["content"])
    reference = _probs(master, held)
    kl_masked = mean_row_kl(reference, _probs(cand_masked, held))
    kl_rebuilt = mean_row_kl(reference, _probs(cand_rebuilt, held))
    assert kl_rebuilt < kl_masked / 2, (kl_rebuilt, kl_masked)
