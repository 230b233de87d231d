"""How far the numpy spec of HARD_SWISH, SOFTMAX and DEQUANTIZE is from this machine's LiteRT.

Seeded random single-op models (scales, zero points, shapes, batch sizes
drawn like the test strategies), each run by LiteRT's builtin kernels and by
the spec under both rounding modes (edged.model.rounding: ``double`` follows
LiteRT's x86-64 build, ``single`` its aarch64 build, NEON bodies included).
Per op and mode: models with a difference / models, differing elements /
elements, and the max |difference| (LSB for int8, absolute for DEQUANTIZE's float32).

    python bench/neon_ops.py [--models N] [--seed S] [--ops OP ...]

Run it on the machine whose LiteRT is in question (on aarch64: .ci/arm64.sh
run python bench/neon_ops.py).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edged.model.builder import GraphBuilder  # noqa: E402
from edged.model.rounding import resolve_rounding  # noqa: E402
from edged.model.tflite import write_tflite  # noqa: E402
from edged.runtime.litert import LiteRTEngine  # noqa: E402
from edged.runtime.reference import ReferenceEngine  # noqa: E402

MODES = ("double", "single")


def _scale(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.002, 0.5))


def _shape(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, 10, rng.integers(1, 4)))


def hard_swish(rng: np.random.Generator):
    shape, in_s = _shape(rng), _scale(rng)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), in_s, int(rng.integers(-128, 128)))
    y = b.tensor("y", np.int8, (1, *shape), max(_scale(rng), in_s / 100), int(rng.integers(-128, 128)))
    b.op("HARD_SWISH", [x], [y])
    b.output(y)
    return b.build(), shape


def softmax(rng: np.random.Generator):
    depth = int(rng.integers(1, 80))
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, depth), _scale(rng), int(rng.integers(-128, 128)))
    y = b.tensor("y", np.int8, (1, depth), 1 / 256, -128)
    b.op("SOFTMAX", [x], [y], version=2, beta=float(rng.choice([1.0, 0.5, 2.0])))
    b.output(y)
    return b.build(), (depth,)


def dequantize(rng: np.random.Generator):
    shape = _shape(rng)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, *shape), _scale(rng), int(rng.integers(-128, 128)))
    y = b.tensor("y", np.float32, (1, *shape))
    b.op("DEQUANTIZE", [x], [y], version=2)
    b.output(y)
    return b.build(), shape


OPS = {"HARD_SWISH": hard_swish, "SOFTMAX": softmax, "DEQUANTIZE": dequantize}


def difference(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want|: in LSB for int8, as a float for DEQUANTIZE's float32."""
    return np.abs(got.astype(np.float64) - want.astype(np.float64))


def measure(opcode: str, models: int, seed: int) -> dict[str, list]:
    """mode -> [models differing, models, elements differing, elements, max diff]."""
    rng = np.random.default_rng(seed)
    stats = {m: [0, 0, 0, 0, 0] for m in MODES}
    for _ in range(models):
        graph, shape = OPS[opcode](rng)
        batch = int(rng.integers(1, 10))
        x = rng.integers(-128, 128, (batch, *shape)).astype(np.int8)
        want = LiteRTEngine(write_tflite(graph)).infer([x])[0]
        for mode in MODES:
            got = ReferenceEngine(graph, rounding=mode).run([x])[0]
            diff = difference(got, want)
            s = stats[mode]
            s[0] += int(diff.any())
            s[1] += 1
            s[2] += int(np.count_nonzero(diff))
            s[3] += diff.size
            s[4] = max(s[4], float(diff.max(initial=0)))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200, help="random models per op")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ops", nargs="*", choices=sorted(OPS), default=list(OPS))
    args = parser.parse_args()
    auto = resolve_rounding("auto")
    print(f"machine {platform.machine()}, rounding auto -> {auto}, {args.models} models per op")
    print(f"{'op':11} {'mode':7} {'models off':>12} {'elements off':>16} {'max |diff|':>10}")
    for opcode in args.ops:
        for mode, s in measure(opcode, args.models, args.seed).items():
            print(f"{opcode:11} {mode:7} {s[0]:5d}/{s[1]:<6d} {s[2]:7d}/{s[3]:<8d} {s[4]:10.3g}")


if __name__ == "__main__":
    main()
