"""Read and write .tflite files through the flatbuffers object API.

This is the only module that knows the .tflite schema. ``read_tflite`` turns a
file into a :class:`~edged.model.ir.Graph`; ``write_tflite`` turns a graph back
into bytes that any LiteRT runtime loads.

Constants stored in TFLite's sparse encoding are densified on reading (every
consumer sees dense ``data``) and keep their encoding in ``Tensor.sparsity``;
the writer re-encodes ``data`` in that layout (see
:mod:`edged.sparse.tflite_encoding`), so edits to the data are honoured.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np

from edged.errors import ModelFormatError
from edged.model.fold import fold_shapes
from edged.model.ir import Graph, Operator, Quantization, Signature, Tensor
from edged.model.schema import enum_name, schema
from edged.model.tflite_sparsity import sparsity_from_schema, sparsity_to_schema
from edged.sparse.densify import fold_densify, with_densify_ops
from edged.sparse.tflite_encoding import densify, encode_like

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
# LiteRT maps constant buffers straight from the file; 16-byte alignment keeps
# every element type aligned for vector loads.
BUFFER_ALIGNMENT = 16

_TENSOR_TYPES: dict[int, np.dtype] = {
    schema.TensorType.FLOAT32: np.dtype(np.float32),
    schema.TensorType.FLOAT16: np.dtype(np.float16),
    schema.TensorType.FLOAT64: np.dtype(np.float64),
    schema.TensorType.INT8: np.dtype(np.int8),
    schema.TensorType.UINT8: np.dtype(np.uint8),
    schema.TensorType.INT16: np.dtype(np.int16),
    schema.TensorType.UINT16: np.dtype(np.uint16),
    schema.TensorType.INT32: np.dtype(np.int32),
    schema.TensorType.UINT32: np.dtype(np.uint32),
    schema.TensorType.INT64: np.dtype(np.int64),
    schema.TensorType.UINT64: np.dtype(np.uint64),
    schema.TensorType.BOOL: np.dtype(np.bool_),
}
_TYPE_CODES = {dtype: code for code, dtype in _TENSOR_TYPES.items()}

_OPCODE_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_OPTIONS_NAMES = {v: k for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}

# Options fields whose integer values are schema enums; the IR holds their names.
_ENUM_FIELDS = {
    "fusedActivationFunction": schema.ActivationFunctionType,
    "padding": schema.Padding,
    "weightsFormat": schema.FullyConnectedOptionsWeightsFormat,
}

# Options table of each builtin op when an operator is built from scratch.
DEFAULT_OPTIONS_TYPE = {
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MEAN": "ReducerOptions",
    "ADD": "AddOptions",
    "RESHAPE": "ReshapeOptions",
    "SOFTMAX": "SoftmaxOptions",
    "CONCATENATION": "ConcatenationOptions",
    "PAD": "PadOptions",
    "QUANTIZE": "QuantizeOptions",
    "DEQUANTIZE": "DequantizeOptions",
    "MUL": "MulOptions",
    "HARD_SWISH": "HardSwishOptions",
    "SHAPE": "ShapeOptions",
    "STRIDED_SLICE": "StridedSliceOptions",
    "PACK": "PackOptions",
    "GATHER": "GatherOptions",
    "CAST": "CastOptions",
    "SQUEEZE": "SqueezeOptions",
    "SUB": "SubOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
    "EXPAND_DIMS": "ExpandDimsOptions",
    "LEAKY_RELU": "LeakyReluOptions",
    "RESIZE_BILINEAR": "ResizeBilinearOptions",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions",
    "TRANSPOSE": "TransposeOptions",
    "SLICE": "SliceOptions",
    "SPLIT": "SplitOptions",
    "SPLIT_V": "SplitVOptions",
    "BATCH_MATMUL": "BatchMatMulOptions",
    "SQUARED_DIFFERENCE": "SquaredDifferenceOptions",
}


def _snake(name: str) -> str:
    """dilationWFactor -> dilation_w_factor."""
    return re.sub(r"([A-Z])", r"_\1", name).lower()


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


# ---------------------------------------------------------------- reading


def read_tflite(source: str | os.PathLike | bytes, *, name: str | None = None,
                keep_densify: bool = False) -> Graph:
    """Parse a .tflite model (a path or its bytes) into a Graph.

    DENSIFY operators on constants are folded into the constant (which keeps
    its sparse layout, see edged.sparse.densify) unless ``keep_densify``.
    Raises ModelFormatError with a message naming the file for anything that is
    not a well-formed single-subgraph .tflite model.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<model bytes>"
    else:
        label = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ModelFormatError(f"{label}: cannot read model file: {exc.strerror}") from exc
    if len(data) < 8:
        raise ModelFormatError(f"{label}: file is {len(data)} bytes, too short to be a .tflite model")
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelFormatError(
            f"{label}: not a .tflite model (file identifier is {data[4:8]!r}, expected {FILE_IDENTIFIER!r})"
        )
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        graph = _graph_from_model(model, data, label)
    except ModelFormatError:
        raise
    except Exception as exc:  # the flatbuffers reader fails in many ways on corrupt input
        raise ModelFormatError(
            f"{label}: corrupt or truncated .tflite model ({type(exc).__name__}: {exc})"
        ) from exc
    if fold_shapes(graph, label):
        graph.drop_unused_tensors()
    if not keep_densify:
        fold_densify(graph)
    return graph


def _graph_from_model(model: Any, data: bytes, label: str) -> Graph:
    if not model.subgraphs:
        raise ModelFormatError(f"{label}: model has no subgraph")
    if len(model.subgraphs) > 1:
        raise ModelFormatError(
            f"{label}: model has {len(model.subgraphs)} subgraphs (control flow), "
            "edged reads single-subgraph models only"
        )
    buffers = model.buffers or []
    sub = model.subgraphs[0]
    tensors = [_tensor_from_schema(t, buffers, data, label, i) for i, t in enumerate(sub.tensors or [])]
    codes = model.operatorCodes or []
    operators = []
    for i, op in enumerate(sub.operators or []):
        if not 0 <= op.opcodeIndex < len(codes):
            raise ModelFormatError(f"{label}: operator #{i} has opcode index {op.opcodeIndex} out of range")
        operators.append(_operator_from_schema(op, codes[op.opcodeIndex], len(tensors), label, i))
    inputs = [int(i) for i in (sub.inputs if sub.inputs is not None else [])]
    outputs = [int(i) for i in (sub.outputs if sub.outputs is not None else [])]
    for idx in inputs + outputs:
        if not 0 <= idx < len(tensors):
            raise ModelFormatError(f"{label}: graph input/output tensor index {idx} out of range")
    metadata = {}
    for meta in model.metadata or []:
        if 0 <= meta.buffer < len(buffers):
            metadata[_text(meta.name)] = _buffer_bytes(buffers[meta.buffer], data)
    signatures = [
        Signature(
            key=_text(sig.signatureKey),
            inputs={_text(m.name): int(m.tensorIndex) for m in sig.inputs or []},
            outputs={_text(m.name): int(m.tensorIndex) for m in sig.outputs or []},
        )
        for sig in model.signatureDefs or []
    ]
    for sig in signatures:
        for name, idx in (*sig.inputs.items(), *sig.outputs.items()):
            if not 0 <= idx < len(tensors):
                raise ModelFormatError(
                    f"{label}: signature '{sig.key}' names tensor {idx} for '{name}', out of range"[:300]
                )
    return Graph(
        tensors=tensors,
        operators=operators,
        inputs=inputs,
        outputs=outputs,
        name=_text(sub.name) or "main",
        description=_text(model.description),
        metadata=metadata,
        signatures=signatures,
    )


def _buffer_bytes(buffer: Any, data: bytes) -> bytes:
    if buffer.data is not None and len(buffer.data):
        return np.asarray(buffer.data, dtype=np.uint8).tobytes()
    if buffer.offset > 1:  # large models keep buffers after the flatbuffer
        end = buffer.offset + buffer.size
        if end > len(data):
            raise ModelFormatError("buffer lies beyond the end of the file (truncated model)")
        return data[buffer.offset : end]
    return b""


def _tensor_from_schema(t: Any, buffers: list, data: bytes, label: str, index: int) -> Tensor:
    name = _text(t.name) or f"tensor_{index}"
    if t.type not in _TENSOR_TYPES:
        dtype_name = enum_name(schema.TensorType, t.type)
        raise ModelFormatError(f"{label}: tensor #{index} '{name}' has unsupported type {dtype_name}")
    dtype = _TENSOR_TYPES[t.type]
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
    constant = None
    sparsity = None
    if not 0 <= t.buffer < max(len(buffers), 1):
        raise ModelFormatError(f"{label}: tensor #{index} '{name}' refers to missing buffer {t.buffer}")
    if t.sparsity is not None:
        if t.buffer == 0:
            raise ModelFormatError(f"{label}: tensor #{index} '{name}' is stored sparse but has no buffer")
        raw = _buffer_bytes(buffers[t.buffer], data)
        if len(raw) % dtype.itemsize:
            raise ModelFormatError(
                f"{label}: tensor #{index} '{name}' has a {len(raw)}-byte sparse value buffer, "
                f"not a whole number of {dtype} values"
            )
        values = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
        try:
            sparsity = sparsity_from_schema(t.sparsity)
            constant = densify(values, sparsity, shape)
        except ModelFormatError as exc:
            raise ModelFormatError(
                f"{label}: tensor #{index} '{name}' has a corrupt sparse encoding: {exc}"
            ) from exc
    elif t.buffer > 0:
        raw = _buffer_bytes(buffers[t.buffer], data)
        if raw:
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if len(raw) != expected:
                raise ModelFormatError(
                    f"{label}: tensor #{index} '{name}' of shape {list(shape)} {dtype} needs "
                    f"{expected} bytes, its buffer holds {len(raw)}"
                )
            constant = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    quant = None
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale) > 0:
        zero_point = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0]
        quant = Quantization(scale=q.scale, zero_point=zero_point, axis=int(q.quantizedDimension))
    signature = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else None
    return Tensor(
        name=name,
        dtype=dtype,
        shape=shape,
        quant=quant,
        data=constant,
        shape_signature=signature,
        is_variable=bool(t.isVariable),
        sparsity=sparsity,
    )


def _operator_from_schema(op: Any, code: Any, n_tensors: int, label: str, index: int) -> Operator:
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    opcode = _OPCODE_NAMES.get(builtin, f"BUILTIN_{builtin}")
    inputs = [int(i) for i in (op.inputs if op.inputs is not None else [])]
    outputs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
    for t in inputs + outputs:
        if not -1 <= t < n_tensors:
            raise ModelFormatError(f"{label}: operator #{index} ({opcode}) uses tensor {t}, out of range")
    if -1 in outputs:  # -1 marks an absent optional input; every output is a tensor
        raise ModelFormatError(f"{label}: operator #{index} ({opcode}) has output tensor -1 (none)")
    options_type = _OPTIONS_NAMES.get(op.builtinOptionsType) if op.builtinOptionsType else None
    options = _options_to_dict(op.builtinOptions) if op.builtinOptions is not None else {}
    passthrough = {}
    if op.builtinOptions2Type:
        passthrough["builtin_options_2"] = (op.builtinOptions2Type, op.builtinOptions2)
    if op.intermediates is not None and len(op.intermediates):
        passthrough["intermediates"] = [int(i) for i in op.intermediates]
    custom_options = (
        bytes(np.asarray(op.customOptions, dtype=np.uint8)) if op.customOptions is not None else None
    )
    return Operator(
        opcode=opcode,
        inputs=inputs,
        outputs=outputs,
        options=options,
        options_type=options_type,
        version=int(code.version),
        custom_code=_text(code.customCode) or None,
        custom_options=custom_options,
        passthrough=passthrough,
    )


def _options_to_dict(options: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(options).items():
        if key in _ENUM_FIELDS:
            value = enum_name(_ENUM_FIELDS[key], value)
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        out[_snake(key)] = value
    return out


# ---------------------------------------------------------------- writing


class _AlignedBufferT(schema.BufferT):
    """A buffer whose data vector starts on a BUFFER_ALIGNMENT boundary."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 (schema API name)
        vector = None
        if self.data is not None and len(self.data):
            raw = np.ascontiguousarray(self.data, dtype=np.uint8)
            builder.StartVector(1, raw.size, BUFFER_ALIGNMENT)
            builder.head -= raw.size
            builder.Bytes[builder.head : builder.head + raw.size] = raw.tobytes()
            vector = builder.EndVector()
        schema.BufferStart(builder)
        if vector is not None:
            schema.BufferAddData(builder, vector)
        return schema.BufferEnd(builder)


def write_tflite(graph: Graph, path: str | os.PathLike | None = None, *, densify_ops: bool = True) -> bytes:
    """Serialize a Graph to .tflite bytes; also write them to ``path`` if given.

    A sparse constant LiteRT's kernels cannot read directly is written behind a
    DENSIFY operator (edged.sparse.densify), unless ``densify_ops`` is False:
    then the file holds it as its consumers' direct input, as other writers may.
    """
    if densify_ops:
        graph = with_densify_ops(graph)
    buffers: list[Any] = [schema.BufferT()]  # buffer 0 is the empty sentinel

    def add_buffer(raw: bytes) -> int:
        buf = _AlignedBufferT()
        buf.data = np.frombuffer(raw, dtype=np.uint8)
        buffers.append(buf)
        return len(buffers) - 1

    codes: list[Any] = []
    code_index: dict[tuple[str, str | None, int], int] = {}

    def opcode_index(op: Operator) -> int:
        key = (op.opcode, op.custom_code, op.version)
        if key not in code_index:
            code = schema.OperatorCodeT()
            if op.opcode == "CUSTOM":
                builtin = schema.BuiltinOperator.CUSTOM
                code.customCode = op.custom_code
            elif op.opcode in vars(schema.BuiltinOperator):
                builtin = getattr(schema.BuiltinOperator, op.opcode)
            elif op.opcode.startswith("BUILTIN_"):
                builtin = int(op.opcode[len("BUILTIN_") :])
            else:
                raise ValueError(f"unknown operator {op.opcode!r}")
            code.builtinCode = builtin
            # Codes below 127 are also stored in the deprecated int8 field for old readers.
            code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            code.version = op.version
            codes.append(code)
            code_index[key] = len(codes) - 1
        return code_index[key]

    sub = schema.SubGraphT()
    sub.name = graph.name
    sub.inputs = list(graph.inputs)
    sub.outputs = list(graph.outputs)
    sub.tensors = [_tensor_to_schema(t, add_buffer) for t in graph.tensors]
    sub.operators = []
    for op in graph.operators:
        sop = schema.OperatorT()
        sop.opcodeIndex = opcode_index(op)
        sop.inputs = list(op.inputs)
        sop.outputs = list(op.outputs)
        options_type = op.options_type or (DEFAULT_OPTIONS_TYPE.get(op.opcode) if op.options else None)
        if options_type is not None:
            sop.builtinOptionsType = getattr(schema.BuiltinOptions, options_type)
            sop.builtinOptions = _options_from_dict(options_type, op.options)
        if op.custom_options is not None:
            sop.customOptions = list(op.custom_options)
        if "builtin_options_2" in op.passthrough:
            sop.builtinOptions2Type, sop.builtinOptions2 = op.passthrough["builtin_options_2"]
        if "intermediates" in op.passthrough:
            sop.intermediates = list(op.passthrough["intermediates"])
        sub.operators.append(sop)

    model = schema.ModelT()
    model.version = SCHEMA_VERSION
    model.description = graph.description
    model.subgraphs = [sub]
    model.operatorCodes = codes
    model.metadata = []
    for key, raw in graph.metadata.items():
        meta = schema.MetadataT()
        meta.name = key
        meta.buffer = add_buffer(raw)
        model.metadata.append(meta)
    model.signatureDefs = [_signature_to_schema(sig) for sig in graph.signatures]
    model.buffers = buffers

    builder = flatbuffers.Builder(1024 + sum(t.nbytes for t in graph.tensors if t.is_constant))
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    out = bytes(builder.Output())
    if path is not None:
        Path(path).write_bytes(out)
    return out


def _tensor_to_schema(t: Tensor, add_buffer) -> Any:
    if t.dtype not in _TYPE_CODES:
        raise ValueError(f"tensor '{t.name}' has dtype {t.dtype}, which .tflite cannot store")
    st = schema.TensorT()
    st.name = t.name
    st.type = _TYPE_CODES[t.dtype]
    st.shape = list(t.shape)
    if t.shape_signature is not None:
        st.shapeSignature = list(t.shape_signature)
    st.isVariable = t.is_variable
    if t.sparsity is not None:
        if not t.is_constant:
            raise ValueError(
                f"tensor '{t.name}' has a sparse encoding but no data; only constants are stored sparse"
            )
        try:
            values, sparsity = encode_like(t.data, t.sparsity)
        except ValueError as exc:
            raise ValueError(f"tensor '{t.name}' cannot be stored in its sparse layout: {exc}") from exc
        st.buffer = add_buffer(values.astype(t.dtype.newbyteorder("<")).tobytes())
        st.sparsity = sparsity_to_schema(sparsity)
    else:
        st.buffer = add_buffer(t.data.astype(t.dtype.newbyteorder("<")).tobytes()) if t.is_constant else 0
    if t.quant is not None:
        q = schema.QuantizationParametersT()
        q.scale = [float(s) for s in t.quant.scale]
        zp = t.quant.zero_point
        if zp.size == 1 and t.quant.scale.size > 1:
            zp = np.repeat(zp, t.quant.scale.size)
        q.zeroPoint = [int(z) for z in zp]
        q.quantizedDimension = t.quant.axis
        st.quantization = q
    return st


def _options_from_dict(options_type: str, options: dict[str, Any]) -> Any:
    obj = getattr(schema, options_type + "T")()
    attrs = {_snake(a): a for a in vars(obj)}
    for key, value in options.items():
        attr = attrs.get(key)
        if attr is None:
            raise ValueError(f"{options_type} has no option '{key}'")
        if attr in _ENUM_FIELDS and isinstance(value, str):
            value = getattr(_ENUM_FIELDS[attr], value)
        setattr(obj, attr, value)
    return obj


def _signature_to_schema(sig: Signature) -> Any:
    out = schema.SignatureDefT()
    out.signatureKey = sig.key
    out.subgraphIndex = 0
    out.inputs, out.outputs = [], []
    for mapping, target in ((sig.inputs, out.inputs), (sig.outputs, out.outputs)):
        for name, index in mapping.items():
            tm = schema.TensorMapT()
            tm.name = name
            tm.tensorIndex = index
            target.append(tm)
    return out
