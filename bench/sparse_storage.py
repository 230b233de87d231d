"""Which sparse weight layouts LiteRT runs, read directly or behind DENSIFY, measured.

    python bench/sparse_storage.py

For the bundled MLP (FULLY_CONNECTED weights) and CNN (CONV_2D weights), with
a third of every weight zeroed: each candidate layout of edged.sparse.storage
is written once with the sparse weights read directly by their layer and once
behind a DENSIFY op (as `edged compress` writes it). LiteRT's builtin kernels
(no XNNPACK) run each file in a child process, since some layouts crash it;
the outputs are compared with the native engine's on the same file and with
the dense model's.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.native import NativeEngine
from edged.sparse.storage import candidate_layouts, encoded_bytes, weight_tensors
from edged.sparse.tflite_encoding import encode

CHILD = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
it = Interpreter(model_path=sys.argv[1],
                 experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
it.allocate_tensors()
x, out = np.load(sys.argv[2]), []
for row in x:
    it.set_tensor(it.get_input_details()[0]["index"], row[None])
    it.invoke()
    out.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
np.save(sys.argv[3], np.stack(out))
"""


def _litert(content: bytes, x: np.ndarray, work: Path) -> tuple[np.ndarray | None, str]:
    (work / "m.tflite").write_bytes(content)
    np.save(work / "x.npy", x)
    r = subprocess.run([sys.executable, "-c", CHILD, str(work / "m.tflite"), str(work / "x.npy"),
                        str(work / "y.npy")], capture_output=True, text=True, timeout=120)
    if r.returncode < 0:
        return None, f"crashes (signal {-r.returncode})"
    if r.returncode:
        lines = r.stderr.strip().splitlines()
        return None, "fails: " + (lines[-1][:90] if lines else f"exit {r.returncode}")
    return np.load(work / "y.npy"), ""


def main() -> int:
    images, _ = load_digits_test()
    print(f"{'model':<11} {'layout':<14} {'weight B':>9} {'read':<8} {'LiteRT (builtin kernels)':<60}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("digits_mlp", "digits_cnn"):
            graph = read_tflite(default_model_path(name))
            rng = np.random.default_rng(0)
            for i in weight_tensors(graph):
                t = graph.tensors[i]
                t.data = np.where(rng.random(t.shape) < 0.67, t.data, 0).astype(np.int8)
            x = digits_for(graph, images[:16])
            dense_out = NativeEngine(copy.deepcopy(graph), layout="dense").infer([x])[0]
            big = max(weight_tensors(graph), key=lambda i: graph.tensors[i].size)
            for label, order, formats, block_map, sizes in candidate_layouts(graph.tensors[big].shape):
                g = copy.deepcopy(graph)
                stored = 0
                for i in weight_tensors(g):
                    t = g.tensors[i]
                    try:
                        values, t.sparsity = encode(t.data, order, formats, block_map, sizes)
                    except ValueError:  # this block does not tile that weight: it stays dense
                        continue
                    stored += encoded_bytes(values, t.sparsity) if i == big else 0
                for read, content in (("directly", write_tflite(g, densify_ops=False)),
                                      ("DENSIFY", write_tflite(g))):
                    native = NativeEngine.from_bytes(content, layout="dense").infer([x])[0]
                    out, problem = _litert(content, x, work)
                    if out is None:
                        verdict = problem
                    else:
                        diff = int(np.abs(out.astype(np.int64) - native).max())
                        wrong = int(np.abs(out.astype(np.int64) - dense_out).max())
                        verdict = (f"runs, equal to the native engine (max diff {wrong} vs dense)"
                                   if diff == 0 else
                                   f"runs, WRONG (max diff {diff} vs native, {wrong} vs dense)")
                    print(f"{name:<11} {label:<14} {stored:>9} {read:<8} {verdict:<60}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
