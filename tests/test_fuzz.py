"""Fuzzing: corrupted segments, slot headers, typed-array headers and payloads.

Whatever the bytes, readers raise our errors (SHMFormatError, SHMSerializationError), return
data or None; they never crash, hang, read out of bounds or allocate without bound, and the
channel stays usable for well-formed messages. CI runs the default example counts; set
FUZZ_EXAMPLES for a longer run (the ``slow`` test does 20x).
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shm_comm import (
    ArrayPublisher,
    ArraySubscriber,
    Publisher,
    SHMBufferFullError,
    SHMError,
    SHMFormatError,
    SHMSerializationError,
    SHMUntrustedSegmentError,
    Subscriber,
    decode_array,
)
from shm_comm import layout as L
from shm_comm._atomic import AtomicBuffer, Ring
from shm_comm.ring import RingReader
from shm_comm.trust import check_owner
from shm_comm.utils import pub_segment_name

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

LAYOUT = L.SegmentLayout(L.KIND_PUBSUB, 8, 64, 4, max_holders=2)


def valid_header() -> bytearray:
    buf = bytearray(LAYOUT.total_size)
    L.SegmentHeader(LAYOUT, L.ENCODING_PICKLE, 1234, 42, 0, "fuzz",
                    metadata=b'{"k": 1}').pack_into(memoryview(buf))
    return buf


# Every byte up to the end of the checksum is covered (340..383 is unused padding).
mutations = st.lists(st.tuples(st.integers(0, L.CHECKSUM_OFFSET + 3), st.integers(0, 255)),
                     min_size=1, max_size=8)


@FUZZ
@given(mutations)
def test_corrupted_static_header_is_refused(changes: list[tuple[int, int]]) -> None:
    buf = valid_header()
    original = bytes(buf)
    for offset, value in changes:
        buf[offset] = value
    if bytes(buf) == original:
        L.read_header(buf, len(buf))
        return
    with pytest.raises(SHMFormatError):
        L.read_header(buf, len(buf))


@FUZZ
@given(st.binary(max_size=600), st.integers(0, 10_000))
def test_random_bytes_are_never_a_header(data: bytes, size: int) -> None:
    with pytest.raises(SHMFormatError):
        L.read_header(data, size)


@FUZZ
@given(st.binary(max_size=300))
def test_random_typed_array_payloads(data: bytes) -> None:
    try:
        arr, _header = decode_array(data)
    except SHMFormatError:
        return
    assert arr.nbytes <= len(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 95), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupted_typed_array_header_in_a_valid_message(changes: list[tuple[int, int]]) -> None:
    buf = bytearray(256)
    view = memoryview(buf)
    offset = L.pack_array_header(view, 0, repr("<f8"), (3, 2), 7, 99)
    for pos, value in changes:
        buf[pos] = value
    try:
        arr, _ = decode_array(bytes(buf[:offset + 48]))
    except SHMFormatError:
        return
    assert arr.nbytes <= 256


def test_attaching_to_a_corrupted_segment_raises(channel: str) -> None:
    path = Path("/dev/shm") / pub_segment_name(channel)
    buf = valid_header()
    buf[100] ^= 0xFF  # inside the name: the checksum no longer matches
    path.write_bytes(bytes(buf))
    path.chmod(0o600)
    try:
        with pytest.raises(SHMFormatError, match="corrupted"):
            Subscriber(channel, timeout_connect=0.5)
        with pytest.raises(SHMError, match="force_unlink"):
            Publisher(channel)
    finally:
        path.unlink()


# Regions written at run time: counters, records, ring entries and buffer headers.
def runtime_regions(lay: L.SegmentLayout) -> list[tuple[int, int]]:
    regions = [(L.COUNTERS_OFFSET, L.RECORDS_OFFSET + 64 * lay.max_subscribers),
               (lay.entries_offset, lay.entries_offset + 8 * lay.num_slots)]
    regions += [(lay.buffer(i), lay.buffer(i) + 32) for i in range(lay.num_buffers)]
    return regions


@FUZZ
@given(data=st.data())
def test_runtime_corruption_never_crashes_or_hangs(channel: str, data: st.DataObject) -> None:
    with Publisher(channel, num_slots=8, slot_size=64, max_subscribers=4) as pub:
        sub = Subscriber(channel)
        obs = Subscriber(channel, observer=True)
        try:
            for i in range(data.draw(st.integers(0, 20))):
                pub.send(i)
            segment = pub._segment
            regions = runtime_regions(segment.layout)
            for _ in range(data.draw(st.integers(1, 6))):
                start, end = data.draw(st.sampled_from(regions))
                offset = data.draw(st.integers(start, end - 1))
                segment.view[offset] = data.draw(st.integers(0, 255))
            for reader in (sub, obs):
                t0 = time.monotonic()
                malformed = 0
                for _ in range(12):
                    ring_reader, before = reader._reader, reader._reader.cursor
                    try:
                        reader.recv(timeout=0)
                    except (SHMFormatError, SHMSerializationError) as exc:
                        malformed += isinstance(exc, SHMFormatError)
                        if reader._reader is ring_reader:  # (not moved to a new segment)
                            assert ring_reader.cursor > before  # consumed: never wedged
                assert time.monotonic() - t0 < 5.0
                if not reader._reconnects:
                    assert reader._reader.malformed == malformed
            # Corrupted records: reaping (record locks, whatever the state words say) and
            # claiming a row still work, or fail with our errors.
            pub.stats()
            try:
                Subscriber(channel, timeout_connect=0).close()
            except SHMError:
                pass
        finally:
            sub.close()
            obs.close()


GEOMETRY = ("head", "waiters", "bytes_total", "holders", "entries", "num_slots", "num_buffers",
            "buffers", "stride", "slot_size", "held_words", "record_size", "num_rows",
            "doorbell")
hostile = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([-1, 0, 1, 7, 8, 63, 64, 65, 2**16, 2**31, 2**32 - 1, 2**32, 2**61,
                     2**62, 2**63 - 1, -(2**63)]))


def _anon_ring(lay: L.SegmentLayout) -> tuple[Any, AtomicBuffer, list[int]]:
    mapping = mmap.mmap(-1, lay.total_size)
    L.SegmentHeader(lay, L.ENCODING_RAW, 1, 2, 3, "fuzz").pack_into(memoryview(mapping))
    atom = AtomicBuffer(mapping)
    args = [L.HEAD, L.WAITERS, L.BYTES_TOTAL, L.HOLDERS, lay.entries_offset, lay.num_slots,
            lay.num_buffers, lay.buffers_offset, lay.buffer_stride, lay.slot_size,
            L.RECORDS_OFFSET + L.REC_HELD, L.RECORD_SIZE, lay.max_subscribers, L.DOORBELL]
    return mapping, atom, args


@FUZZ
@given(st.dictionaries(st.sampled_from(GEOMETRY), hostile, min_size=1, max_size=4))
def test_ring_geometry_from_hostile_values(changes: dict[str, int]) -> None:
    """_ring.c checks a geometry without overflow: what it accepts lies inside the buffer, so
    the writer's and readers' steps stay in bounds; anything else is a ValueError."""
    lay = L.SegmentLayout(L.KIND_PUBSUB, 4, 64, 2)
    mapping, atom, args = _anon_ring(lay)
    for name, value in changes.items():
        args[GEOMETRY.index(name)] = value
    try:
        try:
            ring = Ring(atom, *args)
            ring.writer_init(SHMBufferFullError)  # (refuses words that are not zero yet)
            for i in range(6):
                ring.write(bytes([i]) * (i * 9 % 64), L.ENCODING_RAW, i)
        except (ValueError, OverflowError):
            return
        out, stamps = bytearray(256), bytearray(64)
        for call in (lambda: ring.take(0, -1), lambda: ring.take_many(0, 8),
                     lambda: ring.gather(0, 8, out, stamps, 0, 8, L.ENCODING_RAW, b"", 0),
                     lambda: ring.slot(0), lambda: ring.intact(0, 0)):
            try:
                call()
            except (ValueError, IndexError, SHMBufferFullError):
                pass
    finally:
        atom.release()
        mapping.close()


@FUZZ
@given(hostile, hostile, hostile, hostile, st.floats(allow_nan=True, allow_infinity=True))
def test_ring_calls_with_hostile_arguments(a: int, b: int, c: int, d: int,
                                           timeout: float) -> None:
    """Offsets, sizes and timeouts from a caller are checked without overflow too."""
    lay = L.SegmentLayout(L.KIND_PUBSUB, 4, 64, 2)
    mapping, atom, args = _anon_ring(lay)
    ring = Ring(atom, *args)
    ring.writer_init(SHMBufferFullError)
    ring.write(b"x" * 40, L.ENCODING_RAW, 1)
    reader = Ring(atom, *args)
    rec = lay.record(0)
    out, stamps = bytearray(256), bytearray(64)
    calls = [
        lambda: ring.write_stamped(bytes(32), b"", a, 0, 0),
        lambda: reader.gather(0, b, out, stamps, a, c, L.ENCODING_RAW, b"", d),
        lambda: reader.gather(0, 4, out, stamps, 0, 8, L.ENCODING_RAW, bytes(8), a),
        lambda: reader.hold(0, rec + L.REC_HELD, rec + L.REC_CURSOR, bytes(24), a, b),
        lambda: reader.hold(0, a, b, b"", 0, -1),
        lambda: reader.take(c, d),
        lambda: reader.take_many(a, b),
        lambda: reader.take_wait(5, rec + L.REC_CURSOR, 0, L.CLOSED,
                                 timeout if abs(timeout) < 0.01 or timeout != timeout else 0),
        lambda: atom.wait(L.HEAD, 7, timeout if timeout != timeout or timeout < 0.01 else 0),
        lambda: reader.slot(a),
        lambda: reader.intact(a, b),
    ]
    try:
        for call in calls:
            try:
                call()
            except (ValueError, OverflowError, IndexError):
                pass
    finally:
        atom.release()
        mapping.close()


ABSURD_DIMS = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**31, 2**62,
                                                                      2**63, 2**64 - 1]))


@FUZZ
@given(st.lists(ABSURD_DIMS, min_size=3, max_size=3), st.booleans())
def test_typed_headers_with_any_shape(channel: str, shape: list[int], copy: bool) -> None:
    """Whatever shape a received header claims: SHMFormatError once (never a NumPy error),
    counted, and the next array comes."""
    with ArrayPublisher(channel, max_shape=(2, 3, 4), dtype=np.float32, num_slots=4) as pub, \
            ArraySubscriber(channel) as sub:
        pub.send(np.zeros((1, 3, 4), np.float32))
        pub.send(np.ones((2, 3, 4), np.float32))
        entry = pub._segment.atom.load(pub._segment.layout.entry(0))
        payload = pub._segment.layout.payload(entry & L.ENTRY_INDEX_MASK)
        struct.pack_into("<3Q", pub._segment.view, payload + L.ARRAY_HEADER.size, *shape)
        try:
            first = sub.recv(timeout=1, copy=copy)
        except SHMFormatError:
            assert sub.stats()["malformed"] == 1
        else:  # a shape that fits the data sent: a smaller array, in bounds
            assert first is not None
            assert first.shape == tuple(shape)
            assert first.nbytes <= 1 * 3 * 4 * 4
        second = sub.recv(timeout=1, copy=copy)
        assert second is not None
        assert second.shape == (2, 3, 4)


def test_undecodable_messages_leave_the_channel_usable(channel: str) -> None:
    with Publisher(channel) as pub, Subscriber(channel) as sub:
        pub._publish(b"\x80\x05not a pickle", L.ENCODING_PICKLE, False, None)
        pub.send("fine")
        with pytest.raises(SHMSerializationError, match="deserialize"):
            sub.recv(timeout=1)
        assert sub.recv(timeout=1) == "fine"
    with Publisher(channel, serialization="msgpack") as pub, \
            Subscriber(channel, serialization="msgpack") as sub:
        pub._publish(b"\xc1\xc1\xc1", L.ENCODING_MSGPACK, False, None)
        pub.send({"ok": 1})
        with pytest.raises(SHMSerializationError):
            sub.recv(timeout=1)
        assert sub.recv(timeout=1) == {"ok": 1}
        pub.send_bytes(b"raw")   # a msgpack subscriber never decodes another encoding
        with pytest.raises(SHMSerializationError, match="raw"):
            sub.recv(timeout=1)


def test_corrupted_array_header_in_shared_memory(channel: str) -> None:
    with ArrayPublisher(channel, shape=(4,), dtype=np.float32, num_slots=4) as pub, \
            ArraySubscriber(channel) as sub:
        pub.send(np.arange(4, dtype=np.float32))
        entry = pub._segment.atom.load(pub._segment.layout.entry(0))
        payload = pub._segment.layout.payload(entry & L.ENTRY_INDEX_MASK)
        pub._segment.view[payload:payload + 2] = b"XX"  # break the magic
        with pytest.raises(SHMFormatError):
            sub.recv(timeout=1)
        pub.send(np.ones(4, dtype=np.float32))
        got = sub.recv(timeout=1)
        assert got is not None
        assert got.tolist() == [1, 1, 1, 1]


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(0, 0o177777),
       st.frozensets(st.integers(0, 2**32 - 1), max_size=3))
def test_ownership_rule_on_any_owner_and_mode(uid: int, mode: int, extra: frozenset[int]
                                              ) -> None:
    """Whatever fstat says, the check accepts exactly a regular file of a trusted owner that
    not everybody may write, and raises nothing but SHMUntrustedSegmentError."""
    trusted = frozenset({os.geteuid(), 0}) | extra
    result = os.stat_result((mode, 1, 1, 1, uid, 0, 4096, 0, 0, 0))
    expected = stat.S_ISREG(mode) and uid in trusted and not mode & stat.S_IWOTH
    try:
        check_owner("shmcp_fuzz", "fuzz", result, trusted)
    except SHMUntrustedSegmentError:
        assert not expected
    else:
        assert expected


@pytest.mark.slow
def test_long_fuzz_run(channel: str) -> None:
    long = settings(FUZZ, max_examples=EXAMPLES * 20)
    long(given(mutations)(test_corrupted_static_header_is_refused.hypothesis.inner_test))()


@pytest.mark.timeout(420)
def test_atheris_short_session(tmp_path: Path) -> None:
    """A short coverage-guided session of tests/fuzz_atheris.py (longer: run it by hand).

    ``-runs`` inputs (300000: about 25 s on a quiet 2-core machine), cut at
    ``-max_total_time`` if a loaded machine makes that take four minutes (then at least
    100000). libFuzzer's ``-timeout`` is a hang detector, measured in wall-clock seconds per
    input by a SIGALRM timer that fires every timeout/2 + 1 s: an input takes well under a
    millisecond, so 60 s means a hang, while 10 s also fired when the whole process stood
    still that long on a busy machine (a bogus timeout, exit 70; shown with SIGSTOP).
    """
    pytest.importorskip("atheris")
    import signal
    import subprocess
    import sys

    runs = int(os.environ.get("ATHERIS_RUNS", "300000"))
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "tests" / "fuzz_atheris.py"), f"-runs={runs}",
         "-max_total_time=240", "-timeout=60", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=360, cwd=root)
    died = f" (killed by {signal.Signals(-proc.returncode).name})" if proc.returncode < 0 else ""
    assert proc.returncode == 0, (f"exit {proc.returncode}{died}\nstdout: {proc.stdout[-2000:]}"
                                  f"\nstderr: {proc.stderr[-4000:]}")
    done = [line for line in proc.stderr.splitlines() if line.startswith("Done ")]
    assert done, proc.stderr[-4000:]
    match = re.match(r"Done (\d+) runs in (\d+) second", done[-1])
    assert match, done[-1]
    assert int(match.group(1)) == runs or (int(match.group(2)) >= 240
                                           and int(match.group(1)) >= min(runs, 100_000)), done
    print("\n" + done[-1])


@FUZZ
@given(st.integers(0, 2**64 - 1), st.integers(0, LAYOUT.max_subscribers - 1))
def test_a_corrupted_holders_word_never_yields_a_place_beyond_the_limit(mask: int,
                                                                        row: int) -> None:
    """Whatever the ``holders`` word holds, a reader takes a zero-copy place only if it has
    one already or fewer than ``max_holders`` are taken, and then sets only its own bit."""
    buf = bytearray(LAYOUT.total_size)
    atom = AtomicBuffer(buf)
    try:
        atom.store(L.HOLDERS, mask)
        reader = RingReader(atom, LAYOUT, row, 0)
        got = reader.enable_holding()
        bit = 1 << row
        if mask & bit:
            assert got is True
            assert atom.load(L.HOLDERS) == mask
        elif mask.bit_count() >= LAYOUT.max_holders:
            assert got is False
            assert atom.load(L.HOLDERS) == mask
        else:
            assert got is True
            assert atom.load(L.HOLDERS) == mask | bit
    finally:
        atom.release()
