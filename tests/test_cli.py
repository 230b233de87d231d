"""The command line, run as a user would (through main(), and once as a real process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edged.cli import main
from edged.data import default_model_path
from edged.runtime.engine import load_engine
from edged.runtime.native import NativeEngine

FIXTURES = Path(__file__).parent / "fixtures"


def test_inspect_json(capsys):
    path = default_model_path("digits_cnn")
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [op["op"] for op in info["operators"]] == [
        "CONV_2D",
        "CONV_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "SOFTMAX",
    ]
    assert info["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert info["inputs"][0]["quantization"]["zero_point"] == -128
    assert info["parameters"] == 9930 + 2  # weights and biases, plus the reshape's shape constant
    assert info["file_bytes"] == path.stat().st_size
    assert info["native_supported"]


def test_inspect_text(capsys):
    assert main(["inspect", str(default_model_path("digits_mlp"))]) == 0
    out = capsys.readouterr().out
    assert "FULLY_CONNECTED" in out and "per-channel[1024]" in out and "native engine: yes" in out


@pytest.mark.parametrize("engine", ["native", "litert"])
def test_run_writes_the_engine_output(tmp_path, engine, capsys):
    path = default_model_path("digits_mlp")
    x = np.random.default_rng(3).integers(-128, 128, (5, 64)).astype(np.int8)
    np.save(tmp_path / "in.npy", x)
    assert (
        main(
            [
                "run",
                str(path),
                "--input",
                str(tmp_path / "in.npy"),
                "--output",
                str(tmp_path / "out.npy"),
                "--engine",
                engine,
            ]
        )
        == 0
    )
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.int8 and out.shape == (5, 10)
    assert np.array_equal(out, load_engine(path, "litert").infer([x])[0])
    assert main(["run", str(path), "--input", str(tmp_path / "in.npy")]) == 0
    assert "argmax per sample" in capsys.readouterr().out


def test_bench_json_last_line(capsys):
    assert main(["bench", str(default_model_path("digits_cnn")), "--runs", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["engines"]) == {"native", "litert", "litert_xnnpack"}
    for stats in result["engines"].values():
        assert stats["p50_us"] > 0 and stats["p99_us"] >= stats["p50_us"] and stats["per_s"] > 0
    assert result["native_over_litert_p50"] > 0
    assert result["native_over_litert_xnnpack_p50"] > 0


def test_bench_per_op_times_every_native_kernel(capsys):
    model = FIXTURES / "dynamic_batch" / "mobilenet_v3_small.tflite"
    assert main(["bench", str(model), "--engine", "native", "--runs", "20", "--per-op", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    engine = NativeEngine.from_file(model)
    steps = engine._executor().descriptor_steps
    assert [o["index"] for o in result["native_per_op"]] == [s.index for s in steps]
    assert [o["opcode"] for o in result["native_per_op"]] == [s.opcode for s in steps]
    assert {"HARD_SWISH", "MUL", "ADD", "DEPTHWISE_CONV_2D"} <= {o["opcode"] for o in result["native_per_op"]}
    assert all(o["p50_us"] >= 0 for o in result["native_per_op"])
    assert sum(o["p50_us"] for o in result["native_per_op"]) > 0
    assert main(["bench", str(model), "--engine", "litert", "--runs", "5", "--per-op"]) == 2
    assert "--per-op profiles the native engine" in capsys.readouterr().err


def test_eval_as_a_process():
    done = subprocess.run(
        [sys.executable, "-m", "edged.cli", "eval", "--runs", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "accuracy  98.06%" in done.stdout


def _calibration_file(tmp_path, n: int):
    """The bundled MLP, n digits images as its input batch, and a calib.npz of them with labels."""
    from edged.data import digits_for, load_digits_test
    from edged.model.tflite import read_tflite

    model = default_model_path("digits_mlp")
    images, labels = load_digits_test()
    x = digits_for(read_tflite(model), images[:n])
    path = tmp_path / "calib.npz"
    np.savez(path, x=x, y=labels[:n])
    return model, x, path


def test_compress_writes_a_pruned_model_and_reports_it(tmp_path, capsys):
    from edged.model.tflite import read_tflite

    model, x, _ = _calibration_file(tmp_path, 100)
    out = tmp_path / "small.tflite"
    assert main(["compress", str(model), "--sparsity", "0.5", "--block", "1x1",
                 "--calib", str(tmp_path / "calib.npz"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sparsity 50.0% of prunable weights" in text and "output KL" in text
    assert "accuracy on the calibration labels" in text
    w = read_tflite(out).tensors[read_tflite(out).operators[1].inputs[1]].data
    assert 1 - np.count_nonzero(w) / w.size >= 0.49
    small = tmp_path / "smaller.tflite"
    assert main(["compress", str(model), "--sparsity", "0.5", "--block", "1x16", "--sparse-encoding",
                 "--calib", str(tmp_path / "calib.npz"), "-o", str(small)]) == 0
    text = capsys.readouterr().out
    assert "1x16 blocks" in text and "LiteRT's sparse FULLY_CONNECTED kernel" in text
    assert small.stat().st_size < out.stat().st_size
    ratio = model.stat().st_size / small.stat().st_size
    assert f"file: {small.stat().st_size} bytes, {ratio:.2f}x smaller than the input file" in text
    from edged.runtime.litert import LiteRTEngine
    from edged.runtime.native import NativeEngine

    native = NativeEngine.from_file(small).infer([x])[0]
    assert np.array_equal(native, LiteRTEngine.from_file(small).infer([x])[0])
    assert main(["compress", str(model), "--sparsity", "2", "--block", "1x1",
                 "--calib", str(tmp_path / "calib.npz"), "-o", str(out)]) != 0
    assert "sparsity must be in (0, 1)" in capsys.readouterr().err


def test_compress_hmatrix_options(tmp_path, capsys):
    model, x, calib = _calibration_file(tmp_path, 60)
    out = str(tmp_path / "h.tflite")
    args = ["compress", str(model), "--calib", str(calib), "-o", out]
    assert main([*args, "--strategy", "hmatrix", "--tolerance", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "bytes as int8 factors" in text and "served as FULLY_CONNECTED pieces" in text
    assert (tmp_path / "h.tflite").stat().st_size < model.stat().st_size * 0.7
    from edged.runtime.litert import LiteRTEngine
    from edged.runtime.native import NativeEngine

    native = NativeEngine.from_file(tmp_path / "h.tflite").infer([x])[0]
    assert np.array_equal(native, LiteRTEngine.from_file(tmp_path / "h.tflite").infer([x])[0])
    assert main([*args, "--strategy", "hmatrix", "--tolerance", "0.5", "--export", "hmatrix"]) == 0
    assert "served as EDGED_HMATRIX: 3" in capsys.readouterr().out
    from edged.runtime.reference import ReferenceEngine

    native = NativeEngine.from_file(tmp_path / "h.tflite")
    assert np.array_equal(native.infer([x])[0], ReferenceEngine(native.graph).run([x])[0])
    assert main(["bench", out, "--runs", "20", "--json"]) != 0  # LiteRT cannot run it...
    assert "--engine native" in capsys.readouterr().err
    assert main(["bench", out, "--runs", "20", "--json", "--baseline", str(model)]) == 0  # ...its source
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["litert_model"] == str(model)
    assert main([*args, "--strategy", "hmatrix", "--tolerance", "1.5"]) != 0
    assert "--tolerance must be in (0, 1)" in capsys.readouterr().err
    assert main([*args, "--strategy", "magnitude", "--tolerance", "0.3"]) != 0
    assert "applies to the hmatrix and svd" in capsys.readouterr().err
    assert main([*args, "--strategy", "svd"]) != 0
    assert "give one of --tolerance" in capsys.readouterr().err


def test_compress_patterns_greedy_and_learned(tmp_path, capsys):
    model, x, calib = _calibration_file(tmp_path, 60)
    out = str(tmp_path / "p.tflite")
    args = ["compress", str(model), "--strategy", "pattern", "--calib", str(calib), "-o", out,
            "--block", "16x4"]
    assert main([*args, "--kl-budget", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "output channels removed" in text
    from edged.runtime.litert import LiteRTEngine
    from edged.runtime.native import NativeEngine

    native = NativeEngine.from_file(out).infer([x])[0]
    assert np.array_equal(native, LiteRTEngine.from_file(out).infer([x])[0])
    assert main([*args, "--kl-budget", "0.05", "--policy", "learned", "--time-budget-s", "1"]) == 0
    assert "candidates measured" in capsys.readouterr().out
    assert main([*args, "--sparsity", "0.5", "--policy", "learned"]) != 0
    assert "takes a --kl-budget" in capsys.readouterr().err
