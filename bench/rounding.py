"""How far edged's int8 results are from this machine's LiteRT, per rounding mode.

For each model: every operator is run alone by the numpy spec on the exact
inputs LiteRT's builtin kernels gave it (LiteRT keeps all intermediates), and
its output compared with LiteRT's, so a difference is charged to the op that
makes it; then the native engine runs the whole model and its outputs are
compared with LiteRT's. Both under each rounding mode (edged.model.rounding).

    python bench/rounding.py [MODEL.tflite ...]    # default: the converter fixtures

Run it on the machine whose LiteRT is in question (on aarch64: .ci/arm64.sh
run python bench/rounding.py).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edged.model.rounding import resolve_rounding  # noqa: E402
from edged.model.tflite import read_tflite  # noqa: E402
from edged.runtime.litert import LiteRTEngine, interpreter_module  # noqa: E402
from edged.runtime.native import NativeEngine  # noqa: E402
from edged.runtime.prepared import prepare_graph  # noqa: E402

FIXTURES = [*sorted((ROOT / "tests/fixtures/converter").glob("*.tflite")),
            *sorted((ROOT / "tests/fixtures/dynamic_batch").glob("*.tflite"))]
MODES = ("double", "single")


def model_inputs(engine, batch: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for spec in engine.inputs:
        shape = (batch, *spec.shape)
        if spec.dtype == np.float32:
            out.append(rng.uniform(-1, 1, shape).astype(np.float32))
        else:
            out.append(rng.integers(-128, 128, shape).astype(np.int8))
    return out


def litert_intermediates(content: bytes, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor LiteRT's builtin kernels computed for one batch-1 run, by name (edged's
    shape folding renumbers tensors, names stay)."""
    mod = interpreter_module()
    interp = mod.Interpreter(
        model_content=content, num_threads=1, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    for detail, x in zip(interp.get_input_details(), inputs, strict=True):
        interp.set_tensor(detail["index"], x)
    interp.invoke()
    values = {}
    for detail in interp.get_tensor_details():
        with contextlib.suppress(ValueError):  # tensors without data (folded away, or optional)
            values[detail["name"]] = interp.get_tensor(detail["index"])
    return values


def per_op(path: Path, mode: str, litert: dict[str, np.ndarray]) -> dict:
    """opcode -> [ops, elements, differing elements, max |diff|] of the spec fed LiteRT's inputs."""
    prepared = prepare_graph(read_tflite(path), str(path), mode)
    tensors = prepared.graph.tensors
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for step in prepared.steps:
        args = [litert.get(tensors[t].name) for t in step.activation_inputs]
        if any(a is not None and a.shape[1:] != tensors[t].shape[1:]
               for a, t in zip(args, step.activation_inputs, strict=True)):
            continue
        want = litert.get(tensors[step.output].name)
        if want is None or any(a is None for a in args) or want.dtype.kind not in "iu":
            continue
        got = step.module.reference(step.params, args)
        if got.shape != want.shape:
            continue  # a name LiteRT gives another tensor
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        s = stats[step.opcode]
        s[0] += 1
        s[1] += diff.size
        s[2] += int(np.count_nonzero(diff))
        s[3] = max(s[3], int(diff.max(initial=0)))
    return dict(stats)


def whole_model(path: Path, mode: str, batches=(1, 5)) -> int:
    """Max |native - LiteRT| over the model's outputs at the given batch sizes."""
    native = NativeEngine.from_file(path, rounding=mode)
    litert = LiteRTEngine.from_file(path)
    worst = 0
    for batch in batches:
        inputs = model_inputs(native, batch, seed=batch)
        if native.plan.per_sample and batch > 1:
            continue  # a pinned batch: LiteRT cannot run it batched
        for got, want in zip(native.infer(inputs), litert.infer(inputs), strict=True):
            if got.dtype.kind == "f":
                continue
            worst = max(worst, int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=FIXTURES)
    args = parser.parse_args()
    print(f"machine {platform.machine()}, rounding auto -> {resolve_rounding('auto')}")
    print(f"{'model':28} {'mode':7} {'max|diff| out':>13}  per op: opcode ops differing/elements max")
    for path in args.models:
        native = NativeEngine.from_file(path, rounding="double")
        inputs = model_inputs(native, 1, seed=0)
        intermediates = litert_intermediates(path.read_bytes(), inputs)
        for mode in MODES:
            ops = per_op(path, mode, intermediates)
            out = whole_model(path, mode)
            detail = ", ".join(f"{k} {v[0]} {v[2]}/{v[1]} {v[3]}" for k, v in sorted(ops.items()) if v[2])
            print(f"{path.name:28} {mode:7} {out:13d}  {detail or 'all ops equal'}")


if __name__ == "__main__":
    main()
