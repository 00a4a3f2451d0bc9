"""multiprocessing.Queue peer: ``put`` / ``get`` (pickled objects), as the stdlib docs show."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np

from .base import (
    ArrayReceiver,
    ArraySender,
    ChannelSpec,
    Kind,
    Mode,
    Peer,
    Receiver,
    Sender,
    embed_header,
    read_embedded_header,
)


class _QSender(Sender):
    def __init__(self, q: Any) -> None:
        self.q = q

    def send(self, data: Any) -> bool:
        self.q.put(bytes(data))
        return True


class _QReceiver(Receiver):
    def __init__(self, q: Any, mode: Mode) -> None:
        self.q = q
        self.mode = mode

    def recv(self) -> Any:
        if self.mode == "spin":
            return super().recv()
        return self.q.get()

    def try_recv(self) -> Any | None:
        try:
            return self.q.get_nowait()
        except queue.Empty:
            return None


class _QArraySender(ArraySender):
    def __init__(self, q: Any) -> None:
        self.q = q

    def send_array(self, src: np.ndarray, seq: int, stamp_ns: int) -> bool:
        embed_header(src, seq, stamp_ns)
        self.q.put(src)
        return True


class _QArrayReceiver(ArrayReceiver):
    def __init__(self, q: Any) -> None:
        self.q = q

    def recv_array(self) -> tuple[int, int, np.ndarray]:
        arr: np.ndarray = self.q.get()
        seq, stamp = read_embedded_header(arr)
        return seq, stamp, arr


class MPQueuePeer(Peer):
    """``multiprocessing.Queue`` (spawn context): pickling + a feeder thread + a pipe."""

    name = "mp.Queue"
    description = "multiprocessing.Queue put/get (pickled); spin = get_nowait loop"

    def make_channel(
        self, ctx: Any, name: str, kind: Kind, size: int, shape: tuple[int, ...] = ()
    ) -> ChannelSpec:
        return ChannelSpec(self.name, name, kind, size, shape, {"q": ctx.Queue()})

    def open_sender(self, spec: ChannelSpec, mode: Mode) -> Sender:
        return _QSender(spec.data["q"])

    def open_receiver(self, spec: ChannelSpec, mode: Mode) -> Receiver:
        return _QReceiver(spec.data["q"], mode)

    def open_array_sender(self, spec: ChannelSpec) -> ArraySender:
        return _QArraySender(spec.data["q"])

    def open_array_receiver(self, spec: ChannelSpec) -> ArrayReceiver:
        return _QArrayReceiver(spec.data["q"])
