"""Coverage-guided fuzzing (atheris) of everything that parses bytes from shared memory.

    python tests/fuzz_atheris.py -runs=200000          # or -max_total_time=600

Each input is used five ways: as a segment header, as a typed-array payload, as the
runtime bytes (counters, records, ring entries, buffer headers) of a real segment that a
copying reader and a zero-copy reader (within the ``max_holders`` limit) then poll (a
malformed message must be consumed: the cursor moves on), as the owner and mode that
``fstat`` reports for a segment being attached (the ownership check must accept exactly a
trusted, private, regular file), and as the geometry and arguments that ``_ring.c`` checks
without overflow (what it accepts must stay inside the buffer). Only
shm_comm's own errors may come out; anything else, a crash or a hang (libFuzzer's -timeout)
is a finding. tests/test_fuzz.py runs a short session in CI.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import sys

import atheris

with atheris.instrument_imports():
    from shm_comm import layout as L
    from shm_comm._atomic import AtomicBuffer, Ring
    from shm_comm.arrays import decode_array
    from shm_comm.errors import SHMBufferFullError, SHMFormatError, SHMUntrustedSegmentError
    from shm_comm.ring import RingReader, RingWriter
    from shm_comm.trust import check_owner

LAYOUT = L.SegmentLayout(L.KIND_PUBSUB, 8, 64, 3, max_holders=2)
RUNTIME_START = L.COUNTERS_OFFSET


def build_segment() -> tuple[mmap.mmap, AtomicBuffer, memoryview]:
    mapping = mmap.mmap(-1, LAYOUT.total_size)
    view = memoryview(mapping)
    L.SegmentHeader(LAYOUT, L.ENCODING_RAW, 1, 2, 3, "fuzz").pack_into(view)
    atom = AtomicBuffer(mapping)
    writer = RingWriter(atom, view, LAYOUT)
    for i in range(12):
        writer.write(bytes([i]) * (i * 5 % 64), L.ENCODING_RAW, i)
    return mapping, atom, view


MAPPING, ATOM, VIEW = build_segment()
PRISTINE = bytes(MAPPING)
SCRATCH = mmap.mmap(-1, LAYOUT.total_size)  # a fresh segment for hostile ring geometries
SCRATCH_ATOM = AtomicBuffer(SCRATCH)
EMPTY = bytes(len(SCRATCH))
GEOMETRY = [L.HEAD, L.WAITERS, L.BYTES_TOTAL, L.HOLDERS, LAYOUT.entries_offset,
            LAYOUT.num_slots, LAYOUT.num_buffers, LAYOUT.buffers_offset, LAYOUT.buffer_stride,
            LAYOUT.slot_size, L.RECORDS_OFFSET + L.REC_HELD, L.RECORD_SIZE,
            LAYOUT.max_subscribers, L.DOORBELL]
HOSTILE = struct.Struct("<B14q")  # which geometry words to replace, then values
TRUSTED = frozenset({os.geteuid(), 0, 1001})
OWNERS = (0, os.geteuid(), 1001, 65534)  # trusted and not (few: user-name look-ups are slow)
OWNER_AND_MODE = struct.Struct("<BH")


def test_one_input(data: bytes) -> None:
    try:
        L.read_header(data, len(data))
    except SHMFormatError:
        pass
    try:
        arr, _header = decode_array(data)
        assert arr.nbytes <= len(data)
    except SHMFormatError:
        pass
    if len(data) >= OWNER_AND_MODE.size:
        owner, mode = OWNER_AND_MODE.unpack_from(data)
        uid = OWNERS[owner % len(OWNERS)]
        expected = stat.S_ISREG(mode) and uid in TRUSTED and not mode & stat.S_IWOTH
        try:
            check_owner("shmcp_fuzz", "fuzz", os.stat_result((mode, 1, 1, 1, uid, 0, 0, 0, 0, 0)),
                        TRUSTED)
            assert expected
        except SHMUntrustedSegmentError:
            assert not expected
    # Overwrite the runtime regions of a real segment with the input and read from it.
    MAPPING[:] = PRISTINE
    end = min(len(MAPPING), RUNTIME_START + len(data))
    MAPPING[RUNTIME_START:end] = data[:end - RUNTIME_START]
    reader = RingReader(ATOM, LAYOUT, None, 0)
    for _ in range(20):
        before = reader.cursor
        try:
            got = reader.take_copy()
        except SHMFormatError:
            assert reader.cursor > before  # consumed: the next call goes on
            continue
        if got is None:
            break
        assert len(got[0]) <= LAYOUT.slot_size
    # A zero-copy reader on the same bytes: a place only within the limit, views in bounds.
    holders = ATOM.load(L.HOLDERS)
    holder = RingReader(ATOM, LAYOUT, 1, 0)
    if holder.enable_holding():
        assert holders & 2 or holders.bit_count() < LAYOUT.max_holders
        assert ATOM.load(L.HOLDERS) == holders | 2
        for _ in range(5):
            try:
                held = holder.take_held()
            except SHMFormatError:
                continue
            if held is None:
                break
            assert held[2] + held[3] <= len(MAPPING)
    else:
        assert holders.bit_count() >= LAYOUT.max_holders
        assert ATOM.load(L.HOLDERS) == holders
    if len(data) >= HOSTILE.size:
        hostile_ring(data)


def hostile_ring(data: bytes) -> None:
    """A ring geometry and call arguments from the input: refused, or inside the buffer."""
    which, *values = HOSTILE.unpack_from(data)
    args = [v if which >> (i % 8) & 1 and i % 3 == which % 3 else g
            for i, (g, v) in enumerate(zip(GEOMETRY, values, strict=True))]
    SCRATCH[:] = EMPTY
    try:
        ring = Ring(SCRATCH_ATOM, *args)
        ring.writer_init(SHMBufferFullError)
        for i in range(10):
            ring.write(data[:i * 7], L.ENCODING_RAW, i)
    except (ValueError, OverflowError, SHMBufferFullError):
        return
    a, b, c = values[:3]
    out, stamps = bytearray(512), bytearray(64)
    for call in (lambda: ring.take(a, -1), lambda: ring.take_many(a, b),
                 lambda: ring.gather(a, b, out, stamps, c, values[3], L.ENCODING_RAW,
                                     data[:8], values[4]),
                 lambda: ring.write_stamped(data[:40], b"", a, 0, 0),
                 lambda: ring.slot(a), lambda: ring.intact(a, b)):
        try:
            call()
        except (ValueError, OverflowError, IndexError, SHMBufferFullError):
            pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
