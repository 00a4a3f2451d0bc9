"""The Zenoh bridge: local pub/sub channels to and from other machines.

A :class:`Bridge` exports local channels (glob patterns, rescanned so later channels join) to
Zenoh keys ``<prefix>/<host>/<channel>``, and imports Zenoh keys from other bridges as local
channels named ``<host>.<channel>`` that local subscribers use like any other
(docs/bridge.md has the user's guide). Requires the ``bridge`` extra (``eclipse-zenoh``);
Zenoh is imported only when a bridge is created.

Design (the why):

* **Watching never perturbs.** Each exported channel is read by an observer
  (read-only mapping, no subscriber row), so the local publisher never waits for the bridge
  and no local subscriber's counts change. The publisher's ring is the bounded queue between
  reading and sending: when the network (or the bridge) is slower than the publisher, the
  observer falls behind and loses the oldest messages, counted as the export's ``drops``.
  Zenoh publishers use ``CongestionControl.DROP``: a full transmission queue drops the message
  instead of blocking the bridge. On the importing side, remote messages wait in a bounded
  Zenoh ring channel (``import_queue``) that drops the oldest when the bridge falls behind,
  so Zenoh's network threads never wait for Python either. Nothing on the network path can
  block a local process.
* **Self-describing messages.** Every Zenoh message carries the ring payload as it is (a typed
  array keeps its array header) and, as its attachment, a small versioned header with the
  message's encoding, sequence number and timestamp, and the channel's description
  (default encoding, ring depth, slot size, metadata such as a typed channel's dtype and
  shape). An importer can create the local channel from any one message, whenever it joins,
  with no separate discovery round trip; the description costs 44 bytes plus the metadata
  (about 80 bytes for a typed channel).
* **Losses are counted where they can be seen.** The exporter counts what its observer
  missed; the importer counts gaps in the original publisher's sequence numbers, which cover
  every loss upstream (at the exporter, in Zenoh's queues, in the import queue, while
  disconnected). A message
  whose sequence number is not newer than the last one (a duplicate from overlapping import
  patterns, a bridge restart re-sending the newest message) is dropped, so local subscribers
  always see the remote publisher's order.
* **Imports outlive their sources.** An imported channel's local publisher belongs to the
  bridge and stays when the remote publisher, the remote bridge or the network goes away, so
  local subscribers just wait. It is recreated (local subscribers reconnect by themselves,
  as after any publisher restart) only when the remote channel comes back with another
  description. Messages keep the remote publisher's timestamp.
* **No loops.** An imported channel's metadata is marked ``"bridged_from": <key>``, and no
  bridge exports a marked channel, whatever the patterns: not the one that imported it, nor
  another bridge on the same machine (which would otherwise send it back, or on and on).
* **One place talks to Zenoh.** :class:`_ZenohLink` holds the session; the wire format, key
  mapping and sequence bookkeeping are plain functions and classes, testable without Zenoh.

Wire format version 1 (the Zenoh attachment of every message; little-endian)::

    off  size  field
      0     4  magic            b"SHMB"
      4     1  version          u8 (1); readers refuse another version
      5     1  encoding         u8   this message's encoding (layout.ENCODING_*)
      6     1  channel_encoding u8   the channel's default encoding
      7     1  flags            u8   reserved, 0; readers ignore unknown bits
      8     4  num_slots        u32  the source channel's ring depth
     12     4  slot_size        u32  the source channel's slot payload capacity
     16     2  max_subscribers  u16
     18     2  metadata_length  u16  0..4096
     20     8  seq              u64  the source publisher's sequence number
     28     8  timestamp_ns     u64  the source publisher's send time (time.time_ns())
     36     8  incarnation      u64  tells a restarted source channel from the old one
     44     -  metadata         the channel metadata (UTF-8 JSON for typed channels)

The Zenoh payload is the message payload, byte for byte. Version history: 1 (shm_comm 0.1).
"""

from __future__ import annotations

import atexit
import fnmatch
import json
import re
import socket
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

from . import layout as L
from ._optional import require
from .channels import list_channels
from .errors import SHMClosedError, SHMConnectionError, SHMError, SHMFormatError
from .naming import MAX_CHANNEL_NAME, validate_channel_name
from .pubsub import Publisher, _ChannelReader
from .serialization import RAW

__all__ = [
    "WIRE_HEADER",
    "WIRE_MAGIC",
    "WIRE_VERSION",
    "Bridge",
    "ChannelDescription",
    "SequenceTracker",
    "WireMessage",
    "bridged_from",
    "decode_attachment",
    "default_host",
    "encode_attachment",
    "format_status",
    "import_key_expr",
    "key_for",
    "local_name",
    "mark_bridged",
    "parse_key",
    "split_list",
]

EXTRA = "bridge"

WIRE_MAGIC = b"SHMB"
WIRE_VERSION = 1
# magic, version, encoding, channel_encoding, flags, num_slots, slot_size, max_subscribers,
# metadata_length, seq, timestamp_ns, incarnation
WIRE_HEADER = struct.Struct("<4sBBBBIIHHQQQ")  # 44 bytes

LATENCY_WINDOW = 4096
EXPORT_POLL = 0.1
MIRROR_RETRY = 1.0
BRIDGED_FROM = "bridged_from"
TX_QUEUE_BATCHES = 16  # zenoh's maximum (it panics above)
DROP_WAIT_US = 50_000
DEFAULT_RETRY = {"period_init_ms": 250, "period_max_ms": 2000, "period_increase_factor": 2}

_CHUNK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
_GLOB_CHUNK = re.compile(r"[A-Za-z0-9_.\-*]+\Z")
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


# --------------------------------------------------------------------------------------------
# Wire format (pure)
# --------------------------------------------------------------------------------------------

class ChannelDescription(NamedTuple):
    """What an importer needs to create the local twin of a remote channel."""

    encoding: int
    num_slots: int
    slot_size: int
    max_subscribers: int
    metadata: bytes = b""

    def layout(self) -> L.SegmentLayout:
        """The pub/sub layout of the local twin; ``ValueError`` if out of the format's limits."""
        return L.SegmentLayout(L.KIND_PUBSUB, self.num_slots, self.slot_size,
                               self.max_subscribers)


class WireMessage(NamedTuple):
    """A decoded attachment: one message's encoding, position and time, and its channel."""

    encoding: int
    seq: int
    timestamp_ns: int
    incarnation: int
    description: ChannelDescription


def encode_attachment(description: ChannelDescription, encoding: int, seq: int,
                      timestamp_ns: int, incarnation: int) -> bytes:
    """The wire-format header (module docstring) of one message, with the channel metadata.

    Raises ``ValueError`` for a field out of its range.
    """
    meta = description.metadata
    if len(meta) > L.METADATA_SIZE:
        raise ValueError(f"channel metadata is {len(meta)} bytes; at most {L.METADATA_SIZE}")
    try:
        head = WIRE_HEADER.pack(WIRE_MAGIC, WIRE_VERSION, encoding, description.encoding, 0,
                                description.num_slots, description.slot_size,
                                description.max_subscribers, len(meta), seq, timestamp_ns,
                                incarnation)
    except struct.error as exc:
        raise ValueError(f"cannot encode bridge header: {exc}") from None
    return head + meta


@lru_cache(maxsize=256)
def _description(encoding: int, num_slots: int, slot_size: int, max_subscribers: int,
                 metadata: bytes) -> ChannelDescription:
    # Cached: a channel sends the same description with every message, and building the
    # layout to validate it is the slowest part of decoding.
    if encoding not in L.ENCODING_NAMES:
        raise SHMFormatError(f"bridge header has unknown channel encoding {encoding}")
    description = ChannelDescription(encoding, num_slots, slot_size, max_subscribers, metadata)
    try:
        description.layout()
    except ValueError as exc:
        raise SHMFormatError(f"bridge header describes an impossible channel: {exc}") from None
    return description


def decode_attachment(data: bytes) -> WireMessage:
    """Parse a wire-format header; raises :class:`SHMFormatError` for anything malformed.

    Checks the length before unpacking, the magic, the version, that encodings are known,
    that the layout is within the segment format's limits and that the metadata fills the
    rest exactly.
    """
    if len(data) < WIRE_HEADER.size:
        raise SHMFormatError(f"bridge header is {len(data)} bytes; expected at least "
                             f"{WIRE_HEADER.size}")
    (magic, version, encoding, channel_encoding, _flags, num_slots, slot_size, max_subscribers,
     meta_length, seq, timestamp_ns, incarnation) = WIRE_HEADER.unpack_from(data)
    if magic != WIRE_MAGIC:
        raise SHMFormatError(f"not a shm_comm bridge message (magic {magic!r}, expected "
                             f"{WIRE_MAGIC!r})")
    if version != WIRE_VERSION:
        raise SHMFormatError(f"bridge wire format version {version}; this shm_comm reads "
                             f"version {WIRE_VERSION}: run the same shm_comm on both sides")
    if encoding not in L.ENCODING_NAMES:
        raise SHMFormatError(f"bridge header has unknown encoding {encoding}")
    if meta_length > L.METADATA_SIZE:
        raise SHMFormatError(f"bridge header declares {meta_length} bytes of metadata; at most "
                             f"{L.METADATA_SIZE}")
    if len(data) != WIRE_HEADER.size + meta_length:
        raise SHMFormatError(f"bridge header declares {meta_length} bytes of metadata but "
                             f"{len(data) - WIRE_HEADER.size} follow")
    description = _description(channel_encoding, num_slots, slot_size, max_subscribers,
                               bytes(data[WIRE_HEADER.size:]))
    return WireMessage(encoding, seq, timestamp_ns, incarnation, description)


class SequenceTracker:
    """Per remote channel: which messages to re-publish, and how many went missing.

    Sequence numbers are the source publisher's; they start again when the source channel is
    recreated (another ``incarnation``). Not thread-safe.
    """

    def __init__(self) -> None:
        self.incarnation: int | None = None
        self.last_seq = -1
        self.lost = 0
        self.duplicates = 0
        self.restarts = 0

    def admit(self, incarnation: int, seq: int) -> bool:
        """Whether message ``seq`` is new (True) or a duplicate/older one (False).

        A gap since the previous message of the same incarnation adds to ``lost``. The first
        message seen of an incarnation counts no gap: messages from before it were never
        ours to lose (as for a subscriber that joins late).
        """
        if incarnation != self.incarnation:
            if self.incarnation is not None:
                self.restarts += 1
            self.incarnation = incarnation
            self.last_seq = seq
            return True
        if seq <= self.last_seq:
            self.duplicates += 1
            return False
        self.lost += seq - self.last_seq - 1
        self.last_seq = seq
        return True


# --------------------------------------------------------------------------------------------
# Names and keys (pure)
# --------------------------------------------------------------------------------------------

def _check_chunk(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not _CHUNK.match(value) or ".." in value:
        raise ValueError(f"invalid {what} {value!r}: use ASCII letters, digits, '_', '-' and "
                         "'.', starting with a letter, digit or '_'; no '/', no '..'")
    return value


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if not prefix:
        raise ValueError("prefix is empty")
    for chunk in prefix.split("/"):
        _check_chunk(chunk, f"prefix chunk in {prefix!r}")
    return prefix


def default_host() -> str:
    """This machine's short host name, reduced to characters allowed in channel names."""
    name = _HOST_UNSAFE.sub("-", socket.gethostname().split(".")[0]).strip("-")
    return name if name and _CHUNK.match(name) else "host"


def key_for(prefix: str, host: str, channel: str) -> str:
    """The Zenoh key of local ``channel`` exported by ``host``: ``<prefix>/<host>/<channel>``."""
    return f"{prefix}/{host}/{channel}"


def local_name(host: str, channel: str) -> str:
    """The local channel name of ``channel`` imported from ``host``: ``<host>.<channel>``.

    Raises ``ValueError`` if the result is not a valid channel name (e.g. too long).
    """
    return validate_channel_name(f"{host}.{channel}")


def parse_key(prefix: str, key: str) -> tuple[str, str] | None:
    """``(host, channel)`` of a key made by :func:`key_for`, or None if it is not one."""
    start = prefix + "/"
    if not key.startswith(start):
        return None
    parts = key[len(start):].split("/")
    if len(parts) != 2:
        return None
    host, channel = parts
    if not _CHUNK.match(host) or ".." in host:
        return None
    try:
        validate_channel_name(channel)
    except ValueError:
        return None
    if len(host) + 1 + len(channel) > MAX_CHANNEL_NAME:
        return None
    return host, channel


def import_key_expr(prefix: str, pattern: str) -> str:
    """The Zenoh key expression of import ``pattern`` (``host/channel`` globs).

    ``lab-pc/*`` is every channel of host ``lab-pc``; a pattern without ``/`` names a host
    (``lab-pc`` means ``lab-pc/*``); ``*`` matches one whole name, ``**`` any number of
    levels, and ``*`` inside a name any characters (``lab-pc/camera*``, Zenoh's ``$*``).
    ``?``, ``#``, ``$`` and ``[...]`` are refused with ``ValueError``.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"import pattern must be a str, got {type(pattern).__name__}")
    text = pattern.strip().strip("/")
    if not text:
        raise ValueError("import pattern is empty")
    if "/" not in text:
        text += "/*"
    chunks = []
    for chunk in text.split("/"):
        if not chunk:
            raise ValueError(f"import pattern {pattern!r} has an empty level ('//')")
        if any(c in chunk for c in "?#$[]"):
            raise ValueError(f"import pattern {pattern!r}: only '*' and '**' wildcards are "
                             "supported")
        if chunk in ("*", "**"):
            chunks.append(chunk)
            continue
        if "**" in chunk:
            raise ValueError(f"import pattern {pattern!r}: '**' must be a whole level")
        if not _GLOB_CHUNK.match(chunk) or ".." in chunk:
            raise ValueError(f"import pattern {pattern!r}: level {chunk!r} may hold only ASCII "
                             "letters, digits, '_', '-', '.' and '*'")
        chunks.append(chunk.replace("*", "$*"))
    return f"{prefix}/{'/'.join(chunks)}"


def split_list(values: str | Iterable[str] | None) -> list[str]:
    """Command-line lists: ``"imu, camera*"`` or repeated options -> ``["imu", "camera*"]``."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def mark_bridged(metadata: bytes, key: str) -> bytes:
    """Channel metadata of an imported channel: the remote's, plus ``"bridged_from": key``.

    The mark is how every bridge on this machine (not only the one that imported it) knows
    not to export the channel again. Metadata that is not a JSON object, or that would grow
    past the format's limit, is returned unmarked.
    """
    try:
        spec = json.loads(metadata.decode()) if metadata else {}
    except (UnicodeDecodeError, ValueError):
        return metadata
    if not isinstance(spec, dict):
        return metadata
    spec[BRIDGED_FROM] = key
    marked = json.dumps(spec).encode()
    return marked if len(marked) <= L.METADATA_SIZE else metadata


def bridged_from(metadata: bytes) -> str | None:
    """The Zenoh key a channel was imported from (see :func:`mark_bridged`), else None."""
    if BRIDGED_FROM.encode() not in metadata:
        return None  # the common case, without parsing
    try:
        spec = json.loads(metadata.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    value = spec.get(BRIDGED_FROM) if isinstance(spec, dict) else None
    return value if isinstance(value, str) else None


def format_status(stats: Mapping[str, Any]) -> list[str]:
    """Human-readable lines for :meth:`Bridge.stats` (one per channel), as the CLI prints."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.2f} ms"

    lines = [f"bridge {stats['host']} (prefix {stats['prefix']}): {stats['peers']} peer(s), "
             f"{len(stats['exported'])} exported, {len(stats['imported'])} imported"]
    for name, e in stats["exported"].items():
        lines.append(f"  export {name} -> {e['key']}: {e['messages']} msgs, "
                     f"{e['bytes'] / 1e6:.1f} MB, {e['drops']} dropped")
    for name, i in stats["imported"].items():
        age = i["last_message_age"]
        lines.append(f"  import {i['key']} -> {name}: {i['messages']} msgs, "
                     f"{i['bytes'] / 1e6:.1f} MB, {i['drops']} lost, latency p50 "
                     f"{ms(i['latency_p50'])} p99 {ms(i['latency_p99'])}, last "
                     + ("never" if age is None else f"{age:.1f} s ago"))
    if stats.get("last_error"):
        lines.append(f"  last error: {stats['last_error']}")
    return lines


# --------------------------------------------------------------------------------------------
# Local channel ends: an observer that keeps the whole message, a publisher that mirrors
# --------------------------------------------------------------------------------------------

class _Observer(_ChannelReader):
    """Read-only watcher of an exported channel, following publisher restarts.

    Like ``Subscriber(observer=True)`` but keeps what the bridge sends on: the encoding,
    sequence number and timestamp of each message, and the channel's header.
    """

    def __init__(self, name: str, poll_interval: float | None) -> None:
        super().__init__(name, timeout_connect=0.0, latest=True, observer=True,
                         poll_interval=poll_interval)

    def take(self, timeout: float) -> tuple[bytes, int, int, int] | None:
        """``(payload, encoding, timestamp_ns, seq)`` of the next message, None on timeout."""
        got = self._reader.take_copy()
        if got is not None:
            return got
        deadline = time.monotonic() + timeout
        while self._wait(deadline):
            got = self._reader.take_copy()
            if got is not None:
                return got
        return self._reader.take_copy()

    @property
    def header(self) -> L.SegmentHeader:
        """The static header of the segment read now (it changes after a restart)."""
        return self._segment.header

    @property
    def dropped(self) -> int:
        """Messages this observer missed (overwritten before it read them), all segments."""
        return self._dropped_before + self._reader.dropped

    @property
    def reconnects(self) -> int:
        """How many publisher restarts were followed."""
        return self._reconnects


class _MirrorPublisher(Publisher):
    """Local publisher of an imported channel: the remote's encoding, metadata and layout.

    Its metadata is marked with the Zenoh key it comes from (:func:`mark_bridged`).
    """

    def __init__(self, name: str, key: str, description: ChannelDescription,
                 permissions: int) -> None:
        self._serializer = RAW
        self._create_channel(name, description.num_slots, description.slot_size,
                             description.max_subscribers, description.encoding,
                             mark_bridged(description.metadata, key), permissions)

    def forward(self, payload: bytes, encoding: int, timestamp_ns: int) -> None:
        """Publish ``payload`` as it is, with the source's encoding and timestamp."""
        if self._closed:
            raise SHMClosedError(f"publisher of channel {self.name!r} is closed")
        self._writer.write(payload, encoding, timestamp_ns)


# --------------------------------------------------------------------------------------------
# Zenoh: the one place that calls it
# --------------------------------------------------------------------------------------------

def _load_zenoh() -> Any:
    return require("zenoh", "the shm_comm Zenoh bridge", EXTRA, "eclipse-zenoh")


SampleCallback = Callable[[str, bytes, bytes | None], None]
Sender = Callable[[bytes, bytes], None]


class _ZenohLink:
    """A Zenoh session in peer mode, and the publishers and subscribers the bridge declares.

    Thread-safe (Zenoh objects are). Zenoh objects are typed ``Any`` here and nowhere else.
    """

    def __init__(self, *, connect: list[str], listen: list[str], scouting: bool,
                 config: Mapping[str, Any]) -> None:
        zenoh = _load_zenoh()
        self._zenoh = zenoh
        self._pumps: list[threading.Thread] = []
        cfg = zenoh.Config()
        settings: dict[str, Any] = {
            "mode": "peer",
            "connect/endpoints": connect,
            # The bridge carries data between machines: no zenoh segments in /dev/shm.
            "transport/shared_memory/enabled": False,
        }
        if listen or not scouting:
            settings["listen/endpoints"] = listen  # [] listens nowhere (zenoh's default: all)
        if not scouting:
            settings["scouting/multicast/enabled"] = False
            settings["scouting/gossip/enabled"] = False
        tuning: dict[str, Any] = {
            "connect/retry": DEFAULT_RETRY,
            # Room for bursts (a 1 MiB array is 16 batches), and time: with zenoh's defaults
            # (2 batches, drop after waiting 1 ms) DROP congestion control loses messages on
            # an idle link whenever the machine is busy (and still did with 20 ms). Waiting
            # blocks only the bridge's thread of that channel, never the local publisher;
            # congestion that lasts shows up as the exporter's counted drops instead.
            "transport/link/tx/queue/size/data": TX_QUEUE_BATCHES,
            "transport/link/tx/queue/congestion_control/drop/wait_before_drop": DROP_WAIT_US,
        }
        for key, value in tuning.items():
            try:
                cfg.insert_json5(key, json.dumps(value))
            except Exception:
                pass  # a Zenoh version that lays its configuration out otherwise: its default
        try:
            for key, value in {**settings, **config}.items():
                cfg.insert_json5(key, json.dumps(value))
        except Exception as exc:
            raise ValueError(f"invalid Zenoh configuration: {exc}") from None
        try:
            self._session = zenoh.open(cfg)
        except Exception as exc:
            raise SHMConnectionError(
                f"cannot open the Zenoh session (listen {listen}, connect {connect}): {exc}; "
                "check the endpoints (tcp/HOST:PORT) and that the listen port is free"
            ) from None

    def sender(self, key: str, express: bool) -> Sender:
        """A function ``send(payload, attachment)`` putting to ``key`` with DROP congestion."""
        publisher = self._session.declare_publisher(
            key, congestion_control=self._zenoh.CongestionControl.DROP, express=express)

        def send(payload: bytes, attachment: bytes) -> None:
            publisher.put(payload, attachment=attachment)

        return send

    def subscribe(self, key_expr: str, callback: SampleCallback, queue: int) -> None:
        """Call ``callback(key, payload, attachment)`` per remote sample, in a thread of ours.

        Samples wait in a Zenoh ring channel of ``queue`` samples that drops the oldest when
        full, so a slow importer never holds up Zenoh's network threads. (Zenoh's own
        callback threads would also keep the interpreter from exiting while a session is
        open, before ``atexit`` could close it.)
        """
        subscriber = self._session.declare_subscriber(
            key_expr, self._zenoh.handlers.RingChannel(queue),
            allowed_origin=self._zenoh.Locality.REMOTE)

        def pump() -> None:
            for sample in subscriber.handler:  # ends when the session closes
                attachment = sample.attachment
                callback(str(sample.key_expr), sample.payload.to_bytes(),
                         None if attachment is None else attachment.to_bytes())

        thread = threading.Thread(target=pump, daemon=True,
                                  name=f"shm_comm-bridge-import-{key_expr}")
        self._pumps.append(thread)
        thread.start()

    def canonical(self, key_expr: str) -> str:
        """``key_expr`` in Zenoh's canonical form; ``ValueError`` if it is not valid."""
        try:
            return str(self._zenoh.KeyExpr.autocanonize(key_expr))
        except Exception as exc:
            raise ValueError(f"invalid key expression {key_expr!r}: {exc}") from None

    def peers(self) -> int:
        """How many Zenoh peers the session is connected to now."""
        return len(list(self._session.info.peers_zid()))

    def close(self) -> None:
        """Close the session (undeclares everything) and wait for the import threads."""
        self._session.close()
        for thread in self._pumps:
            if thread is not threading.current_thread():
                thread.join()


# --------------------------------------------------------------------------------------------
# The bridge
# --------------------------------------------------------------------------------------------

def _percentile(sorted_values: list[int], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index] / 1e9


class _Export:
    """One exported channel: an observer, a Zenoh publisher and a thread between them."""

    def __init__(self, channel: str, key: str, observer: _Observer, send: Sender) -> None:
        self.channel = channel
        self.key = key
        self.observer = observer
        self.send = send
        self.messages = 0
        self.bytes = 0
        self.drops = 0
        self.reconnects = 0
        self.errors = 0
        self.last_error: str | None = None
        self.thread: threading.Thread | None = None
        self.retired = False

    def run(self, stopping: threading.Event) -> None:
        observer = self.observer
        cached: tuple[L.SegmentHeader, ChannelDescription] | None = None
        try:
            while not stopping.is_set():
                try:
                    got = observer.take(EXPORT_POLL)
                except (SHMError, ValueError) as exc:  # e.g. a corrupted segment
                    if stopping.is_set():
                        break
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    stopping.wait(EXPORT_POLL)  # the observer retries; do not spin
                    continue
                self.drops = observer.dropped
                self.reconnects = observer.reconnects
                if got is None:
                    continue
                payload, encoding, timestamp_ns, seq = got
                header = observer.header
                if cached is None or cached[0] is not header:
                    if bridged_from(header.metadata) is not None:
                        break  # restarted as an imported channel: leave it to the rescan
                    lay = header.layout
                    cached = header, ChannelDescription(header.encoding, lay.num_slots,
                                                        lay.slot_size, lay.max_subscribers,
                                                        header.metadata)
                try:
                    self.send(payload, encode_attachment(cached[1], encoding, seq,
                                                         timestamp_ns, header.incarnation))
                except Exception as exc:  # a closing session, a Zenoh error: count, go on
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    continue
                self.messages += 1
                self.bytes += len(payload)
        finally:
            self.retired = True
            observer.close()

    def stats(self) -> dict[str, Any]:
        return {"key": self.key, "messages": self.messages, "bytes": self.bytes,
                "drops": self.drops, "reconnects": self.reconnects, "errors": self.errors,
                "last_error": self.last_error}


class _Import:
    """One imported remote channel and its local twin."""

    def __init__(self, name: str, key: str, host: str, channel: str) -> None:
        self.name = name
        self.key = key
        self.host = host
        self.channel = channel
        self.lock = threading.Lock()
        self.tracker = SequenceTracker()
        self.mirror: _MirrorPublisher | None = None
        self.description: ChannelDescription | None = None
        self.retry_at = 0.0
        self.messages = 0
        self.bytes = 0
        self.rejected = 0
        self.recreated = 0
        self.last_error: str | None = None
        self.last_arrival: float | None = None
        self.latencies: deque[int] = deque(maxlen=LATENCY_WINDOW)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            values = sorted(self.latencies)
            tracker = self.tracker
            result = {
                "key": self.key, "remote_host": self.host, "remote_channel": self.channel,
                "messages": self.messages, "bytes": self.bytes, "drops": tracker.lost,
                "duplicates": tracker.duplicates, "remote_restarts": tracker.restarts,
                "recreated": self.recreated, "rejected": self.rejected,
                "last_error": self.last_error,
                "last_message_age": None if self.last_arrival is None
                else time.monotonic() - self.last_arrival,
                "local_channel": self.mirror is not None and not self.mirror.closed,
            }
        if values:
            result.update(latency_p50=_percentile(values, 0.50),
                          latency_p99=_percentile(values, 0.99),
                          latency_max=values[-1] / 1e9, latency_samples=len(values))
        else:
            result.update(latency_p50=None, latency_p99=None, latency_max=None,
                          latency_samples=0)
        return result


class _Runtime:
    """Everything a running bridge owns; threads and callbacks hold this, not the Bridge."""

    def __init__(self, link: _ZenohLink, *, export: list[str], host: str, prefix: str,
                 rescan_interval: float, poll_interval: float | None, express: bool,
                 max_channel_bytes: int, permissions: int) -> None:
        self.link = link
        self.export_patterns = export
        self.host = host
        self.prefix = prefix
        self.rescan_interval = rescan_interval
        self.poll_interval = poll_interval
        self.express = express
        self.max_channel_bytes = max_channel_bytes
        self.permissions = permissions
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # guards the dicts below
        self.scan_lock = threading.Lock()
        self.exports: dict[str, _Export] = {}
        self.imports: dict[str, _Import] = {}  # by local name
        self.routes: dict[str, _Import] = {}  # by Zenoh key: the per-message lookup
        self.not_exported: dict[str, object] = {}  # bridged channels: name -> created
        self.rejected = 0
        self.last_error: str | None = None
        self.scan_thread: threading.Thread | None = None
        self.stopped = False

    # -- export ------------------------------------------------------------------------------

    def scan(self) -> None:
        """Start exporting every live local pub/sub channel matching an export pattern."""
        if not self.export_patterns or self.stopping.is_set():
            return
        with self.scan_lock:  # the scan thread and rescan() must not both start a channel
            self._scan()

    def _scan(self) -> None:
        for info in list_channels():
            name = info.get("name")
            if (not isinstance(name, str) or info.get("kind") != "pubsub"
                    or not info.get("publisher_alive")):
                continue
            if not any(fnmatch.fnmatchcase(name, p) for p in self.export_patterns):
                continue
            created = info.get("created")
            with self.lock:
                if name in self.imports or self.not_exported.get(name) == created:
                    continue  # never export what a bridge imported: no loops
                existing = self.exports.get(name)
                if existing is not None:
                    if not existing.retired:
                        continue
                    del self.exports[name]
            self._start_export(name, created)

    def _start_export(self, name: str, created: object) -> None:
        try:
            observer = _Observer(name, self.poll_interval)
        except (SHMError, FileNotFoundError, ValueError) as exc:
            self.last_error = f"cannot watch channel {name!r}: {exc}"
            return  # gone again, or not readable: the next scan tries again
        if bridged_from(observer.header.metadata) is not None:
            observer.close()  # imported by a bridge (maybe another one on this machine)
            with self.lock:
                self.not_exported[name] = created
            return
        try:
            key = key_for(self.prefix, self.host, name)
            export = _Export(name, key, observer, self.link.sender(key, self.express))
        except BaseException:
            observer.close()
            if self.stopping.is_set():
                return  # the session closed under us
            raise
        thread = threading.Thread(target=export.run, args=(self.stopping,),
                                  name=f"shm_comm-bridge-export-{name}", daemon=True)
        export.thread = thread
        with self.lock:
            if self.stopping.is_set():
                observer.close()
                return
            self.exports[name] = export
        thread.start()

    def scan_loop(self) -> None:
        while not self.stopping.wait(self.rescan_interval):
            try:
                self.scan()
            except Exception as exc:  # a transient OS error listing /dev/shm: retry later
                self.last_error = f"rescan failed: {type(exc).__name__}: {exc}"

    # -- import ------------------------------------------------------------------------------

    def on_sample(self, key: str, payload: bytes, attachment: bytes | None) -> None:
        """Zenoh callback: re-publish one remote message locally. Never raises."""
        try:
            self._on_sample(key, payload, attachment)
        except Exception as exc:  # keep Zenoh's thread alive whatever happens
            self.rejected += 1
            self.last_error = f"{type(exc).__name__}: {exc}"

    def _on_sample(self, key: str, payload: bytes, attachment: bytes | None) -> None:
        if self.stopping.is_set():
            return
        entry = self.routes.get(key)
        if entry is None:
            entry = self._route(key)
            if entry is None:
                return
        if attachment is None:
            self.rejected += 1
            self.last_error = f"ignored a message on {key!r}: no shm_comm bridge header"
            return
        try:
            message = decode_attachment(attachment)
        except SHMFormatError as exc:
            self.rejected += 1
            self.last_error = f"ignored a message on {key!r}: {exc}"
            return
        with entry.lock:
            if self.stopping.is_set():
                return
            self._deliver(entry, message, payload)

    def _route(self, key: str) -> _Import | None:
        """The import that key ``key`` feeds, created on first use; None if it feeds none."""
        parsed = parse_key(self.prefix, key)
        if parsed is None:
            self.rejected += 1
            self.last_error = f"ignored a message on {key!r}: not a <prefix>/<host>/<channel> key"
            return None
        host, channel = parsed
        name = local_name(host, channel)
        with self.lock:
            entry = self.imports.get(name)
            if entry is None:
                entry = self.imports[name] = _Import(name, key, host, channel)
            elif entry.key != key:
                # e.g. host "a.b" channel "c" and host "a" channel "b.c": refuse the second.
                self.rejected += 1
                self.last_error = (f"ignored {key!r}: its local name {name!r} is already "
                                   f"used by {entry.key!r}")
                return None
            self.routes[key] = entry
        return entry

    def _deliver(self, entry: _Import, message: WireMessage, payload: bytes) -> None:
        mirror = self._mirror_for(entry, message.description)
        if mirror is None:
            entry.rejected += 1
            return
        if len(payload) > message.description.slot_size:
            entry.rejected += 1
            entry.last_error = (f"message of {len(payload)} bytes exceeds the announced slot "
                                f"size {message.description.slot_size}")
            return
        if not entry.tracker.admit(message.incarnation, message.seq):
            return
        mirror.forward(payload, message.encoding, message.timestamp_ns)
        entry.latencies.append(time.time_ns() - message.timestamp_ns)
        entry.messages += 1
        entry.bytes += len(payload)
        entry.last_arrival = time.monotonic()

    def _mirror_for(self, entry: _Import, description: ChannelDescription
                    ) -> _MirrorPublisher | None:
        if entry.mirror is not None and (entry.description is description
                                         or entry.description == description):
            return entry.mirror
        now = time.monotonic()
        if now < entry.retry_at:
            return None
        size = description.layout().total_size
        if size > self.max_channel_bytes:
            entry.last_error = (f"remote channel needs a {size}-byte segment, more than "
                                f"max_channel_bytes={self.max_channel_bytes}")
            entry.retry_at = now + MIRROR_RETRY
            return None
        if entry.mirror is not None:
            # Same name, new shape or encoding: local subscribers reconnect as after a
            # publisher restart and learn the new description from the segment.
            entry.mirror.close()
            entry.mirror = None
            entry.recreated += 1
        try:
            entry.mirror = _MirrorPublisher(entry.name, entry.key, description,
                                           self.permissions)
        except (SHMError, ValueError) as exc:
            entry.last_error = f"cannot create local channel {entry.name!r}: {exc}"
            entry.retry_at = now + MIRROR_RETRY
            return None
        entry.description = description
        entry.last_error = None
        return entry.mirror

    # -- life cycle --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop threads, close the session, remove imported channels. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.stopping.set()
        atexit.unregister(self.stop)
        if self.scan_thread is not None and self.scan_thread is not threading.current_thread():
            self.scan_thread.join()
        with self.lock:
            exports = list(self.exports.values())
            imports = list(self.imports.values())
        for export in exports:
            if export.thread is not None:
                export.thread.join()
        self.link.close()
        for entry in imports:
            with entry.lock:
                if entry.mirror is not None:
                    entry.mirror.close()


class Bridge:
    """Carries local pub/sub channels to other machines over Zenoh, and theirs here.

    ``export``: glob patterns (``fnmatch``) of local pub/sub channels to publish as
    ``<prefix>/<host>/<channel>``; channels are matched again every ``rescan_interval``
    seconds, so ones that appear later are picked up. ``import_``: patterns ``host/channel``
    of remote channels (see :func:`import_key_expr`), each re-published here as channel
    ``<host>.<channel>`` with the remote's encoding, dtype/shape metadata and ring layout,
    created when its first message arrives. Imported channels (by any bridge on this machine:
    their metadata says so) are never exported.

    ``listen``/``connect``: Zenoh endpoints such as ``tcp/0.0.0.0:7447`` and
    ``tcp/lab-pc:7447``. ``host`` names this side (default: the short host name; letters,
    digits, ``_``, ``-``, ``.``). ``prefix``: the first key levels, shared by bridges that
    should see each other. ``scouting=True`` enables Zenoh's multicast/gossip discovery (off by
    default: data goes only where the endpoints say). ``express``: send each message at once
    instead of batching (lower latency; ``False`` favours throughput of small messages).
    ``poll_interval``: how the bridge's observers wait (see :class:`~shm_comm.Subscriber`);
    with None an exported message may wait up to 2 ms when no local subscriber is waiting on
    the channel, 1e-4 polls every 100 µs. ``import_queue``: remote messages waiting to be
    re-published, per import pattern; when full the oldest is dropped (and counted, as a gap).
    ``max_channel_bytes`` bounds the segment an import may create; ``permissions`` is the
    imported segments' mode. ``config`` adds or overrides Zenoh configuration entries, e.g.
    ``{"transport/link/tx/queue/size/data": 4}`` (keys as in Zenoh's JSON5 configuration).

    Raises ``ValueError``/``TypeError`` for bad arguments and ``ImportError`` without
    eclipse-zenoh (at construction); :meth:`start` raises :class:`SHMConnectionError` if the
    Zenoh session cannot be opened (e.g. the listen port is taken). Methods may be called from
    any thread; a bridge starts once (make a new one to restart).
    """

    def __init__(self, *, export: Iterable[str] = (), import_: Iterable[str] = (),
                 connect: Iterable[str] = (), listen: Iterable[str] = (),
                 host: str | None = None, prefix: str = "shm_comm", scouting: bool = False,
                 rescan_interval: float = 1.0, poll_interval: float | None = None,
                 express: bool = True, import_queue: int = 128,
                 max_channel_bytes: int = 1 << 30,
                 permissions: int = 0o600, config: Mapping[str, Any] | None = None) -> None:
        _load_zenoh()  # fail now, with the extra to install, rather than at start()
        self.export = self._patterns(export, "export")
        self.import_ = self._patterns(import_, "import_")
        self.connect = self._endpoints(connect, "connect")
        self.listen = self._endpoints(listen, "listen")
        self.host = _check_chunk(default_host() if host is None else host, "host")
        self.prefix = _check_prefix(prefix)
        self._key_exprs = [import_key_expr(self.prefix, p) for p in self.import_]
        if not rescan_interval > 0:
            raise ValueError(f"rescan_interval must be > 0, got {rescan_interval}")
        if poll_interval is not None and poll_interval < 0:
            raise ValueError(f"poll_interval must be None, 0 or positive, got {poll_interval}")
        if import_queue < 1:
            raise ValueError(f"import_queue must be >= 1, got {import_queue}")
        if max_channel_bytes < 1:
            raise ValueError(f"max_channel_bytes must be >= 1, got {max_channel_bytes}")
        if permissions not in (0o600, 0o640, 0o660):
            raise ValueError(f"permissions must be 0o600, 0o640 or 0o660, got {permissions:#o}")
        self._scouting = bool(scouting)
        self._rescan_interval = float(rescan_interval)
        self._poll_interval = poll_interval
        self._express = bool(express)
        self._import_queue = int(import_queue)
        self._max_channel_bytes = int(max_channel_bytes)
        self._permissions = permissions
        self._config = dict(config or {})
        self._runtime: _Runtime | None = None
        self._finalizer: weakref.finalize[..., Any] | None = None
        self._start_lock = threading.Lock()
        self._started = False

    @staticmethod
    def _patterns(values: Iterable[str], what: str) -> list[str]:
        if isinstance(values, str):
            raise TypeError(f"{what} must be a list of patterns, not a str (use [{values!r}] "
                            "or split_list)")
        patterns = list(values)
        for p in patterns:
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"{what} patterns must be non-empty strings, got {p!r}")
        return patterns

    @staticmethod
    def _endpoints(values: Iterable[str], what: str) -> list[str]:
        if isinstance(values, str):
            raise TypeError(f"{what} must be a list of endpoints, not a str (use [{values!r}])")
        endpoints = list(values)
        for e in endpoints:
            if not isinstance(e, str) or "/" not in e:
                raise ValueError(f"{what} endpoint {e!r} is not of the form PROTOCOL/ADDRESS, "
                                 "e.g. tcp/192.168.1.10:7447")
        return endpoints

    @property
    def running(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._runtime is not None and not self._runtime.stopped

    def start(self) -> Bridge:
        """Open the Zenoh session, export matching channels, subscribe to the imports.

        Channels that already exist are exported before this returns. Raises
        :class:`SHMConnectionError` if the session cannot be opened, ``ValueError`` if called
        twice. Returns the bridge.
        """
        with self._start_lock:
            if self._started:
                raise ValueError("a Bridge starts once; create a new Bridge to restart")
            self._started = True
            link = _ZenohLink(connect=self.connect, listen=self.listen,
                              scouting=self._scouting, config=self._config)
            runtime = _Runtime(link, export=self.export, host=self.host, prefix=self.prefix,
                               rescan_interval=self._rescan_interval,
                               poll_interval=self._poll_interval, express=self._express,
                               max_channel_bytes=self._max_channel_bytes,
                               permissions=self._permissions)
            self._runtime = runtime
            self._finalizer = weakref.finalize(self, runtime.stop)
            # At exit, stop before the finalizers of our observers and imported channels
            # run (finalizers run newest first, after atexit functions registered later).
            atexit.register(runtime.stop)
            try:
                for key_expr in self._key_exprs:
                    link.subscribe(link.canonical(key_expr), runtime.on_sample,
                                   self._import_queue)
                runtime.scan()
            except BaseException:
                self._finalizer()
                raise
            runtime.scan_thread = threading.Thread(target=runtime.scan_loop, daemon=True,
                                                   name="shm_comm-bridge-scan")
            runtime.scan_thread.start()
        return self

    def rescan(self) -> None:
        """Look for new local channels to export now instead of at the next interval."""
        if self._runtime is not None:
            self._runtime.scan()

    def stop(self) -> None:
        """Stop exporting and importing, close the session and remove the imported channels.

        Local subscribers of imported channels stay and reconnect when a bridge creates the
        channels again. Idempotent; also runs when the bridge is garbage collected and at
        interpreter exit.
        """
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Bridge:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters, per channel.

        ``exported[channel]``: ``messages`` and ``bytes`` sent, ``drops`` (messages the bridge
        missed because it fell a whole ring behind the local publisher), ``reconnects``
        (local publisher restarts followed), ``errors``. ``imported[local_name]``:
        ``messages`` and ``bytes`` re-published, ``drops`` (gaps in the remote publisher's
        sequence numbers: lost anywhere upstream), ``duplicates``, ``remote_restarts``,
        ``latency_p50``/``latency_p99``/``latency_max`` in seconds from the remote
        publisher's timestamp to the local re-publish over the last 4096 messages (across
        machines this includes their clock offset), ``last_message_age`` in seconds.
        Also ``peers`` (connected Zenoh peers), ``rejected`` (messages that were not
        shm_comm bridge messages) and ``last_error``.
        """
        runtime = self._runtime
        result: dict[str, Any] = {"host": self.host, "prefix": self.prefix,
                                  "running": self.running, "peers": 0, "exported": {},
                                  "imported": {}, "rejected": 0, "last_error": None}
        if runtime is None:
            return result
        with runtime.lock:
            exports = dict(runtime.exports)
            imports = dict(runtime.imports)
        result["exported"] = {name: e.stats() for name, e in sorted(exports.items())}
        result["imported"] = {name: i.stats() for name, i in sorted(imports.items())}
        result["rejected"] = runtime.rejected
        result["last_error"] = runtime.last_error
        if self.running:
            try:
                result["peers"] = runtime.link.peers()
            except Exception:
                result["peers"] = 0
        return result

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped" if self._started else "not started"
        return (f"<Bridge host={self.host!r} prefix={self.prefix!r} export={self.export} "
                f"import={self.import_} {state}>")
