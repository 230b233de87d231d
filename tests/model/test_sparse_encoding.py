"""TFLite's sparse tensor encoding: decode/encode round trips, corrupt encodings, files, LiteRT.

LiteRT (ai-edge-litert 2.3.0, builtin kernels) runs the 1x16 block-sparse int8
FULLY_CONNECTED but requantizes with a different rounding than its dense
kernel: the dense path (ruy) rounds ties toward +inf, the sparse path
(TFLite's scalar MultiplyByQuantizedMultiplier) rounds them away from zero.
The two outputs differ by exactly 1 where the scaled accumulator is a negative
tie, and nowhere else; the LiteRT tests below pin down both models.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.errors import ModelFormatError
from edged.model.builder import GraphBuilder
from edged.model.ir import Operator
from edged.model.schema import schema
from edged.model.tflite import FILE_IDENTIFIER, read_tflite, write_tflite
from edged.sparse.tflite_encoding import (
    DENSE,
    SPARSE_CSR,
    DimMetadata,
    TfliteSparsity,
    densify,
    encode,
    encode_block_sparse,
    encode_like,
    sparsify_fc_weights,
)

# ---------------------------------------------------------------- helpers


def _block_sparse_matrix(rng: np.random.Generator, out_c: int, in_c: int, zero_blocks: float) -> np.ndarray:
    """Random int8 [out_c, in_c] with a fraction of its 1x16 blocks zero and a few stray zeros."""
    w = rng.integers(-127, 128, (out_c, in_c)).astype(np.int8)
    w[rng.random(w.shape) < 0.1] = 0
    blocks = rng.random((out_c, in_c // 16)) < zero_blocks
    return (w.reshape(out_c, -1, 16) * ~blocks[:, :, None]).reshape(out_c, in_c).astype(np.int8)


def _fc_graph(
    w: np.ndarray,
    *,
    per_channel: bool = True,
    bias: bool = True,
    rows: int = 1,
    scales: tuple[float, float, float] | None = None,
    zero_points: tuple[int, int] = (-3, 5),
):
    """A one-layer int8 FULLY_CONNECTED model with symmetric weights, as the trainer builds them."""
    rng = np.random.default_rng(0)
    out_c, in_c = w.shape
    in_s, w_s, out_s = scales or (0.05, None, 0.4)
    if w_s is None:
        w_s = rng.uniform(0.001, 0.01, out_c).astype(np.float32) if per_channel else np.float32(0.004)
    b = GraphBuilder()
    x = b.input("x", np.int8, (1, in_c) if rows == 1 else (1, rows, in_c), in_s, zero_points[0])
    wi = b.const("w", w, w_s, 0)
    bi = -1
    if bias:
        bias_scale = np.float32(in_s) * np.asarray(w_s, dtype=np.float32)
        bi = b.const("b", rng.integers(-3000, 3000, out_c).astype(np.int32), bias_scale, 0)
    y = b.tensor("y", np.int8, (1, out_c) if rows == 1 else (1, rows, out_c), out_s, zero_points[1])
    b.op("FULLY_CONNECTED", [x, wi, bi], [y], version=5, keep_num_dims=rows > 1)
    b.output(y)
    return b.build()


def _sparse_copy(content: bytes) -> bytes:
    graph = read_tflite(content)
    assert sparsify_fc_weights(graph) == ["w"]
    return write_tflite(graph)


def _fc_layout_metadata(segments, indices, out_c=3, block=16):
    return [
        DimMetadata(DENSE, out_c),
        DimMetadata(SPARSE_CSR, 0, segments, indices),
        DimMetadata(DENSE, block),
    ]


# ---------------------------------------------------------------- round trips


@st.composite
def block_sparse_matrices(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out_c, n_blocks = draw(st.integers(1, 24)), draw(st.integers(1, 6))
    return _block_sparse_matrix(rng, out_c, 16 * n_blocks, draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])))


@given(block_sparse_matrices())
def test_block_sparse_round_trip(w):
    values, sparsity = encode_block_sparse(w)
    assert np.array_equal(densify(values, sparsity, w.shape), w)
    assert sparsity.is_fc_block_1x16
    kept = w.reshape(w.shape[0], -1, 16).any(axis=2)
    if not kept.any():
        kept[0, 0] = True
    # Only blocks holding a nonzero are stored (an all-zero matrix keeps one, see encode()).
    assert values.size == 16 * max(int(kept.sum()), 1)
    assert values.dtype == np.int8
    assert np.array_equal(sparsity.dim_metadata[1].array_segments, np.r_[0, np.cumsum(kept.sum(axis=1))])


@st.composite
def layouts(draw):
    """A dense array and a random valid layout for it: any traversal order, blocks, formats."""
    n = draw(st.integers(0, 3))
    block_dims = sorted(draw(st.sets(st.integers(0, n - 1), max_size=n))) if n else []
    block_map = draw(st.permutations(block_dims))
    sizes = [draw(st.integers(0 if n == 1 else 1, 4)) for _ in range(n)]
    block_sizes = [draw(st.integers(1, 3)) for _ in block_map]
    shape = list(sizes)
    for d, bs in zip(block_map, block_sizes, strict=True):
        shape[d] *= bs
    k = len(block_map)
    order = list(draw(st.permutations(range(n)))) + list(draw(st.permutations(range(n, n + k))))
    formats = [draw(st.sampled_from([DENSE, SPARSE_CSR])) if d < n else DENSE for d in order]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.int8, np.float32, np.int32]))
    dense = (
        (rng.random(shape) < draw(st.sampled_from([0.0, 0.2, 0.7]))) * rng.integers(1, 100, shape)
    ).astype(dtype)
    return dense, (order, formats, block_map, block_sizes)


@given(layouts())
def test_general_round_trip(case):
    dense, layout = case
    values, sparsity = encode(dense, *layout)
    assert values.dtype == dense.dtype
    assert np.array_equal(densify(values, sparsity, dense.shape), dense)
    # Re-encoding in the layout of a record gives the same record back.
    again, same = encode_like(dense, sparsity)
    assert np.array_equal(again, values) and same == sparsity


def test_encoder_matches_tflite_format_converter():
    """LiteRT ships TFLite's own FormatConverter; its DenseToSparse is the reference for encode()."""
    fc = pytest.importorskip("ai_edge_litert.format_converter_wrapper_pybind11")
    kind = {
        DENSE: fc.TfLiteDimensionType.TF_LITE_DIM_DENSE,
        SPARSE_CSR: fc.TfLiteDimensionType.TF_LITE_DIM_SPARSE_CSR,
    }
    rng = np.random.default_rng(0)
    cases = [([24, 64], [0, 1], [DENSE, SPARSE_CSR], [1], [16])]
    for _ in range(200):
        n = int(rng.integers(1, 4))
        shape = [int(rng.integers(1, 4)) * 2 for _ in range(n)]
        block_map = [d for d in range(n) if rng.random() < 0.4]  # TFLite's converter wants it sorted
        cases.append(
            (
                shape,
                list(rng.permutation(n)),
                list(rng.choice([DENSE, SPARSE_CSR], n)),
                block_map,
                [2] * len(block_map),
            )
        )
    for shape, order, dim_formats, block_map, block_sizes in cases:
        dense = ((rng.random(shape) < 0.3) * rng.integers(1, 9, shape)).astype(np.float32)
        dense.flat[-1] = 1  # TFLite stores nothing for an all-zero tensor; edged keeps one block
        n, k = len(shape), len(block_map)
        converter = fc.FormatConverterFp32(
            shape, order + list(range(n, n + k)), [kind[f] for f in dim_formats], block_sizes, block_map
        )
        converter.DenseToSparse(np.ascontiguousarray(dense))
        formats = [dim_formats[d] for d in order] + [DENSE] * k
        values, sparsity = encode(dense, order + list(range(n, n + k)), formats, block_map, block_sizes)
        ours = []
        for meta in sparsity.dim_metadata:
            ours += (
                [[meta.dense_size], []]
                if meta.format == DENSE
                else [meta.array_segments.tolist(), meta.array_indices.tolist()]
            )
        assert [list(m) for m in converter.GetDimMetadata()] == ours, (shape, order, dim_formats, block_map)
        assert np.array_equal(np.asarray(converter.GetData(), np.float32), values)


def test_all_zero_matrix_keeps_one_block():
    values, sparsity = encode_block_sparse(np.zeros((3, 32), np.int8))
    assert values.size == 16 and not values.any()
    assert sparsity.dim_metadata[1].array_segments.tolist() == [0, 1, 1, 1]
    assert not densify(values, sparsity, (3, 32)).any()


def test_block_sparse_needs_whole_blocks():
    with pytest.raises(ValueError, match="in_c a multiple of 16"):
        encode_block_sparse(np.ones((4, 40), np.int8))
    with pytest.raises(ValueError, match="2-D"):
        encode_block_sparse(np.ones((4, 4, 16), np.int8))
    values, sparsity = encode_block_sparse(np.ones((4, 32), np.int8), block=(2, 16))
    assert sparsity.block_map == (0, 1) and np.array_equal(
        densify(values, sparsity, (4, 32)), np.ones((4, 32))
    )


# ---------------------------------------------------------------- hand-made encodings

HAND_MADE = {
    # Compressed sparse columns: columns DENSE, then the rows present in each.
    "csc": (
        np.array([[1, 0, 0, 2], [0, 0, 3, 0], [4, 0, 5, 0]]),
        TfliteSparsity(
            (1, 0), (), [DimMetadata(DENSE, 4), DimMetadata(SPARSE_CSR, 0, [0, 2, 2, 4, 5], [0, 2, 1, 2, 0])]
        ),
        [1, 4, 3, 5, 2],
    ),
    # 2x3 blocks, block columns outermost, each block stored column-major.
    "blocks_transposed": (
        np.array([[1, 2, 0, 0, 0, 0], [0, 0, 3, 0, 0, 0], [7, 0, 0, 0, 4, 0], [0, 0, 0, 5, 0, 6]]),
        TfliteSparsity(
            (1, 0, 3, 2),
            (0, 1),
            [
                DimMetadata(DENSE, 2),
                DimMetadata(SPARSE_CSR, 0, [0, 2, 3], [0, 1, 1]),
                DimMetadata(DENSE, 3),
                DimMetadata(DENSE, 2),
            ],
        ),
        # block (0, 0), block (1, 0), block (1, 1), each column by column
        [1, 0, 2, 0, 0, 3, 7, 0, 0, 0, 0, 0, 0, 5, 4, 0, 0, 6],
    ),
    # block_map not sorted: block dimension 2 splits dim 1, dimension 3 splits dim 0.
    "block_map_unsorted": (
        np.array([[1, 0, 0, 0], [2, 0, 0, 0], [0, 0, 0, 3], [0, 0, 4, 5]]),
        TfliteSparsity(
            (0, 1, 2, 3),
            (1, 0),
            [
                DimMetadata(DENSE, 2),
                DimMetadata(SPARSE_CSR, 0, [0, 1, 2], [0, 1]),
                DimMetadata(DENSE, 2),
                DimMetadata(DENSE, 2),
            ],
        ),
        [1, 2, 0, 0, 0, 4, 3, 5],
    ),
    # Compressed sparse fibres of a 3-D tensor, last dimension outermost.
    "csf_3d": (
        np.array([[[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], [[3, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 2]]]),
        TfliteSparsity(
            (2, 0, 1),
            (),
            [
                DimMetadata(SPARSE_CSR, 0, [0, 2], [0, 3]),
                DimMetadata(SPARSE_CSR, 0, [0, 1, 3], [1, 0, 1]),
                DimMetadata(SPARSE_CSR, 0, [0, 1, 2, 3], [0, 1, 2]),
            ],
        ),
        [3, 1, 2],
    ),
}


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_hand_made_encodings(name):
    dense, sparsity, values = HAND_MADE[name]
    values = np.asarray(values, dtype=np.float32)
    assert np.array_equal(densify(values, sparsity, dense.shape), dense)
    again, same = encode_like(dense.astype(np.float32), sparsity)
    assert same == sparsity and np.array_equal(again, values)


# ---------------------------------------------------------------- corrupt encodings


def _corrupt(**changes):
    """The 3x32 1x16 encoding of rows {block 1}, {blocks 0, 1}, {} with one part replaced."""
    segments, indices = changes.pop("segments", [0, 1, 3, 3]), changes.pop("indices", [1, 0, 1])
    meta = changes.pop("meta", _fc_layout_metadata(segments, indices))
    sparsity = TfliteSparsity(changes.pop("order", (0, 1, 2)), changes.pop("block_map", (1,)), meta)
    return np.ones(changes.pop("n_values", 48), np.int8), sparsity, changes.pop("shape", (3, 32))


CORRUPT = {
    "index out of range": (_corrupt(indices=[1, 0, 2]), r"array_indices\[2\] = 2 is out of range"),
    "negative index": (_corrupt(indices=[-1, 0, 1]), r"array_indices\[0\] = -1 is out of range"),
    "segments not monotone": (_corrupt(segments=[0, 2, 1, 3]), r"decreases at position 1 \(2 -> 1\)"),
    "segments start": (_corrupt(segments=[1, 1, 3, 3]), "starts at 1, not 0"),
    "segments end": (_corrupt(segments=[0, 1, 3, 4]), "ends at 4 but array_indices has 3"),
    "segment count": (_corrupt(segments=[0, 1, 3]), "has 3 array_segments, expected 4"),
    "duplicate index": (_corrupt(indices=[1, 0, 0]), "coordinate 0 appears twice"),
    "too few values": (_corrupt(n_values=47), "stores 47 values, its encoding addresses 48"),
    "too many values": (_corrupt(n_values=64), "stores 64 values, its encoding addresses 48"),
    "dense_size": (
        _corrupt(meta=[DimMetadata(DENSE, 4), *_fc_layout_metadata([0, 1, 3, 3], [1, 0, 1])[1:]]),
        "dense_size 4, but the dimension it traverses has size 3",
    ),
    "block size": (_corrupt(meta=_fc_layout_metadata([0, 1, 3, 3], [1, 0, 1], block=5)), "does not divide"),
    "traversal order": (_corrupt(order=(0, 2, 1)), "must permute 0..1"),
    "traversal length": (_corrupt(order=(0, 1)), "traversal levels"),
    "block map": (_corrupt(block_map=(2,)), "block_map"),
    "block level sparse": (
        _corrupt(
            meta=[*_fc_layout_metadata([0, 1, 3, 3], [1, 0, 1])[:2], DimMetadata(SPARSE_CSR, 16, [0], [])]
        ),
        "must be DENSE",
    ),
    "missing indices": (
        _corrupt(
            meta=[DimMetadata(DENSE, 3), DimMetadata(SPARSE_CSR, 0, [0, 1, 3, 3]), DimMetadata(DENSE, 16)]
        ),
        "lacks its segments or indices",
    ),
    "unknown format": (
        _corrupt(meta=[DimMetadata("7", 3), *_fc_layout_metadata([0, 1, 3, 3], [1, 0, 1])[1:]]),
        "unknown dimension format",
    ),
    "metadata count": (
        _corrupt(meta=_fc_layout_metadata([0, 1, 3, 3], [1, 0, 1])[:2]),
        "2 dim_metadata entries",
    ),
    "huge shape": (_corrupt(shape=(2**20, 2**20)), "more than 2"),
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_encodings_raise_model_format_error(name):
    (values, sparsity, shape), message = CORRUPT[name]
    with pytest.raises(ModelFormatError, match=message):
        densify(values, sparsity, shape)


def test_corrupt_example_is_valid_when_intact():
    values, sparsity, shape = _corrupt()
    expected = np.zeros((3, 32), np.int8)
    expected[0, 16:] = expected[1, :] = 1
    assert np.array_equal(densify(values, sparsity, shape), expected)


# ---------------------------------------------------------------- files


def test_file_round_trip_keeps_sparsity_and_data():
    w = _block_sparse_matrix(np.random.default_rng(1), 24, 64, 0.75)
    dense_file = write_tflite(_fc_graph(w))
    sparse_file = _sparse_copy(dense_file)
    assert len(sparse_file) < len(dense_file)
    graph = read_tflite(sparse_file)
    weight = graph.tensors[1]
    assert np.array_equal(weight.data, w)
    assert weight.sparsity == encode_block_sparse(w)[1]
    again = read_tflite(write_tflite(graph))
    assert np.array_equal(again.tensors[1].data, w) and again.tensors[1].sparsity == weight.sparsity
    # The bias and the activations stay dense.
    assert all(t.sparsity is None for i, t in enumerate(again.tensors) if i != 1)
    # The value buffer keeps the 16-byte alignment of every constant buffer.
    values = encode_block_sparse(w)[0].tobytes()
    offset = sparse_file.find(values)
    assert offset > 0 and offset % 16 == 0


def test_writer_re_encodes_edited_data():
    w = _block_sparse_matrix(np.random.default_rng(2), 8, 64, 0.5)
    graph = read_tflite(_sparse_copy(write_tflite(_fc_graph(w))))
    edited = graph.tensors[1].data.copy()
    edited[:, :16] = 0
    edited[0, 40] = 9
    graph.tensors[1].data = edited
    again = read_tflite(write_tflite(graph))
    assert np.array_equal(again.tensors[1].data, edited)
    assert again.tensors[1].sparsity == encode_block_sparse(edited)[1]
    graph.tensors[1].data = np.zeros((8, 40), np.int8)
    graph.tensors[1].shape = (8, 40)
    with pytest.raises(ValueError, match="'w' cannot be stored in its sparse layout"):
        write_tflite(graph)


def _model_t(content: bytes):
    return schema.ModelT.InitFromPackedBuf(content, 0)


def _pack(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def test_index_vectors_use_the_narrowest_type_and_any_type_reads():
    # 300 block columns need uint16 indices; 240 rows x 300 blocks need int32 segments.
    w = _block_sparse_matrix(np.random.default_rng(3), 240, 16 * 300, 0.0)
    content = _sparse_copy(write_tflite(_fc_graph(w, per_channel=False)))
    level = _model_t(content).subgraphs[0].tensors[1].sparsity.dimMetadata[1]
    assert level.arrayIndicesType == schema.SparseIndexVector.Uint16Vector
    assert level.arraySegmentsType == schema.SparseIndexVector.Int32Vector
    small = _sparse_copy(write_tflite(_fc_graph(w[:4, :64])))
    model = _model_t(small)
    level = model.subgraphs[0].tensors[1].sparsity.dimMetadata[1]
    assert level.arrayIndicesType == level.arraySegmentsType == schema.SparseIndexVector.Uint8Vector
    # Another writer may store them as int32: same tensor.
    for name in ("arraySegments", "arrayIndices"):
        setattr(level, name, schema.Int32VectorT(np.asarray(getattr(level, name).values, dtype=np.int32)))
        setattr(level, name + "Type", schema.SparseIndexVector.Int32Vector)
    assert np.array_equal(read_tflite(_pack(model)).tensors[1].data, w[:4, :64])


def test_corrupt_sparse_file_names_the_tensor():
    w = _block_sparse_matrix(np.random.default_rng(4), 4, 64, 0.5)
    model = _model_t(_sparse_copy(write_tflite(_fc_graph(w))))
    indices = model.subgraphs[0].tensors[1].sparsity.dimMetadata[1].arrayIndices
    indices.values = np.array(indices.values)
    indices.values[-1] = 9
    with pytest.raises(
        ModelFormatError, match=r"tensor #1 'w' has a corrupt sparse encoding: .* out of range"
    ):
        read_tflite(_pack(model))


def test_sparsify_fc_weights_picks_eligible_weights():
    graph = _fc_graph(np.ones((4, 40), np.int8))
    assert sparsify_fc_weights(graph) == []
    with pytest.raises(ValueError, match="in_c 40, not a multiple of 16"):
        sparsify_fc_weights(graph, [0])
    graph = _fc_graph(np.ones((4, 32), np.int8))
    graph.tensors[1].quant.zero_point[:] = 1
    assert sparsify_fc_weights(graph) == []
    with pytest.raises(ValueError, match="zero point 0"):
        sparsify_fc_weights(graph, [0])
    graph = _fc_graph(np.ones((4, 32), np.int8))
    graph.operators.append(Operator("CONV_2D", [0, 1, 2], [3]))  # reads the weight as something else
    assert sparsify_fc_weights(graph) == []
    with pytest.raises(ValueError, match="shares weight 'w'"):
        sparsify_fc_weights(graph, [0])
    with pytest.raises(ValueError, match="is not FULLY_CONNECTED"):
        sparsify_fc_weights(graph, [1])
