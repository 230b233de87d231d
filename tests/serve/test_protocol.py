"""The EDGED1 codec on its own: round trips, precise rejections, never a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.serve import protocol as p


def frames_of(header: dict, *buffers: bytes) -> list[bytes]:
    return [p.TAG, json.dumps(header).encode(), *buffers]


@pytest.mark.parametrize("datatype", list(p.DATATYPES))
def test_infer_request_round_trip(datatype):
    x = (np.arange(24).reshape(2, 3, 4) % 7).astype(p.DATATYPES[datatype])
    frames = p.encode_request(p.InferRequest("r1", [p.Tensor("x", x)], timeout_ms=50))
    req = p.decode_request([bytes(f) for f in frames])
    assert isinstance(req, p.InferRequest)
    assert (req.id, req.timeout_ms, req.inputs[0].name) == ("r1", 50, "x")
    assert req.inputs[0].array.dtype == p.DATATYPES[datatype]
    np.testing.assert_array_equal(req.inputs[0].array, x)


def test_reply_round_trips():
    y = np.arange(20, dtype=np.int8).reshape(2, 10)
    frames = p.encode_reply(p.InferReply("r1", "m", "3", [p.Tensor("y", y)], {"queue": 1}))
    reply = p.decode_reply([bytes(f) for f in frames], "infer")
    assert isinstance(reply, p.InferReply) and reply.model_version == "3"
    np.testing.assert_array_equal(reply.outputs[0].array, y)
    err = p.decode_reply(p.encode_reply(p.ErrorReply("r2", "BAD_INPUT", "no")), "infer")
    assert isinstance(err, p.ErrorReply) and (err.id, err.code) == ("r2", "BAD_INPUT")
    info = p.decode_reply(p.encode_reply(p.InfoReply("r3", {"live": True})), "health")
    assert isinstance(info, p.InfoReply) and info.fields == {"live": True}


def test_other_ops():
    assert isinstance(p.decode_request(frames_of({"id": "a", "op": "health"})), p.HealthRequest)
    assert isinstance(p.decode_request(frames_of({"id": "a", "op": "metadata"})), p.MetadataRequest)
    fb = p.decode_request(frames_of({"id": "a", "op": "feedback", "label": 3}))
    assert isinstance(fb, p.FeedbackRequest) and fb.label == 3


def reason(frames) -> tuple[str, str]:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(frames)
    return info.value.code.value, info.value.message


def test_precise_rejections():
    good = {"id": "r", "op": "infer", "inputs": [{"datatype": "INT8", "shape": [1, 4]}]}
    wrong_tag = [b"EDGED2", json.dumps(good).encode(), b"abcd"]
    assert reason(wrong_tag) == ("BAD_MESSAGE", "frame 0 must be the tag EDGED1")
    assert reason([p.TAG])[0] == "BAD_MESSAGE"
    assert "not UTF-8 JSON" in reason([p.TAG, b"{nope", b"abcd"])[1]
    assert "JSON object" in reason([p.TAG, b"[1]"])[1]
    assert "'id'" in reason(frames_of({"op": "infer"}))[1]
    assert reason(frames_of({"id": "r", "op": "train"}))[0] == "UNKNOWN_OP"
    code, msg = reason(frames_of(good, b"abc"))
    assert code == "BAD_MESSAGE" and msg == "inputs[0]: INT8 [1, 4] is 4 bytes but its frame has 3"
    assert "2 tensor frame(s)" in reason(frames_of(good, b"abcd", b"abcd"))[1]
    absurd = {**good, "inputs": [{"datatype": "FP32", "shape": [2**62, 2**62, 2**62]}]}
    assert "frame has 4" in reason(frames_of(absurd, b"abcd"))[1]
    for shape in ([], [-1, 4], [1.5], [True], "1,4", [1] * 9):
        bad = {**good, "inputs": [{"datatype": "INT8", "shape": shape}]}
        assert "shape must be" in reason(frames_of(bad, b"abcd"))[1]
    assert (
        "datatype must be"
        in reason(frames_of({**good, "inputs": [{"datatype": "FP64", "shape": [1]}]}, b"12345678"))[1]
    )
    assert "timeout_ms" in reason(frames_of({**good, "parameters": {"timeout_ms": 0}}, b"abcd"))[1]
    assert "NaN" in reason([p.TAG, b'{"id": "r", "op": "health", "x": NaN}'])[1]
    assert "feedback 'label'" in reason(frames_of({"id": "r", "op": "feedback", "label": "7"}))[1]
    # the id survives so that the client can match the error
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(frames_of(good, b"abc"))
    assert info.value.request_id == "r"


def test_deep_json_is_rejected_not_crashing():
    assert reason([p.TAG, b"[" * 50_000 + b"]" * 50_000])[0] == "BAD_MESSAGE"


@given(st.lists(st.binary(max_size=64), max_size=6))
def test_random_frames_never_crash(frames):
    try:
        p.decode_request(frames)
    except p.ProtocolError as exc:
        assert exc.code in p.ErrorCode


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


@given(
    st.dictionaries(st.sampled_from(["id", "op", "inputs", "parameters", "label"]), json_values),
    st.lists(st.binary(max_size=32), max_size=3),
)
def test_random_headers_never_crash(header, buffers):
    try:
        p.decode_request(frames_of(header, *buffers))
    except p.ProtocolError as exc:
        assert exc.code in p.ErrorCode


@pytest.mark.parametrize("name", ["y", None, 'odd "name"\\ \u00e9\n'])
def test_the_fast_infer_reply_header_is_what_json_dumps_writes(name):
    arrays = [np.zeros((2, 3), np.int8), np.ones(2, np.float64)]
    timing = {"queue": 1, "inference": 2, "total": 3}
    frames = p.encode_infer_reply('id-\u2603"x', "m\\", "3", [(name, "INT8"), ("z", "FP32")], arrays, timing)
    outputs = [{"datatype": "INT8", "shape": [2, 3]}, {"name": "z", "datatype": "FP32", "shape": [2]}]
    if name is not None:
        outputs[0] = {"name": name, **outputs[0]}
    header = {"id": 'id-\u2603"x', "status": "ok", "model_name": "m\\", "model_version": "3"}
    assert frames[1] == json.dumps({**header, "outputs": outputs, "timing_us": timing}).encode()
    reply = p.decode_reply([f if isinstance(f, bytes) else f.tobytes() for f in frames])
    assert reply.outputs[1].array.dtype == np.float32 and reply.outputs[0].name == name


def _outcome(fn, *args):
    try:
        t = fn(*args)
    except p.ProtocolError as exc:
        return ("error", exc.reason)
    return ("ok", t.name, t.array.dtype.str, t.array.shape, t.array.tobytes())


tensor_metas = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"datatype": st.one_of(st.sampled_from(list(p.DATATYPES)), json_values),
         "shape": st.one_of(st.lists(st.one_of(st.integers(-2, 4), st.booleans()), max_size=9), json_values)},
        optional={"name": st.one_of(st.text(max_size=4), st.text(min_size=1025, max_size=1030), json_values)},
    ),
)


@given(tensor_metas, st.binary(max_size=64))
def test_the_fast_tensor_path_decides_as_the_checked_one(meta, frame):
    """Well-formed tensors skip the error-text path; what either path accepts or refuses is the same."""
    assert _outcome(p._tensor, meta, frame, "inputs", 0, "r") == _outcome(
        p._tensor_checked, meta, frame, "inputs[0]", "r"
    )


@given(json_values, st.sampled_from(["", " ", "\n", " \t"]), st.sampled_from(["", " ", "\r\n", "x", "{}"]))
def test_the_header_scanner_decides_as_json_decode(value, before, after):
    text = before + json.dumps(value) + after
    try:
        expected = ("ok", json.loads(text)) if isinstance(json.loads(text), dict) else ("error",)
    except ValueError:
        expected = ("error",)
    try:
        got = ("ok", p._header(text.encode()))
    except p.ProtocolError:
        got = ("error",)
    assert got == expected
