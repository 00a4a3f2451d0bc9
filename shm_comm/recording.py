"""Recording channels to MCAP files, loading them into NumPy, and playing them back.

    stats = record(["imu", "joints"], "run.mcap", duration=10.0)   # blocks; Ctrl-C ends it
    with Recorder(["imu", "camera"], "run.mcap"):                   # in a background thread
        ...
    runs = load("run.mcap")            # {"imu": LoadedChannel(data=array (n,), ...), ...}
    play("run.mcap", rate=2.0, remap={"imu": "imu_replay"})

Needs the ``mcap`` package (``pip install -e ".[record]"`` in the checkout, or ``pip install
mcap``), imported only when a function here runs. docs/recording.md describes the file for
other tools (Foxglove, the ``mcap`` CLI).

Design (the why):

* **Recording never perturbs the channels.** The recorder attaches as an observer
  (``Subscriber(observer=True)``): the segment is mapped read-only, no subscriber row is
  taken, the publisher never waits for the recorder, and no drop is ever counted against it.
  A recorder that falls a whole ring behind loses messages itself; it counts them per
  channel (``RecordingStats``, and a metadata record in the file) instead of hiding them.
* **One polling loop, not one thread per channel.** Observers cannot ask to be woken (that
  would be a write to the segment), so each would poll anyway; one loop polls every channel,
  drains what is waiting and sleeps ``poll_interval`` when nothing was. It also owns the
  MCAP writer, which is not thread-safe, so nothing needs a lock.
* **Exact arrays.** Every message is stored as the payload the publisher wrote (typed arrays
  with their array header), so loading decodes exactly what a subscriber would have, and
  replay republishes the same bytes, with two exceptions made for Foxglove. Image and point
  cloud channels (``foxglove_schemas.py``) are stored as Foxglove's ``foxglove.RawImage`` and
  ``foxglove.PointCloud`` (protobuf), which Foxglove shows; their pixel and point bytes are
  kept as they are and the channel's dtype and shape in its metadata, so ``load`` and
  ``play`` give back the same arrays (dtype, shape, data, timestamps). The opt-in
  ``json_compatible`` mode stores dict messages as JSON.
* **Two clocks per message, as the MCAP spec defines them.** ``publish_time`` is the
  publisher's timestamp from the slot header (when it sent the message); ``log_time`` is
  when the recorder took it. Messages are written in log-time order, so the file is sorted
  the way MCAP readers expect; loading and replay use the publisher's clock.
* **Replay keeps the recorded timing without drift.** Each message is due at
  ``start + (publish_time - first_publish_time) / rate`` on the monotonic clock: a deadline
  schedule, so a late message never delays the ones after it. Messages from different
  channels can sit out of publish-time order in the file (the recorder drains one channel,
  then the next); a reordering window of ``REORDER_WINDOW`` seconds of log time sorts them.
* **One MCAP channel per (shm_comm channel, encoding).** A pickle publisher may also send raw
  bytes (``send_bytes``), and each message carries its own encoding; MCAP gives a channel a
  single ``message_encoding``, so such a topic gets a second MCAP channel.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import heapq
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from . import layout as L
from ._optional import require
from .arrays import ArrayPublisher, ArraySubscriber, decode_array
from .channels import channel_info
from .errors import (
    SHMConnectionError,
    SHMError,
    SHMFormatError,
    SHMSerializationError,
    SHMTimeoutError,
)
from .foxglove_schemas import (
    POINT_CLOUD,
    RAW_IMAGE,
    array_from_message,
    mapping_for,
    message_decoder,
)
from .foxglove_schemas import Mapping as WellKnown
from .naming import validate_channel_name
from .pubsub import Publisher, Subscriber
from .serialization import Serializer, get_serializer
from .wait import sleep

if TYPE_CHECKING:
    from mcap.reader import McapReader
    from mcap.records import Channel as McapChannel
    from mcap.records import ChunkIndex as McapChunkIndex
    from mcap.records import Schema as McapSchema
    from mcap.writer import Writer as McapWriter

__all__ = [
    "ChannelRecordingStats",
    "LoadedChannel",
    "PlayStats",
    "Recorder",
    "RecordingStats",
    "load",
    "parse_remap",
    "play",
    "record",
    "require_mcap",
]

PathLike = str | os.PathLike[str]

# Message encodings in the file: shm_comm encoding id -> MCAP message_encoding.
MESSAGE_ENCODINGS = {
    L.ENCODING_RAW: "raw",
    L.ENCODING_PICKLE: "pickle",
    L.ENCODING_MSGPACK: "msgpack",
    L.ENCODING_ARRAY: "shm_comm.ndarray",
}
ENCODING_IDS = {name: encoding for encoding, name in MESSAGE_ENCODINGS.items()}
JSON_ENCODING = "json"
ARRAY_SCHEMA_NAME = "shm_comm.ndarray"
PROTOBUF_ENCODING = "protobuf"  # Foxglove's well-known schemas (images, point clouds)
ARRAY_SCHEMA_ENCODING = "shm_comm.ndarray"
JSON_SCHEMA_NAME = "shm_comm.json"
JSON_SCHEMA_ENCODING = "jsonschema"

# Channel metadata keys (MCAP channel metadata is str -> str).
META_CHANNEL_ENCODING = "shm_comm.channel_encoding"  # the channel's encoding: pickle, array...
META_NUM_SLOTS = "shm_comm.num_slots"
META_SLOT_SIZE = "shm_comm.slot_size"
META_SERIALIZATION = "shm_comm.serialization"  # json channels: what the publisher used
META_ARRAY = "shm_comm.ndarray"  # typed channels stored with a Foxglove schema: dtype, shape
# File metadata records.
RECORDING_METADATA = "shm_comm.recording"
STATS_METADATA = "shm_comm.recording_stats"

COMPRESSIONS = ("zstd", "lz4", "none")
REORDER_WINDOW = 1.0  # seconds of log time by which a message may precede an older one
LATE_THRESHOLD = 0.001  # seconds after its deadline a replayed message counts as late
LIVENESS_CHECK_INTERVAL = 0.2  # seconds between checks for restarted publishers
MAX_DRAIN = 4096  # messages taken from one channel before the loop looks at the next
MAX_WAIT_SLICE = 0.05  # replay sleeps in slices of at most this, so stop_event is seen


def require_mcap() -> None:
    """Import mcap now, or raise ``ModuleNotFoundError`` saying how to install it.

    Importing early (mcap, zstandard, lz4: a noticeable time on a busy machine) means the
    recorder starts polling right after it attaches, before a ring can fill up.
    """
    require("mcap.reader", "recording and replay", "record", "mcap")
    require("mcap.writer", "recording and replay", "record", "mcap")


def _check_names(channels: Sequence[str] | str) -> list[str]:
    if isinstance(channels, str):
        raise TypeError(f"channels must be a list of channel names, e.g. [{channels!r}], "
                        "not a string")
    names = [validate_channel_name(name) for name in channels]
    if not names:
        raise ValueError("give at least one channel to record")
    if len(set(names)) != len(names):
        raise ValueError(f"a channel is listed twice: {names}")
    return names


def parse_remap(items: Iterable[str]) -> dict[str, str]:
    """Turn ``["old:new", ...]`` (the CLI's ``--remap``) into ``{"old": "new", ...}``.

    Raises ``ValueError`` for an item without exactly one ``:``, an invalid channel name or a
    channel remapped twice.
    """
    remap: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition(":")
        if not sep or ":" in new:
            raise ValueError(f"remap {item!r} must look like OLD:NEW (two channel names)")
        validate_channel_name(old)
        validate_channel_name(new)
        if old in remap:
            raise ValueError(f"channel {old!r} is remapped twice")
        remap[old] = new
    return remap


# =============================================================================================
# Recording
# =============================================================================================

@dataclass
class ChannelRecordingStats:
    """What the recorder saw of one channel.

    ``messages`` and ``bytes`` (payload bytes) were written to the file. ``missed`` counts
    messages the recorder itself lost: it fell more than a ring behind (or a message was
    overwritten while it copied it). Subscribers of the channel are never affected.
    ``reconnects`` counts publisher restarts followed. ``as_json`` counts messages stored
    re-encoded as JSON (``json_compatible``).
    """

    name: str
    encoding: str
    messages: int = 0
    bytes: int = 0
    missed: int = 0
    reconnects: int = 0
    as_json: int = 0


@dataclass
class RecordingStats:
    """Summary of a recording: per-channel counters, wall-clock ``duration`` in seconds."""

    path: str
    duration: float
    channels: dict[str, ChannelRecordingStats]

    @property
    def messages(self) -> int:
        """Messages written, all channels."""
        return sum(c.messages for c in self.channels.values())

    @property
    def missed(self) -> int:
        """Messages the recorder lost, all channels (0 for a complete recording)."""
        return sum(c.missed for c in self.channels.values())

    @property
    def bytes(self) -> int:
        """Payload bytes written, all channels."""
        return sum(c.bytes for c in self.channels.values())

    def summary(self) -> str:
        """A few human-readable lines: one per channel, then the totals."""
        lines = []
        for c in self.channels.values():
            rate = c.messages / self.duration if self.duration > 0 else 0.0
            line = (f"{c.name}: {c.messages} messages ({rate:.0f}/s, {c.bytes} bytes, "
                    f"{c.encoding}), {c.missed} missed")
            if c.reconnects:
                line += f", {c.reconnects} publisher restart(s)"
            if c.as_json:
                line += f", {c.as_json} stored as JSON"
            lines.append(line)
        lines.append(f"{self.messages} messages, {self.missed} missed, in {self.duration:.1f} s "
                     f"-> {self.path}")
        return "\n".join(lines)


@dataclass
class _Source:
    """One recorded channel: its observer, what we know of it, and its MCAP channel ids."""

    name: str
    subscriber: Subscriber
    encoding: int
    num_slots: int
    slot_size: int
    array_spec: dict[str, Any] | None
    stats: ChannelRecordingStats
    mcap_channels: dict[str, int] = field(default_factory=dict)  # message encoding -> id
    foxglove: WellKnown | None = None  # the Foxglove schema its arrays are stored with


class Recorder:
    """Records pub/sub channels into an MCAP file, in a background thread or in this one.

    ``channels``: names of pub/sub channels (plain or typed). Each must appear within
    ``timeout_connect`` seconds, else :class:`SHMConnectionError`; recording starts with the
    next message each one publishes. ``foxglove_schemas=True`` (the default) stores image
    and point-cloud channels as Foxglove's ``foxglove.RawImage`` / ``foxglove.PointCloud``
    (needs ``protobuf`` and ``foxglove-schemas-protobuf``); False keeps every typed message's
    exact bytes. ``json_compatible=True`` stores pickle and msgpack
    messages that are dicts of JSON values as JSON (``message_encoding`` ``"json"``, which
    Foxglove displays) instead of their exact bytes; other messages keep their encoding. It
    decodes every such message in the recorder, so pickle channels must be trusted.
    ``poll_interval``: seconds the loop sleeps when no channel had anything (latency of
    recording, not of the channels). ``compression``: ``"zstd"``, ``"lz4"`` or ``"none"``,
    for MCAP chunks of ``chunk_size`` bytes.

    Use :meth:`start`/:meth:`stop` (or ``with``) for a background thread, or :meth:`run` to
    record in the calling thread. A background recorder still running when the interpreter
    exits is stopped then, finishing its file. An existing file at ``path`` is replaced. A
    recorder records once. Methods are not thread-safe, except that :attr:`stats` may be read
    and :meth:`stop` called from any thread.
    """

    def __init__(self, channels: Sequence[str], path: PathLike, *, json_compatible: bool = False,
                 timeout_connect: float = 5.0, poll_interval: float = 0.001,
                 compression: str = "zstd", chunk_size: int = 1 << 20,
                 foxglove_schemas: bool = True) -> None:
        require_mcap()  # fail here, not once recording has been announced
        self.channels = _check_names(channels)
        self.path = os.fspath(path)
        if timeout_connect < 0:
            raise ValueError(f"timeout_connect must be >= 0, got {timeout_connect}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 byte, got {chunk_size}")
        self.json_compatible = json_compatible
        self.foxglove_schemas = foxglove_schemas
        self.timeout_connect = timeout_connect
        self.poll_interval = poll_interval
        self.compression = compression
        self.chunk_size = chunk_size
        self._sources: list[_Source] = []
        self._file: IO[bytes] | None = None
        self._writer: McapWriter | None = None
        self._schemas: dict[bytes, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started = False
        self._finished: RecordingStats | None = None
        self._start_mono = 0.0
        self._end_mono: float | None = None
        self._serializers: dict[int, Serializer | None] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Recorder:
        """Attach to every channel, create the file and record in a background thread.

        Returns self. Raises :class:`SHMConnectionError` if a channel does not appear in time
        (no file is created then) and ``RuntimeError`` if this recorder already started.
        """
        self._open()
        self._thread = threading.Thread(target=self._thread_main, name="shm_comm-recorder",
                                        daemon=True)
        self._thread.start()
        # A recorder left running at interpreter exit still finishes its file.
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float | None = None) -> RecordingStats:
        """Stop recording, finish the file (a valid MCAP with its index) and return the stats.

        Everything published before the call is still recorded. ``timeout``: seconds to wait
        for the background thread (None: no limit); raises :class:`SHMTimeoutError` if it does
        not finish in time. Re-raises an error that ended the recording thread (the file is
        finished all the same). Idempotent: later calls return the same stats. For a recorder
        running :meth:`run` in another thread, it only asks it to end (``run`` returns the
        final stats) and returns a snapshot.
        """
        self._stop.set()
        if self._finished is not None:
            return self._finished
        if not self._started:
            raise RuntimeError("this recorder never started: call start() or run()")
        if self._thread is not None:
            if self._thread is threading.current_thread():
                return self.stats
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise SHMTimeoutError(f"the recorder of {self.path} did not stop within "
                                      f"{timeout} s")
            return self._close()
        # run() in another thread ends itself (and closes) once it sees the event.
        return self.stats

    def run(self, duration: float | None = None,
            stop_event: threading.Event | None = None) -> RecordingStats:
        """Record in the calling thread until ``duration`` seconds passed, ``stop_event`` is
        set or :meth:`stop` is called; then finish the file and return the stats.

        With neither, records until interrupted. An exception (such as ``KeyboardInterrupt``)
        finishes the file, which keeps what was recorded, then propagates.
        """
        if duration is not None and duration < 0:
            raise ValueError(f"duration must be >= 0 seconds, got {duration}")
        self._open()
        deadline = None if duration is None else self._start_mono + duration
        try:
            self._loop(deadline, stop_event)
        except BaseException:
            self._close()
            raise
        return self._close()

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stats(self) -> RecordingStats:
        """The counters so far: a snapshot, safe to read from any thread (``missed`` and
        ``reconnects`` are refreshed every ``LIVENESS_CHECK_INTERVAL`` seconds); final once
        :meth:`stop` returned."""
        if self._finished is not None:
            return self._finished
        end = time.monotonic() if self._end_mono is None else self._end_mono
        duration = end - self._start_mono if self._started else 0.0
        channels = {s.name: ChannelRecordingStats(**vars(s.stats)) for s in self._sources}
        return RecordingStats(self.path, duration, channels)

    def __repr__(self) -> str:
        state = ("finished" if self._finished is not None else
                 "recording" if self._started else "not started")
        return f"<Recorder {self.channels} -> {self.path!r} {state}>"

    # -- setting up ----------------------------------------------------------------------------

    def _open(self) -> None:
        if self._started:
            raise RuntimeError("a Recorder records once; create a new one")
        self._started = True
        require_mcap()
        deadline = time.monotonic() + self.timeout_connect
        try:
            for name in self.channels:
                self._sources.append(self._attach(name, deadline))
            self._open_file()
        except BaseException:
            self._close_sources()
            self._finished = RecordingStats(self.path, 0.0, {})
            raise
        self._start_mono = time.monotonic()

    def _attach(self, name: str, deadline: float) -> _Source:
        sub = Subscriber(name, serialization="raw", observer=True,
                         timeout_connect=max(0.0, deadline - time.monotonic()))
        try:
            info = channel_info(name)
            if info is None:
                raise SHMConnectionError(f"channel {name!r} disappeared while the recorder "
                                         "attached to it")
            encoding = {v: k for k, v in L.ENCODING_NAMES.items()}[info["encoding"]]
            spec: dict[str, Any] | None = None
            if encoding == L.ENCODING_ARRAY:
                with ArraySubscriber(name, observer=True, timeout_connect=0.0) as typed:
                    spec = {"dtype": repr(np.lib.format.dtype_to_descr(typed.dtype)),
                            "shape": list(typed.shape), "fixed": typed.fixed_shape}
        except BaseException:
            sub.close()
            raise
        stats = ChannelRecordingStats(name, L.ENCODING_NAMES[encoding])
        source = _Source(name, sub, encoding, int(info["num_slots"]), int(info["slot_size"]),
                         spec, stats)
        if spec is not None and self.foxglove_schemas:
            source.foxglove = mapping_for(name, _dtype_of(spec), tuple(spec["shape"]))
        return source

    def _open_file(self) -> None:
        from mcap.writer import CompressionType, Writer

        import shm_comm

        compression = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4,
                       "none": CompressionType.NONE}[self.compression]
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in _close
        try:
            writer = Writer(self._file, chunk_size=self.chunk_size, compression=compression)
            writer.start(profile="", library=f"shm_comm {shm_comm.__version__}")
            writer.add_metadata(RECORDING_METADATA, {
                "library": f"shm_comm {shm_comm.__version__}",
                "hostname": socket.gethostname(),
                "pid": str(os.getpid()),
                "start_time_ns": str(time.time_ns()),
                "channels": json.dumps(self.channels),
                "json_compatible": json.dumps(self.json_compatible),
            })
            self._writer = writer
            for source in self._sources:
                # The channel's own encoding gets its MCAP channel now, so that a channel
                # with no messages still appears in the file (and in load / play).
                self._mcap_channel(source, self._default_message_encoding(source))
        except BaseException:
            self._file.close()
            self._file = None
            self._writer = None
            raise

    def _default_message_encoding(self, source: _Source) -> str:
        if source.foxglove is not None:
            return PROTOBUF_ENCODING
        if self.json_compatible and source.encoding in (L.ENCODING_PICKLE, L.ENCODING_MSGPACK):
            return JSON_ENCODING
        return MESSAGE_ENCODINGS[source.encoding]

    def _schema(self, name: str, encoding: str, data: bytes) -> int:
        assert self._writer is not None
        key = b"\0".join((name.encode(), encoding.encode(), data))
        if key not in self._schemas:
            self._schemas[key] = self._writer.register_schema(name, encoding, data)
        return self._schemas[key]

    def _mcap_channel(self, source: _Source, message_encoding: str) -> int:
        channel_id = source.mcap_channels.get(message_encoding)
        if channel_id is not None:
            return channel_id
        assert self._writer is not None
        metadata = {
            META_CHANNEL_ENCODING: L.ENCODING_NAMES[source.encoding],
            META_NUM_SLOTS: str(source.num_slots),
            META_SLOT_SIZE: str(source.slot_size),
        }
        schema_id = 0  # no schema: pickle, msgpack and raw describe themselves (or nothing)
        if message_encoding == PROTOBUF_ENCODING and source.foxglove is not None:
            fox = source.foxglove
            metadata[META_ARRAY] = json.dumps(source.array_spec)
            schema_id = self._schema(fox.schema_name, fox.schema_encoding, fox.schema_data)
        elif message_encoding == MESSAGE_ENCODINGS[L.ENCODING_ARRAY] and source.array_spec:
            data = json.dumps({**source.array_spec, "header": "shm_comm typed array v1"})
            schema_id = self._schema(ARRAY_SCHEMA_NAME, ARRAY_SCHEMA_ENCODING, data.encode())
        elif message_encoding == JSON_ENCODING:
            metadata[META_SERIALIZATION] = L.ENCODING_NAMES[source.encoding]
            data = json.dumps({"type": "object", "description": "shm_comm message, recorded "
                               f"from {L.ENCODING_NAMES[source.encoding]} as JSON"})
            schema_id = self._schema(JSON_SCHEMA_NAME, JSON_SCHEMA_ENCODING, data.encode())
        channel_id = self._writer.register_channel(source.name, message_encoding, schema_id,
                                                   metadata)
        source.mcap_channels[message_encoding] = channel_id
        return channel_id

    # -- the loop ------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            self._loop(None, None)
        except BaseException as exc:
            self._error = exc

    def _loop(self, deadline: float | None, stop_event: threading.Event | None) -> None:
        next_check = time.monotonic() + LIVENESS_CHECK_INTERVAL
        while True:
            taken = self._poll()
            now = time.monotonic()
            if (self._stop.is_set() or (stop_event is not None and stop_event.is_set())
                    or (deadline is not None and now >= deadline)):
                break
            if now >= next_check:
                next_check = now + LIVENESS_CHECK_INTERVAL
                self._check_sources()
            if not taken:
                wait = self.poll_interval
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - now))
                self._stop.wait(wait)
        self._end_mono = time.monotonic()
        # What was published before we stopped is still in the rings: take it too.
        while self._poll():
            pass
        self._check_sources()

    def _check_sources(self) -> None:
        """Follow restarted publishers and copy each observer's loss counters (this thread
        owns the observers: other threads only read the copies)."""
        for source in self._sources:
            counters = source.subscriber.stats()  # also switches to a restarted publisher
            source.stats.missed = counters["dropped"]
            source.stats.reconnects = counters["reconnects"]

    def _poll(self) -> int:
        """Take and write everything waiting on every channel; returns how many messages."""
        taken = 0
        for source in self._sources:
            sub = source.subscriber
            for _ in range(MAX_DRAIN):
                payload = sub.recv_bytes(timeout=0)
                if payload is None:
                    break
                arrival_ns = time.time_ns()
                self._write(source, payload, sub.last_encoding, sub.last_timestamp_ns,
                            sub.last_seq, arrival_ns)
                taken += 1
        return taken

    def _serializer(self, encoding: int) -> Serializer | None:
        if encoding not in self._serializers:
            try:
                self._serializers[encoding] = get_serializer(L.ENCODING_NAMES[encoding])
            except ValueError:  # msgpack not installed: keep those messages as they are
                self._serializers[encoding] = None
        return self._serializers[encoding]

    def _as_json(self, payload: bytes, encoding: int) -> bytes | None:
        serializer = self._serializer(encoding)
        if serializer is None:
            return None
        try:
            obj = serializer.decode(payload, encoding)
            if not isinstance(obj, dict):
                return None
            text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
            # Only what survives the round trip unchanged (no tuples, int keys, bytes...).
            if json.loads(text) != obj:
                return None
        except (SHMSerializationError, ValueError, TypeError, RecursionError):
            return None
        return text.encode()

    def _write(self, source: _Source, payload: bytes, encoding: int, timestamp_ns: int,
               seq: int, arrival_ns: int) -> None:
        assert self._writer is not None
        message_encoding = MESSAGE_ENCODINGS.get(encoding)
        if message_encoding is None:
            raise SHMFormatError(f"message {seq} on {source.name!r} has unknown encoding "
                                 f"{encoding}")
        data = payload
        if source.foxglove is not None and encoding == L.ENCODING_ARRAY:
            try:
                array = decode_array(payload)[0]
                data = source.foxglove.encode(array, timestamp_ns)
                message_encoding = PROTOBUF_ENCODING
            except (SHMFormatError, ValueError):
                pass  # not an array of the channel's kind: keep its exact bytes
        if self.json_compatible and encoding in (L.ENCODING_PICKLE, L.ENCODING_MSGPACK):
            as_json = self._as_json(payload, encoding)
            if as_json is not None:
                data, message_encoding = as_json, JSON_ENCODING
                source.stats.as_json += 1
        channel_id = self._mcap_channel(source, message_encoding)
        self._writer.add_message(channel_id, log_time=arrival_ns, data=data,
                                 publish_time=timestamp_ns, sequence=seq & 0xFFFFFFFF)
        source.stats.messages += 1
        source.stats.bytes += len(payload)

    # -- finishing -----------------------------------------------------------------------------

    def _close_sources(self) -> None:
        for source in self._sources:
            source.subscriber.close()

    def _close(self) -> RecordingStats:
        if self._finished is not None:
            return self._finished
        if self._end_mono is None:
            self._end_mono = time.monotonic()
        if self._error is not None:  # the loop ended early: refresh the loss counters
            with contextlib.suppress(SHMError):
                self._check_sources()
        stats = self.stats
        try:
            if self._writer is not None:
                self._writer.add_metadata(STATS_METADATA, {"stats": json.dumps({
                    "duration": stats.duration,
                    "channels": {name: vars(c) for name, c in stats.channels.items()},
                })})
                self._writer.finish()  # type: ignore[no-untyped-call]
        finally:
            atexit.unregister(self.stop)
            self._writer = None
            if self._file is not None:
                self._file.close()
                self._file = None
            self._close_sources()
            self._finished = stats
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return stats


def record(channels: Sequence[str], path: PathLike, duration: float | None = None,
           stop_event: threading.Event | None = None, **options: Any) -> RecordingStats:
    """Record ``channels`` into the MCAP file ``path`` in this thread; returns the stats.

    Stops after ``duration`` seconds, when ``stop_event`` is set, or on an exception such as
    ``KeyboardInterrupt`` (the file is finished, keeping what was recorded, and the exception
    propagates). ``options`` are those of :class:`Recorder` (``json_compatible``,
    ``timeout_connect``, ``poll_interval``, ``compression``, ``chunk_size``).
    """
    return Recorder(channels, path, **options).run(duration, stop_event)


# =============================================================================================
# Reading
# =============================================================================================

@dataclass
class _Entry:
    """One message of the file, as read."""

    topic: str
    message_encoding: str
    channel_id: int
    data: bytes
    publish_time: int
    log_time: int
    sequence: int


@dataclass
class _FileChannels:
    """The channels and schemas of a file, grouped by topic."""

    by_topic: dict[str, list[McapChannel]]
    channels: dict[int, McapChannel]
    schemas: dict[int, McapSchema]
    chunk_indexes: list[McapChunkIndex]
    stats: dict[str, Any]


def _read_file_channels(reader: McapReader, path: str) -> _FileChannels:
    summary = reader.get_summary()
    if summary is None:
        raise SHMFormatError(f"{path} has no MCAP summary section: the recording was not "
                             "finished (the recorder was killed?); `mcap recover` can repair it")
    by_topic: dict[str, list[McapChannel]] = {}
    for channel in summary.channels.values():
        by_topic.setdefault(channel.topic, []).append(channel)
    stats: dict[str, Any] = {}
    for record_ in reader.iter_metadata():
        if record_.name == STATS_METADATA:
            try:
                stats = json.loads(record_.metadata.get("stats", "{}"))
            except ValueError:
                stats = {}
    return _FileChannels(by_topic, dict(summary.channels), dict(summary.schemas),
                         list(summary.chunk_indexes), stats)


def _open_reader(stream: IO[bytes], path: str) -> tuple[McapReader, _FileChannels]:
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    try:
        reader = make_reader(stream)
        return reader, _read_file_channels(reader, path)
    except (McapError, struct.error) as exc:
        raise SHMFormatError(f"{path} is not a readable MCAP file ({exc}); if a recording was "
                             "cut short, `mcap recover` may repair it") from None


def _iter_entries(reader: McapReader, topics: list[str] | None) -> Iterator[_Entry]:
    for _schema, channel, message in reader.iter_messages(topics=topics, log_time_order=True):
        yield _Entry(channel.topic, channel.message_encoding, channel.id, message.data,
                     message.publish_time, message.log_time, message.sequence)


# MCAP records inside a chunk (the MCAP spec): opcode u8, length u64, then for a message
# channel_id u16, sequence u32, log_time u64, publish_time u64, data.
_RECORD_PREFIX = struct.Struct("<BQ")
_MESSAGE_FIELDS = struct.Struct("<HIQQ")
_OPCODE_MESSAGE = 0x05


def _chunk_data(path: str, index: McapChunkIndex) -> bytes:
    """Read and decompress one chunk (in the prefetch thread: both release the GIL)."""
    from mcap.data_stream import ReadDataStream
    from mcap.records import Chunk

    with open(path, "rb") as stream:
        stream.seek(index.chunk_start_offset + 1 + 8)  # past the record's opcode and length
        chunk: Chunk = Chunk.read(ReadDataStream(stream))
    if chunk.compression == "zstd":
        import zstandard

        data: bytes = zstandard.ZstdDecompressor().decompress(
            chunk.data, max_output_size=chunk.uncompressed_size)
        return data
    if chunk.compression == "lz4":
        import lz4.frame  # type: ignore[import-untyped]

        return lz4.frame.decompress(chunk.data)  # type: ignore[no-any-return]
    if chunk.compression == "":
        return chunk.data
    raise SHMFormatError(f"{path}: chunk compressed with {chunk.compression!r}, which this "
                         "reader does not know")


def _iter_lazily(path: str, reader: McapReader, channels: Mapping[int, McapChannel],
                 chunk_indexes: Sequence[McapChunkIndex], topics: list[str]
                 ) -> Generator[_Entry, None, None]:
    """The messages of ``topics`` in file order, parsed one at a time.

    ``McapReader.iter_messages`` parses a whole chunk (thousands of small messages) at once,
    which would stall a replay for tens of milliseconds at every chunk; here the next chunk
    is read and decompressed in a thread while this one is parsed message by message.
    """
    if not chunk_indexes:  # an unchunked file: nothing to spread out
        yield from _iter_entries(reader, topics)
        return
    wanted = set(topics)
    order = sorted(chunk_indexes, key=lambda c: (c.message_start_time, c.chunk_start_offset))
    with ThreadPoolExecutor(1, thread_name_prefix="shm_comm-play-prefetch") as pool:
        upcoming = pool.submit(_chunk_data, path, order[0])
        for number in range(len(order)):
            data = upcoming.result()
            if number + 1 < len(order):
                upcoming = pool.submit(_chunk_data, path, order[number + 1])
            view = memoryview(data)
            pos, end = 0, len(data)
            while pos + _RECORD_PREFIX.size <= end:
                opcode, length = _RECORD_PREFIX.unpack_from(data, pos)
                pos += _RECORD_PREFIX.size
                if pos + length > end:
                    raise SHMFormatError(f"{path}: a record overruns its chunk")
                if opcode == _OPCODE_MESSAGE and length >= _MESSAGE_FIELDS.size:
                    channel_id, sequence, log_time, publish_time = _MESSAGE_FIELDS.unpack_from(
                        data, pos)
                    channel = channels.get(channel_id)
                    if channel is None:
                        raise SHMFormatError(f"{path}: message of unknown channel {channel_id}")
                    if channel.topic in wanted:
                        payload = bytes(view[pos + _MESSAGE_FIELDS.size:pos + length])
                        yield _Entry(channel.topic, channel.message_encoding, channel_id,
                                     payload, publish_time, log_time, sequence)
                pos += length


def _in_publish_order(entries: Iterable[_Entry], window_ns: int
                      ) -> Generator[_Entry, None, None]:
    """Re-sort entries that come in log-time order into publish-time order.

    An entry is released once the log time read so far is ``window_ns`` past its publish time:
    a later entry (log time at least as late) could only come before it if the recorder took
    it more than ``window_ns`` after it was published.
    """
    heap: list[tuple[int, int, _Entry]] = []
    for index, entry in enumerate(entries):
        heapq.heappush(heap, (entry.publish_time, index, entry))
        horizon = entry.log_time - window_ns
        while heap and heap[0][0] < horizon:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def _array_spec(channels: list[McapChannel], schemas: Mapping[int, McapSchema]
                ) -> dict[str, Any] | None:
    for channel in channels:
        stored = channel.metadata.get(META_ARRAY)  # stored with a Foxglove schema
        if stored is not None:
            try:
                spec = json.loads(stored)
                return {"dtype": str(spec["dtype"]), "shape": [int(d) for d in spec["shape"]],
                        "fixed": bool(spec["fixed"])}
            except (ValueError, KeyError, TypeError) as exc:
                raise SHMFormatError(f"channel {channel.topic!r} has malformed {META_ARRAY} "
                                     f"metadata: {exc}") from None
    for channel in channels:
        schema = schemas.get(channel.schema_id)
        if schema is not None and schema.encoding == ARRAY_SCHEMA_ENCODING:
            try:
                spec = json.loads(schema.data)
                return {"dtype": str(spec["dtype"]), "shape": [int(d) for d in spec["shape"]],
                        "fixed": bool(spec["fixed"])}
            except (ValueError, KeyError, TypeError) as exc:
                raise SHMFormatError(f"channel {channel.topic!r} has a malformed "
                                     f"{ARRAY_SCHEMA_NAME} schema: {exc}") from None
    return None


_ArrayDecoder = Callable[[bytes], np.ndarray[Any, Any]]


def _array_decoders(channels: list[McapChannel], schemas: Mapping[int, McapSchema]
                    ) -> dict[int, _ArrayDecoder]:
    """For each MCAP channel of a topic whose messages are arrays, how to decode one: our
    typed-array payloads, and Foxglove's RawImage and PointCloud (from the file's schema)."""
    spec = _array_spec(channels, schemas)
    dtype = None if spec is None else _dtype_of(spec)
    shape = None if spec is None else tuple(spec["shape"])
    decoders: dict[int, _ArrayDecoder] = {}
    for channel in channels:
        if channel.message_encoding == MESSAGE_ENCODINGS[L.ENCODING_ARRAY]:
            decoders[channel.id] = _decode_typed
        elif channel.message_encoding == PROTOBUF_ENCODING:
            schema = schemas.get(channel.schema_id)
            if schema is None or schema.name not in (RAW_IMAGE, POINT_CLOUD):
                continue
            parse = message_decoder(schema.name, schema.data)

            def decode_foxglove(data: bytes, parse: Callable[[bytes], Any] = parse,
                                name: str = schema.name, topic: str = channel.topic
                                ) -> np.ndarray[Any, Any]:
                try:
                    return array_from_message(name, parse(data), dtype, shape)
                except ValueError as exc:
                    raise SHMFormatError(f"a {name} message of {topic!r} does not "
                                         f"decode: {exc}") from None

            decoders[channel.id] = decode_foxglove
    return decoders


def _decode_typed(data: bytes) -> np.ndarray[Any, Any]:
    return decode_array(data)[0]


def _dtype_of(spec: dict[str, Any]) -> np.dtype[Any]:
    import ast

    try:
        return np.lib.format.descr_to_dtype(ast.literal_eval(spec["dtype"]))
    except (ValueError, TypeError, SyntaxError) as exc:
        raise SHMFormatError(f"schema holds an invalid dtype {spec['dtype'][:80]!r}: "
                             f"{exc}") from None


@dataclass
class LoadedChannel:
    """One channel of a recording, in memory.

    ``data``: for typed channels, the arrays stacked into one array of shape
    ``(n, *shape)`` (structured dtypes stay structured: ``data["q"]``); a list of arrays if
    their shapes differ (variable-shape channels). For other channels, a list of the decoded
    messages (pickle, msgpack, JSON), or of ``bytes`` for raw messages and with
    ``decode=False``. ``timestamps_ns``: the publisher's send times (int64 ns since the
    epoch); ``arrival_ns``: when the recorder took each message; ``seq``: the publisher's
    sequence numbers (their low 32 bits: MCAP stores 32). ``encoding``: the channel's own
    (``"array"``, ``"pickle"``, ``"msgpack"``, ``"raw"``; ``"json"`` for a file from
    elsewhere). ``dtype``/``shape``: the typed channel's dtype and (maximum) shape.
    ``missed``: messages the recorder lost on this channel (None if the file does not say).
    """

    name: str
    encoding: str
    data: np.ndarray[Any, Any] | list[Any]
    timestamps_ns: np.ndarray[Any, np.dtype[np.int64]]
    arrival_ns: np.ndarray[Any, np.dtype[np.int64]]
    seq: np.ndarray[Any, np.dtype[np.int64]]
    dtype: np.dtype[Any] | None = None
    shape: tuple[int, ...] | None = None
    missed: int | None = None

    def __len__(self) -> int:
        return len(self.timestamps_ns)

    @property
    def timestamps(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The publisher's send times in seconds since the epoch (float64)."""
        return self.timestamps_ns / 1e9

    def __repr__(self) -> str:
        kind = (f"{self.dtype} {self.shape}" if self.dtype is not None else self.encoding)
        return f"<LoadedChannel {self.name!r} {len(self)} messages, {kind}>"


def _decode(entry: _Entry, serializers: dict[str, Serializer]) -> Any:
    encoding = entry.message_encoding
    if encoding == JSON_ENCODING:
        try:
            return json.loads(entry.data)
        except ValueError as exc:
            raise SHMSerializationError(f"message on {entry.topic!r} is not valid JSON: "
                                        f"{exc}") from None
    if encoding in ("pickle", "msgpack"):
        if encoding not in serializers:
            serializers[encoding] = get_serializer(encoding)
        return serializers[encoding].decode(entry.data, ENCODING_IDS[encoding])
    return entry.data


def load(path: PathLike, channels: Sequence[str] | None = None, *,
         decode: bool = True) -> dict[str, LoadedChannel]:
    """Read a recording into memory: ``{channel name: LoadedChannel}``, in file order.

    ``channels``: only these (default: all). ``decode=False`` keeps pickle, msgpack and JSON
    messages as bytes: decoding pickle runs code chosen by whoever wrote the channel (or the
    file), so load files you do not trust that way. Raises :class:`SHMFormatError` for a
    file that is not a finished MCAP recording or holds malformed typed arrays,
    :class:`SHMSerializationError` for a message that does not decode, and ``KeyError`` for
    a requested channel the file does not have.
    """
    require_mcap()
    from mcap.exceptions import McapError

    path = os.fspath(path)
    with open(path, "rb") as stream:
        reader, info = _open_reader(stream, path)
        if channels is not None:
            missing = [c for c in channels if c not in info.by_topic]
            if missing:
                raise KeyError(f"{path} has no channel(s) {missing}; it has "
                               f"{sorted(info.by_topic)}")
        topics = list(info.by_topic) if channels is None else list(channels)
        entries: dict[str, list[_Entry]] = {topic: [] for topic in topics}
        try:
            for entry in _iter_entries(reader, topics):
                entries[entry.topic].append(entry)
        except (McapError, struct.error) as exc:
            raise SHMFormatError(f"{path} is damaged: {exc}") from None
    serializers: dict[str, Serializer] = {}
    recorded = info.stats.get("channels", {})
    result = {}
    for topic in topics:
        chans = info.by_topic[topic]
        loaded = _load_channel(topic, entries[topic], chans, info.schemas, decode, serializers)
        missed = recorded.get(topic, {}).get("missed")
        loaded.missed = None if missed is None else int(missed)
        result[topic] = loaded
    return result


def _load_channel(topic: str, entries: list[_Entry], chans: list[McapChannel],
                  schemas: Mapping[int, McapSchema], decode: bool,
                  serializers: dict[str, Serializer]) -> LoadedChannel:
    encoding = chans[0].metadata.get(META_CHANNEL_ENCODING, chans[0].message_encoding)
    spec = _array_spec(chans, schemas)
    dtype = None if spec is None else _dtype_of(spec)
    shape = None if spec is None else tuple(spec["shape"])
    decoders = _array_decoders(chans, schemas) if decode else {}
    stamps = np.fromiter((e.publish_time for e in entries), np.int64, len(entries))
    arrivals = np.fromiter((e.log_time for e in entries), np.int64, len(entries))
    seqs = np.fromiter((e.sequence for e in entries), np.int64, len(entries))
    data: np.ndarray[Any, Any] | list[Any]
    if decode and decoders and all(e.channel_id in decoders for e in entries) and (
            entries or dtype is not None):
        arrays = [decoders[e.channel_id](e.data) for e in entries]
        if not arrays:
            assert dtype is not None
            assert shape is not None
            data = np.empty((0, *shape) if spec and spec["fixed"] else (0,), dtype=dtype)
        elif all(a.shape == arrays[0].shape and a.dtype == arrays[0].dtype for a in arrays):
            data = np.stack(arrays)
        else:
            data = [a.copy() for a in arrays]
        if dtype is None:
            dtype = arrays[0].dtype
    elif decode:
        data = [_decode(e, serializers) for e in entries]
    else:
        data = [e.data for e in entries]
    return LoadedChannel(topic, encoding, data, stamps, arrivals, seqs, dtype, shape)


# =============================================================================================
# Replay
# =============================================================================================

@dataclass
class PlayStats:
    """Summary of a replay.

    ``messages`` published in total and per (remapped) channel; ``passes`` over the file;
    ``duration`` in seconds; ``late`` messages published more than ``LATE_THRESHOLD`` after
    their scheduled time and the largest such delay ``max_lateness`` (seconds);
    ``stopped``: ended by ``stop_event`` before the end.
    """

    path: str
    messages: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    passes: int = 0
    duration: float = 0.0
    late: int = 0
    max_lateness: float = 0.0
    stopped: bool = False


_Send = Callable[[bytes], None]


def _make_publisher(topic: str, target: str, chans: list[McapChannel],
                    schemas: Mapping[int, McapSchema]) -> tuple[Publisher, dict[int, _Send]]:
    """The publisher that replays ``topic`` as ``target``, and a sender per MCAP channel."""
    meta = chans[0].metadata
    encoding = meta.get(META_CHANNEL_ENCODING)
    if encoding is None or encoding not in ENCODING_IDS.keys() | {"array"}:
        raise ValueError(f"channel {topic!r} ({chans[0].message_encoding}) was not recorded by "
                         "shm_comm and cannot be replayed; pick others with channels=")
    try:
        num_slots = int(meta[META_NUM_SLOTS])
        slot_size = int(meta[META_SLOT_SIZE])
    except (KeyError, ValueError):
        raise SHMFormatError(f"channel {topic!r} lacks valid {META_NUM_SLOTS}/{META_SLOT_SIZE} "
                             "metadata") from None
    pub: Publisher
    if encoding == "array":
        spec = _array_spec(chans, schemas)
        if spec is None:
            raise SHMFormatError(f"typed channel {topic!r} has no {ARRAY_SCHEMA_NAME} schema")
        dtype = _dtype_of(spec)
        if spec["fixed"]:
            pub = ArrayPublisher(target, dtype=dtype, shape=spec["shape"], num_slots=num_slots)
        else:
            pub = ArrayPublisher(target, dtype=dtype, max_shape=spec["shape"],
                                 num_slots=num_slots)
    else:
        pub = Publisher(target, num_slots=num_slots, slot_size=slot_size,
                        serialization=encoding)
    senders: dict[int, _Send] = {}
    try:
        decoders = _array_decoders(chans, schemas)
        for channel in chans:
            senders[channel.id] = _sender(pub, channel, decoders.get(channel.id))
    except BaseException:
        pub.close()
        raise
    return pub, senders


def _sender(pub: Publisher, channel: McapChannel, decoder: _ArrayDecoder | None) -> _Send:
    message_encoding = channel.message_encoding
    if decoder is not None and message_encoding == PROTOBUF_ENCODING and isinstance(
            pub, ArrayPublisher):
        def send_decoded(data: bytes) -> None:
            pub.send(decoder(data))  # the recorded dtype, shape and array bytes
        return send_decoded
    if message_encoding == MESSAGE_ENCODINGS[L.ENCODING_ARRAY] and isinstance(pub,
                                                                               ArrayPublisher):
        def send_array(data: bytes) -> None:
            pub.send(decode_array(data)[0])  # same dtype, shape and data bytes; fresh header
        return send_array
    if message_encoding == JSON_ENCODING:
        serializer = get_serializer(channel.metadata.get(META_SERIALIZATION, "pickle"))

        def send_json(data: bytes) -> None:
            pub._publish(serializer.encode(json.loads(data)), serializer.encoding, False, None)
        return send_json
    encoding = ENCODING_IDS.get(message_encoding)
    if encoding is None:
        raise ValueError(f"channel {channel.topic!r} has message encoding {message_encoding!r}, "
                         "which shm_comm cannot replay")

    def send_bytes(data: bytes) -> None:
        # The exact recorded bytes with their recorded encoding (send_bytes would mark them
        # raw): subscribers decode them as they did the original.
        pub._publish(data, encoding, False, None)
    return send_bytes


def _wait_until(deadline: float, stop_event: threading.Event | None, spin: float) -> bool:
    """Sleep, then busy-wait the last ``spin`` seconds, until ``deadline`` (monotonic).

    False if ``stop_event`` was set first.
    """
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        if stop_event is not None and stop_event.is_set():
            return False
        if remaining > spin:
            sleep(min(remaining - spin, MAX_WAIT_SLICE))


def play(path: PathLike, rate: float = 1.0, loop: bool = False,
         remap: Mapping[str, str] | None = None, stop_event: threading.Event | None = None, *,
         channels: Sequence[str] | None = None, wait_subscribers: int = 0,
         timeout_connect: float = 10.0, spin: float = 0.0) -> PlayStats:
    """Publish a recording again with its recorded timing; returns when done.

    Creates one publisher per recorded channel (same kind, encoding, dtype/shape, ring depth
    and slot size), named as recorded or as ``remap`` says (``{"imu": "imu_replay"}``); a
    channel whose publisher is running raises :class:`SHMConnectionError`, so remap when the
    originals run. Messages follow the publisher timestamps of the recording, scaled by
    ``1 / rate`` (``rate=2.0``: twice as fast; ``math.inf``: as fast as possible), on a
    deadline schedule that does not drift. Payloads are published byte for byte with their
    recorded encoding; typed arrays are sent through an :class:`ArrayPublisher` (same dtype,
    shape and data bytes; the array header gets the new sequence number and timestamp).
    Messages stored as JSON (``json_compatible``) are re-encoded with their original
    serializer.

    ``loop=True`` starts over after the last message (one mean message interval later) until
    ``stop_event`` is set. ``channels``: replay only these recorded channels.
    ``wait_subscribers``: before the first message, wait until every replayed channel has that
    many subscribers, for at most ``timeout_connect`` seconds (:class:`SHMTimeoutError`).
    ``spin``: seconds before each deadline spent busy-waiting instead of sleeping (default 0:
    sleep only, which is as precise as the operating system wakes us, typically within
    0.1 ms; a spin buys a little precision for a lot of CPU). The publishers are closed on
    return, which removes the channels; subscribers still receive what they had not read yet.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0 (math.inf: as fast as possible), got {rate}")
    if spin < 0 or wait_subscribers < 0:
        raise ValueError("spin and wait_subscribers must be >= 0")
    require_mcap()
    from mcap.exceptions import McapError

    path = os.fspath(path)
    remap = dict(remap or {})
    stats = PlayStats(path)
    with open(path, "rb") as stream:
        reader, info = _open_reader(stream, path)
        topics = list(info.by_topic) if channels is None else list(channels)
        unknown = [t for t in [*topics, *remap] if t not in info.by_topic]
        if unknown:
            raise KeyError(f"{path} has no channel(s) {sorted(set(unknown))}; it has "
                           f"{sorted(info.by_topic)}")
        targets = {topic: remap.get(topic, topic) for topic in topics}
        if len(set(targets.values())) != len(targets):
            raise ValueError(f"two channels would be replayed under one name: {targets}")
        publishers: list[Publisher] = []
        senders: dict[int, _Send] = {}
        try:
            for topic in topics:
                pub, chan_senders = _make_publisher(topic, targets[topic],
                                                    info.by_topic[topic], info.schemas)
                publishers.append(pub)
                senders.update(chan_senders)
                stats.channels[targets[topic]] = 0
            _wait_for_subscribers(publishers, wait_subscribers, timeout_connect)
            entries = functools.partial(_iter_lazily, path, reader, info.channels,
                                        info.chunk_indexes, topics)
            _replay(entries, senders, targets, rate, loop, stop_event, spin, stats)
        except (McapError, struct.error) as exc:
            raise SHMFormatError(f"{path} is damaged: {exc}") from None
        finally:
            for pub in publishers:
                pub.close()
    return stats


def _wait_for_subscribers(publishers: list[Publisher], count: int, timeout: float) -> None:
    if not count:
        return
    deadline = time.monotonic() + timeout
    for pub in publishers:
        while pub.stats()["subscribers"] < count:
            if time.monotonic() >= deadline:
                raise SHMTimeoutError(f"channel {pub.name!r} has {pub.stats()['subscribers']} "
                                      f"subscriber(s), not {count}, after {timeout} s")
            sleep(0.001)


def _replay(entries: Callable[[], Generator[_Entry, None, None]], senders: dict[int, _Send],
            targets: dict[str, str], rate: float, loop: bool,
            stop_event: threading.Event | None, spin: float, stats: PlayStats) -> None:
    window_ns = int(REORDER_WINDOW * 1e9)
    scale = 1.0 / (rate * 1e9)  # seconds of replay per nanosecond of recording
    first_ns: int | None = None
    start = time.monotonic()
    offset_ns = 0  # recording time added per pass when looping
    while True:
        count, last_ns = 0, first_ns
        source = entries()
        with contextlib.closing(source), contextlib.closing(
                _in_publish_order(source, window_ns)) as ordered:
            for entry in ordered:
                if first_ns is None:
                    first_ns = entry.publish_time
                    start = time.monotonic()
                due = start + (entry.publish_time - first_ns + offset_ns) * scale
                if not _wait_until(due, stop_event, spin):
                    stats.stopped = True
                    break
                senders[entry.channel_id](entry.data)
                lateness = time.monotonic() - due
                if lateness > LATE_THRESHOLD:
                    stats.late += 1
                    stats.max_lateness = max(stats.max_lateness, lateness)
                stats.channels[targets[entry.topic]] += 1
                stats.messages += 1
                count += 1
                last_ns = entry.publish_time
        stats.passes += 1
        if stats.stopped or not loop or not count or (
                stop_event is not None and stop_event.is_set()):
            break
        assert first_ns is not None
        assert last_ns is not None
        span = last_ns - first_ns
        offset_ns += span + (span // (count - 1) if count > 1 else 1_000_000_000)
    stats.duration = time.monotonic() - start
    if stop_event is not None and stop_event.is_set():
        stats.stopped = True
