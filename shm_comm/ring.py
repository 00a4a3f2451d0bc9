"""The ring algorithm: how one writer and many readers share a segment without locks.

This module works on any writable buffer (an mmap of shared memory in production, an anonymous
mmap in unit tests). It makes no OS calls and never sleeps: waiting lives in ``wait.py``,
segments in ``segment.py``. docs/design.md has the full argument; in short:

* The writer owns a private free list of data buffers. It writes a message into a free buffer,
  then publishes it with one atomic store of the ring entry ``(seq + 1) << 16 | buffer`` and
  one of ``head``. Overwriting an entry evicts the message ``seq - num_slots`` that was there.
* A reader keeps a cursor (the next sequence number it wants). It reads ``head``; if its cursor
  fell more than ``num_slots`` behind, the messages in between were evicted and are counted as
  dropped. It reads the entry, copies the payload, issues a full fence and reads the entry
  again: if it changed, the buffer may have been reused during the copy and the copy is thrown
  away (counted as a drop). Sequence numbers never wrap in practice (2**48), so an old entry
  can never pass for a new one.
* Zero-copy readers (typed arrays) record the buffer they hold in their row before re-checking
  the entry; the writer checks the rows of holders after evicting, and keeps a held buffer out
  of its free list until it is released. At most ``max_holders`` readers may hold (each
  takes its place in ``holders`` with a compare-exchange that never exceeds the limit), each
  holds one buffer, and there are ``max_holders + 1`` spare buffers, so the writer always
  finds a free one without waiting for anybody.
* Each reader is the only writer of its own row, so accounting needs no read-modify-write on
  the hot path: ``received = cursor - start - dropped``.

Every shared word is accessed through ``AtomicBuffer`` with sequentially consistent operations,
which is what makes the two "store, then load the other side's word" hand-offs (holders and
sleeping readers) safe on weakly ordered CPUs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import layout as L
from ._atomic import AtomicBuffer, Ring
from .errors import SHMBufferFullError, SHMConnectionError, SHMFormatError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["PidLiveness", "RingReader", "RingWriter", "RowLiveness", "claim_record",
           "reap_dead_records", "release_record"]

IsAlive = Callable[[int, int], bool]
"""``is_alive(pid, start_token) -> bool``: whether the process that owns a row still runs."""


class RowLiveness(Protocol):
    """How the holder of a subscriber (requester, puller) row shows that it lives, and how
    others tell. The real one, ``segment.RecordLocks``, is a lock the holder keeps on its row
    and the kernel drops when it dies; :class:`PidLiveness` asks about the row's pid.

    The protocol the record functions below follow with it: a claimer takes a free row's
    lock *before* it claims the row, and gives it back only after the row is free again; a
    reaper frees a row only while holding that row's lock itself. So a live holder's row is
    never reaped, and no claim can slip in between a reaper's look and its release.
    """

    def token(self, pid: int) -> int:
        """The token word a new holder ``pid`` stores in its row."""

    def claim(self, row: int) -> bool:
        """Before claiming free ``row``: take its liveness lock; False: leave that row."""

    def unclaim(self, row: int) -> None:
        """Give ``row``'s lock back: after a failed claim, after freeing it, after a reap."""

    def reap(self, row: int, pid: int, token: int) -> bool:
        """Whether ``row``'s holder (``pid``, ``token``; 0 while being claimed) is dead; if
        True the caller holds the row's lock until :meth:`unclaim`."""

    def alive(self, row: int, pid: int, token: int) -> bool:
        """Whether the holder of ``row`` lives (changes nothing)."""


class PidLiveness:
    """Rows judged by their pid and start token: where there are no record locks (macOS),
    and for rings in anonymous memory (tests). Wrong across pid namespaces."""

    def __init__(self, is_alive: IsAlive, token_of: Callable[[int], int] = lambda pid: 1
                 ) -> None:
        self._is_alive = is_alive
        self._token_of = token_of

    def token(self, pid: int) -> int:
        """The process's start token (its start time on Linux)."""
        return self._token_of(pid)

    def claim(self, row: int) -> bool:
        """Nothing to take: True."""
        return True

    def unclaim(self, row: int) -> None:
        """Nothing to give back."""

    def reap(self, row: int, pid: int, token: int) -> bool:
        """Whether ``pid`` (started at ``token``) is gone."""
        return not self._is_alive(pid, token)

    def alive(self, row: int, pid: int, token: int) -> bool:
        """Whether ``pid`` (started at ``token``) runs."""
        return self._is_alive(pid, token)


_INDEX_BITS = L.ENTRY_INDEX_BITS
_INDEX_MASK = L.ENTRY_INDEX_MASK
_HEAD = L.HEAD
_BUFFER_HEADER_SIZE = L.BUFFER_HEADER_SIZE


def _entry_seq(entry: int) -> int:
    return (entry >> L.ENTRY_INDEX_BITS) - 1


def fast_path(atom: AtomicBuffer, layout: L.SegmentLayout) -> Ring:
    """The C version of the per-message steps (``_ring.c``) bound to this segment's geometry."""
    return Ring(atom, L.HEAD, L.WAITERS, L.BYTES_TOTAL, L.HOLDERS, layout.entries_offset,
                layout.num_slots, layout.num_buffers, layout.buffers_offset,
                layout.buffer_stride, layout.slot_size, L.RECORDS_OFFSET + L.REC_HELD,
                L.RECORD_SIZE, layout.max_subscribers, L.DOORBELL)


class RingWriter:
    """The single writer of a segment: publishes messages and keeps the buffer free list.

    The per-message steps run in C (``Ring.write`` and friends in ``_ring.c``), in this order:
    take a free buffer (collecting buffers that zero-copy readers released), fence, copy the
    payload, write the slot header, store the ring entry, then ``bytes_total`` and ``head``
    and wake sleepers; then the buffer that the entry evicted goes back to the free list
    unless a zero-copy reader holds it (checked after the entry store). Not thread-safe: one
    thread of one process writes a channel at a time.
    """

    def __init__(self, atom: AtomicBuffer, view: memoryview, layout: L.SegmentLayout) -> None:
        self._atom = atom
        self._view = view
        self._layout = layout
        self._slot_size = layout.slot_size
        self._fast = fast_path(atom, layout)
        self._fast.writer_init(SHMBufferFullError)
        self._fast.watch_cursors(L.MEMBERSHIP, L.RECORDS_OFFSET + L.REC_STATE,
                                 L.RECORDS_OFFSET + L.REC_CURSOR, L.STATE_ACTIVE)

    @property
    def fast(self) -> Ring:
        """The C object doing the work, for callers whose hot path cannot afford a Python
        frame per step (a loan's enter and exit)."""
        return self._fast

    @property
    def head(self) -> int:
        """Messages published so far (the sequence number the next message gets)."""
        return self._fast.head

    @property
    def free_buffers(self) -> int:
        """Buffers ready to take a message right now (released holds included)."""
        return self._fast.free_buffers

    @property
    def held_buffers(self) -> list[int]:
        """Evicted buffers that a zero-copy reader still holds (kept out of the free list)."""
        return self._fast.held_buffers

    @property
    def bytes_total(self) -> int:
        """Payload bytes published so far."""
        return self._fast.bytes_total

    def reserve(self) -> int:
        """Take a free buffer for the next message and return its index.

        The caller fills ``payload_view(index)`` and then calls :meth:`commit` or
        :meth:`cancel`. Only one buffer can be reserved at a time.
        """
        return self._fast.reserve()

    def payload_offset(self, index: int) -> int:
        """Offset of buffer ``index``'s payload in the segment."""
        return self._layout.payload(index)

    def payload_view(self, index: int, length: int | None = None) -> memoryview:
        """A writable view of the payload area of buffer ``index``."""
        start = self._layout.payload(index)
        size = self._layout.slot_size if length is None else length
        return self._view[start:start + size]

    def cancel(self, index: int) -> None:
        """Give back a reserved buffer without publishing anything."""
        self._fast.cancel(index)

    def commit(self, index: int, length: int, encoding: int, timestamp_ns: int) -> int:
        """Publish the reserved buffer ``index`` holding ``length`` payload bytes.

        Returns the message's sequence number.
        """
        return self._fast.commit(index, length, encoding, timestamp_ns)

    def write(self, payload: bytes | bytearray | memoryview, encoding: int,
              timestamp_ns: int) -> int:
        """Copy ``payload`` into a free buffer and publish it; returns its sequence number.

        ``ValueError`` if it does not fit in a slot; nothing is published then.
        """
        if type(payload) is not bytes:
            payload = memoryview(payload).cast("B")  # any C-contiguous buffer, as bytes
        return self._fast.write(payload, encoding, timestamp_ns)

    def write_if_room(self, payload: bytes | bytearray | memoryview, encoding: int,
                      timestamp_ns: int) -> int | None:
        """:meth:`write` if the message evicts nothing an active subscriber has not read yet
        (:meth:`has_room`), else None and nothing is published: a blocking send's fast path."""
        if type(payload) is not bytes:
            payload = memoryview(payload).cast("B")
        return self._fast.write_if_room(payload, encoding, timestamp_ns)

    def commit_stamped(self, index: int, length: int, encoding: int, timestamp_ns: int,
                       prefix: bytes, stamp_offset: int) -> int:
        """Write ``prefix`` at the start of reserved buffer ``index``'s payload, with the
        message's seq and timestamp as u64s at ``stamp_offset`` in it, and publish the buffer
        as :meth:`commit` does; returns the sequence number."""
        return self._fast.commit_stamped(index, length, encoding, timestamp_ns, prefix,
                                         stamp_offset)

    def write_stamped(self, prefix: bytes, data: ReadableBuffer, stamp_offset: int,
                      encoding: int, timestamp_ns: int) -> int:
        """Publish ``prefix + data`` with the message's seq and timestamp stored as u64s at
        ``stamp_offset`` of the payload (inside ``prefix``); returns the sequence number.
        ``data`` is any C-contiguous buffer; a large one is copied without the GIL (and on
        x86-64 with non-temporal stores: ``_ring.c``, ``copy_payload``)."""
        return self._fast.write_stamped(prefix, data, stamp_offset, encoding, timestamp_ns)

    def write_many(self, payloads: list[bytes | memoryview], encoding: int,
                   timestamp_ns: int) -> int:
        """Publish several payloads; ``head`` is stored (and sleepers woken) once at the end.

        All sizes are checked first: one that does not fit raises ``ValueError`` and nothing
        is published. Returns how many were published.
        """
        return self._fast.write_many(payloads, encoding, timestamp_ns)

    def min_cursor(self) -> int | None:
        """The smallest cursor of the active subscribers, or None when there are none."""
        result: int | None = None
        for row in range(self._layout.max_subscribers):
            rec = self._layout.record(row)
            if self._atom.load(rec + L.REC_STATE) & 0xFF == L.STATE_ACTIVE:
                cursor = self._atom.load(rec + L.REC_CURSOR)
                result = cursor if result is None else min(result, cursor)
        return result

    def has_room(self, count: int = 1) -> bool:
        """Whether ``count`` more messages evict nothing that an active subscriber has not
        read. In C: the rows are read only when a subscriber joined or left since the last
        look, or when the lowest cursor seen then no longer leaves room."""
        return self._fast.has_room(count)

    def close(self) -> None:
        """Mark the channel closed and wake every sleeping reader."""
        ring_out(self._atom)


@dataclass
class Message:
    """Where a message sits in a buffer: returned by :meth:`RingReader.poll`."""

    seq: int
    buffer: int
    offset: int
    length: int
    encoding: int
    timestamp_ns: int


class RingReader:
    """One reader's view of a ring: a cursor, its drop accounting and an optional held buffer.

    ``row`` is the reader's subscriber record, or None for an observer that never writes to
    the segment. Every read goes through ``atom`` and the C fast path (``_ring.c``), whose
    reader check (``Ring.intact``) is the one place that decides whether a copy is intact;
    this class adds what is not the common case: evictions, corruption, the accounting.
    Not thread-safe.
    """

    def __init__(self, atom: AtomicBuffer, layout: L.SegmentLayout, row: int | None,
                 cursor: int) -> None:
        self._atom = atom
        self._layout = layout
        self._num_slots = layout.num_slots
        self._num_buffers = layout.num_buffers
        self._slot_size = layout.slot_size
        self._entries_offset = layout.entries_offset
        self._buffers_offset = layout.buffers_offset
        self._stride = layout.buffer_stride
        self.row = row
        self._rec = layout.record(row) if row is not None else None
        self._rec_cursor = (self._rec or 0) + L.REC_CURSOR
        self._rec_held = (self._rec or 0) + L.REC_HELD
        self.cursor = cursor
        self.start = cursor
        self.dropped = 0
        self.malformed = 0  # messages consumed by raising SHMFormatError (in received too)
        self.held: int | None = None
        self._fast = fast_path(atom, layout)
        self._rec_cursor_or_none = -1 if row is None else self._rec_cursor

    @property
    def received(self) -> int:
        """Messages this reader has taken from the ring."""
        return self.cursor - self.start - self.dropped

    @property
    def torn(self) -> int:
        """Reads that the reader check discarded because the writer overwrote the message
        while it was being copied (or pinned); each such message is also in ``dropped``."""
        return self._fast.torn

    def pending(self) -> int:
        """Messages published that this reader has not taken (some may already be evicted)."""
        return max(0, self._atom.load(L.HEAD) - self.cursor)

    def _skip_to(self, cursor: int) -> None:
        self.dropped += cursor - self.cursor
        self.cursor = cursor
        if self._rec is not None:
            self._atom.store(self._rec + L.REC_DROPPED, self.dropped)
            self._atom.store(self._rec + L.REC_CURSOR, cursor)

    def skip_to_latest(self) -> int:
        """Skip (and count as dropped) everything but the newest message; returns how many."""
        head = self._atom.load(L.HEAD)
        if head - 1 > self.cursor:
            skipped = head - 1 - self.cursor
            self._skip_to(head - 1)
            return skipped
        return 0

    def poll(self, hold: bool = False) -> Message | None:
        """Find the next message, or return None when there is none yet.

        With ``hold=False`` the caller copies the payload and then calls :meth:`validate`
        (observers and copying subscribers). With ``hold=True`` (subscribers only) the
        message is taken at once with its buffer pinned (:meth:`take_held`): it stays
        unchanged until the next poll or :meth:`release_hold`. Evicted messages are skipped
        and counted as dropped; a corrupted entry or length raises :class:`SHMFormatError`.
        """
        if hold:
            assert self._rec is not None, "observers cannot hold buffers"
            got = self.take_held()
            return None if got is None else Message(*got[:6])
        atom = self._atom
        if self.held is not None:
            self.release_hold()
        while True:
            head = atom.load(_HEAD)
            cursor = self.cursor
            if cursor >= head:
                return None
            oldest = head - self._num_slots
            if cursor < oldest:
                self._skip_to(oldest)
                cursor = oldest
            entry = atom.load(self._entries_offset + 8 * (cursor % self._num_slots))
            if (entry >> _INDEX_BITS) - 1 != cursor:
                if _entry_seq(entry) < cursor:
                    raise self.consume_malformed(cursor, "has a ring entry older than head "
                                                 "says")
                # Overwritten by a newer message since we read head: it is lost. Skipping
                # one at a time needs no further help from the writer (which may have died
                # between storing the entry and storing head).
                self._skip_to(cursor + 1)
                continue
            index = entry & _INDEX_MASK
            if index >= self._num_buffers:
                raise self.consume_malformed(
                    cursor, f"has a ring entry naming buffer {index} of {self._num_buffers}")
            timestamp_ns, length, encoding = self._fast.slot(index)
            if length > self._slot_size:
                if not self._fast.intact(cursor, entry):
                    continue  # we read a header being rewritten: the message is gone
                raise self.consume_malformed(
                    cursor, f"claims {length} bytes in a slot of {self._slot_size}")
            offset = self._buffers_offset + index * self._stride + _BUFFER_HEADER_SIZE
            return Message(cursor, index, offset, length, encoding, timestamp_ns)

    def consume_malformed(self, seq: int, what: str) -> SHMFormatError:
        """Take message ``seq`` (the next one, or the one just taken) as malformed: the
        cursor moves past it, so the next receive goes on with the next message; it counts
        in ``malformed`` (and, consumed, in ``received``). Returns the error to raise."""
        if self.cursor <= seq:
            self.release_hold()
            self.cursor = seq + 1
            if self._rec is not None:
                self._atom.store(self._rec_cursor, self.cursor)
        self.malformed += 1
        return SHMFormatError(f"message {seq} {what}: it is malformed (a corrupted segment?) "
                              "and was skipped; the next receive returns the next message")

    def take_copy(self, sleep: float | None = None) -> tuple[bytes, int, int, int] | None:
        """Take the next message as a validated copy: ``(payload, encoding, timestamp_ns, seq)``.

        The fast path of :meth:`poll` + copy + :meth:`validate`; None when there is none yet.
        With ``sleep`` (seconds), when nothing is there, sleep on the segment for at most that
        long (announced in ``waiters``) and try once more, all in one C call; None then means
        the sleep timed out or the channel was closed or retired. :class:`SHMClosedError` if
        the segment is released meanwhile (another thread closed this reader's end).
        """
        if self.held is not None:
            self.release_hold()
        cursor = self.cursor
        if sleep is None:
            got = self._fast.take(cursor, self._rec_cursor_or_none)
        else:
            got = self._fast.take_wait(cursor, self._rec_cursor_or_none, self.waiter_bit,
                                       L.CLOSED, sleep)
        if got.__class__ is tuple:
            self.cursor = cursor + 1
            return got
        if got is None:
            return None
        return self._take_copy_careful()

    def _take_copy_careful(self) -> tuple[bytes, int, int, int] | None:
        # take() said "not the common case": let poll() skip what was evicted (or raise for
        # a corrupted message), then copy with take() again.
        while True:
            if self.poll() is None:
                return None
            cursor = self.cursor
            got = self._fast.take(cursor, self._rec_cursor_or_none)
            if got.__class__ is tuple:
                self.cursor = cursor + 1
                return got
            if got is None:
                return None

    def _batch_window(self, max_n: int) -> tuple[int, int]:
        # (start, n): skip (and count) what was evicted, then up to max_n waiting messages
        head = self._atom.load(_HEAD)
        if self.cursor < head - self._num_slots:
            self._skip_to(head - self._num_slots)
        return self.cursor, min(max_n, head - self.cursor)

    def take_many(self, max_n: int) -> tuple[list[bytes], list[int]]:
        """Take up to ``max_n`` waiting messages as validated copies: ``(payloads, encodings)``.

        Copies first, validates all with one reader check (intact messages are a suffix,
        since eviction goes in sequence order) and stores the cursor once.
        """
        if self.held is not None:
            self.release_hold()
        take = self._fast.take_many
        for _attempt in range(100):
            start, n = self._batch_window(max_n)
            if n <= 0:
                return [], []
            first, payloads, encodings = take(start, n)
            count = first + len(payloads)
            if first:
                self._skip_to(start + first)
            if not payloads:
                if count == 0:
                    # The next message is not the common case: the careful way says why.
                    got = self._take_copy_careful()
                    return ([], []) if got is None else ([got[0]], [got[1]])
                continue  # every copy was overwritten meanwhile (skipped above)
            self.cursor = start + count
            if self._rec is not None:
                self._atom.store(self._rec_cursor, self.cursor)
            return payloads, encodings
        return [], []

    def take_held(self, expect: bytes = b"", stamp_offset: int = 0, expect_length: int = -1
                  ) -> tuple[int, int, int, int, int, int, bool] | None:
        """Take the next message and pin its buffer (subscribers that enabled holding).

        Returns ``(seq, buffer, offset, length, encoding, timestamp_ns, matches)`` or None.
        The message counts as received at once; its buffer stays unchanged until the next
        receive or :meth:`release_hold`. ``matches``: the payload is ``expect_length`` bytes
        and starts with ``expect`` except for the 16 bytes at ``stamp_offset`` (a message
        written by :meth:`RingWriter.write_stamped` with that prefix).
        """
        hold = self._fast.hold
        while True:
            cursor = self.cursor
            got = hold(cursor, self._rec_held, self._rec_cursor, expect, stamp_offset,
                       expect_length)
            if got.__class__ is tuple:
                self.held = got[1]
                self.cursor = cursor + 1
                return got
            self.held = None  # hold() dropped the previous pin
            if got is None or self.poll() is None:  # poll: evictions, corruption
                return None

    def validate(self, message: Message) -> bool:
        """After copying ``message``'s payload: True (and advance) if the copy is intact.

        False means the writer reused the buffer during the copy (the reader check, in C);
        the message is counted as dropped and the caller polls again.
        """
        if self.held is None:
            entry = ((message.seq + 1) << _INDEX_BITS) | message.buffer
            if not self._fast.intact(message.seq, entry):
                self._skip_to(message.seq + 1)
                return False
        self.cursor = message.seq + 1
        if self._rec is not None:
            self._atom.store(self._rec_cursor, self.cursor)
        return True

    def read_batch(self, max_n: int, out: WriteableBuffer, stamps: WriteableBuffer,
                   data_offset: int, item_size: int, encoding: int, expect: bytes = b"",
                   stamp_offset: int = 0) -> tuple[int, int]:
        """Copy up to ``max_n`` waiting fixed-size messages into ``out``, back to back.

        Bytes ``[data_offset, data_offset + item_size)`` of each payload go to
        ``out[i * item_size:]`` and its timestamp to ``stamps[i]`` (native u64), for as long
        as the messages have exactly ``data_offset + item_size`` bytes, this ``encoding`` and
        start with ``expect`` (see :meth:`take_held`). Copies first, then validates all with
        one reader check: returns ``(first, count)``, the valid rows being ``first .. first +
        count - 1`` (earlier ones were overwritten during the copy and are counted as
        dropped). ``(0, 0)`` when nothing is waiting or the next message is not one of
        these (left for :meth:`poll`, which says what is wrong with it).
        """
        if self.held is not None:
            self.release_hold()
        for _attempt in range(100):
            start, n = self._batch_window(max_n)
            if n <= 0:
                return 0, 0
            first, count = self._fast.gather(start, n, out, stamps, data_offset, item_size,
                                             encoding, expect, stamp_offset)
            if first:
                self._skip_to(start + first)
            if count == 0:
                return 0, 0
            if count == first:
                continue  # everything we copied was overwritten meanwhile
            self.cursor = start + count
            if self._rec is not None:
                self._atom.store(self._rec_cursor, self.cursor)
            return first, count - first
        return 0, 0

    def release_hold(self) -> None:
        """Let the writer reuse the buffer this reader holds (no-op without a hold)."""
        if self.held is not None:
            assert self._rec is not None
            self._atom.store(self._rec + L.REC_HELD, 0)
            self.held = None

    def enable_holding(self) -> bool:
        """Take one of the channel's ``max_holders`` zero-copy places (its bit in ``holders``),
        once, before holding; False when they are all taken: then this reader must copy.

        A compare-exchange on the whole word, so concurrent readers in any processes never
        take more places than there are; a place is given back when the row is freed.
        """
        if self.row is None:
            raise TypeError("observers cannot hold zero-copy buffers")
        atom, bit, limit = self._atom, 1 << self.row, self._layout.max_holders
        while True:
            holders = atom.load(L.HOLDERS)
            if holders & bit:
                return True
            if holders.bit_count() >= limit:
                return False
            if atom.compare_exchange(L.HOLDERS, holders, holders | bit):
                return True

    @property
    def waiter_bit(self) -> int:
        """This reader's bit in the ``waiters`` word (0 for an observer, which has none)."""
        return 0 if self.row is None else 1 << self.row


def ring_out(atom: AtomicBuffer) -> None:
    """Mark a pub/sub segment closed and wake every reader asleep on it (close, retire).

    ``closed`` first, then the doorbell: a reader that has not seen ``closed`` yet read the
    doorbell before it changed, so its sleep returns at once (see ``wait_past``).
    """
    atom.store(L.CLOSED, 1)
    atom.fetch_add(L.DOORBELL, 1)
    atom.wake(L.DOORBELL)


def claim_record(atom: AtomicBuffer, layout: L.SegmentLayout, pid: int, token: int,
                 latest: bool, oldest: bool = False,
                 liveness: RowLiveness | None = None) -> tuple[int, int]:
    """Take a free subscriber row; returns ``(row, start_cursor)``.

    The reader starts at the current head (only new messages), at the newest message when
    ``latest`` is true, or at the oldest message still in the ring when ``oldest`` is true.
    The row becomes visible (``membership`` bumped) only with its final cursor. With
    ``liveness``, the row's liveness lock is taken before the row is claimed (and kept: the
    holder gives it back after :func:`release_record`). Raises :class:`SHMConnectionError`
    when every row is taken.
    """
    for row in range(layout.max_subscribers):
        rec = layout.record(row)
        if atom.load(rec + L.REC_STATE) != L.STATE_FREE:
            continue
        if liveness is not None and not liveness.claim(row):
            continue
        if atom.compare_exchange(rec + L.REC_STATE, L.STATE_FREE,
                                 (pid << L.STATE_BITS) | L.STATE_CLAIMED):
            atom.store(rec + L.REC_PID, pid)
            atom.store(rec + L.REC_START_TOKEN, token)
            atom.store(rec + L.REC_DROPPED, 0)
            atom.store(rec + L.REC_HELD, 0)
            head = atom.load(L.HEAD)
            if oldest:
                cursor = max(0, head - layout.num_slots)
            else:
                cursor = max(0, head - 1) if latest else head
            atom.store(rec + L.REC_CURSOR, cursor)
            atom.store(rec + L.REC_START, cursor)
            atom.store(rec + L.REC_STATE, (pid << L.STATE_BITS) | L.STATE_ACTIVE)
            atom.fetch_add(L.MEMBERSHIP, 1)
            return row, cursor
        if liveness is not None:
            liveness.unclaim(row)
    raise SHMConnectionError(
        f"all {layout.max_subscribers} subscriber rows of this channel are taken; "
        "create the Publisher with a larger max_subscribers"
    )


def release_record(atom: AtomicBuffer, layout: L.SegmentLayout, row: int,
                   expected_state: int) -> bool:
    """Free subscriber row ``row`` if its state word is still ``expected_state``.

    Folds the row's counts into the departed totals, drops its hold and its wait bit.
    Returns False if somebody else changed the row first.
    """
    rec = layout.record(row)
    leaving = (expected_state & ~0xFF) | L.STATE_LEAVING
    if not atom.compare_exchange(rec + L.REC_STATE, expected_state, leaving):
        return False
    cursor = atom.load(rec + L.REC_CURSOR)
    start = atom.load(rec + L.REC_START)
    dropped = atom.load(rec + L.REC_DROPPED)
    # Messages evicted before it read them are lost to it even if it never noticed.
    unnoticed = 0
    if layout.kind == L.KIND_PUBSUB:
        unnoticed = max(0, atom.load(L.HEAD) - layout.num_slots - cursor)
    atom.fetch_add(L.DEPARTED_DROPPED, dropped + unnoticed)
    atom.fetch_add(L.DEPARTED_RECEIVED, max(0, cursor - start - dropped))
    atom.store(rec + L.REC_HELD, 0)
    mask = ~(1 << row) & 0xFFFFFFFFFFFFFFFF
    atom.fetch_and(L.WAITERS, mask)
    atom.fetch_and(L.HOLDERS, mask)
    atom.store(rec + L.REC_STATE, L.STATE_FREE)
    atom.fetch_add(L.MEMBERSHIP, 1)
    return True


def reap_dead_records(atom: AtomicBuffer, layout: L.SegmentLayout,
                      liveness: RowLiveness) -> int:
    """Free the rows of subscribers whose process is gone; returns how many were freed.

    A row is freed only while holding its liveness lock (``liveness.reap``), so a live
    holder's row never is, and the row cannot change hands in between.
    """
    freed = 0
    for row in range(layout.max_subscribers):
        rec = layout.record(row)
        state = atom.load(rec + L.REC_STATE)
        code = state & 0xFF
        if code not in (L.STATE_ACTIVE, L.STATE_CLAIMED):
            continue
        pid = state >> L.STATE_BITS
        token = atom.load(rec + L.REC_START_TOKEN) if code == L.STATE_ACTIVE else 0
        if not liveness.reap(row, pid, token):
            continue
        try:
            if release_record(atom, layout, row, state):
                freed += 1
        finally:
            liveness.unclaim(row)
    return freed


@dataclass
class RecordInfo:
    """A snapshot of one subscriber row."""

    row: int
    pid: int
    cursor: int
    received: int
    dropped: int
    holding: bool
    waiting: bool
    token: int = 0


def read_records(atom: AtomicBuffer, layout: L.SegmentLayout) -> list[RecordInfo]:
    """Snapshot the active subscriber rows (for stats and tools; never writes)."""
    waiters = atom.load(L.WAITERS)
    out = []
    for row in range(layout.max_subscribers):
        rec = layout.record(row)
        state = atom.load(rec + L.REC_STATE)
        if state & 0xFF != L.STATE_ACTIVE:
            continue
        cursor = atom.load(rec + L.REC_CURSOR)
        dropped = atom.load(rec + L.REC_DROPPED)
        start = atom.load(rec + L.REC_START)
        out.append(RecordInfo(row, state >> L.STATE_BITS, cursor, max(0, cursor - start - dropped),
                              dropped, bool(atom.load(rec + L.REC_HELD)),
                              bool(waiters >> row & 1), atom.load(rec + L.REC_START_TOKEN)))
    return out


def holder_count(atom: AtomicBuffer) -> int:
    """How many subscribers have a zero-copy place (bits set in ``holders``)."""
    return int(atom.load(L.HOLDERS).bit_count())


def drop_count(atom: AtomicBuffer, layout: L.SegmentLayout,
               records: list[RecordInfo] | None = None) -> int:
    """Messages lost so far, summed over subscribers (present and departed).

    Includes messages already evicted that a slow subscriber has not noticed yet, so the
    figure is current even while a subscriber is stalled. ``records``: a snapshot from
    :func:`read_records` to use instead of reading the rows again.
    """
    head = atom.load(L.HEAD)
    evicted_below = head - layout.num_slots
    total = atom.load(L.DEPARTED_DROPPED)
    for info in read_records(atom, layout) if records is None else records:
        total += info.dropped + max(0, evicted_below - info.cursor)
    return total


def ring_counters(atom: AtomicBuffer, layout: L.SegmentLayout) -> dict[str, int]:
    """A pub/sub ring's counters under shm-comm 1.0's stats keys (one shape for every end).

    ``head`` is the next message's sequence number (= ``msg_count``; a count, not a slot
    index), ``tail`` the slowest subscriber's cursor (``head`` when there is none),
    ``used_slots`` the messages the slowest subscriber has still to read (at most
    ``num_slots``) and ``free_slots`` how many more can be published before it loses one:
    ``used_slots + free_slots == num_slots``. ``drop_count`` as :func:`drop_count`.
    """
    records = read_records(atom, layout)
    head = atom.load(L.HEAD)
    tail = min((r.cursor for r in records), default=head)
    used = min(layout.num_slots, max(0, head - tail))
    return {"head": head, "tail": tail, "num_slots": layout.num_slots,
            "slot_size": layout.slot_size, "msg_count": head,
            "drop_count": drop_count(atom, layout, records), "used_slots": used,
            "free_slots": layout.num_slots - used}
