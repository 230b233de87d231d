"""Models from outside are tried in a child process; LiteRT-crashing files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.errors import ModelFormatError
from edged.runtime.litert import LiteRTEngine
from edged.runtime.probe import probe_model

ROOT = Path(__file__).resolve().parents[2]
# A bit-flipped converter model on which LiteRT's own loader segfaults (found
# by the corrupt-model property test): its subgraph vector is unreadable.
SEGFAULT = ROOT / "tests" / "fixtures" / "corrupt" / "litert_segfault.tflite"
GOOD = ROOT / "models" / "digits_cnn.tflite"


def test_litert_engine_rejects_it_before_litert_sees_it():
    with pytest.raises(ModelFormatError, match="no subgraph"):
        LiteRTEngine(SEGFAULT.read_bytes(), "bad.tflite")


@pytest.mark.parametrize("engine", ["native", "litert"])
def test_probe_refuses_it_with_the_reason(engine):
    with pytest.raises(ModelFormatError, match="no subgraph"):
        probe_model(SEGFAULT.read_bytes(), engine, "bad.tflite")


@pytest.mark.parametrize("engine", ["native", "litert"])
def test_probe_accepts_a_good_model(engine):
    probe_model(GOOD.read_bytes(), engine, "digits_cnn")


def test_probe_reports_unreadable_bytes():
    with pytest.raises(ModelFormatError, match=r"not a \.tflite"):
        probe_model(b"x" * 64, "native", "junk")
