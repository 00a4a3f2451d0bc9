"""Segment format 2.0: golden bytes, round trips, and malformed headers.

The golden constants below were produced once from the documented layout (layout.py docstring)
and are also re-derived field by field here, so any change to where a byte lives shows up as a
failure that must be answered with a format version bump.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shm_comm import ArrayPublisher, Publisher, SHMFormatError, decode_array
from shm_comm import layout as L

SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- golden values

GOLDEN_LAYOUT = L.SegmentLayout(L.KIND_PUBSUB, num_slots=8, slot_size=100, max_subscribers=4,
                                max_holders=2)
GOLDEN_PID = 4242
GOLDEN_INCARNATION = 0x0123456789ABCDEF
GOLDEN_CREATED_NS = 1_700_000_000_123_456_789
GOLDEN_NAME = "golden"
GOLDEN_METADATA = b'{"k":1}'

# Bytes [0, 340) of a format 2.0 header for the parameters above.
GOLDEN_HEADER = (
    bytes.fromhex(
        "9353484d434f4d4d"  # 0 magic b"\x93SHMCOMM"
        "0200" "0000"  # 8 version 2.0
        "50010000"  # 12 static_size 336
        "01" "01" "0200"  # 16 kind pubsub, encoding pickle, max_holders 2
        "04000000"  # 20 max_subscribers 4
        "08000000"  # 24 num_slots 8
        "64000000"  # 28 slot_size 100
        "0b000000"  # 32 num_buffers 11 = 8 slots + 2 holders + 1
        "c0000000"  # 36 buffer_stride 192
        "c01b000000000000"  # 40 total_size 7104
        "9210000000000000"  # 48 owner_pid 4242
        "efcdab8967452301"  # 56 incarnation
        "15cd853dfe9c9717"  # 64 created_ns
        "0600" "0700"  # 72 name_length 6, metadata_length 7
        "0eb4ab1c"  # 76 metadata_crc
    )
    + b"golden" + bytes(250)  # 80 name, zero padded to 256
    + bytes.fromhex("532ae16f")  # 336 checksum
)

# A typed-array header: dtype '<f4', shape (2, 3), seq 7, timestamp 123.
GOLDEN_ARRAY_HEADER = (
    bytes.fromhex(
        "9341"  # magic
        "01" "02"  # version 1, ndim 2
        "0500"  # descr_length 5
        "4000"  # data_offset 64
        "0700000000000000"  # seq 7
        "7b00000000000000"  # timestamp 123
        "0200000000000000" "0300000000000000"  # shape
    )
    + b"'<f4'" + bytes(19)  # descr, zero padding up to 64
)

STATIC_FIELDS = (
    "magic", "major", "minor", "static_size", "kind", "encoding", "max_holders", "max_subscribers",
    "num_slots", "slot_size", "num_buffers", "buffer_stride", "total_size", "owner_pid",
    "incarnation", "created_ns", "name_length", "metadata_length", "metadata_crc", "name",
)


def golden_header() -> L.SegmentHeader:
    return L.SegmentHeader(GOLDEN_LAYOUT, L.ENCODING_PICKLE, GOLDEN_PID, GOLDEN_INCARNATION,
                           GOLDEN_CREATED_NS, GOLDEN_NAME, metadata=GOLDEN_METADATA)


def packed(header: L.SegmentHeader | None = None) -> bytearray:
    header = header or golden_header()
    buf = bytearray(header.layout.total_size)
    with memoryview(buf) as view:
        header.pack_into(view)
    return buf


def repack(buf: bytearray, fix_checksum: bool = True, **changes: object) -> bytearray:
    """Rewrite static-header fields of ``buf``; recompute the checksum unless told not to."""
    fields = dict(zip(STATIC_FIELDS, L.STATIC_HEADER.unpack_from(buf, 0), strict=True))
    unknown = set(changes) - set(fields)
    assert not unknown, unknown
    fields.update(changes)
    out = bytearray(buf)
    L.STATIC_HEADER.pack_into(out, 0, *(fields[f] for f in STATIC_FIELDS))
    if fix_checksum:
        struct.pack_into("<I", out, 336, zlib.crc32(bytes(out[:336])))
    return out


# --------------------------------------------------------------------------- static header


def test_constants_of_format_2_0() -> None:
    assert L.MAGIC == b"\x93SHMCOMM"
    assert L.FORMAT_VERSION == (2, 0)
    assert L.STATIC_SIZE == 336
    assert (L.HEAD, L.WAITERS, L.CLOSED, L.BYTES_TOTAL) == (384, 448, 456, 464)
    assert (L.DEPARTED_RECEIVED, L.DEPARTED_DROPPED, L.MEMBERSHIP, L.HOLDERS) == (
        472, 480, 488, 496)
    assert (L.EXTRA, L.RECORDS_OFFSET, L.RECORD_SIZE, L.BUFFER_HEADER_SIZE) == (512, 576, 64, 64)
    assert (L.REC_STATE, L.REC_PID, L.REC_START_TOKEN, L.REC_CURSOR, L.REC_START,
            L.REC_DROPPED, L.REC_HELD, L.REC_EXTRA) == (0, 8, 16, 24, 32, 40, 48, 56)
    assert L.SLOT_HEADER.size == 22
    assert L.ARRAY_HEADER.size == 24
    assert (L.KIND_PUBSUB, L.KIND_REQREP, L.KIND_PIPELINE) == (1, 2, 3)
    assert (L.ENCODING_RAW, L.ENCODING_PICKLE, L.ENCODING_MSGPACK, L.ENCODING_ARRAY) == (
        0, 1, 2, 3)


def test_layout_offsets_for_golden_parameters() -> None:
    lay = GOLDEN_LAYOUT
    assert lay.num_buffers == 8 + 2 + 1  # slots + zero-copy holders + 1 (a loan)
    assert lay.buffer_stride == 192  # 64-byte header + 100 bytes, rounded up to 64
    assert lay.metadata_offset == 832  # 576 + 4 * 64, aligned
    assert lay.entries_offset == 832 + 4096
    assert lay.buffers_offset == 4992  # 4928 + 8 * 8, aligned to 64
    assert lay.total_size == 4992 + 11 * 192
    assert lay.record(3) == 576 + 3 * 64
    assert lay.entry(9) == lay.entries_offset + 8  # slot 9 % 8
    assert lay.buffer(2) == 4992 + 2 * 192
    assert lay.payload(2) == lay.buffer(2) + 64
    for offset in (lay.metadata_offset, lay.entries_offset, lay.buffers_offset, lay.payload(5)):
        assert offset % 64 == 0


def test_golden_header_bytes() -> None:
    buf = packed()
    assert len(GOLDEN_HEADER) == 340
    assert bytes(buf[:340]) == GOLDEN_HEADER
    start = GOLDEN_LAYOUT.metadata_offset
    assert bytes(buf[start:start + len(GOLDEN_METADATA)]) == GOLDEN_METADATA
    # Everything else stays untouched (counters start at zero in a fresh segment).
    assert not any(buf[340:start])
    assert not any(buf[start + len(GOLDEN_METADATA):])


def test_golden_header_fields_by_hand() -> None:
    """Re-derive the golden bytes from the documented offsets, independently of STATIC_HEADER."""
    g = GOLDEN_HEADER

    def u(fmt: str, off: int) -> int:
        return int(struct.unpack_from("<" + fmt, g, off)[0])

    assert g[0:8] == b"\x93SHMCOMM"
    assert (u("H", 8), u("H", 10), u("I", 12)) == (2, 0, 336)
    assert (g[16], g[17], u("H", 18)) == (L.KIND_PUBSUB, L.ENCODING_PICKLE, 2)
    assert (u("I", 20), u("I", 24), u("I", 28)) == (4, 8, 100)
    assert (u("I", 32), u("I", 36), u("Q", 40)) == (11, 192, 7104)
    assert (u("Q", 48), u("Q", 56), u("Q", 64)) == (
        GOLDEN_PID, GOLDEN_INCARNATION, GOLDEN_CREATED_NS)
    assert (u("H", 72), u("H", 74), u("I", 76)) == (6, 7, zlib.crc32(GOLDEN_METADATA))
    assert g[80:336].rstrip(b"\0") == b"golden"
    assert u("I", 336) == zlib.crc32(g[:336])


def test_golden_header_round_trip() -> None:
    buf = packed()
    header = L.read_header(buf, len(buf))
    assert header == golden_header()
    assert header.version == (2, 0)
    assert header.metadata == GOLDEN_METADATA
    # Also from a memoryview and without the size check.
    with memoryview(buf) as view:
        assert L.read_header(view) == golden_header()


@SETTINGS
@given(
    kind=st.sampled_from(sorted(L.KIND_NAMES)),
    num_slots=st.integers(1, 4096),
    slot_size=st.integers(1, 1 << 20),
    max_subscribers=st.integers(1, 64),
    max_holders=st.integers(0, 64),
    encoding=st.sampled_from(sorted(L.ENCODING_NAMES)),
    pid=st.integers(0, 2**63 - 1),
    incarnation=st.integers(0, 2**64 - 1),
    created=st.integers(0, 2**64 - 1),
    name=st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=64).filter(
        lambda s: len(s.encode()) <= 256),
    metadata=st.binary(max_size=300),
)
def test_header_round_trip(kind: int, num_slots: int, slot_size: int, max_subscribers: int,
                           max_holders: int, encoding: int, pid: int, incarnation: int,
                           created: int, name: str, metadata: bytes) -> None:
    holders = max_subscribers if kind == L.KIND_REQREP else min(max_holders, max_subscribers)
    lay = L.SegmentLayout(kind, num_slots, slot_size, max_subscribers, holders)
    assert lay.num_buffers == num_slots + holders + 1
    header = L.SegmentHeader(lay, encoding, pid, incarnation, created, name, metadata=metadata)
    # Only the regions the header covers: no need to allocate the whole segment.
    buf = bytearray(lay.metadata_offset + L.METADATA_SIZE)
    with memoryview(buf) as view:
        header.pack_into(view)
    assert L.read_header(buf) == header
    assert L.read_header(buf, lay.total_size) == header


def test_minor_version_is_accepted() -> None:
    buf = repack(packed(), minor=7)
    assert L.read_header(buf).version == (2, 7)


def test_header_limits_on_packing() -> None:
    lay = GOLDEN_LAYOUT
    with pytest.raises(ValueError, match="257 bytes"):
        packed(L.SegmentHeader(lay, 1, 1, 1, 1, "x" * 257))
    with pytest.raises(ValueError, match="metadata"):
        packed(L.SegmentHeader(lay, 1, 1, 1, 1, "x", metadata=b"m" * 4097))
    # The limits themselves are fine.
    buf = packed(L.SegmentHeader(lay, 1, 1, 1, 1, "é" * 128, metadata=b"m" * 4096))
    assert L.read_header(buf).name == "é" * 128


@pytest.mark.parametrize(
    ("kind", "num_slots", "slot_size", "max_subscribers", "max_holders"),
    [
        (0, 8, 8, 1, -1), (4, 8, 8, 1, -1), (1, 0, 8, 1, -1), (1, 65536, 8, 1, -1),
        (1, 8, 0, 1, -1), (1, 8, 2**31, 1, -1), (1, 8, 8, 0, -1), (1, 8, 8, 65, -1),
        (1, 65535, 8, 1, -1), (1, 65534, 8, 4, 1), (1, 8, 8, 4, 5), (1, 8, 8, 4, -2),
        (2, 8, 8, 4, 2),
    ],
)
def test_impossible_layouts_raise_value_error(kind: int, num_slots: int, slot_size: int,
                                              max_subscribers: int, max_holders: int) -> None:
    with pytest.raises(ValueError):
        L.SegmentLayout(kind, num_slots, slot_size, max_subscribers, max_holders)


def test_spare_buffers_follow_the_zero_copy_holders() -> None:
    """Format 2.0: spares are max_holders + 1 (default: one per subscriber row, as 1.0)."""
    assert L.SegmentLayout(L.KIND_PUBSUB, 4, 64, 32).num_buffers == 4 + 32 + 1
    assert L.SegmentLayout(L.KIND_PUBSUB, 4, 64, 32, 0).num_buffers == 5
    assert L.SegmentLayout(L.KIND_REQREP, 4, 64, 8).max_holders == 8
    frame = 1080 * 1920 * 3 + L.array_header_size(3, len("'|u1'"))
    camera = L.SegmentLayout(L.KIND_PUBSUB, 4, frame, 32, 2)
    assert camera.num_buffers == 7
    assert camera.total_size < 42 * 2**20  # fits Docker's 64 MiB /dev/shm with room to spare
    assert L.SegmentLayout(L.KIND_PUBSUB, 4, frame, 32).total_size > 219 * 2**20  # as in 1.0


def _malformed() -> list[tuple[str, bytes, str]]:
    good = packed()
    meta = GOLDEN_LAYOUT.metadata_offset
    corrupt_meta = bytearray(good)
    corrupt_meta[meta] ^= 0xFF
    flipped_name = bytearray(good)
    flipped_name[85] ^= 0x01
    flipped_checksum = bytearray(good)
    flipped_checksum[336] ^= 0x80
    return [
        ("empty", b"", "too small"),
        ("truncated static header", bytes(good[:339]), "too small"),
        ("wrong magic", bytes(repack(good, magic=b"\x93SHMCOMX")), "magic"),
        ("zero magic", bytes(len(good)), "magic"),
        ("junk", os.urandom(4096).replace(b"\x93", b"\x94"), "magic"),
        ("major 1 (the format before max_holders)", bytes(repack(good, major=1)),
         "version 1.0, this library reads 2.x"),
        ("major 3", bytes(repack(good, major=3)), "version 3.0"),
        ("major 0", bytes(repack(good, major=0)), "version 0.0"),
        ("flipped name byte", bytes(flipped_name), "checksum"),
        ("flipped checksum", bytes(flipped_checksum), "checksum"),
        ("field changed, checksum stale", bytes(repack(good, False, num_slots=9)), "checksum"),
        ("static_size 340", bytes(repack(good, static_size=340)), "checksum"),
        ("kind 0", bytes(repack(good, kind=0)), "impossible"),
        ("kind 9", bytes(repack(good, kind=9)), "impossible"),
        ("num_slots 0", bytes(repack(good, num_slots=0)), "impossible"),
        ("slot_size 0", bytes(repack(good, slot_size=0)), "impossible"),
        ("max_subscribers 0", bytes(repack(good, max_subscribers=0)), "impossible"),
        ("max_subscribers 65", bytes(repack(good, max_subscribers=65)), "impossible"),
        ("more holders than rows", bytes(repack(good, max_holders=5, num_buffers=14,
                                                total_size=4992 + 14 * 192)), "max_holders"),
        ("reqrep with fewer holders than rows", bytes(repack(good, kind=L.KIND_REQREP)),
         "reply buffer"),
        ("holders changed, sizes not", bytes(repack(good, max_holders=3)), "inconsistent"),
        ("too many buffers", bytes(repack(good, num_slots=65535, max_subscribers=64)),
         "impossible"),
        ("num_buffers wrong", bytes(repack(good, num_buffers=13)), "inconsistent"),
        ("stride wrong", bytes(repack(good, buffer_stride=128)), "inconsistent"),
        ("total_size wrong", bytes(repack(good, total_size=7105)), "inconsistent"),
        ("other parameters, same sizes",
         bytes(repack(good, num_slots=9)), "inconsistent"),
        ("unknown encoding", bytes(repack(good, encoding=9)), "encoding"),
        ("name too long", bytes(repack(good, name_length=257)), "name length"),
        ("name not utf-8", bytes(repack(good, name=b"\xff\xfe" + bytes(254))), "UTF-8"),
        ("bad metadata crc", bytes(repack(good, metadata_crc=1234)), "metadata checksum"),
        ("corrupted metadata", bytes(corrupt_meta), "metadata checksum"),
        ("metadata too long", bytes(repack(good, metadata_length=4097)), "metadata length"),
        ("metadata past the buffer", bytes(packed()[:meta + 3]), "metadata length"),
    ]


@pytest.mark.parametrize(("case", "data", "match"), _malformed(), ids=lambda v: v
                         if isinstance(v, str) and len(v) < 40 else "")
def test_malformed_header_raises(case: str, data: bytes, match: str) -> None:
    with pytest.raises(SHMFormatError, match=match):
        L.read_header(data)


def test_truncated_segment_raises() -> None:
    buf = packed()
    assert L.read_header(buf, GOLDEN_LAYOUT.total_size) == golden_header()
    with pytest.raises(SHMFormatError, match="truncated"):
        L.read_header(buf, GOLDEN_LAYOUT.total_size - 1)
    with pytest.raises(SHMFormatError, match="truncated"):
        L.read_header(buf, 4096)


@SETTINGS
@given(data=st.binary(max_size=6000))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        L.read_header(data, len(data))
    except SHMFormatError:
        pass


@SETTINGS
@given(position=st.integers(0, 339), bit=st.integers(0, 7))
def test_every_single_bit_flip_is_detected(position: int, bit: int) -> None:
    buf = packed()
    buf[position] ^= 1 << bit
    with pytest.raises(SHMFormatError):
        L.read_header(buf, len(buf))


def test_real_segment_has_the_documented_header(channel: str) -> None:
    with Publisher(channel, num_slots=8, slot_size=100, max_subscribers=4) as pub:
        path = Path("/dev/shm") / pub.segment_name
        data = path.read_bytes()
        header = L.read_header(data, len(data))
        # A plain channel's subscribers copy: no spare buffers for zero-copy holders.
        plain = L.SegmentLayout(L.KIND_PUBSUB, 8, 100, 4, max_holders=0)
        assert header.layout == plain
        assert len(data) == plain.total_size == 4992 + 9 * 192
        assert header.name == channel
        assert header.owner_pid == os.getpid()
        assert header.encoding == L.ENCODING_PICKLE
        assert header.metadata == b""
        # Same bytes as the golden header wherever the golden parameters agree.
        assert data[:18] == GOLDEN_HEADER[:18]
        assert data[18:20] == b"\0\0"  # max_holders 0
        assert data[20:32] == GOLDEN_HEADER[20:32]
        assert data[72:74] == struct.pack("<H", len(channel))
    with ArrayPublisher(channel, shape=(3,), dtype=np.uint8, num_slots=8) as typed:
        data = (Path("/dev/shm") / typed.segment_name).read_bytes()
        layout = L.read_header(data, len(data)).layout
        assert (layout.max_holders, layout.num_buffers) == (2, 8 + 2 + 1)
        assert struct.unpack_from("<H", data, 18) == (2,)


# --------------------------------------------------------------------------- array header


def test_golden_array_header() -> None:
    buf = bytearray(128)
    with memoryview(buf) as view:
        offset = L.pack_array_header(view, 0, "'<f4'", (2, 3), 7, 123)
    assert offset == 64
    assert bytes(buf[:64]) == GOLDEN_ARRAY_HEADER
    assert not any(buf[64:])
    header = L.unpack_array_header(buf, 0, 64 + 24)
    assert header == L.ArrayHeader("'<f4'", (2, 3), 7, 123, 64)


def test_array_header_at_an_offset() -> None:
    buf = bytearray(300)
    with memoryview(buf) as view:
        offset = L.pack_array_header(view, 100, "'<f4'", (2, 3), 7, 123)
    assert bytes(buf[100:164]) == GOLDEN_ARRAY_HEADER
    assert L.unpack_array_header(buf, 100, offset).shape == (2, 3)


@SETTINGS
@given(
    shape=st.lists(st.integers(0, 2**40), max_size=L.ARRAY_MAX_NDIM).map(tuple),
    descr=st.text(max_size=200),
    seq=st.integers(0, 2**64 - 1),
    ts=st.integers(0, 2**64 - 1),
)
def test_array_header_round_trip(shape: tuple[int, ...], descr: str, seq: int, ts: int) -> None:
    size = L.array_header_size(len(shape), len(descr.encode()))
    assert size % 64 == 0
    buf = bytearray(size)
    with memoryview(buf) as view:
        assert L.pack_array_header(view, 0, descr, shape, seq, ts) == size
    assert L.unpack_array_header(buf) == L.ArrayHeader(descr, shape, seq, ts, size)


def test_array_header_limits_on_packing() -> None:
    buf = bytearray(8192)
    with memoryview(buf) as view:
        with pytest.raises(ValueError, match="dimensions"):
            L.pack_array_header(view, 0, "'<f4'", (1,) * 33, 0, 0)
        with pytest.raises(ValueError, match="dtype"):
            L.pack_array_header(view, 0, "x" * 4097, (1,), 0, 0)


def _array_malformed() -> list[tuple[str, bytes, str]]:
    good = bytearray(GOLDEN_ARRAY_HEADER + bytes(24))

    def with_(fmt: str, offset: int, value: int) -> bytes:
        out = bytearray(good)
        struct.pack_into(fmt, out, offset, value)
        return bytes(out)

    bad_descr = bytearray(good)
    bad_descr[40:45] = b"\xff\xfe\xfd\xfc\xfb"
    return [
        ("empty", b"", "shorter"),
        ("23 bytes", bytes(good[:23]), "shorter"),
        ("bad magic", b"\x93B" + bytes(good[2:]), "magic"),
        ("npy magic", b"\x93NUMPY" + bytes(good[6:]), "magic"),
        ("version 0", with_("<B", 2, 0), "version"),
        ("version 2", with_("<B", 2, 2), "version"),
        ("ndim 33", with_("<B", 3, 33), "dimensions"),
        ("descr 4097", with_("<H", 4, 4097), "dtype"),
        ("data_offset 0", with_("<H", 6, 0), "data offset"),
        ("data_offset 128", with_("<H", 6, 128), "data offset"),
        ("ndim grows past data_offset", with_("<B", 3, 6), "data offset"),
        ("header longer than payload", bytes(good[:63]), "data offset"),
        ("descr not utf-8", bytes(bad_descr), "UTF-8"),
    ]


@pytest.mark.parametrize(("case", "data", "match"), _array_malformed(),
                         ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_malformed_array_header_raises(case: str, data: bytes, match: str) -> None:
    with pytest.raises(SHMFormatError, match=match):
        L.unpack_array_header(data)


def test_array_header_length_beyond_buffer_raises() -> None:
    buf = GOLDEN_ARRAY_HEADER + bytes(24)
    with pytest.raises(SHMFormatError):
        L.unpack_array_header(buf, 0, len(buf) + 1)
    with pytest.raises(SHMFormatError):
        L.unpack_array_header(buf, 70, 24)


@SETTINGS
@given(data=st.binary(max_size=600))
def test_random_bytes_never_crash_the_array_parser(data: bytes) -> None:
    for payload in (data, L.ARRAY_MAGIC + bytes([1]) + data):
        try:
            decode_array(payload)
        except SHMFormatError:
            pass


def _payload(arr: np.ndarray, descr: str | None = None) -> bytes:
    descr = descr if descr is not None else repr(np.lib.format.dtype_to_descr(arr.dtype))
    size = L.array_header_size(arr.ndim, len(descr.encode()))
    buf = bytearray(size + arr.nbytes)
    with memoryview(buf) as view:
        L.pack_array_header(view, 0, descr, arr.shape, 1, 2)
    buf[size:] = arr.tobytes()
    return bytes(buf)


@pytest.mark.parametrize("arr", [
    np.arange(6, dtype="<f4").reshape(2, 3),
    np.arange(5, dtype=">i8"),
    np.array(3.5),
    np.zeros((0, 3), dtype=np.uint8),
    np.array([True, False]),
    np.array(["ab", "cde"], dtype="U4"),
    np.zeros(3, dtype=[("x", "<f8"), ("flag", "u1"), ("name", "S5")]),
    np.arange(24, dtype=np.complex64).reshape(2, 3, 4),
], ids=lambda a: f"{a.dtype}-{a.shape}")
def test_decode_array_round_trip(arr: np.ndarray) -> None:
    out, header = decode_array(_payload(arr))
    assert out.dtype == arr.dtype
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert (header.seq, header.timestamp_ns) == (1, 2)


@pytest.mark.parametrize(("descr", "match"), [
    ("'not a dtype'", "invalid dtype"),
    ("__import__('os')", "invalid dtype"),
    ("'|O'", "object dtype"),
    ("[('a', '|O')]", "object dtype"),
    ("", "invalid dtype"),
])
def test_decode_array_refuses_bad_dtypes(descr: str, match: str) -> None:
    with pytest.raises(SHMFormatError, match=match):
        decode_array(_payload(np.zeros(2, dtype=np.uint8), descr))


def test_decode_array_refuses_short_data() -> None:
    payload = _payload(np.arange(6, dtype="<f4").reshape(2, 3))
    with pytest.raises(SHMFormatError, match="declares"):
        decode_array(payload[:-1])
    # A shape whose product overflows anything sensible is refused, not allocated.
    big = bytearray(payload)
    struct.pack_into("<Q", big, 24, 2**62)
    with pytest.raises(SHMFormatError):
        decode_array(bytes(big))
