"""Structurally mutated models load as a working engine or fail with an EdgedError, never otherwise.

Each run edits one to three IR fields of a seed model (a shape, a dtype, a
scale or zero point, a constant's buffer, an option, an operator's wiring)
with a seeded RNG, writes the file back with edged's writer, loads it in the
native engine and runs it on zeros. The runs happen in a child process, so a
crash in C fails this test with the seed that reproduces it instead of
killing pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mutated_models_load_or_fail_with_an_edged_error(tmp_path, seed):
    env = {**os.environ, "EDGED_MAX_ARENA_BYTES": str(64 << 20), "EDGED_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run_mutations", "--runs", "400", "--seed", str(seed),
         "--save", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode >= 0, (
        f"crashed ({done.returncode}) on {tmp_path / 'current.tflite'}: {done.stderr[-2000:]}"
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failures"] == [], report["failures"][:5]
    outcomes = report["outcomes"]
    # The mutations reach both sides of the checks: some mutants still run, many are refused.
    assert outcomes.get("ok", 0) > 20 and outcomes.get("ModelFormatError", 0) > 100, outcomes
