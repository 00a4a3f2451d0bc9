"""Common transport interface that every benchmarked peer implements.

A *peer* is one IPC mechanism (shm_comm, multiprocessing.Queue, pyzmq, ...). The workloads in
:mod:`benchpeers.workloads` are written once against the small interface below, so every peer
runs exactly the same measurement code; only the send/receive calls differ.

Life cycle (all in the parent unless noted):

1. ``peer.unavailable()`` tells whether the peer can run at all (package missing, ...).
2. ``peer.make_channel(ctx, name, kind, size)`` creates a picklable :class:`ChannelSpec`.
   Queue-like peers create the OS object here; named peers only pick a name/endpoint.
3. In each child process, ``peer.attach(role, run_dir, tag)`` is called once, then
   ``peer.open_sender(spec, mode)`` / ``peer.open_receiver(spec, mode)``.
4. ``peer.detach()`` in the child before it exits returns cleanup hints (e.g. file names of
   shared-memory segments it mapped), and ``peer.cleanup(...)`` in the parent removes what
   this run created, by exact name only.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

Mode = Literal["block", "spin", "async"]
Kind = Literal["bytes", "array"]

#: Header at the start of every benchmark message: sequence number, sender timestamp (ns,
#: ``time.perf_counter_ns()``, i.e. CLOCK_MONOTONIC, which all processes on Linux share).
HEADER = struct.Struct("<qq")
SEQ_PROBE = -1  # connection probe, discarded by the receiver
SEQ_STOP = -2  # end of a workload
SEQ_WAKE = -3  # wake-up message of the idle-CPU workload


def pack_header(buf: Any, seq: int, stamp_ns: int) -> None:
    """Write ``(seq, stamp_ns)`` into the first 16 bytes of a writable buffer."""
    HEADER.pack_into(buf, 0, seq, stamp_ns)


def unpack_header(buf: Any) -> tuple[int, int]:
    """Read ``(seq, stamp_ns)`` from the first 16 bytes of a buffer."""
    seq, stamp = HEADER.unpack_from(buf, 0)
    return int(seq), int(stamp)


@dataclass
class ChannelSpec:
    """A one-directional channel created by the parent and handed to the children.

    ``data`` holds whatever the peer needs (an OS object, an endpoint, a service name); it must
    be picklable with the ``spawn`` start method.
    """

    peer: str
    name: str
    kind: Kind
    size: int  # max payload size in bytes (bytes kind) or array nbytes (array kind)
    shape: tuple[int, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    #: "latency" or "throughput": lets a peer pick its documented low-latency or
    #: high-throughput settings (e.g. zenoh ``express``).
    purpose: str = "latency"


class Sender:
    """Sending end of a channel."""

    def new_message(self, size: int) -> Any:
        """Return a writable buffer of ``size`` bytes to fill and pass to :meth:`send`."""
        return bytearray(size)

    def send(self, data: Any) -> bool:
        """Send one message; return False if the transport refused/dropped it at the sender."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Transport statistics worth reporting (e.g. shm_comm's drop_count)."""
        return {}

    def close(self) -> None:
        """Release resources."""


class Receiver:
    """Receiving end of a channel, opened in ``block`` (sleep in the OS), ``spin`` or (peers
    with ``supports_async``) ``async`` mode."""

    mode: Mode = "block"

    def recv(self) -> Any:
        """Wait for the next message (blocking or spinning, per ``mode``) and return a buffer."""
        if self.mode == "spin":
            while True:
                msg = self.try_recv()
                if msg is not None:
                    return msg
        raise NotImplementedError

    def try_recv(self) -> Any | None:
        """Non-blocking attempt; None when nothing is queued."""
        raise NotImplementedError

    def recv_many(self) -> list[Any]:
        """Wait for at least one message and return every message then available.

        The default returns one message; peers with a documented batch receive
        (faster-fifo ``get_many``, iceoryx2 drain-after-event) override it.
        """
        return [self.recv()]

    async def recv_async(self) -> Any:
        """Await the next message inside an asyncio loop (receivers opened in ``async``
        mode, of peers with ``supports_async``)."""
        raise NotImplementedError

    def recv_for(self, timeout: float) -> Any | None:
        """Bounded wait used on control paths only (handshakes, draining), never timed."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.try_recv()
            if msg is not None:
                return msg
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.0005)

    def stats(self) -> dict[str, Any]:
        """Transport statistics worth reporting."""
        return {}

    def close(self) -> None:
        """Release resources."""


class ArraySender:
    """Sends float64 arrays of a fixed shape."""

    def new_source(self, shape: tuple[int, ...]) -> np.ndarray:
        """Allocate the producer's source array (a peer may need a particular backing)."""
        return np.zeros(shape, dtype=np.float64)

    def send_array(self, src: np.ndarray, seq: int, stamp_ns: int) -> bool:
        """Deliver ``src`` (with ``seq``/``stamp_ns`` attached) to the receiver."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""


class ArrayReceiver:
    """Receives float64 arrays; the result is an ``np.ndarray`` (a view where possible)."""

    def recv_array(self) -> tuple[int, int, np.ndarray]:
        """Block until the next array arrives; return ``(seq, stamp_ns, array)``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""


def embed_header(src: np.ndarray, seq: int, stamp_ns: int) -> None:
    """Store seq/stamp in the first 16 bytes of a float64 array (for copying transports)."""
    head = src.view(np.int64)
    head.flat[0] = seq
    head.flat[1] = stamp_ns


def read_embedded_header(arr: np.ndarray) -> tuple[int, int]:
    """Inverse of :func:`embed_header`."""
    head = arr.view(np.int64)
    return int(head.flat[0]), int(head.flat[1])


class Peer:
    """Base class of one benchmarked IPC mechanism."""

    #: Short name used in tables and on the command line.
    name: ClassVar[str] = "?"
    #: Human description of how the peer is used (goes into the report).
    description: ClassVar[str] = ""
    #: Whether the receiver supports a busy-polling (spin) mode.
    supports_spin: ClassVar[bool] = True
    #: Whether the receiver can be awaited in asyncio (``Receiver.recv_async``).
    supports_async: ClassVar[bool] = False
    #: Array send paths this peer offers (shm_comm: "send" and "loan").
    array_variants: ClassVar[tuple[str, ...]] = ("default",)

    def __init__(self) -> None:
        self.role = ""
        self.run_dir = ""
        self.tag = ""

    # ---- parent side -------------------------------------------------------------------
    def unavailable(self) -> str | None:
        """Return a reason string when this peer cannot run here, else None."""
        return None

    def make_channel(
        self, ctx: Any, name: str, kind: Kind, size: int, shape: tuple[int, ...] = ()
    ) -> ChannelSpec:
        """Create a channel description in the parent (see module docstring)."""
        return ChannelSpec(self.name, name, kind, size, shape)

    def hints_from_pid(self, pid: int) -> list[Any]:
        """Cleanup hints for a child that timed out and is about to be killed."""
        return []

    def begin_run(self, run_dir: str) -> None:
        """Parent-side hook called once before this peer's first task."""

    def cleanup(self, run_dir: str, hints: list[Any]) -> list[str]:
        """Remove what this run created, by exact name; return the removed paths.

        ``hints`` are the values the children's :meth:`detach` returned.
        """
        return []

    # ---- child side --------------------------------------------------------------------
    def attach(self, role: str, run_dir: str, tag: str) -> None:
        """Called once in each child before opening channels.

        ``role`` is "a" or "b" (the two processes of a task), ``tag`` is unique per task.
        """
        self.role = role
        self.run_dir = run_dir
        self.tag = tag

    def detach(self) -> list[Any]:
        """Called once in each child before it exits; returns cleanup hints for the parent."""
        return []

    def open_sender(self, spec: ChannelSpec, mode: Mode) -> Sender:
        """Open the sending end of a bytes channel."""
        raise NotImplementedError

    def open_receiver(self, spec: ChannelSpec, mode: Mode) -> Receiver:
        """Open the receiving end of a bytes channel."""
        raise NotImplementedError

    def open_array_sender(self, spec: ChannelSpec) -> ArraySender:
        """Open the sending end of an array channel (the source array comes from
        :meth:`ArraySender.new_source`)."""
        raise NotImplementedError

    def open_array_receiver(self, spec: ChannelSpec) -> ArrayReceiver:
        """Open the receiving end of an array channel (blocking receive)."""
        raise NotImplementedError
