"""Write the fuzzers' seed models: the smallest valid single-op model of every op.

    python -m tests.fuzz.make_corpus

Small seeds keep each fuzz run fast; the bundled digits CNN and the converter
fixtures are added to the corpus when the fuzzer starts (see .ci/run).
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, find, settings

from edged.model.tflite import write_tflite
from tests.singleop import OP_STRATEGIES
from tests.singleop_more import MORE_STRATEGIES

CORPUS = Path(__file__).resolve().parent / "corpus" / "models"


def main() -> None:
    CORPUS.mkdir(parents=True, exist_ok=True)
    quiet = settings(database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    for name, strategy in {**OP_STRATEGIES, **MORE_STRATEGIES}.items():
        graph, _ = find(strategy, lambda _: True, settings=quiet)
        path = CORPUS / f"{re.sub(r'[^a-z0-9]+', '_', name.lower())}.tflite"
        path.write_bytes(write_tflite(graph))
        print(path, path.stat().st_size)


if __name__ == "__main__":
    main()
