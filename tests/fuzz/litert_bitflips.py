"""Flip random bits of a fixture and load + run it in LiteRT, one forked child per mutant.

    python -m tests.fuzz.litert_bitflips --runs 3000 --seed 0 [--structure-only]

Prints one JSON line: outcome counts, and every mutant whose child died by a
signal (its flips as (position, bit) pairs, replayable with ``flip``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from edged.errors import EdgedError
from edged.runtime.litert import LiteRTEngine

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "converter" / "conv8x8_floatio.tflite"


def flip(content: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(content)
    for pos, bit in flips:
        out[pos] ^= 1 << bit
    return bytes(out)


def random_flips(rng: random.Random, positions: list[int], most: int = 6) -> list[tuple[int, int]]:
    return [(rng.choice(positions), rng.randint(0, 7)) for _ in range(rng.randint(1, most))]


def weight_bytes(content: bytes) -> set[int]:
    """Positions of constant buffer data: flips there change numbers, not structure."""
    from edged.model.schema import schema

    model = schema.Model.GetRootAs(content, 0)
    spans = set()
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))
            spans.update(range(start, start + buf.DataLength()))
    return spans


def load_and_run(content: bytes) -> str:
    """'ok' or 'edged_error'; any other exception propagates."""
    try:
        engine = LiteRTEngine(content)
        spec = engine.inputs[0]
        engine.infer([np.zeros((1, *spec.shape), spec.dtype)])
    except EdgedError:
        return "edged_error"
    return "ok"


_CODES = {"ok": 0, "edged_error": 1}


def run_in_child(content: bytes) -> str:
    """The outcome of ``load_and_run`` in a forked child: a signal's name if it died by one."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            code = _CODES[load_and_run(content)]
        except BaseException:  # anything else, even SystemExit, is reported as code 3
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return {0: "ok", 1: "edged_error", 3: "other_exception"}.get(os.WEXITSTATUS(status), "exit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    parser.add_argument("--structure-only", action="store_true", help="never flip constant buffer data")
    args = parser.parse_args(argv)
    content = args.fixture.read_bytes()
    skip = weight_bytes(content) if args.structure_only else set()
    positions = [p for p in range(8, len(content)) if p not in skip]
    outcomes: Counter[str] = Counter()
    crashes = []
    for run in range(args.runs):
        rng = random.Random(args.seed * 1_000_003 + run)
        flips = random_flips(rng, positions)
        outcome = run_in_child(flip(content, flips))
        outcomes[outcome] += 1
        if outcome not in ("ok", "edged_error"):
            crashes.append({"run": run, "outcome": outcome, "flips": flips})
            print(json.dumps(crashes[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"outcomes": outcomes, "crashes": crashes}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
