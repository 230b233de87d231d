"""TFLite's own sparse tensor encoding (``SparsityParameters``), without the schema.

A .tflite constant may be stored sparse: its buffer then holds only the values
that a per-level index structure (a TACO-style tree) says are present. edged
keeps every tensor dense in memory, so this module does two things:

* :func:`densify` decodes any valid encoding back to the dense array, and
  rejects corrupt ones with :class:`~edged.errors.ModelFormatError`, because
  the encoding comes straight from an untrusted file;
* :func:`encode` (and :func:`encode_block_sparse`, the 1x16 block layout of
  LiteRT's sparse int8 FULLY_CONNECTED kernel) produce an encoding from a dense
  array, so that the writer can store a tensor sparse again after edits.

The encoding, as in tensorflow/lite/schema/schema.fbs: an n-D tensor with a
k-D block (``block_map[i]`` names the tensor dimension block dimension ``i``
splits) is viewed as an (n + k)-D tensor: dimension ``d < n`` counts blocks
along ``d`` (or elements, if ``d`` is not blocked) and dimension ``n + i`` runs
inside block ``i``. ``traversal_order`` lists these n + k dimensions in storage
order (the first n permute 0..n-1, the last k permute n..n+k-1), and
``dim_metadata[level]`` describes the dimension traversed at that level: DENSE
(all ``dense_size`` coordinates are present) or SPARSE_CSR (each position of
the previous level owns the segment ``array_indices[segments[p]:segments[p+1]]``
of present coordinates). The values are stored in traversal order. Block sizes
are the ``dense_size`` of the block dimensions, which must be DENSE.

:func:`sparsify_fc_weights` marks the weights of FULLY_CONNECTED operators of a
graph for 1x16 block storage; the .tflite writer does the encoding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edged.errors import ModelFormatError

if TYPE_CHECKING:
    from edged.model.ir import Graph

DENSE = "DENSE"
SPARSE_CSR = "SPARSE_CSR"
FORMATS = (DENSE, SPARSE_CSR)

# TFLite sizes are int32; a "sparse" tensor claiming more elements is corrupt.
MAX_ELEMENTS = 2**31 - 1
# The block length along the input depth of LiteRT's sparse int8 FC kernel.
FC_BLOCK = 16


@dataclass
class DimMetadata:
    """How one level of the traversal is stored.

    DENSE levels have ``dense_size``; SPARSE_CSR levels have ``array_segments``
    (one more entry than the previous level has positions) and
    ``array_indices`` (the present coordinates), as int64 arrays.
    """

    format: str
    dense_size: int = 0
    array_segments: np.ndarray | None = None
    array_indices: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.dense_size = int(self.dense_size)
        if self.array_segments is not None:
            self.array_segments = np.asarray(self.array_segments, dtype=np.int64).reshape(-1)
        if self.array_indices is not None:
            self.array_indices = np.asarray(self.array_indices, dtype=np.int64).reshape(-1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DimMetadata):
            return NotImplemented
        return (
            self.format == other.format
            and (self.format != DENSE or self.dense_size == other.dense_size)
            and _same(self.array_segments, other.array_segments)
            and _same(self.array_indices, other.array_indices)
        )


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None) == (b is None) and (a is None or np.array_equal(a, b))


@dataclass
class TfliteSparsity:
    """A tensor's TFLite sparsity parameters (schema-free, like the rest of the IR)."""

    traversal_order: tuple[int, ...]
    block_map: tuple[int, ...] = ()
    dim_metadata: list[DimMetadata] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.traversal_order = tuple(int(d) for d in self.traversal_order)
        self.block_map = tuple(int(d) for d in self.block_map)
        self.dim_metadata = list(self.dim_metadata)

    @property
    def formats(self) -> tuple[str, ...]:
        """The storage format of each traversal level."""
        return tuple(m.format for m in self.dim_metadata)

    @property
    def block_sizes(self) -> tuple[int, ...]:
        """The size of each block dimension (the dense_size of its level)."""
        n = len(self.traversal_order) - len(self.block_map)
        return tuple(
            self.dim_metadata[self.traversal_order.index(n + i)].dense_size
            for i in range(len(self.block_map))
        )

    @property
    def is_fc_block_1x16(self) -> bool:
        """True for the layout LiteRT's sparse int8 FULLY_CONNECTED kernel runs."""
        return (
            self.traversal_order == (0, 1, 2)
            and self.block_map == (1,)
            and self.formats == (DENSE, SPARSE_CSR, DENSE)
            and self.dim_metadata[2].dense_size == FC_BLOCK
        )


# ---------------------------------------------------------------- layout


@dataclass
class _Layout:
    """A validated layout: the size and dense-array stride of every level."""

    sizes: list[int]
    strides: list[int]


def _layout(
    shape: Sequence[int],
    traversal_order: Sequence[int],
    block_map: Sequence[int],
    formats: Sequence[str],
    block_sizes: Sequence[int],
) -> _Layout:
    """Check a layout against ``shape``; raises ValueError naming the first problem."""
    n, k = len(shape), len(block_map)
    m = n + k
    if any(d < 0 for d in shape):
        raise ValueError(f"shape {list(shape)} has a negative dimension")
    if len(traversal_order) != m:
        raise ValueError(
            f"traversal_order has {len(traversal_order)} entries, expected {m} "
            f"({n} tensor dimensions + {k} block dimensions)"
        )
    if sorted(traversal_order[:n]) != list(range(n)):
        raise ValueError(
            f"traversal_order {list(traversal_order)}: the first {n} entries must permute 0..{n - 1}"
        )
    if sorted(traversal_order[n:]) != list(range(n, m)):
        raise ValueError(
            f"traversal_order {list(traversal_order)}: the last {k} entries must permute {n}..{m - 1}"
        )
    if any(not 0 <= d < n for d in block_map) or len(set(block_map)) != k:
        raise ValueError(f"block_map {list(block_map)} must name distinct dimensions of a rank-{n} tensor")
    if len(formats) != m:
        raise ValueError(f"{len(formats)} dimension formats for {m} traversal levels")
    for level, fmt in enumerate(formats):
        if fmt not in FORMATS:
            raise ValueError(f"level {level} has unknown dimension format {fmt!r}")
    if len(block_sizes) != k:
        raise ValueError(f"{len(block_sizes)} block sizes for {k} block dimensions")

    dense_strides = [int(np.prod(shape[d + 1 :], dtype=np.int64)) for d in range(n)]
    expanded_sizes = [int(d) for d in shape] + [0] * k
    expanded_strides = dense_strides + [0] * k
    for i, (dim, size) in enumerate(zip(block_map, block_sizes, strict=True)):
        level = list(traversal_order).index(n + i)
        if formats[level] != DENSE:
            raise ValueError(f"block dimension {n + i} (level {level}) must be DENSE to give its block size")
        if size <= 0 or shape[dim] % size:
            raise ValueError(f"block size {size} along dimension {dim} does not divide its size {shape[dim]}")
        expanded_sizes[dim] = shape[dim] // size
        expanded_sizes[n + i] = size
        expanded_strides[dim] = dense_strides[dim] * size
        expanded_strides[n + i] = dense_strides[dim]
    return _Layout(
        sizes=[expanded_sizes[d] for d in traversal_order],
        strides=[expanded_strides[d] for d in traversal_order],
    )


# ---------------------------------------------------------------- decoding


def densify(values: np.ndarray, sparsity: TfliteSparsity, shape: Sequence[int]) -> np.ndarray:
    """The dense array of ``shape`` that ``values`` stored with ``sparsity`` encode.

    Every index array is checked before it is used, so a corrupt encoding
    raises ModelFormatError saying what is wrong (never an IndexError or a
    numpy error, and never a huge allocation the file does not pay for).
    Elements the encoding does not store are zero.
    """
    values = np.asarray(values).reshape(-1)
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ModelFormatError(f"sparse tensor has a negative dimension in shape {list(shape)}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise ModelFormatError(f"sparse tensor of shape {list(shape)} has more than 2^31 - 1 elements")
    levels = sparsity.dim_metadata
    n_levels = len(sparsity.traversal_order)
    if len(levels) != n_levels:
        raise ModelFormatError(
            f"sparsity has {len(levels)} dim_metadata entries for {n_levels} traversal levels"
        )
    n = len(shape)
    block_sizes = []
    for i in range(len(sparsity.block_map)):
        level = next((lv for lv, d in enumerate(sparsity.traversal_order) if d == n + i), None)
        block_sizes.append(levels[level].dense_size if level is not None else 0)
    try:
        layout = _layout(shape, sparsity.traversal_order, sparsity.block_map, sparsity.formats, block_sizes)
    except ValueError as exc:
        raise ModelFormatError(f"invalid sparsity: {exc}") from exc

    # First pass: sizes only, so that a corrupt encoding is rejected before any
    # allocation proportional to what it claims.
    positions = 1
    for level, (meta, size) in enumerate(zip(levels, layout.sizes, strict=True)):
        if meta.format == DENSE:
            if meta.dense_size != size:
                raise ModelFormatError(
                    f"sparsity level {level} is DENSE with dense_size {meta.dense_size}, "
                    f"but the dimension it traverses has size {size}"
                )
            positions *= size
            continue
        segments, indices = meta.array_segments, meta.array_indices
        if segments is None or indices is None:
            raise ModelFormatError(f"sparsity level {level} is SPARSE_CSR but lacks its segments or indices")
        if segments.size != positions + 1:
            raise ModelFormatError(
                f"sparsity level {level} has {segments.size} array_segments, expected {positions + 1} "
                f"(one more than the {positions} positions of the level above)"
            )
        if segments[0] != 0:
            raise ModelFormatError(f"sparsity level {level}: array_segments starts at {segments[0]}, not 0")
        drops = np.flatnonzero(np.diff(segments) < 0)
        if drops.size:
            p = int(drops[0])
            raise ModelFormatError(
                f"sparsity level {level}: array_segments decreases at position {p} "
                f"({segments[p]} -> {segments[p + 1]})"
            )
        if segments[-1] != indices.size:
            raise ModelFormatError(
                f"sparsity level {level}: array_segments ends at {segments[-1]} "
                f"but array_indices has {indices.size} entries"
            )
        bad = np.flatnonzero((indices < 0) | (indices >= size))
        if bad.size:
            i = int(bad[0])
            raise ModelFormatError(
                f"sparsity level {level}: array_indices[{i}] = {indices[i]} is out of range "
                f"for a dimension of size {size}"
            )
        positions = indices.size
    if values.size != positions:
        raise ModelFormatError(
            f"sparse tensor stores {values.size} values, its encoding addresses {positions}"
        )

    # Second pass: the dense offset of every stored value, level by level.
    offsets = np.zeros(1, dtype=np.int64)
    for level, (meta, size, stride) in enumerate(zip(levels, layout.sizes, layout.strides, strict=True)):
        if meta.format == DENSE:
            offsets = (offsets[:, None] + np.arange(size, dtype=np.int64) * stride).reshape(-1)
            continue
        parent = np.repeat(np.arange(offsets.size, dtype=np.int64), np.diff(meta.array_segments))
        keys = np.sort(parent * size + meta.array_indices)
        dup = np.flatnonzero(np.diff(keys) == 0)
        if dup.size:
            p, c = divmod(int(keys[dup[0]]), size)
            raise ModelFormatError(
                f"sparsity level {level}: coordinate {c} appears twice in the segment of position {p}"
            )
        offsets = offsets[parent] + meta.array_indices * stride
    dense = np.zeros(count, dtype=values.dtype)
    dense[offsets] = values
    return dense.reshape(shape)


# ---------------------------------------------------------------- encoding


def encode(
    dense: np.ndarray,
    traversal_order: Sequence[int],
    formats: Sequence[str],
    block_map: Sequence[int] = (),
    block_sizes: Sequence[int] = (),
) -> tuple[np.ndarray, TfliteSparsity]:
    """Encode ``dense`` in the given layout; returns (values, sparsity).

    A SPARSE_CSR level keeps a coordinate iff the sub-tensor below it holds a
    nonzero (TFLite's own converter does the same); DENSE levels keep every
    coordinate, so zeros inside kept blocks are stored. An all-zero tensor
    keeps its first block: an empty buffer would make readers (LiteRT among
    them) take the tensor for a non-constant one.
    """
    dense = np.asarray(dense)
    n = dense.ndim
    layout = _layout(dense.shape, traversal_order, block_map, formats, block_sizes)
    # View the tensor as (n + k)-D with the block dims split off, in traversal order.
    split: list[int] = []
    axis_of: list[int] = [0] * (n + len(block_map))
    block_of = {d: i for i, d in enumerate(block_map)}
    for d, size in enumerate(dense.shape):
        axis_of[d] = len(split)
        if d in block_of:
            i = block_of[d]
            split += [size // block_sizes[i], block_sizes[i]]
            axis_of[n + i] = len(split) - 1
        else:
            split.append(size)
    tree = dense.reshape(split).transpose([axis_of[d] for d in traversal_order])

    present = tree != 0
    if present.size and not present.any():
        present.flat[0] = True
    # below[level]: does the sub-tensor under each prefix of length level + 1 hold a value?
    below = [present]
    for _ in range(len(layout.sizes) - 1):
        below.insert(0, below[0].any(axis=-1))
    kept = np.ones((), dtype=bool)
    metadata = []
    for level, (fmt, size) in enumerate(zip(formats, layout.sizes, strict=True)):
        if fmt == DENSE:
            kept = np.broadcast_to(kept[..., None], (*kept.shape, size))
            metadata.append(DimMetadata(DENSE, dense_size=size))
            continue
        rows = (kept[..., None] & below[level]).reshape(kept.size, size)[kept.reshape(-1)]
        segments = np.concatenate([[0], np.cumsum(rows.sum(axis=1, dtype=np.int64))])
        metadata.append(DimMetadata(SPARSE_CSR, 0, segments, np.nonzero(rows)[1]))
        kept = kept[..., None] & below[level]
    values = np.ascontiguousarray(tree).reshape(-1)[kept.reshape(-1)]
    sparsity = TfliteSparsity(tuple(traversal_order), tuple(block_map), metadata)
    return values, sparsity


def encode_like(dense: np.ndarray, sparsity: TfliteSparsity) -> tuple[np.ndarray, TfliteSparsity]:
    """Re-encode ``dense`` in the layout of ``sparsity`` (its indices are recomputed).

    This is how the writer stores a tensor that was read sparse: edits to the
    dense data are honoured, the storage layout is kept. The result is the
    canonical encoding of the data, so an all-zero block that another writer
    stored explicitly is dropped (the dense tensor is the same).
    """
    return encode(dense, sparsity.traversal_order, sparsity.formats, sparsity.block_map, sparsity.block_sizes)


def encode_block_sparse(
    dense: np.ndarray, block: tuple[int, int] = (1, FC_BLOCK)
) -> tuple[np.ndarray, TfliteSparsity]:
    """Encode a 2-D weight matrix [out_c, in_c] with only its nonzero blocks stored.

    With the default 1x16 block this is the layout LiteRT's sparse int8
    FULLY_CONNECTED kernel runs: traversal order [0, 1, 2], block_map [1],
    out_c DENSE, blocks of 16 along in_c SPARSE_CSR, the 16 inside a block
    DENSE. A taller block (bh > 1) also splits dimension 0.
    """
    dense = np.asarray(dense)
    if dense.ndim != 2:
        raise ValueError(f"block-sparse encoding needs a 2-D [out_c, in_c] matrix, got shape {dense.shape}")
    bh, bw = (int(b) for b in block)
    out_c, in_c = dense.shape
    if bh < 1 or bw < 1 or out_c % bh or in_c % bw:
        raise ValueError(
            f"a {bh}x{bw} block does not tile a [{out_c}, {in_c}] matrix: "
            f"out_c must be a multiple of {bh} and in_c a multiple of {bw}"
        )
    if bh == 1:
        return encode(dense, (0, 1, 2), (DENSE, SPARSE_CSR, DENSE), (1,), (bw,))
    return encode(dense, (0, 1, 2, 3), (DENSE, SPARSE_CSR, DENSE, DENSE), (0, 1), (bh, bw))


# ---------------------------------------------------------------- graphs


def sparsify_fc_weights(graph: Graph, ops: Iterable[int] | None = None) -> list[str]:
    """Mark FULLY_CONNECTED int8 weights for 1x16 block-sparse storage on write.

    ``ops`` lists operator indices (all FULLY_CONNECTED operators if None). A
    weight qualifies only where LiteRT's sparse int8 kernel runs it: int8 input
    and output, a 2-D int8 constant weight with in_c a multiple of 16 and zero
    point 0, read by no other operator (any other kernel would read the value
    buffer as if it were dense). An operator named in ``ops`` that does not
    qualify is a ValueError, others are skipped. Returns the marked names.

    LiteRT runs such a file with its builtin kernels only: its default XNNPACK
    delegate ignores the encoding and reads the value buffer as dense weights.
    The sparse kernel also rounds requantization ties away from zero where the
    dense one rounds them up, so a few outputs are one step lower.
    """
    explicit = ops is not None
    indices = list(ops) if ops is not None else range(len(graph.operators))
    consumers = graph.consumers()
    marked = []
    for i in indices:
        problem = _fc_problem(graph, i, consumers)
        if problem:
            if explicit:
                raise ValueError(f"operator #{i} ({graph.operators[i].opcode}) {problem}")
            continue
        weight = graph.tensors[graph.operators[i].inputs[1]]
        weight.sparsity = encode_block_sparse(weight.data)[1]
        marked.append(weight.name)
    return marked


def _fc_problem(graph: Graph, index: int, consumers: dict[int, list[int]]) -> str | None:
    """Why LiteRT's sparse int8 FULLY_CONNECTED could not run operator ``index`` (None if it can)."""
    op = graph.operators[index]
    if op.opcode != "FULLY_CONNECTED":
        return "is not FULLY_CONNECTED"
    x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if x.dtype != np.int8 or y.dtype != np.int8:
        return f"runs {x.dtype} -> {y.dtype}; the sparse kernel is int8 -> int8"
    weight = graph.tensors[op.inputs[1]]
    if weight.data is None:
        return f"has a non-constant weight '{weight.name}'"
    if weight.dtype != np.int8 or len(weight.shape) != 2:
        return f"has weight '{weight.name}' of {weight.dtype} {list(weight.shape)}, not a 2-D int8 matrix"
    if weight.shape[1] % FC_BLOCK:
        return f"has weight '{weight.name}' with in_c {weight.shape[1]}, not a multiple of {FC_BLOCK}"
    if weight.quant is None or np.any(weight.quant.zero_point != 0):
        return f"has weight '{weight.name}' not quantized symmetrically (zero point 0)"
    readers = consumers.get(op.inputs[1], [])
    if any(
        graph.operators[r].opcode != "FULLY_CONNECTED" or graph.operators[r].inputs[1] != op.inputs[1]
        for r in readers
    ):
        return f"shares weight '{weight.name}' with an operator that reads it other than as FC weights"
    return None
