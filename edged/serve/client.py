"""A small blocking client for applications (one per thread).

Retries follow one rule: a request that may have run is never sent again
unless the caller says it is safe. ``health`` and ``metadata`` are read-only
and are retried after a timeout; ``infer`` and ``feedback`` are not, unless
``retry=True`` is passed (or ``retry_infer=True`` given to the client). Replies
that prove the request did not run (``OVERLOADED``, ``UNAVAILABLE``) are
retried for every op, with exponential backoff.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from edged.errors import EdgedError
from edged.serve import protocol as p

NOT_EXECUTED = frozenset({p.ErrorCode.OVERLOADED.value, p.ErrorCode.UNAVAILABLE.value})


class RemoteError(EdgedError):
    """The server answered with an error reply."""

    def __init__(self, code: str, message: str, request_id: str | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class RequestTimeoutError(EdgedError):
    """No reply within the timeout (after the allowed retries)."""


@dataclass
class InferResult:
    id: str
    outputs: list[np.ndarray]
    names: list[str | None]
    model_name: str
    model_version: str
    timing_us: dict[str, int]


class Client:
    def __init__(
        self,
        endpoint: str,
        *,
        timeout_ms: int = 5000,
        retries: int = 2,
        retry_infer: bool = False,
        backoff_ms: int = 20,
        server_public_key: bytes | None = None,
        client_keys: tuple[bytes, bytes] | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        if (server_public_key is None) != (client_keys is None):
            raise EdgedError("CURVE needs both the server's public key and the client's key pair")
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.retry_infer = retry_infer
        self.backoff_ms = backoff_ms
        self._curve = (server_public_key, client_keys)
        self._ctx = context or zmq.Context.instance()
        self._ids = itertools.count()
        self._prefix = f"{os.getpid():x}-{uuid.uuid4().hex[:8]}"
        self._sock: zmq.Socket | None = None
        self.stale_replies = 0

    # ------------------------------------------------------------ public API

    def infer(
        self,
        inputs: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray],
        *,
        timeout_ms: int | None = None,
        retry: bool | None = None,
    ) -> InferResult:
        """Run one batch; raises RemoteError, RequestTimeoutError."""
        if isinstance(inputs, np.ndarray):
            tensors = [p.Tensor(None, inputs)]
        elif isinstance(inputs, Mapping):
            tensors = [p.Tensor(name, np.asarray(a)) for name, a in inputs.items()]
        else:
            tensors = [p.Tensor(None, np.asarray(a)) for a in inputs]
        timeout = timeout_ms or self.timeout_ms
        req = p.InferRequest(self._new_id(), tensors, timeout_ms=timeout)
        reply = self._call(req, self.retry_infer if retry is None else retry, timeout)
        assert isinstance(reply, p.InferReply)
        return InferResult(
            reply.id,
            [t.array.copy() for t in reply.outputs],
            [t.name for t in reply.outputs],
            reply.model_name,
            reply.model_version,
            reply.timing_us,
        )

    def health(self) -> dict[str, Any]:
        return self._info(p.HealthRequest(self._new_id()))

    def metadata(self) -> dict[str, Any]:
        return self._info(p.MetadataRequest(self._new_id()))

    def feedback(self, request_id: str, label: int | list[int], *, retry: bool = False) -> dict[str, Any]:
        return self._info(p.FeedbackRequest(request_id, label), idempotent=retry)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            server_key, keys = self._curve
            if server_key is not None and keys is not None:
                s.curve_serverkey = server_key
                s.curve_publickey, s.curve_secretkey = keys
            s.connect(self.endpoint)
            self._sock = s
        return self._sock

    def _info(self, req: p.Request, idempotent: bool = True) -> dict[str, Any]:
        reply = self._call(req, idempotent, self.timeout_ms)
        assert isinstance(reply, p.InfoReply)
        return reply.fields

    def _call(self, req: p.Request, idempotent: bool, timeout_ms: int) -> p.Reply:
        frames = p.encode_request(req)
        attempts = 1 + max(0, self.retries)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            self._socket().send_multipart(frames)
            try:
                reply = self._wait(req.id, req.op, timeout_ms)
            except RequestTimeoutError:
                self.close()  # a fresh socket: a late reply to this attempt cannot be mistaken later
                if last or not idempotent:
                    why = (
                        ""
                        if idempotent
                        else (
                            "; it may have run, so it was not resent "
                            "(pass retry=True if it is safe to run twice)"
                        )
                    )
                    raise RequestTimeoutError(
                        f"no reply from {self.endpoint} to {req.op} within "
                        f"{timeout_ms} ms (attempt {attempt + 1}){why}"
                    ) from None
                continue
            if isinstance(reply, p.ErrorReply):
                if reply.code in NOT_EXECUTED and not last:
                    time.sleep(self.backoff_ms * 2**attempt / 1000)
                    continue
                raise RemoteError(reply.code, reply.message, reply.id)
            return reply
        raise AssertionError("unreachable")

    def _wait(self, request_id: str, op: str, timeout_ms: int) -> p.Reply:
        sock = self._socket()
        end = time.monotonic() + timeout_ms / 1000
        while True:
            left = int((end - time.monotonic()) * 1000)
            if left <= 0 or not sock.poll(left, zmq.POLLIN):
                raise RequestTimeoutError(request_id)
            frames = sock.recv_multipart(copy=False)
            try:
                reply = p.decode_reply([f.buffer for f in frames], op)
            except p.ProtocolError as exc:
                raise EdgedError(f"malformed reply from {self.endpoint}: {exc}") from exc
            if reply.id == request_id:
                return reply
            self.stale_replies += 1  # a reply to an earlier request that timed out
