"""Pusher and Puller: a work queue in shared memory where each item goes to exactly one puller.

The pusher creates the segment and is its only writer; pullers (up to ``max_pullers``)
compete for items. The byte layout is in ``layout.py`` ("queue layout"); docs/patterns.md has
the argument. In short:

* The pusher writes item ``p`` into slot ``p % num_slots`` once that slot's entry says FREE
  for lap ``p // num_slots``, then publishes it with one store (READY) and bumps ``head``.
* A puller records the position it wants in its own row (its claim word), then takes the item
  with one compare-and-swap of the entry (READY -> OWNED by its row), copies the payload out,
  and hands the slot back with a second compare-and-swap (OWNED by its row -> FREE for the
  next lap). That second compare-and-swap is the commit: the item is delivered to this puller
  if and only if it succeeds.
* **A puller that dies holding a slot** (between the two compare-and-swaps) leaves the entry
  OWNED. Live pullers scan for such claims (every 0.25 s, and at once when the pusher, finding
  its next slot blocked, asks them to): a claim is abandoned when its row left, its claim word
  moved on, or its holder is dead (its record lock is free). A puller takes the abandoned slot
  over with a compare-and-swap (OWNED by the dead row -> OWNED by itself) and delivers the item,
  flagged (``Puller.last_redelivered``) and counted (``stats()["redelivered"]``). Because the
  commit is a compare-and-swap, even a puller wrongly taken for dead cannot deliver the item a
  second time: its commit fails and it drops its copy.

Guarantee: every item pushed is returned by exactly one puller's ``recv``, provided some
puller keeps pulling; a puller killed inside ``recv`` never loses or duplicates an item. An
item is the puller's once ``recv`` has returned it: if that process then dies, the item is not
redelivered (processing is at-most-once; acknowledge results yourself for at-least-once).
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import layout as L
from . import notify, ring
from ._atomic import AtomicBuffer
from .endpoint import ForkAware, closed_call
from .errors import (
    SHMBufferFullError,
    SHMClosedError,
    SHMConnectionError,
    SHMFormatError,
    SHMPeerGoneError,
    SHMUntrustedSegmentError,
)
from .naming import segment_name, validate_channel_name
from .notify import Readiness
from .reqrep import (
    LIVENESS_CHECK_INTERVAL,
    as_bytes,
    attach_segment,
    check_size,
    claim_abandoned,
    claim_row,
    release_row,
    sleep_on,
)
from .ring import RowLiveness
from .segment import Segment
from .serialization import RAW, get_serializer
from .trust import TrustedUsers, trusted_uids
from .wait import MAX_SLEEP

__all__ = ["Puller", "Pusher", "queue_counters"]

BytesLike = bytes | bytearray | memoryview

RECOVERY_INTERVAL = 0.25
BLOCKED_CHECK_INTERVAL = 0.02
DEFAULT_MAX_PULLERS = 32
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _close_pusher(segment: Segment) -> None:
    if segment.closed:
        return
    segment.atom.store(L.CLOSED, 1)
    segment.atom.wake(L.HEAD)
    segment.atom.wake(L.PIPE_TAKEN)
    segment.unlink()
    segment.close()


def _abandoned_slots(atom: AtomicBuffer, lay: L.SegmentLayout, liveness: RowLiveness) -> bool:
    """Whether some queue slot is held by a puller that is gone (asks pullers to recover)."""
    for slot in range(lay.num_slots):
        offset = lay.entries_offset + 8 * slot
        entry = atom.load(offset)
        if (entry >> L.QUEUE_STATE_SHIFT) & 0xFF == L.QUEUE_OWNED:
            position = (entry >> L.QUEUE_LAP_SHIFT) * lay.num_slots + slot
            if claim_abandoned(atom, lay, offset, entry, position, liveness):
                return True
    return False


def queue_counters(atom: AtomicBuffer, lay: L.SegmentLayout) -> dict[str, int]:
    """A queue's counters under shm-comm 1.0's stats keys (one shape for pushers and pullers).

    ``head`` = ``msg_count``: items pushed; ``tail``: items taken by pullers (pullers share
    one cursor); ``used_slots`` = ``head - tail``, items waiting; ``free_slots`` how many more
    can be pushed without waiting. ``drop_count`` is always 0: a queue never drops an item
    (a push that finds it full waits or raises :class:`SHMBufferFullError`, queuing nothing).
    """
    head, tail = atom.load(L.HEAD), atom.load(L.PIPE_TAKEN)
    used = min(lay.num_slots, max(0, head - tail))
    return {"head": head, "tail": tail, "num_slots": lay.num_slots, "slot_size": lay.slot_size,
            "msg_count": head, "drop_count": 0, "used_slots": used,
            "free_slots": lay.num_slots - used}


class Pusher(ForkAware):
    """The single producer of push/pull queue ``name``; each item goes to one puller.

    Creates the queue (reclaiming it if its previous pusher died; a live one makes this raise
    :class:`SHMConnectionError`). ``num_slots`` items can wait, each of up to ``slot_size``
    bytes; ``max_pullers`` (at most 64) bounds the pullers attached at once. ``close()``
    (also on ``with`` exit and garbage collection) removes the segment: pullers still attached
    drain what is left, then get :class:`SHMPeerGoneError`; call :meth:`join` first to wait
    until every item was taken. Not thread-safe: send from one thread at a time.
    """

    def __init__(self, name: str, num_slots: int = 128, slot_size: int = 4096,
                 serialization: str = "pickle", *,
                 max_pullers: int = DEFAULT_MAX_PULLERS) -> None:
        self.name = validate_channel_name(name)
        self._serializer = get_serializer(serialization)
        # Pullers copy every item out: no zero-copy holders, so no spare buffers for them.
        layout = L.SegmentLayout(L.KIND_PIPELINE, num_slots, slot_size, max_pullers,
                                 max_holders=0)
        self._segment = Segment.create(segment_name("pipeline", name), layout,
                                       self._serializer.encoding, name)
        self._layout = layout
        self._atom = self._segment.atom
        self._view = self._segment.view
        self._head = 0
        self._bytes_total = 0
        self._full = 0
        self._finalizer = weakref.finalize(self, _close_pusher, self._segment)
        self._track()

    @property
    def num_slots(self) -> int:
        """How many items can wait in the queue."""
        return self._layout.num_slots

    @property
    def slot_size(self) -> int:
        """Largest item payload in bytes."""
        return self._layout.slot_size

    def send(self, obj: Any, *, block: bool = True, timeout: float | None = None) -> bool:
        """Serialize ``obj`` and queue it for exactly one puller; returns True.

        If the queue is full, ``block=True`` (default) waits for a puller to take an item, at
        most ``timeout`` seconds (None: no limit); ``block=False`` does not wait. Either way
        :class:`SHMBufferFullError` is raised, and nothing queued, if no slot became free.
        Raises ``ValueError`` if the item does not fit in a slot and
        :class:`SHMSerializationError` if ``obj`` cannot be serialized (nothing queued).
        """
        try:
            return self._push(self._serializer.encode(obj), self._serializer.encoding, block,
                              timeout)
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, False)

    def send_bytes(self, data: BytesLike, *, block: bool = True,
                   timeout: float | None = None) -> bool:
        """Queue raw bytes (any C-contiguous buffer, e.g. a NumPy array).

        Same blocking rules and errors as :meth:`send`.
        """
        try:
            return self._push(as_bytes(data), RAW.encoding, block, timeout)
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, False)

    def _push(self, data: BytesLike, encoding: int, block: bool,
              timeout: float | None) -> bool:
        if not self._finalizer.alive:
            raise SHMClosedError(f"pusher of queue {self.name!r} is closed")
        length = len(data)
        lay, atom, view = self._layout, self._atom, self._view
        check_size(length, lay.slot_size, "item")
        head = self._head
        lap, slot = divmod(head, lay.num_slots)
        offset = lay.entries_offset + 8 * slot
        free = L.queue_entry(lap, L.QUEUE_FREE)
        if atom.load(offset) != free:
            self._full += 1
            atom.store(L.PIPE_FULL, self._full)
            if not block or not self._wait_taken(lambda: atom.load(offset) == free, timeout,
                                                 offset):
                waited = "" if not block else f" for {timeout} s"
                raise SHMBufferFullError(
                    f"queue {self.name!r} is full ({lay.num_slots} items waiting){waited}: "
                    "the pullers are not keeping up (or there are none)"
                )
        buf = lay.buffer(slot)
        start = buf + L.BUFFER_HEADER_SIZE
        try:
            view[start:start + length] = data
            L.SLOT_HEADER.pack_into(view, buf, head, time.time_ns(), length, encoding, 0)
        except ValueError as exc:
            self._raise_if_closed_meanwhile(exc)
            raise
        # The payload is written; the entry store publishes it (a release).
        atom.store(offset, L.queue_entry(lap, L.QUEUE_READY))
        self._head = head + 1
        atom.store(L.HEAD, head + 1)
        self._bytes_total += length
        atom.store(L.BYTES_TOTAL, self._bytes_total)
        if atom.load(L.WAITERS):
            atom.wake(L.HEAD)
        return True

    def _wait_taken(self, done: Callable[[], bool], timeout: float | None,
                    blocked: int | None) -> bool:
        """Sleep on ``taken`` until ``done()``; False at the deadline.

        While blocked, look for slots held by dead pullers (``blocked`` is the one we need,
        None: any) and ask the pullers to recover them.
        """
        atom, lay = self._atom, self._layout
        deadline = None if timeout is None else time.monotonic() + timeout
        next_check = time.monotonic() + BLOCKED_CHECK_INTERVAL
        next_reap = time.monotonic() + LIVENESS_CHECK_INTERVAL
        while not done():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if now >= next_reap:
                # Dead pullers' wait bits would cost us a wake-up call per item.
                next_reap = now + LIVENESS_CHECK_INTERVAL
                ring.reap_dead_records(atom, lay, self._segment.liveness)
            if now >= next_check:
                next_check = now + BLOCKED_CHECK_INTERVAL
                if self._blocked_by_dead(blocked):
                    atom.store(L.PIPE_RECOVER_HINT, 1)
                    atom.wake(L.HEAD)
            atom.fetch_add(L.PIPE_TAKEN_WAITERS, 1)
            try:
                # Announce, then look: pullers bump taken, then read the waiter count.
                taken = atom.load(L.PIPE_TAKEN)
                if not done():
                    sleep_on(atom, L.PIPE_TAKEN, taken, deadline, BLOCKED_CHECK_INTERVAL)
            finally:
                atom.fetch_add(L.PIPE_TAKEN_WAITERS, -1)
        return True

    def _blocked_by_dead(self, offset: int | None) -> bool:
        atom, lay = self._atom, self._layout
        if offset is None:
            return _abandoned_slots(atom, lay, self._segment.liveness)
        entry = atom.load(offset)
        if (entry >> L.QUEUE_STATE_SHIFT) & 0xFF != L.QUEUE_OWNED:
            return False
        slot = (offset - lay.entries_offset) // 8
        position = (entry >> L.QUEUE_LAP_SHIFT) * lay.num_slots + slot
        return claim_abandoned(atom, lay, offset, entry, position, self._segment.liveness)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item sent so far has been taken by a puller; False on timeout.

        "Taken" means returned by some puller's ``recv`` (or about to be): not that the
        puller finished working on it. Items held by pullers that die are recovered by the
        others meanwhile; with no puller attached this waits for one.
        """
        try:
            if not self._finalizer.alive:
                raise SHMClosedError(f"pusher of queue {self.name!r} is closed")
            atom = self._atom
            return self._wait_taken(lambda: atom.load(L.PIPE_TAKEN) >= self._head, timeout,
                                    None)
        except SHMClosedError as exc:
            return closed_call(exc, timeout, False)

    def stats(self) -> dict[str, Any]:
        """Counters of this queue (a snapshot). Rows of dead pullers are freed here.

        ``sent`` items queued; ``taken`` items handed to pullers; ``pending`` = sent - taken
        (waiting, or being taken right now); ``redelivered`` items recovered from pullers that
        died while taking them; ``full`` sends that found the queue full; ``pullers``
        attached now; and shm-comm 1.0's keys (see :func:`queue_counters`).
        """
        atom, lay = self._atom, self._layout
        if self._finalizer.alive:
            ring.reap_dead_records(atom, lay, self._segment.liveness)
        taken = atom.load(L.PIPE_TAKEN)
        return {
            **queue_counters(atom, lay),
            "channel": self.name,
            "segment": self._segment.name,
            "sent": self._head,
            "taken": taken,
            "pending": max(0, self._head - taken),
            "redelivered": atom.load(L.PIPE_REDELIVERED),
            "full": self._full,
            "pullers": len(ring.read_records(atom, lay)),
            "num_slots": lay.num_slots,
            "slot_size": lay.slot_size,
            "max_pullers": lay.max_subscribers,
            "bytes_total": self._bytes_total,
            "serialization": self._serializer.name,
            "pid": os.getpid(),
        }

    def close(self) -> None:
        """Close the queue and remove its segment. Idempotent. Does not wait: see :meth:`join`.
        """
        self._finalizer()

    def __enter__(self) -> Pusher:
        return self

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._head} sent"
        return f"<Pusher {self.name!r} {self.num_slots}x{self.slot_size} {state}>"


class Puller(ForkAware):
    """One of the competing consumers of push/pull queue ``name``.

    Waits up to ``timeout_connect`` seconds for the pusher, then raises
    :class:`SHMConnectionError`. Each item goes to exactly one puller; see the module
    docstring for what happens when a puller dies. ``serialization`` must match the pusher's
    (``recv_bytes`` works with any). ``trusted_users`` (user names or uids): whose pushers
    to accept besides this process's own user and root (docs/security.md); another user's
    segment raises :class:`SHMUntrustedSegmentError`, at attach and at reconnect. Not
    thread-safe: use one Puller per thread.
    """

    last_redelivered: bool = False
    """Whether the item last received was taken over from a puller that died taking it."""

    def __init__(self, name: str, timeout_connect: float = 5.0,
                 serialization: str = "pickle", *, trusted_users: TrustedUsers = None) -> None:
        self.name = validate_channel_name(name)
        self._serializer = get_serializer(serialization)
        self._trusted = trusted_uids(trusted_users)
        self._received = 0
        self._redelivered = 0
        self._reconnects = 0
        self._connect(attach_segment("pipeline", L.KIND_PIPELINE, name, timeout_connect,
                                     "pusher", self._trusted))

    def _connect(self, segment: Segment) -> None:
        try:
            row = claim_row(segment, "puller", "Pusher")
        except BaseException:
            segment.close()
            raise
        self._segment = segment
        self._atom = segment.atom
        self._view = segment.view
        self._layout = segment.layout
        self.row = row
        self._rec = segment.layout.record(row)
        self._start = self._atom.load(self._rec + L.REC_START)
        self._count = 0  # items taken through this row
        self._next_scan = 0.0  # scan for abandoned claims at the first recv
        self._next_check = time.monotonic() + LIVENESS_CHECK_INTERVAL
        self._finalizer = weakref.finalize(self, release_row, segment, row)
        self._track()

    def recv(self, timeout: float | None = None) -> Any:
        """The next item, deserialized; None if none came within ``timeout`` seconds.

        ``timeout=None`` waits without limit, ``0`` only checks. Raises
        :class:`SHMPeerGoneError` once the pusher has closed or died and every item has been
        taken, and :class:`SHMSerializationError` for an item that cannot be decoded (it is
        consumed). Sets :attr:`last_redelivered`.
        """
        try:
            got = self._next(timeout)
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        if got is None:
            return None
        return self._serializer.decode(got[0], got[1])

    def recv_bytes(self, timeout: float | None = None) -> bytes | None:
        """The next item's payload bytes, whatever its encoding; None on timeout."""
        try:
            got = self._next(timeout)
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        return None if got is None else got[0]

    def _next(self, timeout: float | None) -> tuple[bytes, int] | None:
        if not self._finalizer.alive:
            raise SHMClosedError(f"puller of queue {self.name!r} is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got = self._take()
            if got is not None:
                return got
            if self._pusher_gone():
                got = self._after_pusher(deadline)
                if got is not None:
                    return got
                if timeout == 0 or (deadline is not None and time.monotonic() >= deadline):
                    if self._ready is not None:
                        self._rearm()
                    return None
            elif timeout == 0 or not self._wait(deadline):
                if self._ready is not None:
                    self._rearm()  # found nothing: fileno() turns readable at the next item
                return None

    def _take(self) -> tuple[bytes, int] | None:
        """Take the next item (or recover an abandoned one) without waiting."""
        atom, lay = self._atom, self._layout
        if atom.load(L.PIPE_RECOVER_HINT) or time.monotonic() >= self._next_scan:
            got = self._recover()
            if got is not None:
                return got
        claim = self._rec + L.REC_CLAIM
        while True:
            position = atom.load(L.QUEUE_TAIL)
            if position >= atom.load(L.HEAD):
                return None
            lap, slot = divmod(position, lay.num_slots)
            offset = lay.entries_offset + 8 * slot
            ready = L.queue_entry(lap, L.QUEUE_READY)
            if atom.load(offset) != ready:
                # Someone took it and has yet to move the tail: help.
                atom.compare_exchange(L.QUEUE_TAIL, position, position + 1)
                continue
            # Record the claim first, so that others can tell, should we die holding the
            # slot, that the claim is ours and abandoned.
            atom.store(claim, position + 1)
            owned = L.queue_entry(lap, L.QUEUE_OWNED, self.row)
            if not atom.compare_exchange(offset, ready, owned):
                atom.store(claim, 0)
                continue
            atom.compare_exchange(L.QUEUE_TAIL, position, position + 1)
            got = self._finish(position, slot, offset, owned, False)
            if got is not None:
                return got

    def _recover(self) -> tuple[bytes, int] | None:
        """Take over one slot held by a puller that is gone, if there is one."""
        atom, lay = self._atom, self._layout
        self._next_scan = time.monotonic() + RECOVERY_INTERVAL
        atom.store(L.PIPE_RECOVER_HINT, 0)
        claim = self._rec + L.REC_CLAIM
        for slot in range(lay.num_slots):
            offset = lay.entries_offset + 8 * slot
            entry = atom.load(offset)
            if (entry >> L.QUEUE_STATE_SHIFT) & 0xFF != L.QUEUE_OWNED:
                continue
            lap = entry >> L.QUEUE_LAP_SHIFT
            position = lap * lay.num_slots + slot
            if not claim_abandoned(atom, lay, offset, entry, position, self._segment.liveness):
                continue
            atom.store(claim, position + 1)
            mine = L.queue_entry(lap, L.QUEUE_OWNED, self.row)
            if not atom.compare_exchange(offset, entry, mine):
                atom.store(claim, 0)
                continue
            got = self._finish(position, slot, offset, mine, True)
            if got is not None:
                atom.store(L.PIPE_RECOVER_HINT, 1)  # there may be more: scan again next time
                return got
        return None

    def _finish(self, position: int, slot: int, offset: int, owned: int,
                redelivered: bool) -> tuple[bytes, int] | None:
        """Copy out the item we own, then commit; None if another puller took it over."""
        atom = self._atom
        claim = self._rec + L.REC_CLAIM
        try:
            seq, length, encoding, data = self._copy_item(slot)
        except BaseException:
            # Interrupted (KeyboardInterrupt...): abandon the claim; another puller, or
            # this one, recovers the item.
            atom.store(claim, 0)
            atom.store(L.PIPE_RECOVER_HINT, 1)
            raise
        lap = position // self._layout.num_slots
        # The commit: the copy is complete before this release; the pusher may reuse the
        # slot once it sees FREE.
        committed = atom.compare_exchange(offset, owned, L.queue_entry(lap + 1, L.QUEUE_FREE))
        atom.store(claim, 0)
        if not committed:
            return None
        atom.fetch_add(L.PIPE_TAKEN, 1)
        if redelivered:
            atom.fetch_add(L.PIPE_REDELIVERED, 1)
            self._redelivered += 1
            atom.store(self._rec + L.REC_TAKEN_OVER, self._redelivered)
        self._count += 1
        atom.store(self._rec + L.REC_CURSOR, self._start + self._count)
        if atom.load(L.PIPE_TAKEN_WAITERS):
            atom.wake(L.PIPE_TAKEN)
        if seq != position or length > self._layout.slot_size:
            raise SHMFormatError(f"item {position} has an impossible header (seq {seq}, "
                                 f"{length} bytes): the segment is corrupted")
        self._received += 1
        self.last_redelivered = redelivered
        return data, encoding

    def _copy_item(self, slot: int) -> tuple[int, int, int, bytes]:
        lay, view = self._layout, self._view
        buf = lay.buffer(slot)
        try:
            seq, _ts, length, encoding, _flags = L.SLOT_HEADER.unpack_from(view, buf)
            start = buf + L.BUFFER_HEADER_SIZE
            return seq, length, encoding, bytes(view[start:start + min(length, lay.slot_size)])
        except ValueError as exc:
            self._raise_if_closed_meanwhile(exc)
            raise

    def _wait(self, deadline: float | None) -> bool:
        """Sleep until an item may be there; False once the deadline passed."""
        if self._ready is not None:
            self._park()
        atom = self._atom
        bit = 1 << self.row
        longest = min(MAX_SLEEP, max(0.0, self._next_scan - time.monotonic()) + 0.001)
        atom.fetch_or(L.WAITERS, bit)
        try:
            # Announce, then look: the pusher stores head, then reads the waiter bits.
            head = atom.load(L.HEAD)
            if (atom.load(L.QUEUE_TAIL) >= head and not atom.load(L.PIPE_RECOVER_HINT)
                    and not atom.load(L.CLOSED)):
                return sleep_on(atom, L.HEAD, head, deadline, longest)
            return True
        finally:
            atom.fetch_and(L.WAITERS, ~bit & _MASK64)

    def _pusher_gone(self) -> bool:
        if self._atom.load(L.CLOSED):
            return True
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + LIVENESS_CHECK_INTERVAL
            return not self._segment.owner_alive()
        return False

    def _after_pusher(self, deadline: float | None) -> tuple[bytes, int] | None:
        """The pusher is gone and nothing is waiting: recover, reconnect, or raise."""
        atom = self._atom
        got = self._recover()
        if got is not None:
            return got
        if atom.load(L.QUEUE_TAIL) < atom.load(L.HEAD):
            return None  # an item appeared meanwhile: take it
        taken = atom.load(L.PIPE_TAKEN)
        if taken < atom.load(L.HEAD):
            # Some puller is taking the last items; if it dies, we recover them.
            atom.fetch_add(L.PIPE_TAKEN_WAITERS, 1)
            try:
                sleep_on(atom, L.PIPE_TAKEN, taken, deadline, BLOCKED_CHECK_INTERVAL)
            finally:
                atom.fetch_add(L.PIPE_TAKEN_WAITERS, -1)
            return None
        if self._segment.replaced():
            try:
                segment = Segment.attach(self._segment.name, self.name, L.KIND_PIPELINE,
                                         trusted=self._trusted)
            except SHMUntrustedSegmentError:
                raise
            except (FileNotFoundError, SHMConnectionError, SHMFormatError):
                pass
            else:
                if self._ready is not None:
                    self._ready.disarm()  # (its announcement goes with the old row)
                    self._ready.set()
                self._finalizer()
                self._connect(segment)
                self._reconnects += 1
                return None
        raise SHMPeerGoneError(
            f"the pusher of queue {self.name!r} has closed or died and every item was taken")

    def stats(self) -> dict[str, Any]:
        """This puller's counters: ``received``, ``redelivered`` (of those, items taken over
        from dead pullers), ``pending`` (items waiting in the queue), ``pusher_alive``; and the
        queue's counters under shm-comm 1.0's keys (see :func:`queue_counters`) with
        ``local_tail``, which for a puller is the shared ``tail``."""
        if not self._finalizer.alive:
            raise SHMClosedError(f"puller of queue {self.name!r} is closed")
        atom = self._atom
        counters = queue_counters(atom, self._layout)
        return {
            **counters,
            "local_tail": counters["tail"],
            "channel": self.name,
            "received": self._received,
            "redelivered": self._redelivered,
            "pending": max(0, atom.load(L.HEAD) - atom.load(L.QUEUE_TAIL)),
            "pusher_alive": self._segment.owner_alive(),
            "reconnects": self._reconnects,
            "row": self.row,
        }

    def close(self) -> None:
        """Leave the queue (frees this puller's row). Idempotent. A task awaiting this puller
        wakes and gets :class:`SHMClosedError`; ``fileno()``'s descriptor is closed."""
        if self._ready is not None:
            self._ready.close()
        self._finalizer()

    def __enter__(self) -> Puller:
        return self

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._received} received"
        return f"<Puller {self.name!r} row={self.row} {state}>"

    # --- event loops: fileno() and recv_async() (notify.py, aio.py) ---

    _ready: Readiness | None = None

    def fileno(self) -> int:
        """A file descriptor that is readable while an item may be waiting for this puller.

        Same rules as :meth:`Subscriber.fileno <shm_comm.Subscriber.fileno>`: level-triggered,
        re-armed by a receive that finds nothing (``recv(timeout=0)`` returning None), so
        receive with ``timeout=0`` until None when it fires. Other pullers may take an item
        first, and like a blocking receive it also fires now and then (at most every 50 ms)
        to look for items abandoned by dead pullers and for a gone pusher. Closed by
        :meth:`close`.
        """
        self._ensure_open_puller()
        ready = self._readiness()
        self._rearm()
        return ready.fileno()

    def _ensure_open_puller(self) -> None:
        if not self._finalizer.alive:
            raise SHMClosedError(f"puller of queue {self.name!r} is closed")

    def _readiness(self) -> Readiness:
        if self._ready is None:
            self._ensure_open_puller()
            self._ready = ready = Readiness()
            weakref.finalize(self, ready.close)
        return self._ready

    def _longest_wait(self) -> float:
        """How long a wait may last before the next look at peers (as in :meth:`_wait`)."""
        return min(MAX_SLEEP, max(0.0, self._next_scan - time.monotonic()) + 0.001)

    def _arm(self, ready: Readiness, timeout: float) -> bool:
        """Announce, look, and arm the watch on ``head`` (the doorbell protocol of
        :meth:`_wait`); False when an item (or a close) is there already."""
        atom, bit = self._atom, 1 << self.row
        if atom.load(L.CLOSED):
            # Nobody pushes any more: look again as the blocking receive does.
            return ready.arm(atom, L.HEAD, atom.load(L.HEAD),
                             timeout=BLOCKED_CHECK_INTERVAL)
        atom.fetch_or(L.WAITERS, bit)
        head = atom.load(L.HEAD)
        if (atom.load(L.QUEUE_TAIL) >= head and not atom.load(L.PIPE_RECOVER_HINT)
                and not atom.load(L.CLOSED)
                and ready.arm(atom, L.HEAD, head, L.WAITERS, bit,
                              notify.WITHDRAW_BITS, timeout)):
            return True
        atom.fetch_and(L.WAITERS, ~bit & _MASK64)
        return False

    def _rearm(self) -> None:
        ready = self._ready
        if ready is not None and not ready.closed and not ready.armed and not self._arm(
                ready, self._longest_wait()):
            ready.set()

    def _park(self) -> None:
        """A blocking receive is about to sleep with the same bit: take the watch back."""
        ready = self._ready
        if ready is not None and not ready.closed:
            if ready.disarm():
                self._atom.fetch_and(L.WAITERS, ~(1 << self.row) & _MASK64)
            ready.set()

    async def recv_async(self, timeout: float | None = None) -> Any:
        """Await the next item, deserialized; None if none came within ``timeout`` seconds.

        The awaitable :meth:`recv` (same errors: :class:`SHMPeerGoneError` once the pusher is
        gone and every item taken; :class:`SHMClosedError` if the puller is closed, also while
        it waits). An item is taken in one step after the await, so a
        cancelled await takes nothing. One task at a time may await a puller.
        """
        got = await self._next_async(timeout)
        return None if got is None else self._serializer.decode(got[0], got[1])

    async def recv_bytes_async(self, timeout: float | None = None) -> bytes | None:
        """Await the next item's payload bytes (see :meth:`recv_async`)."""
        got = await self._next_async(timeout)
        return None if got is None else got[0]

    async def _next_async(self, timeout: float | None) -> tuple[bytes, int] | None:
        from . import aio

        got = self._next(0)
        if got is not None or timeout == 0:
            return got
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            if self._pusher_gone():
                # The last items are being taken, or a restarted pusher is about to come:
                # look every 20 ms, as recv does.
                await aio.sleep(BLOCKED_CHECK_INTERVAL if remaining is None
                                else min(BLOCKED_CHECK_INTERVAL, remaining))
            else:
                ready = self._readiness()
                longest = self._longest_wait()
                if ready.armed or self._arm(ready, longest):
                    await aio.wait_readable(ready, longest if remaining is None
                                            else min(longest, remaining),
                                            f"puller of {self.name!r}")
            got = self._next(0)  # (SHMClosedError if it was closed while we waited)
            if got is not None:
                return got
