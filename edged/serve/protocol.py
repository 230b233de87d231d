"""The EDGED1 wire codec: ZeroMQ frames <-> typed requests and replies.

A message is multipart: the tag ``EDGED1``, a UTF-8 JSON header, then one raw
C-contiguous little-endian buffer per tensor named in the header (KServe / Open
Inference v2 tensor metadata: ``name``, ``datatype``, ``shape``). The routing
envelope (the ROUTER identity and REQ's empty delimiter) is not part of it; the
server strips and restores it. ``docs/protocol.md`` is the specification.

Decoding never trusts the peer: every field is type-checked, sizes are computed
with Python integers and compared with the frame before any buffer is viewed,
and JSON is the only deserializer (never pickle).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from json.encoder import encode_basestring_ascii as _json_str  # what json.dumps uses for str
from typing import Any, Union

import numpy as np

from edged.errors import EdgedError

TAG = b"EDGED1"
OPS = ("infer", "metadata", "health", "feedback")

# Open Inference v2 datatype names and their little-endian numpy dtypes.
DATATYPES: dict[str, np.dtype] = {
    "INT8": np.dtype("<i1"),
    "UINT8": np.dtype("<u1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
}
_DATATYPE_OF = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items()}
# Open Inference names of dtypes a model may have but EDGED1 does not carry.
_OTHER_NAMES = {
    ("b", 1): "BOOL",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 8): "INT64",
    ("f", 8): "FP64",
}

MAX_HEADER_BYTES = 64 * 1024
MAX_TENSORS = 64
MAX_RANK = 8
MAX_ID_CHARS = 256
MAX_TIMEOUT_MS = 3_600_000


class ErrorCode(str, Enum):  # not StrEnum, which needs Python 3.11
    BAD_MESSAGE = "BAD_MESSAGE"  # not a well-formed EDGED1 message
    BAD_INPUT = "BAD_INPUT"  # well formed, but does not fit the model
    OVERLOADED = "OVERLOADED"  # queue full; not executed, safe to retry later
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"  # deadline passed before execution started
    UNKNOWN_OP = "UNKNOWN_OP"
    UNAVAILABLE = "UNAVAILABLE"  # shutting down or not ready; not executed
    INTERNAL = "INTERNAL"


class ProtocolError(EdgedError):
    """A message that cannot be served; becomes an error reply."""

    def __init__(
        self, code: ErrorCode, message: str, request_id: str | None = None, reason: str = "other"
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.reason = reason  # short label for the bad-message counter


def datatype_of(dtype: np.dtype) -> str:
    """The wire datatype name of a numpy dtype; ProtocolError (INTERNAL) if EDGED1 has none."""
    dt = np.dtype(dtype)
    try:
        return _DATATYPE_OF[(dt.kind, dt.itemsize)]
    except KeyError:
        raise ProtocolError(ErrorCode.INTERNAL, f"dtype {dt} has no EDGED1 datatype") from None


def on_wire(dtype: np.dtype) -> bool:
    """Whether tensors of this dtype can be sent in EDGED1 messages."""
    dt = np.dtype(dtype)
    return (dt.kind, dt.itemsize) in _DATATYPE_OF


def datatype_name(dtype: np.dtype) -> str:
    """The Open Inference name of any dtype (the numpy name when it has none); never raises."""
    dt = np.dtype(dtype)
    key = (dt.kind, dt.itemsize)
    return _DATATYPE_OF.get(key) or _OTHER_NAMES.get(key) or str(dt)


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class Tensor:
    """One tensor on the wire; ``name`` is None when the sender left it out."""

    name: str | None
    array: np.ndarray

    @property
    def datatype(self) -> str:
        return datatype_of(self.array.dtype)

    def meta(self) -> dict[str, Any]:
        m: dict[str, Any] = {"datatype": self.datatype, "shape": list(self.array.shape)}
        if self.name is not None:
            m = {"name": self.name, **m}
        return m


@dataclass
class InferRequest:
    id: str
    inputs: list[Tensor]
    timeout_ms: int | None = None
    op: str = field(default="infer", init=False)


@dataclass
class MetadataRequest:
    id: str
    op: str = field(default="metadata", init=False)


@dataclass
class HealthRequest:
    id: str
    op: str = field(default="health", init=False)


@dataclass
class FeedbackRequest:
    """Ground truth for an earlier infer request: ``id`` is that request's id."""

    id: str
    label: int | list[int]
    op: str = field(default="feedback", init=False)


Request = Union[InferRequest, MetadataRequest, HealthRequest, FeedbackRequest]  # noqa: UP007


@dataclass
class InferReply:
    id: str
    model_name: str
    model_version: str
    outputs: list[Tensor]
    timing_us: dict[str, int]


@dataclass
class ErrorReply:
    id: str | None
    code: str
    message: str


@dataclass
class InfoReply:
    """Reply to metadata, health and feedback: a header without tensors."""

    id: str
    fields: dict[str, Any]


Reply = Union[InferReply, ErrorReply, InfoReply]  # noqa: UP007


# ---------------------------------------------------------------- decoding helpers


def _bad(message: str, request_id: str | None = None, reason: str = "other") -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message, request_id, reason)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # built once: json.loads builds one per call
_SCAN = _DECODER.scan_once


def _header(frame: bytes | memoryview) -> dict[str, Any]:
    if len(frame) > MAX_HEADER_BYTES:
        raise _bad(f"header is {len(frame)} bytes; the limit is {MAX_HEADER_BYTES}", reason="header_size")
    try:
        text = bytes(frame).decode("utf-8")
        try:  # the scanner alone, as decode() runs it, without decode()'s two whitespace regexes
            header, end = _SCAN(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):  # leading or trailing whitespace, extra data, or not JSON: decode() judges
            header = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"header is not UTF-8 JSON: {exc}", reason="json") from None
    if not isinstance(header, dict):
        raise _bad(f"header must be a JSON object, got {type(header).__name__}", reason="json")
    return header


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dims(shape: list) -> bool:
    for d in shape:  # noqa: SIM110 - all() over a generator costs more than the check, per request
        if type(d) is not int or d < 0:  # type() is int: a bool is an int subclass, not a dimension
            return False
    return True


def _request_id(header: dict[str, Any]) -> str:
    rid = header.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS:
        raise _bad(f"'id' must be a non-empty string of at most {MAX_ID_CHARS} characters", reason="field")
    return rid


def _tensor(meta: Any, frame: bytes | memoryview, key: str, i: int, rid: str | None) -> Tensor:
    if type(meta) is dict:  # the common case first: a well-formed tensor costs no error text
        name, datatype, shape = meta.get("name"), meta.get("datatype"), meta.get("shape")
        dtype = DATATYPES.get(datatype) if type(datatype) is str else None
        if (
            dtype is not None
            and (name is None or (type(name) is str and len(name) <= 1024))
            and type(shape) is list
            and 1 <= len(shape) <= MAX_RANK
            and _dims(shape)
            and math.prod(shape) * dtype.itemsize == len(frame)
        ):
            return Tensor(name, np.frombuffer(frame, dtype=dtype).reshape(shape))
    return _tensor_checked(meta, frame, f"{key}[{i}]", rid)


def _tensor_checked(meta: Any, frame: bytes | memoryview, where: str, rid: str | None) -> Tensor:
    if not isinstance(meta, dict):
        raise _bad(f"{where} must be an object", rid, "field")
    name = meta.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 1024):
        raise _bad(f"{where}.name must be a string", rid, "field")
    datatype = meta.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise _bad(
            f"{where}.datatype must be one of {' '.join(DATATYPES)}, got {datatype!r}"[:300], rid, "field"
        )
    shape = meta.get("shape")
    if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK or not _dims(shape):
        raise _bad(f"{where}.shape must be a list of 1 to {MAX_RANK} non-negative integers", rid, "field")
    dtype = DATATYPES[datatype]
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: absurd shapes cannot overflow
    if nbytes != len(frame):
        raise _bad(
            f"{where}: {datatype} {shape} is {nbytes} bytes but its frame has {len(frame)}", rid, "frame_size"
        )
    array = np.frombuffer(frame, dtype=dtype).reshape(shape)
    return Tensor(name, array)


def _tensors(header: dict[str, Any], key: str, frames: Sequence, rid: str | None) -> list[Tensor]:
    metas = header.get(key)
    if not isinstance(metas, list) or not 1 <= len(metas) <= MAX_TENSORS:
        raise _bad(f"'{key}' must be a list of 1 to {MAX_TENSORS} tensors", rid, "field")
    if len(frames) != len(metas):
        raise _bad(
            f"header names {len(metas)} tensor(s) but {len(frames)} tensor frame(s) follow",
            rid,
            "frame_count",
        )
    if len(metas) == 1:
        return [_tensor(metas[0], frames[0], key, 0, rid)]
    return [_tensor(m, f, key, i, rid) for i, (m, f) in enumerate(zip(metas, frames, strict=True))]


def _split(frames: Sequence[bytes | memoryview]) -> tuple[dict[str, Any], Sequence]:
    if len(frames) < 2:
        raise _bad(f"a message has at least 2 frames (tag, header), got {len(frames)}", reason="frame_count")
    if bytes(frames[0]) != TAG:
        raise _bad(f"frame 0 must be the tag {TAG.decode()}", reason="tag")
    return _header(frames[1]), frames[2:]


# ---------------------------------------------------------------- server side


def decode_request(frames: Sequence[bytes | memoryview], max_bytes: int | None = None) -> Request:
    """Parse a request (envelope already removed); raises ProtocolError.

    ``max_bytes`` bounds the whole message: ZeroMQ's own limit applies to each
    frame, not to their sum.
    """
    if max_bytes is not None:
        size = sum(map(len, frames))
        if size > max_bytes:
            raise _bad(f"the message is {size} bytes; the limit is {max_bytes}", reason="message_size")
    header, rest = _split(frames)
    rid = _request_id(header)
    op = header.get("op")
    if not isinstance(op, str):
        raise _bad("'op' must be a string", rid, "field")
    if op not in OPS:
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP, f"unknown op {op[:64]!r}; ops: {', '.join(OPS)}", rid, "unknown_op"
        )
    if op != "infer" and rest:
        raise _bad(f"op '{op}' takes no tensor frames, got {len(rest)}", rid, "frame_count")
    if op == "metadata":
        return MetadataRequest(rid)
    if op == "health":
        return HealthRequest(rid)
    if op == "feedback":
        label = header.get("label")
        ok = _int(label) or (isinstance(label, list) and 0 < len(label) <= 65536 and all(map(_int, label)))
        if not ok:
            raise _bad("feedback 'label' must be an integer or a list of integers", rid, "field")
        return FeedbackRequest(rid, label)
    params = header.get("parameters", {})
    if not isinstance(params, dict):
        raise _bad("'parameters' must be an object", rid, "field")
    timeout = params.get("timeout_ms")
    if timeout is not None and (not _int(timeout) or not 1 <= timeout <= MAX_TIMEOUT_MS):
        raise _bad(f"parameters.timeout_ms must be an integer from 1 to {MAX_TIMEOUT_MS}", rid, "field")
    return InferRequest(rid, _tensors(header, "inputs", rest, rid), timeout)


def infer_reply_body(
    model_name: str, model_version: str, metas: Sequence[tuple[str | None, str]], shapes: Sequence[tuple]
) -> str:
    """The part of an infer reply's header between its id and its timings: the same for every
    reply of one model version with the same output shapes, so the server builds it once."""
    outputs = []
    for (name, datatype), shape in zip(metas, shapes, strict=True):
        named = "" if name is None else f'"name": {_json_str(name)}, '
        outputs.append(f'{{{named}"datatype": "{datatype}", "shape": [{", ".join(map(str, shape))}]}}')
    return (
        f'"status": "ok", "model_name": {_json_str(model_name)}, '
        f'"model_version": {_json_str(model_version)}, "outputs": [{", ".join(outputs)}]'
    )


def timing_fields(timing_us: dict[str, int]) -> str:
    """The members of an infer reply's ``timing_us`` object, as JSON text."""
    return ", ".join(f"{_json_str(k)}: {int(v)}" for k, v in timing_us.items())


def infer_reply_frames(
    request_id: str, body: str, metas: Sequence[tuple[str | None, str]], arrays: Sequence[np.ndarray],
    timing: str,
) -> list:
    """Frames of an infer reply, from its ``infer_reply_body``, the output arrays and its
    ``timing_fields``.

    The server's fast path: the header is the text ``json.dumps`` makes of
    the same dict (a test holds them equal), written directly, and arrays
    that already are little-endian and C-contiguous (row slices of an engine
    output) are sent as they are.
    """
    buffers = []
    for (_, datatype), a in zip(metas, arrays, strict=True):
        dtype = DATATYPES[datatype]
        if a.dtype != dtype or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=dtype)
        buffers.append(a)
    header = f'{{"id": {_json_str(request_id)}, {body}, "timing_us": {{{timing}}}}}'
    return [TAG, header.encode(), *buffers]


def encode_infer_reply(
    request_id: str,
    model_name: str,
    model_version: str,
    metas: Sequence[tuple[str | None, str]],
    arrays: Sequence[np.ndarray],
    timing_us: dict[str, int],
) -> list:
    """Frames of an infer reply from (name, datatype) per output and the output arrays."""
    body = infer_reply_body(model_name, model_version, metas, [a.shape for a in arrays])
    return infer_reply_frames(request_id, body, metas, arrays, timing_fields(timing_us))


def encode_reply(reply: Reply) -> list:
    """Frames of a reply (without envelope); tensors are sent without copying."""
    if isinstance(reply, InferReply):
        metas = [(t.name, t.datatype) for t in reply.outputs]
        arrays = [t.array for t in reply.outputs]
        return encode_infer_reply(
            reply.id, reply.model_name, reply.model_version, metas, arrays, reply.timing_us
        )
    if isinstance(reply, ErrorReply):
        header = {"id": reply.id, "status": "error", "error": {"code": reply.code, "message": reply.message}}
        return [TAG, json.dumps(header).encode()]
    return [TAG, json.dumps({"id": reply.id, "status": "ok", **reply.fields}).encode()]


def error_reply(exc: ProtocolError) -> ErrorReply:
    return ErrorReply(exc.request_id, exc.code.value, exc.message)


# ---------------------------------------------------------------- client side


def encode_request(request: Request) -> list:
    """Frames of a request (a DEALER sends them as they are)."""
    header: dict[str, Any] = {"id": request.id, "op": request.op}
    buffers: list = []
    if isinstance(request, InferRequest):
        header["inputs"] = [t.meta() for t in request.inputs]
        if request.timeout_ms is not None:
            header["parameters"] = {"timeout_ms": request.timeout_ms}
        buffers = [np.ascontiguousarray(t.array, dtype=DATATYPES[t.datatype]) for t in request.inputs]
    elif isinstance(request, FeedbackRequest):
        header["label"] = request.label
    return [TAG, json.dumps(header).encode(), *buffers]


def decode_reply(frames: Sequence[bytes | memoryview], op: str = "infer") -> Reply:
    """Parse the reply to a request of ``op``; raises ProtocolError (BAD_MESSAGE) if malformed."""
    header, rest = _split(frames)
    rid = header.get("id")
    status = header.get("status")
    if status == "error":
        err = header.get("error")
        if not isinstance(err, dict) or not isinstance(err.get("code"), str):
            raise _bad("error reply without an error code", rid)
        return ErrorReply(rid, err["code"], str(err.get("message", "")))
    if status != "ok" or not isinstance(rid, str):
        raise _bad(f"reply status must be 'ok' or 'error', got {status!r}", rid)
    if op == "infer":
        return InferReply(
            rid,
            str(header.get("model_name")),
            str(header.get("model_version")),
            _tensors(header, "outputs", rest, rid),
            dict(header.get("timing_us") or {}),
        )
    if rest:
        raise _bad(f"a {op} reply has no tensor frames, got {len(rest)}", rid)
    fields = {k: v for k, v in header.items() if k not in ("id", "status")}
    return InfoReply(rid, fields)
