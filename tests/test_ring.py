"""The ring algorithm in one process, over an anonymous mmap (no OS segment, no other process).

A hypothesis state machine drives send / recv / attach / detach / hold / recv_batch / reap
sequences and checks every reader against a simple model: in-order delivery of exactly the
messages that were not evicted, ``received + dropped == cursor - start``, an exact
``drop_count``, and buffers held for zero-copy views never changing while held.
"""

from __future__ import annotations

import array
import ctypes
import errno
import hashlib
import mmap
import struct
import threading
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from shm_comm import SHMBufferFullError, SHMClosedError, SHMConnectionError, SHMFormatError, ring
from shm_comm import layout as L
from shm_comm._atomic import AtomicBuffer, Ring, has_futex
from shm_comm.ring import RingReader, RingWriter, claim_record, release_record
from shm_comm.utils import poll_until

SLOT_SIZE = 32
ITEM = 16  # the "fixed" message size that recv_batch reads
SIZES = (ITEM, ITEM, ITEM, 0, 5, SLOT_SIZE)


class AnonRing:
    """A ring laid out exactly as in a segment, in an anonymous mmap."""

    def __init__(self, num_slots: int, max_subscribers: int, slot_size: int = SLOT_SIZE) -> None:
        self.layout = L.SegmentLayout(L.KIND_PUBSUB, num_slots, slot_size, max_subscribers)
        self.mm = mmap.mmap(-1, self.layout.total_size)
        self.view = memoryview(self.mm)
        self.atom = AtomicBuffer(self.mm)
        self.writer = RingWriter(self.atom, self.view, self.layout)

    def reader(self, pid: int = 1000, token: int = 7, latest: bool = False,
               oldest: bool = False) -> RingReader:
        row, cursor = claim_record(self.atom, self.layout, pid, token, latest, oldest)
        return RingReader(self.atom, self.layout, row, cursor)

    def observer(self, cursor: int = 0) -> RingReader:
        return RingReader(self.atom, self.layout, None, cursor)

    def send(self, payload: bytes, encoding: int = L.ENCODING_RAW, ts: int = 0) -> int:
        return self.writer.write(payload, encoding, ts)

    def take(self, reader: RingReader, hold: bool = False) -> tuple[int, bytes] | None:
        msg = reader.poll(hold=hold)
        if msg is None:
            return None
        data = bytes(self.view[msg.offset:msg.offset + msg.length])
        assert reader.validate(msg)
        return msg.seq, data

    def record(self, reader: RingReader, field_offset: int) -> int:
        assert reader.row is not None
        return self.atom.load(self.layout.record(reader.row) + field_offset)

    def close(self) -> None:
        self.atom.release()
        self.view.release()
        self.mm.close()


@pytest.fixture
def anon_ring() -> object:
    rings: list[AnonRing] = []

    def make(num_slots: int = 4, max_subscribers: int = 4, slot_size: int = SLOT_SIZE
             ) -> AnonRing:
        r = AnonRing(num_slots, max_subscribers, slot_size)
        rings.append(r)
        return r

    yield make
    for r in rings:
        r.close()


def payload_of(seq: int, size: int) -> bytes:
    """Deterministic, seq-specific bytes, so a message from another slot never passes."""
    digest = hashlib.blake2b(seq.to_bytes(8, "little"), digest_size=32).digest()
    return (digest * (size // 32 + 1))[:size]


# --------------------------------------------------------------------------- model machine


@dataclass
class ModelReader:
    reader: RingReader
    pid: int
    start: int
    cursor: int
    dropped: int = 0
    delivered: list[int] = field(default_factory=list)
    holding_enabled: bool = False
    held: tuple[int, bytes] | None = None  # (buffer index, buffer bytes when taken)


class RingMachine(RuleBasedStateMachine):
    """Drives a RingWriter and several RingReaders against a model of what each must see."""

    ring: AnonRing

    @initialize(num_slots=st.integers(1, 6), max_subscribers=st.integers(1, 4))
    def setup(self, num_slots: int, max_subscribers: int) -> None:
        self.ring = AnonRing(num_slots, max_subscribers)
        self.n = num_slots
        self.head = 0
        self.sizes: list[int] = []
        self.meta: list[tuple[int, int]] = []  # (encoding, timestamp_ns) of each seq
        self.readers: list[ModelReader] = []
        self.departed_dropped = 0
        self.departed_received = 0
        self.next_pid = 1000
        self.dead: set[int] = set()

    def teardown(self) -> None:
        if hasattr(self, "ring"):
            self.ring.close()

    # ---- writer

    @rule(size=st.sampled_from(SIZES), count=st.integers(1, 8))
    def send(self, size: int, count: int) -> None:
        for _ in range(count):
            seq = self.ring.send(payload_of(self.head, size), self.head % 4, 10_000 + self.head)
            assert seq == self.head
            self.sizes.append(size)
            self.meta.append((seq % 4, 10_000 + seq))
            self.head += 1
        assert self.ring.writer.head == self.head

    @rule(size=st.sampled_from(SIZES), count=st.integers(1, 8))
    def send_batch(self, size: int, count: int) -> None:
        """write_many: the same messages as ``count`` writes, head stored once."""
        payloads = [payload_of(self.head + i, size) for i in range(count)]
        encoding, stamp = self.head % 4, 20_000 + self.head
        assert self.ring.writer.write_many(payloads, encoding, stamp) == count
        self.sizes.extend([size] * count)
        self.meta.extend([(encoding, stamp)] * count)
        self.head += count
        assert self.ring.writer.head == self.head

    @rule()
    def oversize_is_refused(self) -> None:
        with pytest.raises(ValueError, match=f"{SLOT_SIZE + 1} bytes"):
            self.ring.send(bytes(SLOT_SIZE + 1))
        assert self.ring.writer.head == self.head

    # ---- membership

    @rule(start_at=st.sampled_from(["head", "latest", "oldest"]))
    def attach(self, start_at: str) -> None:
        pid = self.next_pid
        self.next_pid += 1
        latest, oldest = start_at == "latest", start_at == "oldest"
        if len(self.readers) == self.ring.layout.max_subscribers:
            with pytest.raises(SHMConnectionError, match="taken"):
                self.ring.reader(pid, pid, latest, oldest)
            return
        reader = self.ring.reader(pid, pid, latest, oldest)
        start = {"head": self.head, "latest": max(0, self.head - 1),
                 "oldest": max(0, self.head - self.n)}[start_at]
        assert reader.cursor == reader.start == start
        self.readers.append(ModelReader(reader, pid, start, start))

    def _forget(self, m: ModelReader) -> None:
        """A reader left: what it lost, noticed or not, stays counted."""
        self.readers.remove(m)
        self.departed_dropped += m.dropped + max(0, self.head - self.n - m.cursor)
        self.departed_received += len(m.delivered)

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63))
    def detach(self, which: int) -> None:
        m = self.readers[which % len(self.readers)]
        state = self.ring.record(m.reader, L.REC_STATE)
        assert state == (m.pid << L.STATE_BITS) | L.STATE_ACTIVE
        row = m.reader.row
        assert row is not None
        assert release_record(self.ring.atom, self.ring.layout, row, state)
        # A second release with the stale state word changes nothing.
        assert not release_record(self.ring.atom, self.ring.layout, row, state)
        self._forget(m)

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63))
    def reap_one_dead(self, which: int) -> None:
        m = self.readers[which % len(self.readers)]
        self.dead.add(m.pid)
        freed = ring.reap_dead_records(self.ring.atom, self.ring.layout,
                                       ring.PidLiveness(lambda pid, _token: pid not in self.dead))
        assert freed == 1
        self._forget(m)

    # ---- readers

    def _expect_next(self, m: ModelReader) -> int | None:
        """Advance the model past evicted messages; the seq the reader must get next."""
        if m.cursor >= self.head:
            return None
        oldest = self.head - self.n
        if m.cursor < oldest:
            m.dropped += oldest - m.cursor
            m.cursor = oldest
        return m.cursor

    def _check_message(self, msg: ring.Message, seq: int) -> None:
        assert msg.seq == seq
        assert msg.length == self.sizes[seq]
        assert (msg.encoding, msg.timestamp_ns) == self.meta[seq]
        assert bytes(self.ring.view[msg.offset:msg.offset + msg.length]) == payload_of(
            seq, self.sizes[seq])

    def _snapshot(self, index: int) -> bytes:
        start = self.ring.layout.buffer(index)
        return bytes(self.ring.view[start:start + self.ring.layout.buffer_stride])

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63), hold=st.booleans())
    def recv(self, which: int, hold: bool) -> None:
        m = self.readers[which % len(self.readers)]
        if hold and not m.holding_enabled:
            m.reader.enable_holding()
            m.holding_enabled = True
        m.held = None  # any poll releases the previous hold
        expected = self._expect_next(m)
        msg = m.reader.poll(hold=hold)
        if expected is None:
            assert msg is None
            assert m.reader.held is None
            return
        assert msg is not None
        self._check_message(msg, expected)
        assert m.reader.validate(msg)
        m.cursor = expected + 1
        m.delivered.append(expected)
        if hold:
            assert m.reader.held == msg.buffer
            assert self.ring.record(m.reader, L.REC_HELD) == msg.buffer + 1
            m.held = (msg.buffer, self._snapshot(msg.buffer))
        else:
            assert m.reader.held is None

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63), sends=st.integers(0, 8))
    def recv_while_writer_runs(self, which: int, sends: int) -> None:
        """Poll, let the writer publish ``sends`` more, then validate the copy."""
        m = self.readers[which % len(self.readers)]
        m.held = None
        expected = self._expect_next(m)
        msg = m.reader.poll()
        if expected is None:
            assert msg is None
            return
        assert msg is not None
        self._check_message(msg, expected)
        copy = bytes(self.ring.view[msg.offset:msg.offset + msg.length])
        if sends:
            self.send(ITEM, sends)
        evicted = self.head - self.n > expected
        assert m.reader.validate(msg) is (not evicted)
        m.cursor = expected + 1
        if evicted:
            m.dropped += 1
        else:
            assert copy == payload_of(expected, self.sizes[expected])
            m.delivered.append(expected)

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63), max_n=st.integers(1, 10))
    def recv_batch(self, which: int, max_n: int) -> None:
        m = self.readers[which % len(self.readers)]
        m.held = None
        if m.cursor < self.head - self.n:
            m.dropped += self.head - self.n - m.cursor
            m.cursor = self.head - self.n
        encoding = self.meta[m.cursor][0] if m.cursor < self.head else 0
        want = []
        for seq in range(m.cursor, min(self.head, m.cursor + max_n)):
            if self.sizes[seq] != ITEM or self.meta[seq][0] != encoding:
                break
            want.append(seq)
        out = bytearray(max_n * ITEM)
        stamps = array.array("Q", bytes(8 * max_n))
        first, count = m.reader.read_batch(max_n, out, stamps, 0, ITEM, encoding)
        assert (first, count) == (0, len(want))
        for i, seq in enumerate(want):
            assert bytes(out[i * ITEM:(i + 1) * ITEM]) == payload_of(seq, ITEM)
        assert list(stamps[:count]) == [self.meta[seq][1] for seq in want]
        assert m.reader.held is None
        m.cursor += len(want)
        m.delivered.extend(want)

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63))
    def take_copy(self, which: int) -> None:
        """The C fast path (falling back to the careful one after evictions)."""
        m = self.readers[which % len(self.readers)]
        m.held = None
        expected = self._expect_next(m)
        got = m.reader.take_copy()
        assert m.reader.held is None
        if expected is None:
            assert got is None
            return
        assert got == (payload_of(expected, self.sizes[expected]), *self.meta[expected],
                       expected)
        m.cursor = expected + 1
        m.delivered.append(expected)

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63))
    def take_held(self, which: int) -> None:
        """The C zero-copy step: pin, count as received, keep the buffer unchanged."""
        m = self.readers[which % len(self.readers)]
        if not m.holding_enabled:
            m.reader.enable_holding()
            m.holding_enabled = True
        m.held = None  # any receive releases the previous pin
        expected = self._expect_next(m)
        got = m.reader.take_held()
        if expected is None:
            assert got is None
            assert m.reader.held is None
            assert self.ring.record(m.reader, L.REC_HELD) == 0
            return
        assert got is not None
        seq, index, offset, length, encoding, stamp, matches = got
        assert not matches  # nothing was expected
        assert seq == expected
        assert (encoding, stamp) == self.meta[seq]
        assert bytes(self.ring.view[offset:offset + length]) == payload_of(seq, self.sizes[seq])
        assert m.reader.held == index
        assert self.ring.record(m.reader, L.REC_HELD) == index + 1
        assert self.ring.record(m.reader, L.REC_CURSOR) == expected + 1
        m.cursor = expected + 1
        m.delivered.append(expected)
        m.held = (index, self._snapshot(index))

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63), max_n=st.integers(1, 10))
    def take_many(self, which: int, max_n: int) -> None:
        m = self.readers[which % len(self.readers)]
        m.held = None
        self._expect_next(m)
        want = list(range(m.cursor, min(self.head, m.cursor + max_n)))
        payloads, encodings = m.reader.take_many(max_n)
        assert payloads == [payload_of(seq, self.sizes[seq]) for seq in want]
        assert encodings == [self.meta[seq][0] for seq in want]
        m.cursor += len(want)
        m.delivered.extend(want)

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63))
    def release_hold(self, which: int) -> None:
        m = self.readers[which % len(self.readers)]
        m.reader.release_hold()
        m.held = None
        assert self.ring.record(m.reader, L.REC_HELD) == 0

    @precondition(lambda self: self.readers)
    @rule(which=st.integers(0, 63))
    def skip_to_latest(self, which: int) -> None:
        m = self.readers[which % len(self.readers)]
        skipped = m.reader.skip_to_latest()
        expected = max(0, self.head - 1 - m.cursor)
        assert skipped == expected
        m.dropped += expected
        m.cursor += expected

    # ---- invariants

    @invariant()
    def readers_match_model(self) -> None:
        if not hasattr(self, "ring"):
            return
        for m in self.readers:
            r = m.reader
            assert r.cursor == m.cursor
            assert r.start == m.start
            assert r.dropped == m.dropped
            assert r.received == len(m.delivered)
            assert r.received + r.dropped == r.cursor - r.start
            assert m.delivered == sorted(set(m.delivered))
            # The reader's row in the segment agrees (what stats() and other processes read).
            assert self.ring.record(r, L.REC_CURSOR) == m.cursor
            assert self.ring.record(r, L.REC_DROPPED) == m.dropped
            assert self.ring.record(r, L.REC_START) == m.start

    @invariant()
    def delivered_exactly_the_surviving_messages(self) -> None:
        if not hasattr(self, "ring"):
            return
        for m in self.readers:
            # Every message in [start, cursor) was either delivered or counted as dropped.
            assert len(m.delivered) + m.dropped == m.cursor - m.start
            assert all(m.start <= s < m.cursor for s in m.delivered)

    @invariant()
    def drop_count_is_exact(self) -> None:
        if not hasattr(self, "ring"):
            return
        unnoticed = sum(max(0, self.head - self.n - m.cursor) for m in self.readers)
        expected = self.departed_dropped + sum(m.dropped for m in self.readers) + unnoticed
        assert ring.drop_count(self.ring.atom, self.ring.layout) == expected
        atom = self.ring.atom
        assert atom.load(L.DEPARTED_DROPPED) == self.departed_dropped
        assert atom.load(L.DEPARTED_RECEIVED) == self.departed_received
        records = ring.read_records(atom, self.ring.layout)
        assert sorted(r.pid for r in records) == sorted(m.pid for m in self.readers)

    @invariant()
    def held_buffers_never_change(self) -> None:
        if not hasattr(self, "ring"):
            return
        for m in self.readers:
            if m.held is not None:
                index, snapshot = m.held
                assert m.reader.held == index
                assert self._snapshot(index) == snapshot

    @invariant()
    def writer_always_has_a_free_buffer(self) -> None:
        if not hasattr(self, "ring"):
            return
        writer = self.ring.writer
        assert writer.free_buffers >= 1
        lowest = min((m.cursor for m in self.readers), default=None)
        assert writer.min_cursor() == lowest
        assert writer.has_room() == (lowest is None or self.head - lowest < self.n)
        assert self.ring.atom.load(L.HEAD) == self.head


RingMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ring_state_machine = RingMachine.TestCase


@pytest.mark.slow
def test_ring_state_machine_long() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(RingMachine, settings=settings(
        max_examples=500, stateful_step_count=100, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow]))


# --------------------------------------------------------------------------- direct cases


def test_single_reader_in_order(anon_ring) -> None:
    r = anon_ring(num_slots=4)
    reader = r.reader()
    assert reader.poll() is None
    for i in range(3):
        r.send(payload_of(i, 16))
    assert [r.take(reader) for _ in range(4)] == [
        (0, payload_of(0, 16)), (1, payload_of(1, 16)), (2, payload_of(2, 16)), None]
    assert (reader.received, reader.dropped, reader.cursor) == (3, 0, 3)


def test_slow_reader_loses_oldest_and_counts_them(anon_ring) -> None:
    r = anon_ring(num_slots=4)
    reader = r.reader()
    for i in range(10):
        r.send(payload_of(i, 8))
    # Evicted but not noticed yet: drop_count already says so.
    assert ring.drop_count(r.atom, r.layout) == 6
    assert reader.dropped == 0
    got = [seq for seq, _ in iter(lambda: r.take(reader), None)]
    assert got == [6, 7, 8, 9]
    assert (reader.received, reader.dropped) == (4, 6)
    assert ring.drop_count(r.atom, r.layout) == 6


def test_late_reader_starts_at_head_and_latest_at_newest(anon_ring) -> None:
    r = anon_ring()
    for i in range(3):
        r.send(payload_of(i, 4))
    plain = r.reader(pid=1)
    latest = r.reader(pid=2, latest=True)
    assert plain.poll() is None
    assert r.take(latest) == (2, payload_of(2, 4))
    r.send(payload_of(3, 4))
    assert r.take(plain) == (3, payload_of(3, 4))
    assert r.take(latest) == (3, payload_of(3, 4))
    assert plain.dropped == latest.dropped == 0


def test_validate_detects_reuse_during_copy(anon_ring) -> None:
    r = anon_ring(num_slots=2)
    reader = r.reader()
    r.send(payload_of(0, 8))
    msg = reader.poll()
    assert msg is not None
    for i in range(1, 6):  # evicts message 0 and reuses its buffer
        r.send(payload_of(i, 8))
    assert not reader.validate(msg)
    assert (reader.cursor, reader.dropped, reader.received) == (1, 1, 0)
    assert r.take(reader) == (4, payload_of(4, 8))
    assert reader.dropped == 4


def test_held_buffer_survives_many_wraps(anon_ring) -> None:
    r = anon_ring(num_slots=3, max_subscribers=2)
    holder = r.reader(pid=1)
    other = r.reader(pid=2)
    holder.enable_holding()
    r.send(payload_of(0, SLOT_SIZE))
    msg = holder.poll(hold=True)
    assert msg is not None
    assert holder.validate(msg)
    assert r.take(other) == (0, payload_of(0, SLOT_SIZE))
    start = r.layout.buffer(msg.buffer)
    before = bytes(r.view[start:start + r.layout.buffer_stride])
    for i in range(1, 100):
        r.send(payload_of(i, SLOT_SIZE))
        assert r.take(other) == (i, payload_of(i, SLOT_SIZE))
        assert bytes(r.view[start:start + r.layout.buffer_stride]) == before
    holder.release_hold()
    # Once released the writer may reuse it again.
    seen = set()
    for i in range(100, 120):
        r.send(payload_of(i, SLOT_SIZE))
        seen.add(r.atom.load(r.layout.entries_offset + 8 * (i % 3)) & L.ENTRY_INDEX_MASK)
    assert msg.buffer in seen


def test_other_reader_unaffected_by_holder(anon_ring) -> None:
    r = anon_ring(num_slots=4, max_subscribers=2)
    holder = r.reader(pid=1)
    fast = r.reader(pid=2)
    holder.enable_holding()
    got = []
    for i in range(50):
        r.send(payload_of(i, 16))
        if i == 0:
            assert holder.poll(hold=True) is not None
        got.append(r.take(fast))
    assert got == [(i, payload_of(i, 16)) for i in range(50)]
    assert fast.dropped == 0


def test_hold_without_enable_is_a_bug_in_the_caller_not_silent(anon_ring) -> None:
    """Observers cannot hold; enable_holding refuses them."""
    r = anon_ring()
    obs = r.observer()
    with pytest.raises(TypeError):
        obs.enable_holding()


def test_observer_changes_nothing(anon_ring) -> None:
    r = anon_ring(num_slots=2)
    sub = r.reader()
    obs = r.observer(cursor=0)
    for i in range(5):
        r.send(payload_of(i, 8))
    snapshot = bytes(r.view[:L.RECORDS_OFFSET + 2 * L.RECORD_SIZE])
    assert r.take(obs) == (3, payload_of(3, 8))
    assert obs.dropped == 3
    assert bytes(r.view[:L.RECORDS_OFFSET + 2 * L.RECORD_SIZE]) == snapshot
    assert ring.drop_count(r.atom, r.layout) == 3  # only the subscriber's evictions
    assert sub.dropped == 0


def test_read_batch_with_data_offset(anon_ring) -> None:
    r = anon_ring(num_slots=8)
    reader = r.reader()
    for i in range(5):
        r.send(struct.pack("<QQ", 111, i), ts=i)
    out = bytearray(8 * 3)
    stamps = array.array("Q", bytes(8 * 3))
    raw = L.ENCODING_RAW
    assert reader.read_batch(3, out, stamps, 8, 8, raw) == (0, 3)
    assert struct.unpack("<3Q", out) == (0, 1, 2)
    assert list(stamps) == [0, 1, 2]
    # A message of another size stops the batch and is left for poll().
    r.send(b"odd")
    assert reader.read_batch(3, out, stamps, 8, 8, raw) == (0, 2)
    assert reader.read_batch(3, out, stamps, 8, 8, raw) == (0, 0)
    assert r.take(reader) == (5, b"odd")
    # So do another encoding and a payload that does not start with what is expected.
    r.send(struct.pack("<QQ", 111, 9), encoding=L.ENCODING_PICKLE)
    assert reader.read_batch(3, out, stamps, 8, 8, raw) == (0, 0)
    assert r.take(reader) == (6, struct.pack("<QQ", 111, 9))
    r.send(struct.pack("<QQQQ", 5, 77, 77, 42))  # 8 bytes to compare, 16 stamped, then data
    assert reader.read_batch(3, out, stamps, 24, 8, raw, struct.pack("<QQQ", 4, 0, 0), 8) == (
        0, 0)
    assert reader.read_batch(3, out, stamps, 24, 8, raw, struct.pack("<QQQ", 5, 0, 0), 8) == (
        0, 1)
    assert struct.unpack_from("<Q", out) == (42,)


def test_read_batch_skips_evicted(anon_ring) -> None:
    r = anon_ring(num_slots=4)
    reader = r.reader()
    for i in range(10):
        r.send(struct.pack("<Q", i))
    out = bytearray(8 * 10)
    stamps = array.array("Q", bytes(8 * 10))
    first, count = reader.read_batch(10, out, stamps, 0, 8, L.ENCODING_RAW)
    assert (first, count) == (0, 4)
    assert struct.unpack("<4Q", out[:32]) == (6, 7, 8, 9)
    assert (reader.dropped, reader.received) == (6, 4)


def test_claim_and_release_rows(anon_ring) -> None:
    r = anon_ring(max_subscribers=2)
    a = r.reader(pid=1)
    b = r.reader(pid=2)
    with pytest.raises(SHMConnectionError, match="all 2 subscriber rows"):
        r.reader(pid=3)
    membership = r.atom.load(L.MEMBERSHIP)
    state = r.record(a, L.REC_STATE)
    assert state == (1 << 8) | L.STATE_ACTIVE
    assert a.row is not None
    assert release_record(r.atom, r.layout, a.row, state)
    assert r.atom.load(L.MEMBERSHIP) == membership + 1
    c = r.reader(pid=3)
    assert c.row == a.row
    assert b.row != c.row


def test_release_folds_counts_into_departed_totals(anon_ring) -> None:
    r = anon_ring(num_slots=2)
    a = r.reader()
    for i in range(6):
        r.send(payload_of(i, 4))
    assert r.take(a) == (4, payload_of(4, 4))
    assert a.row is not None
    assert release_record(r.atom, r.layout, a.row, r.record(a, L.REC_STATE))
    assert r.atom.load(L.DEPARTED_DROPPED) == 4
    assert r.atom.load(L.DEPARTED_RECEIVED) == 1
    assert ring.read_records(r.atom, r.layout) == []


def test_drop_count_never_decreases_when_a_lagging_reader_leaves(anon_ring) -> None:
    """drop_count includes evictions a stalled reader has not noticed; leaving keeps them."""
    r = anon_ring(num_slots=2)
    a = r.reader()
    for i in range(10):
        r.send(payload_of(i, 4))
    before = ring.drop_count(r.atom, r.layout)
    assert before == 8
    assert a.row is not None
    assert release_record(r.atom, r.layout, a.row, r.record(a, L.REC_STATE))
    assert ring.drop_count(r.atom, r.layout) >= before


def test_reap_dead_records(anon_ring) -> None:
    r = anon_ring(max_subscribers=3)
    a = r.reader(pid=11, token=5)
    r.reader(pid=12, token=6)
    # A claimed-but-not-active row of a dead process is freed as well.
    rec = r.layout.record(2)
    assert r.atom.compare_exchange(rec + L.REC_STATE, 0, (13 << 8) | L.STATE_CLAIMED)
    alive = {(12, 6)}
    freed = ring.reap_dead_records(r.atom, r.layout,
                                   ring.PidLiveness(lambda pid, tok: (pid, tok) in alive))
    assert freed == 2
    assert [x.pid for x in ring.read_records(r.atom, r.layout)] == [12]
    assert a.row is not None
    assert r.record(a, L.REC_STATE) == L.STATE_FREE


def test_reap_uses_start_token_for_reused_pids(anon_ring) -> None:
    r = anon_ring()
    r.reader(pid=21, token=100)
    seen = []

    def is_alive(pid: int, token: int) -> bool:
        seen.append((pid, token))
        return token == 100

    assert ring.reap_dead_records(r.atom, r.layout, ring.PidLiveness(is_alive)) == 0
    assert seen == [(21, 100)]


def test_a_writer_starts_only_on_a_fresh_segment(anon_ring) -> None:
    """Nothing takes over a written segment (a new publisher builds a new one), so the free
    list never has to be guessed from entries, which do not say which buffers are held."""
    r = anon_ring(num_slots=4, max_subscribers=1)
    w2 = RingWriter(r.atom, r.view, r.layout)  # fresh: fine (and nothing is shared)
    assert w2.free_buffers == r.layout.num_buffers
    r.send(payload_of(0, 4))
    with pytest.raises(ValueError, match="fresh segment"):
        RingWriter(r.atom, r.view, r.layout)
    # (Running out of buffers cannot happen: there are max_subscribers + 1 spares and each
    # reader pins at most one; SHMBufferFullError guards only a corrupted writer state.)


def test_a_failed_batch_publishes_nothing_and_loses_no_buffer(anon_ring) -> None:
    r = anon_ring()
    writer = r.writer
    free = writer.free_buffers
    with pytest.raises(TypeError):
        writer.write_many([b"abc", object(), b"def"], L.ENCODING_RAW, 0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="does not fit"):
        writer.write_many([b"abc", bytes(SLOT_SIZE + 1)], L.ENCODING_RAW, 0)
    with pytest.raises(TypeError):
        writer.write(object(), L.ENCODING_RAW, 0)  # type: ignore[arg-type]
    assert writer.head == 0
    assert r.atom.load(L.HEAD) == 0
    assert writer.free_buffers == free
    assert writer.write_many([b"abc", b"def"], L.ENCODING_RAW, 0) == 2


def test_reserve_commit_cancel_rules(anon_ring) -> None:
    r = anon_ring()
    w = r.writer
    index = w.reserve()
    with pytest.raises(RuntimeError, match="already reserved"):
        w.reserve()
    with pytest.raises(RuntimeError):
        w.commit(index + 1, 0, 0, 0)
    with pytest.raises(ValueError):
        w.commit(index, SLOT_SIZE + 1, 0, 0)
    with w.payload_view(index, 3) as view:
        view[:] = b"abc"
    assert w.commit(index, 3, L.ENCODING_RAW, 5) == 0
    with pytest.raises(RuntimeError):
        w.cancel(index)
    index = w.reserve()
    w.cancel(index)
    assert w.head == 1
    reader = r.observer(0)
    assert r.take(reader) == (0, b"abc")


def test_close_sets_closed_flag(anon_ring) -> None:
    r = anon_ring()
    r.writer.close()
    assert r.atom.load(L.CLOSED) == 1


@pytest.mark.parametrize("damage", ["entry older than head", "buffer index", "length"])
def test_corrupted_ring_raises_format_error(anon_ring, damage: str) -> None:
    r = anon_ring(num_slots=4)
    reader = r.reader()
    r.send(payload_of(0, 8))
    entry_offset = r.layout.entries_offset
    entry = r.atom.load(entry_offset)
    if damage == "entry older than head":
        r.atom.store(L.HEAD, 5)
        r.atom.store(entry_offset + 8, 0)  # slot for message 1: never written
        reader.cursor = 1
        match = "older than head"
    elif damage == "buffer index":
        r.atom.store(entry_offset, (entry & ~L.ENTRY_INDEX_MASK) | 999)
        match = "buffer 999"
    else:
        struct.pack_into("<I", r.view, r.layout.buffer(entry & L.ENTRY_INDEX_MASK) + 16,
                         SLOT_SIZE + 1)
        match = "claims"
    with pytest.raises(SHMFormatError, match=match):
        reader.poll()


def test_pending_and_waiting_bits(anon_ring) -> None:
    r = anon_ring()
    reader = r.reader()
    assert reader.pending() == 0
    r.send(b"x")
    r.send(b"y")
    assert reader.pending() == 2
    assert reader.row is not None
    assert reader.waiter_bit == 1 << reader.row
    r.atom.fetch_or(L.WAITERS, reader.waiter_bit)  # as wait_past does while it sleeps
    assert ring.read_records(r.atom, r.layout)[0].waiting
    r.atom.fetch_and(L.WAITERS, 0)
    assert not ring.read_records(r.atom, r.layout)[0].waiting
    assert r.observer().waiter_bit == 0  # observers never announce themselves


@pytest.mark.skipif(not has_futex, reason="futex wait is Linux only")
def test_wait_past_announces_sleeps_and_withdraws(anon_ring) -> None:
    r = anon_ring()
    reader = r.reader()
    bit = reader.waiter_bit
    assert bit
    assert r.observer().waiter_bit == 0
    # Timeout: False, and the bit is withdrawn.
    assert r.atom.wait_past(L.HEAD, 0, L.WAITERS, bit, L.CLOSED, L.DOORBELL, 0.01) is False
    assert r.atom.load(L.WAITERS) == 0
    # A message already there: no sleep at all.
    r.send(b"x")
    started = time.monotonic()
    assert r.atom.wait_past(L.HEAD, 0, L.WAITERS, bit, L.CLOSED, L.DOORBELL, 5.0) is True
    assert time.monotonic() - started < 1.0
    # Asleep: the bit is set while it sleeps, and the writer's next message wakes it.
    results: list[bool] = []
    sleeper = threading.Thread(target=lambda: results.append(
        r.atom.wait_past(L.HEAD, 1, L.WAITERS, bit, L.CLOSED, L.DOORBELL, 30.0)))
    sleeper.start()
    poll_until(lambda: r.atom.load(L.WAITERS) == bit, timeout=5.0)
    r.send(b"y")
    sleeper.join(10.0)
    assert results == [True]
    assert not sleeper.is_alive()
    assert r.atom.load(L.WAITERS) == 0
    # A closed channel: no sleep.
    r.writer.close()
    assert r.atom.wait_past(L.HEAD, 2, L.WAITERS, bit, L.CLOSED, L.DOORBELL, 5.0) is True


@pytest.mark.skipif(not has_futex, reason="futex wait is Linux only")
def test_take_copy_with_sleep_sleeps_then_takes(anon_ring) -> None:
    r = anon_ring()
    reader = r.reader()
    r.send(b"ready", ts=1)
    assert reader.take_copy(sleep=5.0) == (b"ready", L.ENCODING_RAW, 1, 0)  # no sleep
    assert reader.take_copy(sleep=0.01) is None  # timed out
    assert r.atom.load(L.WAITERS) == 0
    results: list[object] = []
    sleeper = threading.Thread(target=lambda: results.append(reader.take_copy(sleep=30.0)))
    sleeper.start()
    poll_until(lambda: r.atom.load(L.WAITERS) == reader.waiter_bit, timeout=5.0)
    r.send(b"late", ts=2)
    sleeper.join(10.0)
    assert not sleeper.is_alive()
    assert results == [(b"late", L.ENCODING_RAW, 2, 1)]
    assert (reader.cursor, r.atom.load(L.WAITERS)) == (2, 0)
    # Evicted while asleep: the careful path counts the loss and takes what is left.
    for i in range(r.layout.num_slots + 2):
        r.send(bytes([i]))
    got = reader.take_copy(sleep=1.0)
    assert got is not None
    assert got[3] == 4
    assert reader.dropped == 2
    # Closed while asleep: it wakes with nothing.
    sleeper = threading.Thread(target=lambda: results.append(reader.take_copy(sleep=30.0)))
    reader.cursor = r.atom.load(L.HEAD)
    sleeper.start()
    poll_until(lambda: r.atom.load(L.WAITERS) == reader.waiter_bit, timeout=5.0)
    r.writer.close()
    sleeper.join(10.0)
    assert not sleeper.is_alive()
    assert results[-1] is None


def test_doorbell_rings_only_for_announced_sleepers_and_on_close(anon_ring) -> None:
    """Sleepers wait on the doorbell; whoever wakes them changes what they look at first
    (head, or closed) and then bumps it, so a wake-up between their look and their sleep
    is never lost (docs/design.md, Waiting)."""
    r = anon_ring()
    reader = r.reader()
    r.send(b"a")
    assert r.atom.load(L.DOORBELL) == 0  # nobody sleeps: no bump, no syscall
    r.atom.fetch_or(L.WAITERS, reader.waiter_bit)  # as a reader about to sleep does
    r.send(b"b")
    assert r.atom.load(L.DOORBELL) == 1
    r.writer.write_many([b"c", b"d"], L.ENCODING_RAW, 0)
    assert r.atom.load(L.DOORBELL) == 2  # once per batch
    r.atom.fetch_and(L.WAITERS, 0)
    ring.ring_out(r.atom)  # close/retire: closed first, then the doorbell
    assert r.atom.load(L.CLOSED) == 1
    assert r.atom.load(L.DOORBELL) == 3
    # A reader that looks now does not sleep at all.
    started = time.monotonic()
    assert r.atom.wait_past(L.HEAD, 10, L.WAITERS, reader.waiter_bit, L.CLOSED, L.DOORBELL,
                            5.0) is True
    assert time.monotonic() - started < 1.0


def test_c_slot_header_matches_the_format(anon_ring) -> None:
    r = anon_ring()
    seq = r.send(b"hello", encoding=3, ts=123_456_789_012)
    index = r.atom.load(r.layout.entries_offset + 8 * (seq % r.layout.num_slots)) & (
        L.ENTRY_INDEX_MASK)
    assert L.SLOT_HEADER.unpack_from(r.view, r.layout.buffer(index)) == (
        seq, 123_456_789_012, 5, 3, 0)
    assert L.SLOT_HEADER.size <= L.BUFFER_HEADER_SIZE == 64  # _ring.c's constants


def test_write_many_publishes_head_once_with_all(anon_ring) -> None:
    r = anon_ring(num_slots=8)
    reader = r.reader()
    assert r.writer.write_many([b"a", b"bb", b"ccc"], L.ENCODING_RAW, 5) == 3
    assert r.atom.load(L.HEAD) == 3
    assert r.atom.load(L.BYTES_TOTAL) == 6
    assert reader.take_many(10) == ([b"a", b"bb", b"ccc"], [L.ENCODING_RAW] * 3)


def test_ring_fast_path_refuses_a_released_segment(anon_ring) -> None:
    r = anon_ring()
    reader = r.reader()
    r.send(b"x")
    fast = ring.fast_path(r.atom, r.layout)
    r.atom.release()
    assert (r.atom.closed, r.atom.size, r.atom.in_flight) == (True, 0, 0)
    calls = [lambda: fast.take(0, -1), lambda: r.writer.write(b"y", 0, 0),
             reader.take_copy, lambda: reader.take_copy(sleep=5.0), lambda: reader.take_many(4),
             lambda: reader.take_held(), lambda: fast.intact(0, 0), lambda: fast.slot(0),
             lambda: fast.head, lambda: r.atom.load(L.HEAD), lambda: r.atom.wait(L.HEAD, 0, 1.0),
             lambda: r.atom.wait_past(L.HEAD, 9, L.WAITERS, 0, L.CLOSED, L.DOORBELL, 1.0),
             lambda: ring.fast_path(r.atom, r.layout)]
    for call in calls:
        with pytest.raises(SHMClosedError, match="closed"):
            call()
    assert issubclass(SHMClosedError, ValueError)  # what closed ends raised before
    with pytest.raises(RuntimeError, match="already initialised"):
        r.atom.__init__(r.mm)  # type: ignore[misc]  (a Ring may point into its buffer)
    r.atom = AtomicBuffer(r.mm)  # for the fixture's close()


def _futex_waitv_exists() -> bool:
    """Whether the kernel, or the emulator (qemu-user 7.2 has none), offers futex_waitv."""
    libc = ctypes.CDLL(None, use_errno=True)
    # No waiters at all: EINVAL where the call exists, ENOSYS where it does not.
    rc = libc.syscall(449, None, 0, 0, None, 1)
    return rc == 0 or ctypes.get_errno() != errno.ENOSYS


@pytest.mark.skipif(not has_futex, reason="futex wait is Linux only")
@pytest.mark.parametrize("how", ["wait_past", "take_wait", "wait"])
def test_release_while_a_thread_sleeps_in_c(anon_ring, how: str) -> None:
    """The in-flight rule (_atomic.h): release() while another thread sleeps on the mapping
    wakes it; it leaves without touching the mapping and raises SHMClosedError; the last
    call out drops the buffer export, so the mapping can then be closed."""
    if how == "wait" and not _futex_waitv_exists():
        pytest.skip("no futex_waitv (Linux < 5.16, qemu-user): a release reaches a plain "
                    "wait() at its caller's next sleep slice, and this sleep has none")
    r = anon_ring()
    reader = r.reader()
    sleep = {
        "wait_past": lambda: r.atom.wait_past(L.HEAD, 0, L.WAITERS, reader.waiter_bit,
                                              L.CLOSED, L.DOORBELL, float("inf")),
        "take_wait": lambda: reader.take_copy(sleep=1e300),
        "wait": lambda: r.atom.wait(L.HEAD, 0, float("inf")),
    }[how]
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(sleep())
        except BaseException as exc:
            outcome.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    poll_until(lambda: r.atom.in_flight == 2, timeout=5.0)
    doorbell = r.atom.load(L.DOORBELL)
    r.atom.release()
    assert r.atom.closed
    for t in threads:
        t.join(10.0)
        assert not t.is_alive()
    assert [type(o) for o in outcome] == [SHMClosedError, SHMClosedError]
    assert r.atom.in_flight == 0
    assert r.atom.size == 0
    probe = AtomicBuffer(r.mm)
    if how != "wait":
        # Readers asleep on the doorbell: release() bumped it (so a wake-up racing with
        # their sleep is not lost) and left their waiter bit alone (the closer frees rows).
        assert probe.load(L.DOORBELL) == doorbell + 2
        assert probe.load(L.WAITERS) == reader.waiter_bit
    probe.release()
    r.view.release()
    r.mm.close()  # the last call out dropped its export: nothing keeps the mapping
    r.mm = mmap.mmap(-1, r.layout.total_size)  # for the fixture's close()
    r.view = memoryview(r.mm)
    r.atom = AtomicBuffer(r.mm)


@pytest.mark.skipif(not has_futex, reason="futex wait is Linux only")
def test_sleep_timeouts_are_defined_for_every_double(anon_ring) -> None:
    r = anon_ring()
    reader = r.reader()
    bit = reader.waiter_bit
    for timeout in (float("nan"), -1.0, -float("inf"), 0.0, 5e-324):
        started = time.monotonic()
        assert r.atom.wait_past(L.HEAD, 0, L.WAITERS, bit, L.CLOSED, L.DOORBELL,
                                timeout) is False
        assert r.atom.wait(L.HEAD, 0, timeout) is False
        assert reader.take_copy(sleep=timeout) is None
        assert time.monotonic() - started < 1.0
    for timeout in (float("inf"), 1e300, 2.0**63, 1e18):  # cut to a day: a send wakes them
        results: list[object] = []
        sleeper = threading.Thread(target=lambda t=timeout, out=results: out.append(
            reader.take_copy(sleep=t)))
        sleeper.start()
        poll_until(lambda: r.atom.load(L.WAITERS) == bit, timeout=5.0)
        r.send(b"wake")
        sleeper.join(10.0)
        assert not sleeper.is_alive()
        assert results[0] is not None


def test_ring_fast_path_checks_its_geometry(anon_ring) -> None:
    r = anon_ring()
    lay = r.layout
    args = [L.HEAD, L.WAITERS, L.BYTES_TOTAL, L.HOLDERS, lay.entries_offset, lay.num_slots,
            lay.num_buffers, lay.buffers_offset, lay.buffer_stride, lay.slot_size,
            L.RECORDS_OFFSET + L.REC_HELD, L.RECORD_SIZE, lay.max_subscribers, L.DOORBELL]
    Ring(r.atom, *args)
    for i, bad in [(0, lay.total_size), (0, 3), (5, 10**9), (6, 10**9), (8, 8), (10, 4),
                   (11, 4), (12, 65), (10, lay.total_size), (13, 3)]:
        wrong = list(args)
        wrong[i] = bad
        with pytest.raises(ValueError):
            Ring(r.atom, *wrong)
    with pytest.raises(TypeError):
        Ring(bytearray(64), *args)
    fast = Ring(r.atom, *args)
    with pytest.raises(RuntimeError, match="writer_init"):
        fast.write(b"x", 0, 0)  # only the writer writes
    fast.writer_init(SHMBufferFullError)
    with pytest.raises(ValueError, match="does not fit"):
        fast.write(bytes(lay.slot_size + 1), 0, 0)
    with pytest.raises(RuntimeError, match="not the reserved one"):
        fast.commit(0, 0, 0, 0)
    index = fast.reserve()
    with pytest.raises(RuntimeError, match="already reserved"):
        fast.reserve()
    with pytest.raises(RuntimeError, match="reserved"):
        fast.write(b"x", 0, 0)
    with pytest.raises(ValueError, match="outside"):
        fast.commit(index, lay.slot_size + 1, 0, 0)
    fast.cancel(index)
    assert r.atom.load(L.HEAD) == 0  # nothing was published


def test_observer_fast_path_on_a_read_only_mapping(anon_ring) -> None:
    r = anon_ring()
    r.send(b"abc", ts=9)
    ro = AtomicBuffer(bytes(r.mm))  # a read-only copy of the segment
    fast = ring.fast_path(ro, r.layout)
    assert fast.take(0, -1) == (b"abc", L.ENCODING_RAW, 9, 0)
    with pytest.raises(ValueError, match="cursor"):
        fast.take(0, r.layout.record(0) + L.REC_CURSOR)
    with pytest.raises(TypeError, match="read-only"):
        fast.writer_init(SHMBufferFullError)
    ro.release()


def test_write_stamped_and_matching_holds(anon_ring) -> None:
    r = anon_ring(slot_size=64)
    reader = r.reader()
    reader.enable_holding()
    prefix = bytes(range(32))
    r.writer.write_stamped(prefix, b"DATA", 8, L.ENCODING_ARRAY, 777)
    seq, _index, offset, length, encoding, stamp, matches = reader.take_held(prefix, 8, 36)
    assert (seq, length, encoding, stamp, matches) == (0, 36, L.ENCODING_ARRAY, 777, True)
    payload = bytes(r.view[offset:offset + length])
    assert payload[:8] == prefix[:8]
    assert struct.unpack_from("<QQ", payload, 8) == (0, 777)  # seq and timestamp stamped
    assert payload[24:] == prefix[24:] + b"DATA"
    # Anything else does not match: another prefix, another length, a bad stamp offset.
    for expect, at, want in [(prefix[:-1] + b"x", 8, 36), (prefix, 8, 35), (prefix, 20, 36),
                             (prefix, -1, 36), (prefix, 8, -1)]:
        r.writer.write_stamped(prefix, b"DATA", 8, L.ENCODING_ARRAY, 1)
        got = reader.take_held(expect, at, want)
        assert got is not None
        assert got[-1] is False
    assert reader.held is not None
    with pytest.raises(ValueError, match="stamp offset"):
        r.writer.write_stamped(prefix, b"", 20, L.ENCODING_ARRAY, 1)
    with pytest.raises(ValueError, match="does not fit"):
        r.writer.write_stamped(prefix, bytes(33), 8, L.ENCODING_ARRAY, 1)
    assert r.writer.head == 6  # the refused ones published nothing


def test_write_if_room_waits_for_every_active_reader(anon_ring) -> None:
    """The blocking send's C check: room is judged from the rows, read again whenever a
    reader joins or leaves (a cached lowest cursor would miss a reader joining behind it)."""
    r = anon_ring(num_slots=4)
    w = r.writer
    reader = r.reader()
    for i in range(4):
        assert w.write_if_room(b"m", L.ENCODING_RAW, 0) == i
    assert w.write_if_room(b"m", L.ENCODING_RAW, 0) is None  # the reader would lose one
    assert w.head == 4
    assert (w.has_room(0), w.has_room(1)) == (True, False)
    assert r.take(reader) == (0, b"m")
    assert w.has_room(1)
    assert not w.has_room(2)
    while r.take(reader) is not None:
        pass
    assert w.has_room(4)
    assert not w.has_room(5)
    assert w.write_if_room(bytearray(b"n"), L.ENCODING_RAW, 0) == 4  # any buffer
    late = r.reader(pid=1001, oldest=True)  # starts at the oldest message still there: 1
    assert late.cursor == 1
    assert w.write_if_room(b"m", L.ENCODING_RAW, 0) is None
    release_record(r.atom, r.layout, late.row, r.atom.load(r.layout.record(late.row)))
    assert w.write_if_room(b"m", L.ENCODING_RAW, 0) == 5
    assert w.min_cursor() == reader.cursor


def test_commit_stamped_writes_the_prefix_and_stamps(anon_ring) -> None:
    r = anon_ring(slot_size=64)
    w = r.writer
    reader = r.reader()
    reader.enable_holding()
    prefix = bytes(range(32))
    index = w.reserve()
    with w.payload_view(index) as view:
        view[32:36] = b"DATA"
    for bad in [(index, 36, prefix, 20), (index, 65, prefix, 8), (index, 31, prefix, 8)]:
        with pytest.raises(ValueError, match="do not fit"):
            w.commit_stamped(bad[0], bad[1], L.ENCODING_ARRAY, 1, bad[2], bad[3])
    assert w.commit_stamped(index, 36, L.ENCODING_ARRAY, 777, prefix, 8) == 0
    seq, _index, offset, length, encoding, stamp, matches = reader.take_held(prefix, 8, 36)
    assert (seq, length, encoding, stamp, matches) == (0, 36, L.ENCODING_ARRAY, 777, True)
    payload = bytes(r.view[offset:offset + length])
    assert struct.unpack_from("<QQ", payload, 8) == (0, 777)
    assert payload[24:] == prefix[24:] + b"DATA"
    with pytest.raises(RuntimeError, match="not the reserved one"):
        w.commit_stamped(index, 36, L.ENCODING_ARRAY, 1, prefix, 8)


def test_room_needs_to_know_where_the_rows_are(anon_ring) -> None:
    r = anon_ring()
    fast = ring.fast_path(r.atom, r.layout)
    fast.writer_init(SHMBufferFullError)
    with pytest.raises(RuntimeError, match="watch_cursors"):
        fast.has_room(1)
    with pytest.raises(RuntimeError, match="watch_cursors"):
        fast.write_if_room(b"x", 0, 0)
    rows = L.RECORDS_OFFSET + L.REC_STATE, L.RECORDS_OFFSET + L.REC_CURSOR
    for bad in [(r.layout.total_size, *rows), (3, *rows), (L.MEMBERSHIP, r.layout.total_size,
                                                         rows[1]), (L.MEMBERSHIP, rows[0], 5)]:
        with pytest.raises(ValueError, match="outside"):
            fast.watch_cursors(*bad, L.STATE_ACTIVE)
    fast.watch_cursors(L.MEMBERSHIP, *rows, L.STATE_ACTIVE)
    assert fast.has_room(r.layout.num_slots)
    assert r.atom.load(L.HEAD) == 0


def test_counters_are_one_pair_and_wait_out_a_writer_between_its_stores(anon_ring) -> None:
    """``Ring.counters`` (what channel_info reads) answers ``(head, bytes_total)`` only when
    they describe the same messages: not while a writer has stored the next message's entry
    but not yet ``bytes_total`` and ``head`` (its steps, played here one at a time)."""
    r = anon_ring(num_slots=4)
    for size in (3, 5, 7):
        r.send(b"x" * size)
    lay = r.layout
    fast = ring.fast_path(r.atom, lay)
    assert fast.counters() == (3, 15)
    r.atom.store(lay.entry(3), (4 << L.ENTRY_INDEX_BITS) | 0)  # step 3: message 3's entry
    assert fast.counters() is None
    r.atom.store(L.BYTES_TOTAL, 15 + 11)  # step 4a: its bytes, head not yet
    assert fast.counters() is None
    r.atom.store(L.HEAD, 4)  # step 4b: published
    assert fast.counters() == (4, 26)
