"""The binary format of a shm_comm segment: the one place that knows where every byte lives.

A segment is one shared-memory object per channel. Everything is little-endian and every
shared counter is an 8-byte aligned u64 accessed only through ``shm_comm._atomic``.

Format version 2.0
==================

Static header (offset 0, written once by the creator before anyone can attach)::

    off  size  field
      0     8  magic            b"\\x93SHMCOMM"
      8     2  version_major    u16   readers refuse a major version they do not know
     10     2  version_minor    u16   additions that older readers may ignore
     12     4  static_size      u32   bytes covered by the checksum (336)
     16     1  kind             u8    1 pub/sub, 2 request/reply, 3 push/pull
     17     1  encoding         u8    the channel's default encoding (see ENCODING_*)
     18     2  max_holders      u16   subscribers that may hold a zero-copy view at once,
                                      0..max_subscribers (request/reply: = max_subscribers)
     20     4  max_subscribers  u32   rows in the record table, 1..64
     24     4  num_slots        u32   ring depth N, 1..65535
     28     4  slot_size        u32   payload capacity of one buffer in bytes
     32     4  num_buffers      u32   buffers = N + max_holders + 1
     36     4  buffer_stride    u32   bytes from one buffer to the next
     40     8  total_size       u64   size of the whole segment in bytes
     48     8  owner_pid        u64   the creating process
     56     8  incarnation      u64   random; tells a restarted channel from the old one
     64     8  created_ns       u64   time.time_ns() at creation
     72     2  name_length      u16
     74     2  metadata_length  u16   bytes of channel metadata (0..4096)
     76     4  metadata_crc     u32   zlib.crc32 of the metadata
     80   256  name             the channel name, UTF-8, zero padded
    336     4  checksum         u32   zlib.crc32 of bytes [0, 336)

Counters (offset 384; written while the channel runs)::

    384  head               messages published so far = the next sequence number
    448  waiters            bit i set while subscriber record i sleeps on ``head``
    456  closed             1 once the owner closed the channel
    464  bytes_total        payload bytes published so far
    472  departed_received  ``received`` of subscribers that have left
    480  departed_dropped   ``dropped`` of subscribers that have left
    488  membership         bumped whenever a subscriber attaches or leaves
    496  holders            bit i set while subscriber record i has one of the channel's
                            ``max_holders`` zero-copy places (taken with a compare-exchange
                            only while fewer bits are set; cleared when the row is freed)
    504  doorbell           pub/sub: sleeping subscribers wait on its low 32 bits; bumped and
                            woken by a writer that sees ``waiters`` set, by ``close()`` and
                            by whoever retires the segment (after setting ``closed``)
    512  extra[8]           kind-specific counters (request/reply, push/pull)

Channel metadata (offset ``metadata_offset``, after the records; 4096 bytes): UTF-8 JSON
written once at creation, e.g. a typed channel's dtype and shape (see arrays.py).

Subscriber records (offset 576, ``max_subscribers`` rows of 64 bytes)::

    +0 state   pid << 8 | code; code 0 free, 1 claimed (being set up), 2 active, 3 leaving
    +8 pid     +16 token (non-zero, new with every claim: tells a row that changed hands
    apart; the start time of the pid where liveness falls back to pids)
    +24 cursor (next sequence to read)
    +32 start (cursor at attach)   +40 dropped   +48 held (buffer index + 1 of the zero-copy
    view this subscriber holds, or 0)   +56 extra
    A subscriber is the only writer of its own row (besides a reaper freeing a dead one), so
    received = cursor - start - dropped needs no extra store per message. Pids are for people:
    a row's holder shows it lives by an open-file-description lock on the row's 64 bytes of
    the segment file, taken before it claims the row and kept until it has freed it; a
    reaper frees a row only while holding that lock (docs/design.md, "Record liveness").

Ring entries (after the metadata, ``num_slots`` u64 words): entry ``s % N`` holds
``(s + 1) << 16 | buffer_index`` for message ``s``; 0 means never written.

Buffers (64-aligned, ``num_buffers`` of ``buffer_stride`` bytes), each a 64-byte header and then
the payload (so payloads are 64-byte aligned)::

    +0 seq u64   +8 timestamp_ns u64   +16 length u32   +20 encoding u8   +21 flags u8
    +24 reserved u64   +32 extra u64 x4 (request/reply correlation)

Typed-array payload (encoding 3): a header, then the array data at ``data_offset``::

    0 magic b"\\x93A"  2 version u8 (1)  3 ndim u8  4 descr_length u16  6 data_offset u16
    8 seq u64  16 timestamp_ns u64  24 shape u64 x ndim  then the dtype descr (UTF-8, the
    ``repr`` of ``numpy.lib.format.dtype_to_descr``), zero padding up to data_offset (a
    multiple of 64).

Version history (a reader refuses another major version, naming both):

=======  ==========================================================================================
version  change
=======  ==========================================================================================
1.0      The first format (the ``doorbell`` word was added before any release; readers of 1.0
         without it do not exist). Byte 18 was ``flags`` (always 0) and there were
         ``max_subscribers + 1`` spare buffers, one per possible zero-copy holder.
2.0      Byte 18 is ``max_holders``; the spares are ``max_holders + 1``, so a channel's memory
         follows the zero-copy holders it allows, not its subscriber rows (a 1080p RGB camera
         channel 4 deep: 220 MiB in 1.0, 41.5 MiB with the default 2 holders). A subscriber
         sets its ``holders`` bit only by a compare-exchange that keeps at most
         ``max_holders`` bits set; a 1.0 reader set it unconditionally, which could pin more
         buffers than there are spares and make the writer wait, hence a major version.
=======  ==========================================================================================
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass
from functools import cached_property

from .errors import SHMFormatError

__all__ = [
    "ARRAY_HEADER",
    "ENCODING_ARRAY",
    "ENCODING_MSGPACK",
    "ENCODING_NAMES",
    "ENCODING_PICKLE",
    "ENCODING_RAW",
    "FORMAT_VERSION",
    "KIND_NAMES",
    "KIND_PIPELINE",
    "KIND_PUBSUB",
    "KIND_REQREP",
    "MAGIC",
    "ArrayHeader",
    "SegmentHeader",
    "SegmentLayout",
    "pack_array_header",
    "read_header",
    "unpack_array_header",
]

MAGIC = b"\x93SHMCOMM"
FORMAT_VERSION = (2, 0)

KIND_PUBSUB = 1
KIND_REQREP = 2
KIND_PIPELINE = 3
KIND_NAMES = {KIND_PUBSUB: "pubsub", KIND_REQREP: "reqrep", KIND_PIPELINE: "pipeline"}

ENCODING_RAW = 0
ENCODING_PICKLE = 1
ENCODING_MSGPACK = 2
ENCODING_ARRAY = 3
ENCODING_NAMES = {
    ENCODING_RAW: "raw",
    ENCODING_PICKLE: "pickle",
    ENCODING_MSGPACK: "msgpack",
    ENCODING_ARRAY: "array",
}

MAX_NAME_BYTES = 256
METADATA_SIZE = 4096
MAX_SUBSCRIBERS = 64
MAX_SLOTS = 65535
MAX_BUFFERS = 65535
MAX_SLOT_SIZE = 2**31 - 1

STATIC_HEADER = struct.Struct("<8sHHIBBHIIIIIQQQQHHI256s")
STATIC_SIZE = STATIC_HEADER.size  # 336
CHECKSUM = struct.Struct("<I")
CHECKSUM_OFFSET = STATIC_SIZE

COUNTERS_OFFSET = 384
HEAD = 384
WAITERS = 448
CLOSED = 456
BYTES_TOTAL = 464
DEPARTED_RECEIVED = 472
DEPARTED_DROPPED = 480
MEMBERSHIP = 488
HOLDERS = 496
DOORBELL = 504
EXTRA = 512  # 8 words of kind-specific counters
RECORDS_OFFSET = 576

RECORD_SIZE = 64
REC_STATE = 0
REC_PID = 8
REC_START_TOKEN = 16
REC_CURSOR = 24
REC_START = 32
REC_DROPPED = 40
REC_HELD = 48
REC_EXTRA = 56

STATE_FREE = 0
STATE_CLAIMED = 1
STATE_ACTIVE = 2
STATE_LEAVING = 3
STATE_BITS = 8

BUFFER_HEADER_SIZE = 64
SLOT_HEADER = struct.Struct("<QQIBB")  # seq, timestamp_ns, length, encoding, flags
BUF_EXTRA = 32

ENTRY_INDEX_BITS = 16
ENTRY_INDEX_MASK = (1 << ENTRY_INDEX_BITS) - 1

ARRAY_MAGIC = b"\x93A"
ARRAY_VERSION = 1
# magic, version, ndim, descr_length, data_offset, seq, timestamp_ns
ARRAY_HEADER = struct.Struct("<2sBBHHQQ")
ARRAY_MAX_NDIM = 32
ARRAY_MAX_DESCR = 4096
ARRAY_ALIGN = 64


def _align(value: int, alignment: int = 64) -> int:
    return (value + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class SegmentLayout:
    """Where each region of a segment lives, computed from the channel's parameters.

    Raises ``ValueError`` for parameters outside the format's limits.
    """

    kind: int
    num_slots: int
    slot_size: int
    max_subscribers: int
    max_holders: int = -1
    """Subscribers that may hold a zero-copy view at once; -1 (the default) means
    ``max_subscribers``, which request/reply channels need (one reply buffer per row)."""

    def __post_init__(self) -> None:
        if self.max_holders == -1 and isinstance(self.max_subscribers, int):
            object.__setattr__(self, "max_holders", self.max_subscribers)
        for field in ("num_slots", "slot_size", "max_subscribers", "max_holders"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{field} must be an int, got {type(value).__name__} {value!r}")
        if self.kind not in KIND_NAMES:
            raise ValueError(f"unknown channel kind {self.kind}")
        if not 1 <= self.num_slots <= MAX_SLOTS:
            raise ValueError(f"num_slots must be between 1 and {MAX_SLOTS}, got {self.num_slots}")
        if not 1 <= self.slot_size <= MAX_SLOT_SIZE:
            raise ValueError(
                f"slot_size must be between 1 and {MAX_SLOT_SIZE} bytes, got {self.slot_size}"
            )
        if not 1 <= self.max_subscribers <= MAX_SUBSCRIBERS:
            raise ValueError(
                f"max_subscribers must be between 1 and {MAX_SUBSCRIBERS}, "
                f"got {self.max_subscribers}"
            )
        if not 0 <= self.max_holders <= self.max_subscribers:
            raise ValueError(
                f"max_holders must be between 0 and max_subscribers ({self.max_subscribers}), "
                f"got {self.max_holders}"
            )
        if self.kind == KIND_REQREP and self.max_holders != self.max_subscribers:
            raise ValueError("a request/reply channel keeps a reply buffer per requester row: "
                             "its max_holders must equal max_subscribers")
        if self.num_buffers > MAX_BUFFERS:
            raise ValueError(
                f"num_slots + max_holders + 1 must be at most {MAX_BUFFERS}, "
                f"got {self.num_buffers}"
            )

    @cached_property
    def num_buffers(self) -> int:
        """Data buffers: one per ring slot, one per zero-copy holder's view, one for a loan."""
        return self.num_slots + self.max_holders + 1

    @cached_property
    def buffer_stride(self) -> int:
        """Bytes from the start of one buffer to the next (header plus padded payload)."""
        return _align(BUFFER_HEADER_SIZE + self.slot_size)

    @cached_property
    def metadata_offset(self) -> int:
        """Offset of the channel metadata region."""
        return _align(RECORDS_OFFSET + RECORD_SIZE * self.max_subscribers)

    @cached_property
    def entries_offset(self) -> int:
        """Offset of the ring-entry words."""
        return self.metadata_offset + METADATA_SIZE

    @cached_property
    def buffers_offset(self) -> int:
        """Offset of the first data buffer."""
        return _align(self.entries_offset + 8 * self.num_slots)

    @cached_property
    def total_size(self) -> int:
        """Size of the whole segment in bytes."""
        return self.buffers_offset + self.num_buffers * self.buffer_stride

    def record(self, index: int) -> int:
        """Offset of subscriber record ``index``."""
        return RECORDS_OFFSET + RECORD_SIZE * index

    def entry(self, seq: int) -> int:
        """Offset of the ring entry that message ``seq`` uses."""
        return self.entries_offset + 8 * (seq % self.num_slots)

    def buffer(self, index: int) -> int:
        """Offset of data buffer ``index`` (its 64-byte header)."""
        return self.buffers_offset + index * self.buffer_stride

    def payload(self, index: int) -> int:
        """Offset of the payload of data buffer ``index``."""
        return self.buffers_offset + index * self.buffer_stride + BUFFER_HEADER_SIZE


@dataclass(frozen=True)
class SegmentHeader:
    """The static header of a segment: its layout plus who made it and when."""

    layout: SegmentLayout
    encoding: int
    owner_pid: int
    incarnation: int
    created_ns: int
    name: str
    version: tuple[int, int] = FORMAT_VERSION
    metadata: bytes = b""

    def pack_into(self, buf: memoryview) -> None:
        """Write the static header and its checksum at the start of ``buf``."""
        name = self.name.encode()
        if len(name) > MAX_NAME_BYTES:
            raise ValueError(f"channel name is {len(name)} bytes; at most {MAX_NAME_BYTES}")
        if len(self.metadata) > METADATA_SIZE:
            raise ValueError(f"channel metadata is {len(self.metadata)} bytes; "
                             f"at most {METADATA_SIZE}")
        lay = self.layout
        STATIC_HEADER.pack_into(
            buf, 0, MAGIC, self.version[0], self.version[1], STATIC_SIZE, lay.kind,
            self.encoding, lay.max_holders, lay.max_subscribers, lay.num_slots, lay.slot_size,
            lay.num_buffers, lay.buffer_stride, lay.total_size, self.owner_pid,
            self.incarnation, self.created_ns, len(name), len(self.metadata),
            zlib.crc32(self.metadata), name,
        )
        start = lay.metadata_offset
        buf[start:start + len(self.metadata)] = self.metadata
        CHECKSUM.pack_into(buf, CHECKSUM_OFFSET, zlib.crc32(buf[:STATIC_SIZE]))


def read_header(buf: bytes | memoryview | mmap.mmap,
                actual_size: int | None = None) -> SegmentHeader:
    """Parse and validate a segment's static header.

    ``actual_size`` is the size of the shared-memory object, checked against the header.
    Raises :class:`SHMFormatError` saying what is wrong: not ours, a version we cannot read,
    corrupted bytes, or a size that does not match.
    """
    if len(buf) < CHECKSUM_OFFSET + CHECKSUM.size:
        raise SHMFormatError(
            f"segment is {len(buf)} bytes, too small for a shm_comm header "
            f"({CHECKSUM_OFFSET + CHECKSUM.size} bytes); it was not made by shm_comm"
        )
    fields = STATIC_HEADER.unpack_from(buf, 0)
    (magic, major, minor, static_size, kind, encoding, max_holders, max_subscribers, num_slots,
     slot_size, num_buffers, stride, total_size, owner_pid, incarnation, created_ns,
     name_length, metadata_length, metadata_crc, name) = fields
    if magic != MAGIC:
        raise SHMFormatError(
            f"segment does not start with the shm_comm magic (found {bytes(magic)!r}); "
            "another program owns this name"
        )
    if major != FORMAT_VERSION[0]:
        raise SHMFormatError(
            f"segment uses shm_comm format version {major}.{minor}, this library reads "
            f"{FORMAT_VERSION[0]}.x; run the same shm_comm version on both sides"
        )
    (checksum,) = CHECKSUM.unpack_from(buf, CHECKSUM_OFFSET)
    if static_size != STATIC_SIZE or checksum != zlib.crc32(bytes(buf[:STATIC_SIZE])):
        raise SHMFormatError("segment header checksum does not match: the header is corrupted")
    try:
        layout = SegmentLayout(kind, num_slots, slot_size, max_subscribers, max_holders)
    except ValueError as exc:
        raise SHMFormatError(f"segment header has impossible parameters: {exc}") from None
    if (num_buffers, stride, total_size) != (
        layout.num_buffers, layout.buffer_stride, layout.total_size
    ):
        raise SHMFormatError("segment header sizes are inconsistent: the header is corrupted")
    if actual_size is not None and actual_size < total_size:
        raise SHMFormatError(
            f"segment is {actual_size} bytes but its header says {total_size}: truncated"
        )
    if encoding not in ENCODING_NAMES or name_length > MAX_NAME_BYTES:
        raise SHMFormatError("segment header has an unknown encoding or name length")
    metadata = b""
    if metadata_length:
        start = layout.metadata_offset
        if metadata_length > METADATA_SIZE or len(buf) < start + metadata_length:
            raise SHMFormatError("segment metadata length is impossible: corrupted")
        metadata = bytes(buf[start:start + metadata_length])
        if zlib.crc32(metadata) != metadata_crc:
            raise SHMFormatError("segment metadata checksum does not match: corrupted")
    try:
        text = bytes(name[:name_length]).decode()
    except UnicodeDecodeError:
        raise SHMFormatError("segment header holds a channel name that is not UTF-8") from None
    return SegmentHeader(layout, encoding, owner_pid, incarnation, created_ns, text,
                         (major, minor), metadata)


@dataclass(frozen=True)
class ArrayHeader:
    """The header in front of every typed-array payload."""

    descr: str
    shape: tuple[int, ...]
    seq: int
    timestamp_ns: int
    data_offset: int


def array_header_size(ndim: int, descr_length: int) -> int:
    """Bytes from the payload start to the array data (a multiple of 64)."""
    return _align(ARRAY_HEADER.size + 8 * ndim + descr_length, ARRAY_ALIGN)


def pack_array_header(
    buf: memoryview, offset: int, descr: str, shape: tuple[int, ...], seq: int, timestamp_ns: int
) -> int:
    """Write an array header at ``buf[offset:]``; returns the data offset relative to it."""
    raw = descr.encode()
    if len(shape) > ARRAY_MAX_NDIM:
        raise ValueError(f"arrays may have at most {ARRAY_MAX_NDIM} dimensions, got {len(shape)}")
    if len(raw) > ARRAY_MAX_DESCR:
        raise ValueError(f"dtype description is {len(raw)} bytes; at most {ARRAY_MAX_DESCR}")
    data_offset = array_header_size(len(shape), len(raw))
    ARRAY_HEADER.pack_into(buf, offset, ARRAY_MAGIC, ARRAY_VERSION, len(shape), len(raw),
                           data_offset, seq, timestamp_ns)
    pos = offset + ARRAY_HEADER.size
    struct.pack_into(f"<{len(shape)}Q", buf, pos, *shape)
    pos += 8 * len(shape)
    buf[pos:pos + len(raw)] = raw
    return data_offset


def unpack_array_header(buf: bytes | memoryview, offset: int = 0, length: int | None = None
                        ) -> ArrayHeader:
    """Parse the array header at ``buf[offset:]`` of a payload of ``length`` bytes.

    Checks every length before reading; raises :class:`SHMFormatError` for anything malformed.
    """
    if length is None:
        length = len(buf) - offset
    if length < ARRAY_HEADER.size or offset + length > len(buf):
        raise SHMFormatError(f"typed-array payload of {length} bytes is shorter than its header")
    magic, version, ndim, descr_length, data_offset, seq, ts = ARRAY_HEADER.unpack_from(
        buf, offset)
    if magic != ARRAY_MAGIC:
        raise SHMFormatError("payload is not a shm_comm typed array (bad magic)")
    if version != ARRAY_VERSION:
        raise SHMFormatError(
            f"typed-array header version {version}, this library reads {ARRAY_VERSION}")
    if ndim > ARRAY_MAX_NDIM or descr_length > ARRAY_MAX_DESCR:
        raise SHMFormatError("typed-array header has too many dimensions or too long a dtype")
    needed = array_header_size(ndim, descr_length)
    if data_offset != needed or data_offset > length:
        raise SHMFormatError("typed-array header has an inconsistent data offset")
    pos = offset + ARRAY_HEADER.size
    shape = struct.unpack_from(f"<{ndim}Q", buf, pos)
    pos += 8 * ndim
    try:
        descr = bytes(buf[pos:pos + descr_length]).decode()
    except UnicodeDecodeError:
        raise SHMFormatError("typed-array dtype description is not UTF-8") from None
    return ArrayHeader(descr, tuple(shape), seq, ts, data_offset)


# ===========================================================================================
# Request/reply (KIND_REQREP) and push/pull (KIND_PIPELINE): the queue layout (format 2.0)
# ===========================================================================================
#
# Both kinds use the regions above unchanged (same header, counters, records, ring-entry words
# and buffers; ``max_subscribers`` is the number of requester / puller rows, and
# ``max_holders`` equals it: the spare buffers are the rows' reply buffers) and give the
# kind-specific words the meanings below. Used by reqrep.py and pipeline.py; docs/patterns.md
# has the protocols and the memory-ordering argument.
#
# Queue entries: the ``num_slots`` ring-entry words. Slot ``s`` carries queue positions
# ``s, s + N, s + 2N, ...`` (N = num_slots); its payload always lives in data buffer ``s``.
# The entry for position ``p`` (lap ``p // N``) is::
#
#     bits 16..63  lap      p // N
#     bits  8..15  state    0 FREE: slot ready for position p to be written
#                           1 READY: position p is published
#                           2 OWNED: a row is writing it (reqrep) / taking it (pipeline)
#     bits  0..7   row      the owning row while OWNED, else 0
#
# All-zero words are FREE for lap 0, so a new segment's queue is empty. Every transition
# changes the low 32 bits, which the futex waits compare. A slot moves
# FREE(p) -> OWNED(p,row) -> READY(p) -> FREE(p+N) in a request queue (many requesters write,
# the replier reads) and FREE(p) -> READY(p) -> OWNED(p,row) -> FREE(p+N) in a push/pull
# queue (the pusher writes, pullers compete). OWNED(p, row) is "abandoned" when row is not
# active, or its REC_CLAIM is not p + 1, or its holder is dead (its record lock is free); then the
# replier frees it (request lost with its dead writer) or a puller takes it over (redelivery).
#
# Counters (the 8 ``extra`` words at 512; head, waiters, closed, bytes_total, membership and
# departed_received keep their pub/sub meaning where noted)::
#
#            request/reply                           push/pull
#     head   requests consumed by the replier        items pushed
#   waiters  bit r: requester r sleeps on its reply  bit r: puller r sleeps on head
#    +512    tail: next position to claim            tail: next position to claim
#    +520    replier sleeps on an entry (0/1)        taken: items handed to pullers
#    +528    requesters sleeping for room (count)    redelivered: items taken over from dead
#    +536    last correlation id handed out          processes sleeping on ``taken`` (count)
#    +544    replies written                         recovery hint (nonzero: pullers scan)
#    +552    requests abandoned mid-write            sends that found the queue full
#    +560    replies dropped, requester gone         0
#    +568    0                                       0
#
# Records (``max_subscribers`` rows, claimed and reaped as in pub/sub: state, pid and start
# token keep their meaning; received = cursor - start, as ``release_record`` assumes)::
#
#     +24 cursor   start + requests sent (reqrep) / items received (pipeline)
#     +32 start    +40 dropped (always 0)
#     +48 claim    position + 1 of the queue slot this row is claiming or owns, else 0
#     +56 extra    reqrep: correlation id of the reply in this row's reply buffer, with
#                  bit 63 set while the replier writes it (a seqlock); pipeline: items this
#                  row took over from dead pullers
#
# Buffers: buffer ``s < N`` is queue slot ``s``'s payload (header: seq = queue position,
# timestamp, length, encoding; a request also carries, at BUF_EXTRA, its correlation id, the
# requester's row, pid and token). In request/reply, buffer ``N + r`` is requester row
# ``r``'s reply buffer (header seq = the correlation id it answers); the last buffer is
# unused. In push/pull ``max_holders`` is 0 (pullers copy every item out) and the one buffer
# after the queue is unused.

QUEUE_FREE = 0
QUEUE_READY = 1
QUEUE_OWNED = 2
QUEUE_LAP_SHIFT = 16
QUEUE_STATE_SHIFT = 8
QUEUE_ROW_MASK = 0xFF

QUEUE_TAIL = EXTRA + 0

REQ_REPLIER_WAITING = EXTRA + 8
REQ_PRODUCERS_WAITING = EXTRA + 16
REQ_LAST_CORRELATION = EXTRA + 24
REQ_REPLIES = EXTRA + 32
REQ_ABANDONED = EXTRA + 40
REQ_ORPHANED = EXTRA + 48

PIPE_TAKEN = EXTRA + 8
PIPE_REDELIVERED = EXTRA + 16
PIPE_TAKEN_WAITERS = EXTRA + 24
PIPE_RECOVER_HINT = EXTRA + 32
PIPE_FULL = EXTRA + 40

REC_CLAIM = REC_HELD
REC_REPLY = REC_EXTRA
REC_TAKEN_OVER = REC_EXTRA
REPLY_WRITING = 1 << 63

REQUEST_META = struct.Struct("<QQQQ")  # at BUF_EXTRA: correlation id, row, pid, token


def queue_entry(lap: int, state: int, row: int = 0) -> int:
    """The entry word for lap ``lap`` of a queue slot in ``state`` (owned by ``row``)."""
    return (lap << QUEUE_LAP_SHIFT) | (state << QUEUE_STATE_SHIFT) | row


def queue_entry_fields(entry: int) -> tuple[int, int, int]:
    """Split a queue entry word into ``(lap, state, row)``."""
    return (entry >> QUEUE_LAP_SHIFT, (entry >> QUEUE_STATE_SHIFT) & 0xFF,
            entry & QUEUE_ROW_MASK)
