"""Load and run an untrusted model in a child process.

LiteRT validates a model's flatbuffer but still crashes the process on some
corrupt files (seen here: a model with an empty subgraph list). A daemon must
not die because somebody dropped a bad file in its path, so models that come
from outside are first loaded, and run on zeros (batch 1 and 2), in a
short-lived child.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from edged.errors import EdgedError, ModelFormatError


def probe_model(content: bytes, engine: str, label: str, timeout_s: float = 120.0) -> None:
    """Raise ModelFormatError if loading or running ``content`` fails or crashes in a child."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edged.runtime.probe", engine, label],
            input=content,
            capture_output=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelFormatError(f"{label}: loading the model took over {timeout_s:.0f} s in a probe") from exc
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ModelFormatError(f"{label}: the {engine} engine crashed ({name}) loading this model; refused")
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ModelFormatError(lines[-1] if lines else f"{label}: probe failed ({done.returncode})")


def _main() -> int:
    import numpy as np

    from edged.runtime.litert import LiteRTEngine
    from edged.runtime.native import NativeEngine

    engine, label = sys.argv[1], sys.argv[2]
    content = sys.stdin.buffer.read()
    try:
        e = NativeEngine.from_bytes(content, label) if engine == "native" else LiteRTEngine(content, label)
        # Batch 2 as well: a model whose per-sample layout is wrong overruns the second sample.
        for batch in (1, 2):
            e.infer([np.zeros((batch, *s.shape), s.dtype) for s in e.inputs])
    except EdgedError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
