"""`edged compress --finetune`: on by default, a normal int8 file, SIGTERM keeps the best checkpoint."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np

from edged.cli import main
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine


def calibration(tmp_path, n: int = 200, labels: bool = True):
    model = default_model_path("digits_mlp")
    images, y = load_digits_test()
    x = digits_for(read_tflite(model), images[:n])
    path = tmp_path / "calib.npz"
    np.savez(path, **({"x": x, "y": y[:n]} if labels else {"x": x}))
    return model, x, path


def test_compress_finetunes_by_default_and_writes_an_int8_model_litert_runs(tmp_path, capsys):
    model, x, calib = calibration(tmp_path)
    out = tmp_path / "tuned.tflite"
    args = ["compress", str(model), "--strategy", "magnitude", "--sparsity", "0.9", "--block", "16x4",
            "--no-reconstruct", "--calib", str(calib), "-o", str(out), "--finetune-epochs", "3",
            "--finetune-time-s", "600"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "fine-tuned: 3 epochs" in text
    native = NativeEngine.from_file(out).infer([x])[0]
    assert np.array_equal(native, LiteRTEngine.from_file(out).infer([x])[0])
    assert main([*args[:-4], "--no-finetune"]) == 0
    assert "fine-tuned" not in capsys.readouterr().out


def test_labels_out_of_range_are_refused(tmp_path, capsys):
    model, x, _ = calibration(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x, y=np.full(len(x), 12))
    assert main(["compress", str(model), "--strategy", "magnitude", "--sparsity", "0.5", "--block", "1x1",
                 "--no-reconstruct", "--calib", str(bad), "-o", str(tmp_path / "o.tflite")]) != 0
    assert "label 12 is out of range" in capsys.readouterr().err


def test_sigterm_stops_finetuning_and_writes_the_best_checkpoint(tmp_path):
    model, x, calib = calibration(tmp_path, labels=False)
    out = tmp_path / "stopped.tflite"
    cmd = [sys.executable, "-m", "edged.cli", "compress", str(model), "--strategy", "magnitude",
           "--sparsity", "0.8", "--block", "1x1", "--no-reconstruct", "--calib", str(calib), "-o", str(out),
           "--finetune-epochs", "1000000", "--finetune-time-s", "3600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # wait until training is under way
            if "epoch 2:" in line:
                break
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout
    assert "(stop)" in stdout and out.exists()
    assert NativeEngine.from_file(out).infer([x])[0].shape == (len(x), 10)

