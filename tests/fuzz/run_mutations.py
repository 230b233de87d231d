"""Run structural mutations of the seed models and report how each load ended.

    python -m tests.fuzz.run_mutations --runs 2000 --seed 0 [--save DIR]

Prints one JSON line: outcome counts, and the failures (a non-EdgedError
exception, with the run that produced it). Before each load the mutant is
written to DIR/current.tflite, so a run that kills the process leaves the
file that did it. The seeded test runs this in a child process.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import traceback
from collections import Counter
from pathlib import Path

from edged.model.tflite import read_tflite
from tests.fuzz.mutations import load_and_run, mutate

ROOT = Path(__file__).resolve().parents[2]
SEED_MODELS = sorted([*ROOT.glob("models/*.tflite"), *ROOT.glob("tests/fixtures/converter/*.tflite"),
                      *ROOT.glob("tests/fixtures/ops/*.tflite"),
                      *ROOT.glob("tests/fuzz/corpus/models/*.tflite")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args(argv)
    graphs = [read_tflite(p) for p in SEED_MODELS]
    outcomes: Counter[str] = Counter()
    failures = []
    for run in range(args.runs):
        rng = random.Random(args.seed * 1_000_003 + run)
        content = mutate(rng.choice(graphs), rng, edits=rng.choice([1, 1, 2, 3]))
        if content is None:
            outcomes["unwritable"] += 1
            continue
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / "current.tflite").write_bytes(content)
        try:
            outcomes[load_and_run(content)] += 1
        except Exception as exc:  # the bug this hunts: anything but an EdgedError
            outcomes["failure"] += 1
            failures.append({"run": run, "error": f"{type(exc).__name__}: {exc}",
                             "where": traceback.format_exc().strip().splitlines()[-3]})
            if args.save is not None:
                (args.save / f"failure_{args.seed}_{run}.tflite").write_bytes(content)
    print(json.dumps({"outcomes": dict(outcomes), "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
