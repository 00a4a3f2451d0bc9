"""faster-fifo peer: shared-memory circular buffer + process-shared mutex/condvars.

Used as its README shows: ``put`` on the producer, ``get`` (latency) or ``get_many``
(streaming) on the consumer; objects are pickled. ``faster_fifo_reduction`` makes the queue
picklable for the ``spawn`` start method.
"""

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

try:  # pragma: no cover - depends on the environment
    import faster_fifo
    import faster_fifo_reduction  # noqa: F401  (registers pickling for spawn)
except ImportError:  # pragma: no cover
    faster_fifo = None  # type: ignore[assignment,unused-ignore]

_FOREVER = 1e9  # faster-fifo's get() needs a finite timeout (default 10 s)


class _FSender(Sender):
    def __init__(self, q: Any) -> None:
        self.q = q

    def send(self, data: Any) -> bool:
        self.q.put(bytes(data), timeout=_FOREVER)
        return True


class _FReceiver(Receiver):
    def __init__(self, q: Any, mode: Mode) -> None:
        self.q = q
        self.mode = mode

    def recv(self) -> Any:
        if self.mode == "spin":
            return super().recv()
        return self.q.get(timeout=_FOREVER)

    def try_recv(self) -> Any | None:
        try:
            return self.q.get_nowait()
        except queue.Empty:
            return None

    def recv_many(self) -> list[Any]:
        if self.mode == "spin":
            while True:
                try:
                    return list(self.q.get_many_nowait())
                except queue.Empty:
                    pass
        return list(self.q.get_many(timeout=_FOREVER))


class _FArraySender(ArraySender):
    def __init__(self, q: Any) -> None:
        self.q = q

    def send_array(self, src: np.ndarray, seq: int, stamp_ns: int) -> bool:
        embed_header(src, seq, stamp_ns)
        self.q.put(src, timeout=_FOREVER)
        return True


class _FArrayReceiver(ArrayReceiver):
    def __init__(self, q: Any) -> None:
        self.q = q

    def recv_array(self) -> tuple[int, int, np.ndarray]:
        arr: np.ndarray = self.q.get(timeout=_FOREVER)
        seq, stamp = read_embedded_header(arr)
        return seq, stamp, arr


class FasterFifoPeer(Peer):
    """faster_fifo.Queue sized to hold a few messages of the channel's size."""

    name = "faster-fifo"
    description = "faster_fifo.Queue put/get (pickled), get_many for streaming; spin = get_nowait"

    def unavailable(self) -> str | None:
        return None if faster_fifo is not None else "faster-fifo is not installed"

    def make_channel(
        self, ctx: Any, name: str, kind: Kind, size: int, shape: tuple[int, ...] = ()
    ) -> ChannelSpec:
        # Room for several pickled messages; the 1 MB default is too small for 16 MiB arrays.
        q = faster_fifo.Queue(max_size_bytes=max(1_000_000, 4 * (size + 4096)))
        return ChannelSpec(self.name, name, kind, size, shape, {"q": q})

    def open_sender(self, spec: ChannelSpec, mode: Mode) -> Sender:
        return _FSender(spec.data["q"])

    def open_receiver(self, spec: ChannelSpec, mode: Mode) -> Receiver:
        return _FReceiver(spec.data["q"], mode)

    def open_array_sender(self, spec: ChannelSpec) -> ArraySender:
        return _FArraySender(spec.data["q"])

    def open_array_receiver(self, spec: ChannelSpec) -> ArrayReceiver:
        return _FArrayReceiver(spec.data["q"])
