"""SparsityParameters of the .tflite schema <-> edged's schema-free TfliteSparsity record.

The encoding itself (densify, encode) is in edged/sparse/tflite_encoding.py;
this is only the translation to and from the generated flatbuffer objects.
"""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np

from edged.errors import ModelFormatError
from edged.model.schema import enum_name, schema
from edged.sparse.tflite_encoding import DENSE, DimMetadata, TfliteSparsity


def sparsity_from_schema(sp: Any) -> TfliteSparsity:
    levels = []
    for level, meta in enumerate(sp.dimMetadata if sp.dimMetadata is not None else []):
        if meta is None:
            raise ModelFormatError(f"sparsity level {level} has no metadata")
        levels.append(
            DimMetadata(
                format=enum_name(schema.DimensionType, meta.format),
                dense_size=meta.denseSize,
                array_segments=_index_values(meta.arraySegments),
                array_indices=_index_values(meta.arrayIndices),
            )
        )
    return TfliteSparsity(
        traversal_order=sp.traversalOrder if sp.traversalOrder is not None else (),
        block_map=sp.blockMap if sp.blockMap is not None else (),
        dim_metadata=levels,
    )


def _index_values(vector: Any) -> np.ndarray | None:
    """The entries of an Int32Vector / Uint16Vector / Uint8Vector table as int64."""
    if vector is None:
        return None
    if vector.values is None:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(vector.values).astype(np.int64)


class _IndexVectorT:
    """A SparseIndexVector table (Uint8Vector, Uint16Vector or Int32Vector).

    Packed by hand because the schema asks for 4-byte aligned values
    (``force_align: 4``), which the generated object API does not honour.
    """

    # The narrowest table that holds the largest index keeps the file small.
    KINDS = (
        ("Uint8Vector", np.dtype("<u1")),
        ("Uint16Vector", np.dtype("<u2")),
        ("Int32Vector", np.dtype("<i4")),
    )

    def __init__(self, values: np.ndarray) -> None:
        top = int(values.max()) if values.size else 0
        self.kind, dtype = next((k, d) for k, d in self.KINDS if top <= np.iinfo(d).max)
        self.type_code = getattr(schema.SparseIndexVector, self.kind)
        self.values = values.astype(dtype)

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 (schema API name)
        raw = self.values.tobytes()
        builder.StartVector(self.values.itemsize, self.values.size, 4)
        builder.head -= len(raw)
        builder.Bytes[builder.head : builder.head + len(raw)] = raw
        vector = builder.EndVector()
        getattr(schema, self.kind + "Start")(builder)
        getattr(schema, self.kind + "AddValues")(builder, vector)
        return getattr(schema, self.kind + "End")(builder)


def sparsity_to_schema(sparsity: TfliteSparsity) -> Any:
    sp = schema.SparsityParametersT()
    sp.traversalOrder = list(sparsity.traversal_order)
    # "If not block-sparse, this field is NULL" (schema.fbs).
    sp.blockMap = list(sparsity.block_map) if sparsity.block_map else None
    sp.dimMetadata = []
    for meta in sparsity.dim_metadata:
        dm = schema.DimensionMetadataT()
        dm.format = getattr(schema.DimensionType, meta.format)
        if meta.format == DENSE:
            dm.denseSize = meta.dense_size
        else:
            dm.arraySegments = _IndexVectorT(meta.array_segments)
            dm.arraySegmentsType = dm.arraySegments.type_code
            dm.arrayIndices = _IndexVectorT(meta.array_indices)
            dm.arrayIndicesType = dm.arrayIndices.type_code
        sp.dimMetadata.append(dm)
    return sp
