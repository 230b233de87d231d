"""The bundled digits models and the digits splits they were trained and tested on.

The files live in the repo's top-level ``models/`` folder, which installs as
the ``edged.models`` package (``edged/models/`` next to this module). They are
made by ``models/train_digits.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edged.errors import EdgedError, InputError
from edged.model.quant import QRANGE, round_half_away

TEST_SPLIT = "digits_test.npz"
TRAIN_SPLIT = "digits_train.npz"
# Raw load_digits pixels are 0..16; the models see x / 16 in [0, 1].
PIXEL_MAX = 16.0


def _candidate_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    dirs = [here / "models"]  # installed: edged/models/ (package data)
    try:  # editable installs map edged.models onto the repo's models/
        from importlib.resources import files

        res = files("edged.models")
        if isinstance(res, Path):
            dirs.append(res)
    except (ImportError, ModuleNotFoundError, TypeError):
        pass
    dirs.append(here.parent / "models")  # a source checkout: <repo>/models/
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _find(filename: str) -> Path:
    dirs = _candidate_dirs()
    for d in dirs:
        path = d / filename
        if path.is_file():
            return path
    raise EdgedError(
        f"bundled file {filename} not found (looked in {', '.join(str(d) for d in dirs)}); "
        "regenerate it with: python models/train_digits.py"
    )


def _models_dir() -> Path:
    for d in _candidate_dirs():
        if d.is_dir() and any(d.glob("*.tflite")):
            return d
    return _candidate_dirs()[-1]


MODELS_DIR: Path = _models_dir()


def default_model_path(name: str = "digits_mlp") -> Path:
    """Path of a bundled model: ``digits_mlp`` (the default) or ``digits_cnn``."""
    filename = name if name.endswith(".tflite") else f"{name}.tflite"
    return _find(filename)


def _load_split(filename: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(_find(filename)) as data:
        return data["images"].astype(np.uint8), data["labels"].astype(np.int64)


def load_digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The bundled test split: images uint8 [N, 8, 8] with raw values 0..16, labels int64 [N]."""
    return _load_split(TEST_SPLIT)


def load_digits_train() -> tuple[np.ndarray, np.ndarray]:
    """The split the bundled models were trained on (1437 images), as ``load_digits_test``.

    Calibration, traffic and fine-tuning data for benchmarks, with no download at run time.
    """
    return _load_split(TRAIN_SPLIT)


def digits_input(
    images: np.ndarray,
    input_spec_dtype,
    scale: float | None,
    zero_point: int | None,
    shape_per_sample: tuple[int, ...],
) -> np.ndarray:
    """Raw 0..16 digit images -> a model input batch ``[N, *shape_per_sample]``.

    Float inputs get ``x / 16``. Integer inputs are quantized like TFLite's
    QUANTIZE op: ``round(x / 16 / scale) + zero_point`` in float32, halves away
    from zero, clamped to the dtype's range.
    """
    images = np.asarray(images)
    n = images.shape[0] if images.ndim > 2 else 1
    images = images.reshape(n, -1)
    shape = tuple(int(d) for d in shape_per_sample)
    if images.shape[1] != int(np.prod(shape, dtype=np.int64)):
        raise InputError(
            f"digits images have {images.shape[1]} pixels, the model input takes shape {list(shape)}"
        )
    x = images.astype(np.float32) / np.float32(PIXEL_MAX)
    dtype = np.dtype(input_spec_dtype)
    if dtype.kind == "f":
        return x.astype(dtype).reshape((n, *shape))
    if dtype not in QRANGE:
        raise InputError(f"cannot feed digits images to an input of dtype {dtype}")
    if scale is None or zero_point is None:
        raise InputError(f"the {dtype} model input has no per-tensor quantization parameters")
    qmin, qmax = QRANGE[dtype]
    q = round_half_away(x / np.float32(scale)).astype(np.int64) + int(zero_point)
    return np.clip(q, qmin, qmax).astype(dtype).reshape((n, *shape))


def digits_for(graph, images: np.ndarray) -> np.ndarray:
    """Digit images as the input batch of ``graph`` (an IR graph): its dtype, per-tensor
    quantization and per-sample shape."""
    t = graph.input_tensors[0]
    scale = float(t.quant.scale[0]) if t.quant is not None else None
    zero_point = int(t.quant.zero_point[0]) if t.quant is not None else None
    return digits_input(images, t.dtype, scale, zero_point, t.shape[1:])
