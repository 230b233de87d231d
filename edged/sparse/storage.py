"""How a compressed model's weights are stored in the file: the smallest TFLite sparse layout each.

Pruning leaves zeros; whether the file gets smaller depends on how they are
stored. For every int8 weight of a FULLY_CONNECTED, CONV_2D or
DEPTHWISE_CONV_2D operator with zeros, :func:`store_weights` encodes it in
TFLite's sparse encoding in each candidate layout (blocks of R output
channels x C inputs along the innermost dimension, 1x1 being unstructured),
counts the bytes each takes (values plus index arrays at the width the writer
uses), and keeps the smallest, or dense if no layout saves enough to pay for
its metadata. Every layout runs on the native engine (it reads any encoding)
and on LiteRT: 1x16 FULLY_CONNECTED weights through its sparse kernel, all
others behind a DENSIFY operator the writer adds (edged.sparse.densify).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edged.model.ir import Graph
from edged.sparse.densify import runs_sparse_in_litert
from edged.sparse.tflite_encoding import DENSE, SPARSE_CSR, TfliteSparsity, encode, sparsify_fc_weights

# Block shapes tried per weight: unstructured, the dot-product register tiles
# edged's kernels prune in, and LiteRT's 1x16.
CANDIDATE_BLOCKS = ((1, 1), (1, 4), (1, 8), (1, 16), (4, 4), (8, 4), (16, 4), (4, 1), (16, 1))
WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
# A sparse layout must save this share of the dense bytes, and at least
# MIN_SAVED_BYTES (a DENSIFY operator and the index tables cost a few hundred).
MIN_SAVING = 0.05
MIN_SAVED_BYTES = 512
# LiteRT runs 1x16 FULLY_CONNECTED weights on its sparse kernel, not through
# DENSIFY; that layout is kept when it is this close to the smallest.
LITERT_KERNEL_SLACK = 0.02
MODES = ("sparse", "litert-kernel", "dense")


@dataclass
class StoredWeight:
    """How one weight tensor is stored."""

    name: str
    layout: str  # "dense", "unstructured", "1x16 blocks", ...
    dense_bytes: int
    stored_bytes: int
    litert: str  # "dense kernel", "sparse kernel" (1x16 FC) or "DENSIFY"


def index_width(values: np.ndarray) -> int:
    """Bytes per entry of an index array as the writer stores it (uint8, uint16 or int32)."""
    top = int(values.max()) if values.size else 0
    return 1 if top <= 0xFF else 2 if top <= 0xFFFF else 4


def encoded_bytes(values: np.ndarray, sparsity: TfliteSparsity) -> int:
    """Bytes of the values and index arrays of an encoding."""
    total = int(values.nbytes)
    for meta in sparsity.dim_metadata:
        if meta.format == SPARSE_CSR:
            total += meta.array_segments.size * index_width(meta.array_segments)
            total += meta.array_indices.size * index_width(meta.array_indices)
    return total


def candidate_layouts(shape: tuple[int, ...]) -> list[tuple[str, tuple, tuple, tuple, tuple]]:
    """(label, traversal order, formats, block map, block sizes) for each block shape that tiles ``shape``.

    Blocks are R along the first (output) dimension and C along the last (the
    innermost input dimension); the level traversing the last dimension is the
    sparse one, so a row keeps only its nonzero blocks.
    """
    n = len(shape)
    out = []
    for r, c in CANDIDATE_BLOCKS:
        if n < 2 or shape[0] % r or shape[-1] % c:
            continue
        block_map = tuple(d for d, size in ((0, r), (n - 1, c)) if size > 1)
        sizes = tuple(size for size in (r, c) if size > 1)
        m = n + len(block_map)
        formats = tuple(SPARSE_CSR if level == n - 1 else DENSE for level in range(m))
        label = "unstructured" if (r, c) == (1, 1) else f"{r}x{c} blocks"
        out.append((label, tuple(range(m)), formats, block_map, sizes))
    return out


def weight_tensors(graph: Graph) -> list[int]:
    """int8 constant weights (input 1) of FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D operators."""
    found = []
    for op in graph.operators:
        if op.opcode in WEIGHT_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0:
            t = graph.tensors[op.inputs[1]]
            if t.is_constant and t.dtype == np.int8 and op.inputs[1] not in found:
                found.append(op.inputs[1])
    return found


def store_weights(graph: Graph, mode: str = "sparse") -> list[StoredWeight]:
    """Choose, in place, how each weight of ``graph`` is stored; returns one record per weight.

    ``sparse``: the smallest layout (see the module docstring). ``litert-kernel``:
    only the 1x16 layout LiteRT's sparse FULLY_CONNECTED kernel reads, where it
    applies (edged.sparse.tflite_encoding.sparsify_fc_weights). ``dense``: none.
    """
    if mode not in MODES:
        raise ValueError(f"unknown weight storage {mode!r}; choose one of {', '.join(MODES)}")
    weights = weight_tensors(graph)
    for i in weights:
        graph.tensors[i].sparsity = None
    if mode == "litert-kernel":
        sparsify_fc_weights(graph)
    elif mode == "sparse":
        consumers = graph.consumers()
        for i in weights:
            _choose(graph, i, consumers)
        _drop_bias_quantization(graph, [i for i in weights if graph.tensors[i].sparsity is not None])
    return [_record(graph, i) for i in weights]


def _drop_bias_quantization(graph: Graph, weights: list[int]) -> None:
    """Remove the quantization parameters of the int32 biases of int8 layers whose weights are stored sparse.

    Int8 kernels (LiteRT's and edged's) take the bias scale to be input scale x
    weight scale and never read the bias's own parameters; per channel they
    cost 12 bytes a channel (a float32 scale and an int64 zero point), a
    sizeable share of a pruned file. Only sparse layers lose them: a file with
    sparse weights runs on LiteRT's builtin kernels, never on a delegate that
    might want them.
    """
    for op in graph.operators:
        if op.opcode not in WEIGHT_OPS or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        if op.inputs[1] not in weights:
            continue
        x, bias = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[2]]
        if x.dtype == np.int8 and bias.is_constant and bias.dtype == np.int32:
            bias.quant = None


def _choose(graph: Graph, index: int, consumers: dict[int, list[int]]) -> None:
    t = graph.tensors[index]
    if np.count_nonzero(t.data) == t.size:
        return
    best: tuple[int, TfliteSparsity] | None = None
    kernel: tuple[int, TfliteSparsity] | None = None
    for _, order, formats, block_map, sizes in candidate_layouts(t.shape):
        values, sparsity = encode(t.data, order, formats, block_map, sizes)
        size = encoded_bytes(values, sparsity)
        if best is None or size < best[0]:
            best = (size, sparsity)
        if sparsity.is_fc_block_1x16:
            kernel = (size, sparsity)
    if best is None or best[0] > min(t.nbytes * (1 - MIN_SAVING), t.nbytes - MIN_SAVED_BYTES):
        return
    if kernel is not None and kernel[0] <= best[0] * (1 + LITERT_KERNEL_SLACK):
        t.sparsity = kernel[1]
        if runs_sparse_in_litert(graph, index, consumers):
            return
    t.sparsity = best[1]


def _record(graph: Graph, index: int) -> StoredWeight:
    t = graph.tensors[index]
    if t.sparsity is None:
        return StoredWeight(t.name, "dense", t.nbytes, t.nbytes, "dense kernel")
    values, sparsity = encode(t.data, t.sparsity.traversal_order, t.sparsity.formats,
                              t.sparsity.block_map, t.sparsity.block_sizes)
    layout = _label(t.shape, sparsity)
    litert = "sparse kernel" if runs_sparse_in_litert(graph, index) else "DENSIFY"
    return StoredWeight(t.name, layout, t.nbytes, encoded_bytes(values, sparsity), litert)


def _label(shape: tuple[int, ...], sparsity: TfliteSparsity) -> str:
    n = len(shape)
    block = dict(zip(sparsity.block_map, sparsity.block_sizes, strict=True))
    r, c = block.get(0, 1), block.get(n - 1, 1)
    return "unstructured" if (r, c) == (1, 1) else f"{r}x{c} blocks"


@dataclass
class LiteRTCheck:
    """Whether LiteRT (builtin kernels) runs a written file, and how close to the native engine."""

    runs: bool
    detail: str  # the error, or the agreement measured


def check_litert(content: bytes, x: np.ndarray, rows: int = 64) -> LiteRTCheck:
    """Run ``content`` on LiteRT and the native engine on up to ``rows`` inputs and compare.

    This is a measurement, not a rule: the file is handed to LiteRT as is
    (edged's LiteRT engine first refuses layouts LiteRT misreads or crashes on).
    """
    from edged.errors import EdgedError
    from edged.runtime.litert import LiteRTEngine
    from edged.runtime.native import NativeEngine

    x = x[:rows]
    try:
        native = NativeEngine.from_bytes(content, layout="dense").infer([x])[0]
        litert = LiteRTEngine(content, "<compressed>").infer([x])[0]
    except EdgedError as exc:
        return LiteRTCheck(False, str(exc))
    same = int(np.sum(np.all(native.reshape(len(x), -1) == litert.reshape(len(x), -1), axis=1)))
    top1 = float(np.mean(native.reshape(len(x), -1).argmax(1) == litert.reshape(len(x), -1).argmax(1)))
    return LiteRTCheck(True, f"{same}/{len(x)} calibration outputs bit-identical to the native engine's, "
                             f"top-1 agreement {top1:.0%}")


def describe_storage(stored: list[StoredWeight]) -> list[str]:
    """One line per weight stored sparse, and what LiteRT runs it with."""
    lines = []
    for s in stored:
        if s.layout == "dense":
            continue
        via = ("LiteRT's sparse FULLY_CONNECTED kernel" if s.litert == "sparse kernel"
               else "a DENSIFY op in front for LiteRT")
        lines.append(f"  {s.name}: {s.layout}, {s.stored_bytes} of {s.dense_bytes} bytes ({via})")
    return lines
