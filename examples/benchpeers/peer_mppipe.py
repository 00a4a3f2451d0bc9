"""multiprocessing.Pipe peer: ``send_bytes`` / ``recv_bytes`` (no pickling), one-way pipe."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from .base import (
    HEADER,
    ArrayReceiver,
    ArraySender,
    ChannelSpec,
    Kind,
    Mode,
    Peer,
    Receiver,
    Sender,
)


class _PSender(Sender):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def send(self, data: Any) -> bool:
        self.conn.send_bytes(data)
        return True

    def close(self) -> None:
        self.conn.close()


class _PReceiver(Receiver):
    def __init__(self, conn: Any, mode: Mode) -> None:
        self.conn = conn
        self.mode = mode
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def recv_async(self) -> Any:
        """The least an asyncio loop does to be woken by another process: the pipe stays
        registered with ``loop.add_reader`` (as shm_comm keeps its descriptor registered),
        the task awaits a future that the reader callback completes, then ``recv_bytes``."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            loop.add_reader(self.conn.fileno(), self._readable)
            self._loop = loop
        while not self.conn.poll(0):
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.conn.recv_bytes()

    def _readable(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def recv(self) -> Any:
        if self.mode == "spin":
            while not self.conn.poll(0):
                pass
        return self.conn.recv_bytes()

    def try_recv(self) -> Any | None:
        if self.conn.poll(0):
            return self.conn.recv_bytes()
        return None

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.conn.fileno())
        self.conn.close()


class _PArraySender(ArraySender):
    """Header and array go out as one ``send_bytes`` each (the array via the buffer protocol)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def send_array(self, src: np.ndarray, seq: int, stamp_ns: int) -> bool:
        self.conn.send_bytes(HEADER.pack(seq, stamp_ns))
        self.conn.send_bytes(src)
        return True


class _PArrayReceiver(ArrayReceiver):
    def __init__(self, conn: Any, shape: tuple[int, ...]) -> None:
        self.conn = conn
        self.shape = shape

    def recv_array(self) -> tuple[int, int, np.ndarray]:
        seq, stamp = HEADER.unpack(self.conn.recv_bytes())
        arr = np.frombuffer(self.conn.recv_bytes(), dtype=np.float64).reshape(self.shape)
        return seq, stamp, arr


class MPPipePeer(Peer):
    """``multiprocessing.Pipe(duplex=False)``: a plain OS pipe, bytes in, bytes out."""

    name = "mp.Pipe"
    description = ("multiprocessing.Pipe send_bytes/recv_bytes; spin = poll(0) loop; awaited "
                   "(the asyncio reference) = loop.add_reader on the pipe, then recv_bytes")
    supports_async = True

    def make_channel(
        self, ctx: Any, name: str, kind: Kind, size: int, shape: tuple[int, ...] = ()
    ) -> ChannelSpec:
        r, w = ctx.Pipe(duplex=False)
        return ChannelSpec(self.name, name, kind, size, shape, {"r": r, "w": w})

    def open_sender(self, spec: ChannelSpec, mode: Mode) -> Sender:
        return _PSender(spec.data["w"])

    def open_receiver(self, spec: ChannelSpec, mode: Mode) -> Receiver:
        return _PReceiver(spec.data["r"], mode)

    def open_array_sender(self, spec: ChannelSpec) -> ArraySender:
        return _PArraySender(spec.data["w"])

    def open_array_receiver(self, spec: ChannelSpec) -> ArrayReceiver:
        return _PArrayReceiver(spec.data["r"], spec.shape)
