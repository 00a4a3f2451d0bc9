"""Coverage-guided fuzzing (atheris) of everything that parses bytes from shared memory.

    python tests/fuzz_atheris.py -runs=200000          # or -max_total_time=600

Each input is used four ways: as a segment header, as a typed-array payload, as the
runtime bytes (counters, records, ring entries, buffer headers) of a real segment that a
reader then polls, and as the owner and mode that ``fstat`` reports for a segment being
attached (the ownership check must accept exactly a trusted, private, regular file). Only
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
    from shm_comm._atomic import AtomicBuffer
    from shm_comm.arrays import decode_array
    from shm_comm.errors import SHMFormatError, SHMUntrustedSegmentError
    from shm_comm.ring import RingReader, RingWriter
    from shm_comm.trust import check_owner

LAYOUT = L.SegmentLayout(L.KIND_PUBSUB, 8, 64, 2)
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
        try:
            got = reader.take_copy()
        except SHMFormatError:
            continue
        if got is None:
            break
        assert len(got[0]) <= LAYOUT.slot_size


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
