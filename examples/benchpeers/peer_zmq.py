"""pyzmq peer: PUB/SUB over ``ipc://`` (a Unix socket), zero-copy frames for large arrays.

Arrays follow pyzmq's documented NumPy pattern: a small metadata frame, then the array with
``copy=False`` (no copy into a zmq message on send) and ``recv(copy=False)`` on the receiver,
which wraps the received frame's buffer with ``np.frombuffer`` (no further copy).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .base import (
    HEADER,
    ArrayReceiver,
    ArraySender,
    ChannelSpec,
    Mode,
    Peer,
    Receiver,
    Sender,
)

try:  # pragma: no cover - depends on the environment
    import zmq
except ImportError:  # pragma: no cover
    zmq = None  # type: ignore[assignment]


def _endpoint(spec: ChannelSpec, run_dir: str) -> str:
    return "ipc://" + os.path.join(run_dir, f"zmq-{spec.name}.ipc")


class _ZSender(Sender):
    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def send(self, data: Any) -> bool:
        self.sock.send(data)
        return True

    def close(self) -> None:
        self.sock.close(linger=0)


class _ZReceiver(Receiver):
    def __init__(self, sock: Any, mode: Mode) -> None:
        self.sock = sock
        self.mode = mode

    def recv(self) -> Any:
        if self.mode == "spin":
            return super().recv()
        return self.sock.recv()

    def try_recv(self) -> Any | None:
        try:
            return self.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def close(self) -> None:
        self.sock.close(linger=0)


class _ZArraySender(ArraySender):
    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def send_array(self, src: np.ndarray, seq: int, stamp_ns: int) -> bool:
        self.sock.send(HEADER.pack(seq, stamp_ns), zmq.SNDMORE)
        self.sock.send(src, copy=False)  # src is never modified afterwards
        return True

    def close(self) -> None:
        self.sock.close(linger=0)


class _ZArrayReceiver(ArrayReceiver):
    def __init__(self, sock: Any, shape: tuple[int, ...]) -> None:
        self.sock = sock
        self.shape = shape

    def recv_array(self) -> tuple[int, int, np.ndarray]:
        head, body = self.sock.recv_multipart(copy=False)
        seq, stamp = HEADER.unpack(head.bytes)
        arr = np.frombuffer(body.buffer, dtype=np.float64).reshape(self.shape)
        return seq, stamp, arr

    def close(self) -> None:
        self.sock.close(linger=0)


class ZmqPeer(Peer):
    """pyzmq PUB (bind) / SUB (connect) on ipc://, default high-water marks (1000)."""

    name = "pyzmq"
    description = "pyzmq PUB/SUB over ipc://; arrays copy=False; spin = recv(NOBLOCK) loop"

    def __init__(self) -> None:
        super().__init__()
        self._ctx: Any = None

    def unavailable(self) -> str | None:
        return None if zmq is not None else "pyzmq is not installed"

    def _context(self) -> Any:
        if self._ctx is None:
            self._ctx = zmq.Context()
        return self._ctx

    def _pub(self, spec: ChannelSpec) -> Any:
        sock = self._context().socket(zmq.PUB)
        sock.bind(_endpoint(spec, self.run_dir))
        return sock

    def _sub(self, spec: ChannelSpec) -> Any:
        sock = self._context().socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(_endpoint(spec, self.run_dir))
        return sock

    def open_sender(self, spec: ChannelSpec, mode: Mode) -> Sender:
        return _ZSender(self._pub(spec))

    def open_receiver(self, spec: ChannelSpec, mode: Mode) -> Receiver:
        return _ZReceiver(self._sub(spec), mode)

    def open_array_sender(self, spec: ChannelSpec) -> ArraySender:
        return _ZArraySender(self._pub(spec))

    def open_array_receiver(self, spec: ChannelSpec) -> ArrayReceiver:
        return _ZArrayReceiver(self._sub(spec), spec.shape)

    def detach(self) -> list[Any]:
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None
        return []
