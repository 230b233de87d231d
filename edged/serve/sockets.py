"""Frame I/O on the ROUTER for the I/O thread's hot path.

pyzmq's ``send_multipart`` / ``recv_multipart`` and its option getters wrap
every flag and event in a Python enum and every frame in a method call of the
Python-level socket class: about 15 us per four-frame reply, more than a small
model's inference. These helpers call the compiled socket methods with plain
integer flags; the semantics (non-blocking, one multipart message) are the same.
"""

from __future__ import annotations

import zmq
import zmq.backend

_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get

NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE) | NOBLOCK
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def readable(sock: zmq.Socket) -> bool:
    """Whether a whole message can be received without blocking."""
    return bool(_get(sock, _EVENTS) & _POLLIN)


def recv_frames(sock: zmq.Socket) -> list[zmq.Frame]:
    """The next message's frames (``zmq.Frame``: buffers, sent back as they are); raises zmq.Again
    if there is none. A frame's own ``more`` flag is read, not the RCVMORE socket option, whose
    getter builds an enum member on every call."""
    frame = _recv(sock, NOBLOCK, False)
    frames = [frame]
    while frame.more:
        frame = _recv(sock, NOBLOCK, False)
        frames.append(frame)
    return frames


def send_frames(sock: zmq.Socket, frames: list) -> None:
    """Send one multipart message without blocking; raises zmq.Again / ZMQError as send_multipart.

    On a ROUTER the first frame decides whether the peer can take the message
    (unknown peer, full pipe); once it is accepted the rest follow.
    """
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send(sock, frame, _MORE if i < last else NOBLOCK)
