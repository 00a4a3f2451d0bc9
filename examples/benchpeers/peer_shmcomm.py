"""shm_comm peer: the library under test.

* bytes: ``Publisher.send_bytes`` / ``Subscriber.recv_bytes``; blocking = the default
  subscriber (futex wake-up, no spinning), spin = ``Subscriber(..., poll_interval=0)``,
  async = ``await Subscriber.recv_bytes_async()`` in an asyncio loop;
* arrays: ``ArrayPublisher.send(arr)`` (one copy into the slot) or ``ArrayPublisher.loan()``
  (fill the slot in place), ``ArraySubscriber.recv(copy=False)`` (read-only view, no copy);
* "typed": the same ping-pong with 6 x float64 through ``ArrayPublisher``/``ArraySubscriber``
  instead of raw bytes (see :class:`ShmCommTypedPeer`).

Channel names carry the run's unique tag; the parent force-unlinks any ``shmc_<name>``
segment of this run that is still present at the end (there should be none).
"""

from __future__ import annotations

import os
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

try:  # pragma: no cover - depends on the state of the repository
    import shm_comm
except ImportError:  # pragma: no cover
    shm_comm = None  # type: ignore[assignment]

SEGMENT_PREFIX = "shmc_"
STREAM_SLOTS = 1024  # ring depth for the streaming workload (tuning guide: deepen for bursts)
ARRAY_SLOTS = 4


def _channel_name(spec: ChannelSpec) -> str:
    return str(spec.data["channel"])


def _slot_size(size: int) -> int:
    """Right-size the slot (performance guide): payload rounded up to 64 bytes."""
    return max(64, (size + 63) // 64 * 64)


class _SSender(Sender):
    def __init__(self, pub: Any, block: bool = False) -> None:
        self.pub = pub
        self.block = block

    def send(self, data: Any) -> bool:
        if self.block:  # wait for room instead of overwriting the oldest message
            return bool(self.pub.send_bytes(data, block=True, timeout=5.0))
        return bool(self.pub.send_bytes(data))

    def stats(self) -> dict[str, Any]:
        return dict(self.pub.stats())

    def close(self) -> None:
        self.pub.close()


class _SReceiver(Receiver):
    def __init__(self, sub: Any, mode: Mode) -> None:
        self.sub = sub
        self.mode = mode

    def recv(self) -> Any:
        return self.sub.recv_bytes()  # blocks (futex) or spins, per poll_interval

    def try_recv(self) -> Any | None:
        return self.sub.recv_bytes(timeout=0)

    async def recv_async(self) -> Any:
        return await self.sub.recv_bytes_async()

    def recv_many(self) -> list[Any]:
        # The documented batch receive: everything waiting, copied and validated at once.
        while True:
            batch = self.sub.recv_bytes_batch(4096, timeout=1.0)
            if batch:
                return list(batch)

    def stats(self) -> dict[str, Any]:
        return dict(self.sub.stats())

    def close(self) -> None:
        self.sub.close()


class _SArraySender(ArraySender):
    def __init__(self, pub: Any, path: str) -> None:
        self.pub = pub
        self.path = path

    def send_array(self, src: np.ndarray, seq: int, stamp_ns: int) -> bool:
        embed_header(src, seq, stamp_ns)
        if self.path == "loan":
            with self.pub.loan() as out:
                np.copyto(out, src)
            return True
        return bool(self.pub.send(src))

    def close(self) -> None:
        self.pub.close()


class _SArrayReceiver(ArrayReceiver):
    def __init__(self, sub: Any) -> None:
        self.sub = sub

    def recv_array(self) -> tuple[int, int, np.ndarray]:
        arr = self.sub.recv(copy=False)  # read-only view into the slot
        seq, stamp = read_embedded_header(arr)
        return seq, stamp, arr

    def close(self) -> None:
        self.sub.close()


class ShmCommPeer(Peer):
    """shm_comm Publisher/Subscriber and ArrayPublisher/ArraySubscriber."""

    name = "shm_comm"
    description = (
        "shm_comm send_bytes/recv_bytes; blocking = default Subscriber (futex), spin = "
        "poll_interval=0; arrays via ArrayPublisher.send or loan(), recv(copy=False)"
    )
    supports_async = True
    array_variants = ("send", "loan")

    def __init__(self) -> None:
        super().__init__()
        self._made: list[str] = []

    def unavailable(self) -> str | None:
        if shm_comm is None:
            return "shm_comm is not importable"
        missing = [
            n
            for n in ("Publisher", "Subscriber", "ArrayPublisher", "ArraySubscriber")
            if not hasattr(shm_comm, n)
        ]
        return f"shm_comm lacks {', '.join(missing)}" if missing else None

    def make_channel(
        self, ctx: Any, name: str, kind: Kind, size: int, shape: tuple[int, ...] = ()
    ) -> ChannelSpec:
        channel = f"bench{os.getpid()}_{name}"
        self._made.append(channel)
        return ChannelSpec(self.name, name, kind, size, shape, {"channel": channel})

    def open_sender(self, spec: ChannelSpec, mode: Mode) -> Sender:
        slots = STREAM_SLOTS if spec.purpose == "throughput" else 64
        pub = shm_comm.Publisher(
            _channel_name(spec), num_slots=slots, slot_size=_slot_size(spec.size)
        )
        return _SSender(pub, bool(spec.data.get("block_send")))

    def open_receiver(self, spec: ChannelSpec, mode: Mode) -> Receiver:
        poll = 0 if mode == "spin" else None
        sub = shm_comm.Subscriber(_channel_name(spec), poll_interval=poll)
        return _SReceiver(sub, mode)

    def open_array_sender(self, spec: ChannelSpec) -> ArraySender:
        pub = shm_comm.ArrayPublisher(
            _channel_name(spec), shape=spec.shape, dtype=np.float64, num_slots=ARRAY_SLOTS
        )
        return _SArraySender(pub, str(spec.data.get("variant", "send")))

    def open_array_receiver(self, spec: ChannelSpec) -> ArrayReceiver:
        return _SArrayReceiver(shm_comm.ArraySubscriber(_channel_name(spec)))

    def cleanup(self, run_dir: str, hints: list[Any]) -> list[str]:
        removed: list[str] = []
        try:
            present = os.listdir("/dev/shm")
        except OSError:
            return removed
        for channel in self._made:
            for fname in present:
                if fname == SEGMENT_PREFIX + channel or fname.startswith(
                    SEGMENT_PREFIX + channel + "."
                ):
                    path = os.path.join("/dev/shm", fname)
                    try:
                        os.unlink(path)
                        removed.append(path)
                    except OSError:
                        pass
        return removed


class _TypedSender(Sender):
    def __init__(self, pub: Any) -> None:
        self.pub = pub

    def new_message(self, size: int) -> Any:
        return np.zeros(size // 8, dtype=np.float64)

    def send(self, data: Any) -> bool:
        if not isinstance(data, np.ndarray):
            data = np.frombuffer(data, dtype=np.float64)
        return bool(self.pub.send(data))

    def close(self) -> None:
        self.pub.close()


class _TypedReceiver(Receiver):
    def __init__(self, sub: Any, mode: Mode) -> None:
        self.sub = sub
        self.mode = mode

    def recv(self) -> Any:
        return self.sub.recv(copy=False)

    def try_recv(self) -> Any | None:
        return self.sub.recv(timeout=0, copy=False)

    def close(self) -> None:
        self.sub.close()


class ShmCommTypedPeer(ShmCommPeer):
    """shm_comm with 6 x float64 messages through ArrayPublisher (shape=(6,))."""

    name = "shm_comm[typed]"
    description = "shm_comm ArrayPublisher(shape=(6,), float64) / ArraySubscriber"

    def open_sender(self, spec: ChannelSpec, mode: Mode) -> Sender:
        pub = shm_comm.ArrayPublisher(
            _channel_name(spec), shape=(spec.size // 8,), dtype=np.float64, num_slots=64
        )
        return _TypedSender(pub)

    def open_receiver(self, spec: ChannelSpec, mode: Mode) -> Receiver:
        poll = 0 if mode == "spin" else None
        sub = shm_comm.ArraySubscriber(_channel_name(spec), poll_interval=poll)
        return _TypedReceiver(sub, mode)
