#!/usr/bin/env python3
"""Coverage-guided fuzzing of the model reader and planner (atheris, libFuzzer flags).

    python -m tests.fuzz.fuzz_models CORPUS_DIR [SEED_DIR ...] -max_total_time=60
    tests/fuzz/fuzz_models.py -merge=1 NEW_DIR OLD_DIR   (libFuzzer re-runs this file itself)

Each input is a .tflite file: it is read, planned for the native engine and,
if that succeeds, run on zeros at batch 1 and 3. The only acceptable failure
is an EdgedError; any other exception (or a crash in C) stops the fuzzer with
the input that caused it. Half of the mutations are structural (an IR field
edited, the file written back: tests/fuzz/mutations.py), the rest are
libFuzzer's byte mutations, which exercise the flatbuffer reader.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import atheris

if not __package__:  # run as a file (libFuzzer's -merge and -fork re-execute argv[0])
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# A mutant may ask for any arena up to the limit, three times over for batch 3:
# keep it well under libFuzzer's 2 GB RSS limit.
os.environ.setdefault("EDGED_MAX_ARENA_BYTES", str(64 << 20))
# The planner times layouts under "auto"; fuzzing uses the cost model (no timing, no cache).
os.environ.setdefault("EDGED_CACHE_DIR", "/tmp/edged-fuzz-cache")

with atheris.instrument_imports(include=["edged"]):
    import edged.model.tflite
    import edged.ops
    import edged.runtime.native
    import edged.runtime.plan  # noqa: F401

from edged.model.tflite import read_tflite
from tests.fuzz.mutations import load_and_run, mutate


def test_one_input(data: bytes) -> None:
    load_and_run(bytes(data), "<fuzz>")


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:
        try:
            graph = read_tflite(bytes(data))
        except Exception:
            graph = None
        if graph is not None:
            mutant = mutate(graph, rng, edits=rng.choice([1, 1, 2]))
            if mutant is not None and len(mutant) <= max_size:
                return mutant
    return atheris.Mutate(data, max_size)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
