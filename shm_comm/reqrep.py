"""Replier and Requester: request/reply between processes over one shared-memory segment.

The replier creates the segment; any number of requesters (up to ``max_requesters``) attach.
The byte layout is in ``layout.py`` ("queue layout"); docs/patterns.md has the argument. In
short:

* **Requests** go through a bounded multi-producer queue of ``num_slots`` slots. A requester
  records the position it wants in its own row, claims it with one compare-and-swap on the
  slot's entry word (FREE -> OWNED by its row), writes the request into the slot's buffer and
  publishes it with a second compare-and-swap (OWNED -> READY). The replier takes positions
  strictly in order, so requests arrive in the order they were claimed.
* **A requester that dies between claim and publish** leaves its slot OWNED. The replier,
  waiting on that slot, finds the claim abandoned (the row left, its claim word moved on, or
  its holder is dead: its record lock is free) and frees the slot; that request died with its
  writer and is counted in ``stats()["abandoned"]``. The replier is never wedged by it.
* **Replies** go to a mailbox per requester row: the reply buffer plus one word holding the
  correlation id of the reply in it (unique per channel, handed out when a request is sent).
  A requester only accepts the reply carrying the id of its outstanding request, so a late
  reply to a request it gave up on is dropped, and a reply can never reach another requester
  (a row reused after its owner died sees ids that are not its own). The id word doubles as a
  seqlock (bit 63 set while the replier writes), so a copy can never be torn.

Every shared word goes through ``AtomicBuffer`` (sequentially consistent); payloads are written
before the compare-and-swap or store that publishes them.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import layout as L
from . import notify, ring
from ._atomic import AtomicBuffer, has_futex
from .endpoint import ForkAware, closed_call, leave
from .errors import (
    SHMBufferFullError,
    SHMClosedError,
    SHMConnectionError,
    SHMFormatError,
    SHMPeerGoneError,
    SHMTimeoutError,
    SHMUntrustedSegmentError,
)
from .naming import segment_name, validate_channel_name
from .notify import Readiness
from .ring import RowLiveness
from .segment import Segment
from .serialization import RAW, get_serializer
from .trust import TrustedUsers, trusted_uids
from .wait import FALLBACK_POLL, MAX_SLEEP, sleep

__all__ = ["Replier", "Requester"]

BytesLike = bytes | bytearray | memoryview

LIVENESS_CHECK_INTERVAL = 0.2
CONNECT_POLL = 0.002
ABANDON_CHECK_INTERVAL = 0.01
DEFAULT_MAX_REQUESTERS = 32
_MASK64 = 0xFFFFFFFFFFFFFFFF


# --- Queue helpers, shared with pipeline.py -------------------------------------------------

def sleep_on(atom: AtomicBuffer, offset: int, expected: int, deadline: float | None,
             longest: float = MAX_SLEEP) -> bool:
    """Sleep while the word at ``offset`` holds ``expected``: until woken or ``longest`` s.

    Returns False, without sleeping, once ``deadline`` (a ``time.monotonic()`` value) has
    passed; True otherwise, after which the caller re-checks its condition. A futex wait on
    Linux; elsewhere a short poll.
    """
    remaining = longest if deadline is None else min(longest, deadline - time.monotonic())
    if remaining <= 0:
        return False
    if has_futex:
        atom.wait(offset, expected, remaining)
    else:
        sleep(min(FALLBACK_POLL, remaining))
    return True


def claim_abandoned(atom: AtomicBuffer, layout: L.SegmentLayout, offset: int, entry: int,
                    position: int, liveness: RowLiveness) -> bool:
    """Whether the OWNED queue ``entry`` at ``offset`` (for ``position``) lost its owner.

    The owner records ``position + 1`` in its row before claiming and clears it after
    releasing the slot, so the claim is abandoned if the row is no longer active, its claim
    word names another position, or its holder is gone (``liveness``: its record lock is
    free); and the entry must still be the same afterwards (else the owner finished
    meanwhile).
    """
    row = entry & L.QUEUE_ROW_MASK
    if row >= layout.max_subscribers:
        raise SHMFormatError(f"queue entry names row {row} of {layout.max_subscribers}: "
                             "the segment is corrupted")
    rec = layout.record(row)
    state = atom.load(rec + L.REC_STATE)
    if state & 0xFF != L.STATE_ACTIVE or atom.load(rec + L.REC_CLAIM) != position + 1:
        gone = True
    else:
        gone = not liveness.alive(row, state >> L.STATE_BITS,
                                  atom.load(rec + L.REC_START_TOKEN))
    return gone and atom.load(offset) == entry


def attach_segment(kind_name: str, kind: int, channel: str, timeout: float,
                   creator: str, trusted: frozenset[int]) -> Segment:
    """Map ``channel``'s segment, waiting up to ``timeout`` s for its ``creator`` to make it;
    only a segment owned by one of the ``trusted`` uids is accepted."""
    if timeout < 0:
        raise ValueError(f"timeout_connect must be >= 0, got {timeout}")
    name = segment_name(kind_name, channel)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Segment.attach(name, channel, kind, trusted=trusted)
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise SHMConnectionError(
                    f"no {creator} for channel {channel!r} appeared within {timeout} s "
                    f"(segment {name}); start the {creator} first or raise timeout_connect"
                ) from None
            sleep(CONNECT_POLL)


def claim_row(segment: Segment, role: str, creator: str) -> int:
    """Take a free row of ``segment`` for this process, reaping dead owners' rows if needed."""
    atom, lay, live = segment.atom, segment.layout, segment.liveness
    pid = os.getpid()
    token = live.token(pid)
    try:
        return ring.claim_record(atom, lay, pid, token, False, liveness=live)[0]
    except SHMConnectionError:
        if ring.reap_dead_records(atom, lay, live):
            try:
                return ring.claim_record(atom, lay, pid, token, False, liveness=live)[0]
            except SHMConnectionError:
                pass
    raise SHMConnectionError(
        f"all {lay.max_subscribers} {role} rows of channel {segment.header.name!r} are taken; "
        f"create the {creator} with a larger max_{role}s"
    )


def release_row(segment: Segment, row: int) -> None:
    """Give back this process's row (if it still holds it) and unmap the segment (safe while
    another thread is inside a call: :func:`shm_comm.endpoint.leave`)."""
    leave(segment, row)


def as_bytes(data: BytesLike) -> bytes | memoryview:
    """``data`` (any C-contiguous buffer, e.g. a NumPy array) as a byte-sized view."""
    if type(data) is bytes:
        return data
    return memoryview(data).cast("B")


def check_size(length: int, slot_size: int, what: str) -> None:
    """Raise ``ValueError`` naming both sizes if ``length`` bytes do not fit in a slot."""
    if length > slot_size:
        raise ValueError(
            f"{what} of {length} bytes does not fit in a slot of {slot_size} bytes; "
            f"create the channel with slot_size >= {length}"
        )


# --- Replier ---------------------------------------------------------------------------------

def _close_replier(segment: Segment) -> None:
    if segment.closed:
        return
    atom, lay = segment.atom, segment.layout
    atom.store(L.CLOSED, 1)
    waiters = atom.load(L.WAITERS)
    for row in range(lay.max_subscribers):
        if waiters >> row & 1:
            atom.wake(lay.record(row) + L.REC_REPLY)
    if atom.load(L.REQ_PRODUCERS_WAITING):
        for slot in range(lay.num_slots):
            atom.wake(lay.entries_offset + 8 * slot)
    segment.unlink()
    segment.close()


class Replier(ForkAware):
    """The serving end of request/reply channel ``name``: receives requests, sends replies.

    Creates the channel (reclaiming it if its previous replier died; a live one makes this
    raise :class:`SHMConnectionError`). ``num_slots`` requests can wait in the queue, each of
    up to ``slot_size`` bytes, and so can each reply. ``max_requesters`` (at most 64) bounds
    the requesters attached at once. ``serialization`` ("pickle", "msgpack" or "raw") must
    match the requesters'. Requests arrive in the order requesters claimed their queue slots.
    ``close()`` (also on ``with`` exit and garbage collection) removes the segment; waiting
    requesters then get :class:`SHMPeerGoneError`. Not thread-safe: one thread serves.
    """

    def __init__(self, name: str, num_slots: int = 16, slot_size: int = 8192,
                 serialization: str = "pickle", *,
                 max_requesters: int = DEFAULT_MAX_REQUESTERS) -> None:
        self.name = validate_channel_name(name)
        self._serializer = get_serializer(serialization)
        layout = L.SegmentLayout(L.KIND_REQREP, num_slots, slot_size, max_requesters)
        self._segment = Segment.create(segment_name("reqrep", name), layout,
                                       self._serializer.encoding, name)
        self._layout = layout
        self._atom = self._segment.atom
        self._view = self._segment.view
        self._position = 0  # the next queue position to take = requests consumed
        self._bytes_total = 0
        self._current: tuple[int, int, int, int] | None = None  # row, correlation, pid, token
        self._stuck_entry = -1  # an OWNED entry we are waiting on, and when to check its owner
        self._stuck_check = 0.0
        self._finalizer = weakref.finalize(self, _close_replier, self._segment)
        self._track()

    @property
    def num_slots(self) -> int:
        """How many requests can wait in the queue."""
        return self._layout.num_slots

    @property
    def slot_size(self) -> int:
        """Largest request or reply payload in bytes."""
        return self._layout.slot_size

    def _ensure_open(self) -> None:
        if not self._finalizer.alive:
            raise SHMClosedError(f"replier of channel {self.name!r} is closed")

    def recv(self, timeout: float | None = None) -> Any:
        """The next request, deserialized; None if none arrived within ``timeout`` seconds.

        ``timeout=None`` waits without limit, ``0`` only checks. The request becomes the one
        :meth:`send` answers; receiving again without replying leaves the previous requester
        without a reply (it times out). Raises :class:`SHMSerializationError` for a request
        that cannot be decoded (it still counts as received and can be answered).
        """
        try:
            got = self._next(timeout)
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        if got is None:
            return None
        return self._serializer.decode(got[0], got[1])

    def recv_bytes(self, timeout: float | None = None) -> bytes | None:
        """The next request's payload bytes, whatever its encoding; None on timeout."""
        try:
            got = self._next(timeout)
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        return None if got is None else got[0]

    def _next(self, timeout: float | None) -> tuple[bytes, int] | None:
        self._ensure_open()
        atom, lay = self._atom, self._layout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            position = self._position
            lap, slot = divmod(position, lay.num_slots)
            offset = lay.entries_offset + 8 * slot
            entry = atom.load(offset)
            if entry == L.queue_entry(lap, L.QUEUE_READY):
                return self._consume(position, slot, offset)
            longest = MAX_SLEEP
            if entry >> L.QUEUE_LAP_SHIFT != lap or (entry >> L.QUEUE_STATE_SHIFT) & 0xFF not in (
                    L.QUEUE_FREE, L.QUEUE_OWNED):
                raise SHMFormatError(f"queue entry {entry:#x} for request {position} is "
                                     "impossible: the segment is corrupted")
            if entry != L.queue_entry(lap, L.QUEUE_FREE):
                # A requester is writing this request. Normally it publishes within
                # microseconds; if it stays, check whether its writer died.
                # (Tracked across calls, so that polling with timeout=0 recovers too.)
                longest = ABANDON_CHECK_INTERVAL
                now = time.monotonic()
                if entry != self._stuck_entry:
                    self._stuck_entry = entry
                    self._stuck_check = now + ABANDON_CHECK_INTERVAL
                elif now >= self._stuck_check:
                    self._stuck_check = now + ABANDON_CHECK_INTERVAL
                    if claim_abandoned(atom, lay, offset, entry, position,
                                       self._segment.liveness):
                        if atom.compare_exchange(offset, entry,
                                                 L.queue_entry(lap + 1, L.QUEUE_FREE)):
                            atom.fetch_add(L.REQ_ABANDONED, 1)
                            self._advance(offset)
                        continue
            if timeout == 0:
                return None
            atom.store(L.REQ_REPLIER_WAITING, 1)
            try:
                # Announce, then look: a requester publishing before our announcement is
                # seen here; one publishing after it sees the flag and wakes us.
                if atom.load(offset) == entry and not sleep_on(atom, offset, entry, deadline,
                                                               longest):
                    return None
            finally:
                atom.store(L.REQ_REPLIER_WAITING, 0)

    def _consume(self, position: int, slot: int, offset: int) -> tuple[bytes, int]:
        lay, view = self._layout, self._view
        buf = lay.buffer(slot)
        try:
            seq, _ts, length, encoding, _flags = L.SLOT_HEADER.unpack_from(view, buf)
            correlation, row, pid, token = L.REQUEST_META.unpack_from(view, buf + L.BUF_EXTRA)
            bad = seq != position or length > lay.slot_size or row >= lay.max_subscribers
            data = b"" if bad else bytes(view[buf + L.BUFFER_HEADER_SIZE:
                                              buf + L.BUFFER_HEADER_SIZE + length])
        except ValueError as exc:
            self._raise_if_closed_meanwhile(exc)
            raise
        # The copy is complete before the release store that lets a requester reuse the slot.
        self._advance(offset)
        if bad:
            raise SHMFormatError(f"request {position} has an impossible header (seq {seq}, "
                                 f"{length} bytes, row {row}): the segment is corrupted")
        self._bytes_total += length
        self._atom.store(L.BYTES_TOTAL, self._bytes_total)
        self._current = (row, correlation, pid, token)
        return data, encoding

    def _advance(self, offset: int) -> None:
        """Free the slot of the current position and move to the next one."""
        atom = self._atom
        lap = self._position // self._layout.num_slots
        atom.store(offset, L.queue_entry(lap + 1, L.QUEUE_FREE))
        self._position += 1
        atom.store(L.HEAD, self._position)
        if atom.load(L.REQ_PRODUCERS_WAITING):
            atom.wake(offset)

    def send(self, obj: Any) -> bool:
        """Serialize ``obj`` and send it as the reply to the request last received.

        Returns True once the reply is in the requester's mailbox, False if that requester
        has left (the reply is dropped and counted in ``stats()["orphaned"]``). Raises
        ``ValueError`` if no request awaits a reply or the reply does not fit in a slot, and
        :class:`SHMSerializationError` if ``obj`` cannot be serialized; nothing is sent then.
        """
        try:
            return self._reply(self._serializer.encode(obj), self._serializer.encoding)
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, False)

    def send_bytes(self, data: BytesLike) -> bool:
        """Send raw bytes (any C-contiguous buffer) as the reply to the request last received.

        Same rules as :meth:`send`.
        """
        try:
            return self._reply(as_bytes(data), RAW.encoding)
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, False)

    def _reply(self, data: BytesLike, encoding: int) -> bool:
        self._ensure_open()
        if self._current is None:
            raise ValueError("no request awaits a reply: call recv() first "
                             "(each request gets exactly one reply)")
        length = len(data)
        check_size(length, self._layout.slot_size, "reply")
        row, correlation, pid, token = self._current
        self._current = None
        atom, lay, view = self._atom, self._layout, self._view
        rec = lay.record(row)
        state = atom.load(rec + L.REC_STATE)
        if (state & 0xFF != L.STATE_ACTIVE or state >> L.STATE_BITS != pid
                or atom.load(rec + L.REC_START_TOKEN) != token):
            atom.fetch_add(L.REQ_ORPHANED, 1)
            return False
        word = rec + L.REC_REPLY
        # Seqlock: mark the mailbox as being written, fence so the payload writes cannot
        # become visible before the mark, write, then publish the id.
        atom.store(word, correlation | L.REPLY_WRITING)
        atom.fence()
        buf = lay.buffer(lay.num_slots + row)
        try:
            L.SLOT_HEADER.pack_into(view, buf, correlation, time.time_ns(), length, encoding, 0)
            start = buf + L.BUFFER_HEADER_SIZE
            view[start:start + length] = data
        except ValueError as exc:
            self._raise_if_closed_meanwhile(exc)
            raise
        atom.store(word, correlation)
        atom.fetch_add(L.REQ_REPLIES, 1)
        if atom.load(L.WAITERS) >> row & 1:
            atom.wake(word)
        return True

    def stats(self) -> dict[str, Any]:
        """Counters of this channel (a snapshot). Rows of dead requesters are freed here.

        ``requests`` taken from the queue; ``replies`` written; ``pending`` requests claimed
        but not yet received; ``abandoned`` requests whose requester died while writing them;
        ``orphaned`` replies dropped because their requester had left; ``requesters``
        attached now.
        """
        atom, lay = self._atom, self._layout
        if self._finalizer.alive:
            ring.reap_dead_records(atom, lay, self._segment.liveness)
        return {
            "channel": self.name,
            "segment": self._segment.name,
            "requests": self._position - atom.load(L.REQ_ABANDONED),
            "replies": atom.load(L.REQ_REPLIES),
            "pending": max(0, atom.load(L.QUEUE_TAIL) - self._position),
            "abandoned": atom.load(L.REQ_ABANDONED),
            "orphaned": atom.load(L.REQ_ORPHANED),
            "requesters": len(ring.read_records(atom, lay)),
            "num_slots": lay.num_slots,
            "slot_size": lay.slot_size,
            "max_requesters": lay.max_subscribers,
            "bytes_total": self._bytes_total,
            "serialization": self._serializer.name,
            "pid": os.getpid(),
        }

    def close(self) -> None:
        """Close the channel and remove its segment. Idempotent."""
        self._finalizer()

    def __enter__(self) -> Replier:
        return self

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._position} requests"
        return f"<Replier {self.name!r} {self.num_slots}x{self.slot_size} {state}>"


# --- Requester -------------------------------------------------------------------------------

class Requester(ForkAware):
    """A client of request/reply channel ``name``: sends requests, receives their replies.

    Waits up to ``timeout_connect`` seconds for the replier, then raises
    :class:`SHMConnectionError`. One request is outstanding at a time: :meth:`recv` returns
    the reply to the last request sent, and a reply to an earlier request (one given up on
    after a timeout) is dropped when it arrives. Several requesters, in any processes, may
    share a replier; each gets only its own replies. A requester that dies never wedges the
    replier. ``trusted_users`` (user names or uids): whose repliers to accept besides this
    process's own user and root (docs/security.md); another user's segment raises
    :class:`SHMUntrustedSegmentError`, at attach and at reconnect. Not thread-safe: use one
    Requester per thread.
    """

    def __init__(self, name: str, timeout_connect: float = 5.0,
                 serialization: str = "pickle", *, trusted_users: TrustedUsers = None) -> None:
        self.name = validate_channel_name(name)
        self._serializer = get_serializer(serialization)
        self._trusted = trusted_uids(trusted_users)
        self._correlation: int | None = None
        self._sent = 0
        self._received = 0
        self._given_up = 0
        self._timeouts = 0
        self._reconnects = 0
        self._connect(attach_segment("reqrep", L.KIND_REQREP, name, timeout_connect,
                                     "replier", self._trusted))

    def _connect(self, segment: Segment) -> None:
        try:
            row = claim_row(segment, "requester", "Replier")
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
        self._pid = os.getpid()
        self._token = self._atom.load(self._rec + L.REC_START_TOKEN)
        self._next_check = time.monotonic() + LIVENESS_CHECK_INTERVAL
        self._gone = False
        self._finalizer = weakref.finalize(self, release_row, segment, row)
        self._track()

    def _ensure_open(self) -> None:
        if not self._finalizer.alive:
            raise SHMClosedError(f"requester of channel {self.name!r} is closed")

    def _replier_gone(self, force: bool = False) -> bool:
        """Whether the replier closed or died (the process check runs every 0.2 s)."""
        if self._atom.load(L.CLOSED):
            return True
        now = time.monotonic()
        if force or now >= self._next_check:
            self._next_check = now + LIVENESS_CHECK_INTERVAL
            self._gone = not self._segment.owner_alive()
        return self._gone

    def _ensure_replier(self) -> None:
        """Raise SHMPeerGoneError if the replier is gone, after trying a restarted one."""
        if not self._replier_gone(force=self._gone):
            return
        if self._segment.replaced():
            try:
                segment = Segment.attach(self._segment.name, self.name, L.KIND_REQREP,
                                         trusted=self._trusted)
            except SHMUntrustedSegmentError:
                raise
            except (FileNotFoundError, SHMConnectionError, SHMFormatError):
                pass
            else:
                self._finalizer()
                self._connect(segment)
                self._correlation = None
                self._reconnects += 1
                if not self._replier_gone(force=True):
                    return
        raise SHMPeerGoneError(f"the replier of channel {self.name!r} has closed or died")

    def send(self, obj: Any, *, timeout: float | None = None) -> bool:
        """Serialize ``obj`` and send it as a request; returns True once it is queued.

        Its reply comes from :meth:`recv`; any earlier request's reply will be dropped when it
        arrives. If the replier's queue
        is full this waits up to ``timeout`` seconds (None: no limit) and then raises
        :class:`SHMBufferFullError`. Raises ``ValueError`` if the request does not fit in a
        slot, :class:`SHMSerializationError` if ``obj`` cannot be serialized (nothing is sent
        then) and :class:`SHMPeerGoneError` if the replier has closed or died.
        """
        try:
            return self._send(self._serializer.encode(obj), self._serializer.encoding,
                              timeout)
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, False)

    def send_bytes(self, data: BytesLike, *, timeout: float | None = None) -> bool:
        """Send raw bytes (any C-contiguous buffer) as a request; returns True once queued.

        Same rules as :meth:`send`.
        """
        try:
            return self._send(as_bytes(data), RAW.encoding, timeout)
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, False)

    def _send(self, data: BytesLike, encoding: int, timeout: float | None) -> bool:
        self._ensure_open()
        length = len(data)
        check_size(length, self._layout.slot_size, "request")
        self._ensure_replier()
        deadline = None if timeout is None else time.monotonic() + timeout
        correlation = (self._atom.fetch_add(L.REQ_LAST_CORRELATION, 1) + 1) & ~L.REPLY_WRITING
        if not self._enqueue(data, encoding, correlation, deadline):
            raise SHMBufferFullError(
                f"the request queue of channel {self.name!r} ({self._layout.num_slots} slots) "
                f"stayed full for {timeout} s: the replier is not keeping up"
            )
        if self._correlation is not None:
            self._given_up += 1
        self._correlation = correlation
        self._sent += 1
        self._atom.store(self._rec + L.REC_CURSOR, self._start + self._sent)
        return True

    def _enqueue(self, data: BytesLike, encoding: int, correlation: int,
                 deadline: float | None) -> bool:
        atom, lay = self._atom, self._layout
        num_slots, claim = lay.num_slots, self._rec + L.REC_CLAIM
        while True:
            position = atom.load(L.QUEUE_TAIL)
            lap, slot = divmod(position, num_slots)
            offset = lay.entries_offset + 8 * slot
            entry = atom.load(offset)
            entry_lap = entry >> L.QUEUE_LAP_SHIFT
            if entry == L.queue_entry(lap, L.QUEUE_FREE):
                owned = L.queue_entry(lap, L.QUEUE_OWNED, self.row)
                # Record the claim first, so that the replier can tell, should we die
                # holding the slot, that the claim is ours and abandoned.
                atom.store(claim, position + 1)
                if not atom.compare_exchange(offset, entry, owned):
                    atom.store(claim, 0)
                    continue
                atom.compare_exchange(L.QUEUE_TAIL, position, position + 1)
                try:
                    self._write_request(slot, position, data, encoding, correlation)
                    published = atom.compare_exchange(offset, owned,
                                                      L.queue_entry(lap, L.QUEUE_READY))
                finally:
                    atom.store(claim, 0)
                if published:
                    if atom.load(L.REQ_REPLIER_WAITING):
                        atom.wake(offset)
                    return True
                continue  # the replier took us for dead and freed the slot: claim again
            if entry_lap >= lap:
                # Position already claimed by someone whose tail update is still to come.
                atom.compare_exchange(L.QUEUE_TAIL, position, position + 1)
                continue
            # The slot still holds the request num_slots positions back: the queue is full.
            if self._replier_gone():
                # (A restarted replier is picked up by the next send, with a fresh id.)
                raise SHMPeerGoneError(
                    f"the replier of channel {self.name!r} closed or died while its queue "
                    "was full")
            atom.fetch_add(L.REQ_PRODUCERS_WAITING, 1)
            try:
                if atom.load(offset) == entry and not sleep_on(atom, offset, entry, deadline):
                    return False
            finally:
                atom.fetch_add(L.REQ_PRODUCERS_WAITING, -1)

    def _write_request(self, slot: int, position: int, data: BytesLike, encoding: int,
                       correlation: int) -> None:
        lay, view = self._layout, self._view
        buf = lay.buffer(slot)
        start = buf + L.BUFFER_HEADER_SIZE
        try:
            view[start:start + len(data)] = data
            L.SLOT_HEADER.pack_into(view, buf, position, time.time_ns(), len(data), encoding, 0)
            L.REQUEST_META.pack_into(view, buf + L.BUF_EXTRA, correlation, self.row, self._pid,
                                     self._token)
        except ValueError as exc:
            self._raise_if_closed_meanwhile(exc)
            raise

    def recv(self, timeout: float | None = None) -> Any:
        """The reply to the last request sent, deserialized; None if it did not come in time.

        ``timeout=None`` waits without limit (but raises :class:`SHMPeerGoneError` if the
        replier closes or dies first); ``0`` only checks. After a timeout the request is still
        outstanding: call ``recv`` again, or :meth:`send` a new one. Raises ``ValueError`` if
        no request is outstanding. A reply that is itself None is indistinguishable from a
        timeout here: use :meth:`request` for that.
        """
        try:
            got = self._next(timeout)
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        if got is None:
            return None
        return self._serializer.decode(got[0], got[1])

    def recv_bytes(self, timeout: float | None = None) -> bytes | None:
        """The payload bytes of the reply to the last request; None on timeout."""
        try:
            got = self._next(timeout)
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        return None if got is None else got[0]

    def request(self, obj: Any, timeout: float = 5.0) -> Any:
        """Send ``obj`` and return the deserialized reply, waiting at most ``timeout`` s.

        Raises :class:`SHMTimeoutError` if the queue stayed full or the reply did not come in
        time (a late reply is then dropped), :class:`SHMPeerGoneError` if the replier is gone,
        and what :meth:`send` raises.
        """
        deadline = time.monotonic() + timeout
        try:
            self._send(self._serializer.encode(obj), self._serializer.encoding, timeout)
        except SHMBufferFullError as exc:
            self._timeouts += 1
            raise SHMTimeoutError(f"no reply from channel {self.name!r} within {timeout} s: "
                                  "the request queue stayed full") from exc
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        try:
            got = self._next(max(0.0, deadline - time.monotonic()))
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        if got is None:
            self._timeouts += 1
            raise SHMTimeoutError(f"no reply from channel {self.name!r} within {timeout} s")
        return self._serializer.decode(got[0], got[1])

    def _next(self, timeout: float | None) -> tuple[bytes, int] | None:
        self._ensure_open()
        want = self._correlation
        if want is None:
            raise ValueError("no request is outstanding: call send() first")
        atom, lay, view = self._atom, self._layout, self._view
        word = self._rec + L.REC_REPLY
        deadline = None if timeout is None else time.monotonic() + timeout
        bit = 1 << self.row
        while True:
            value = atom.load(word)
            if value == want:
                buf = lay.buffer(lay.num_slots + self.row)
                try:
                    seq, _ts, length, encoding, _flags = L.SLOT_HEADER.unpack_from(view, buf)
                    start = buf + L.BUFFER_HEADER_SIZE
                    data = bytes(view[start:start + min(length, lay.slot_size)])
                except ValueError as exc:
                    self._raise_if_closed_meanwhile(exc)
                    raise
                # Seqlock check: the fence orders the copy before the re-load.
                atom.fence()
                if atom.load(word) != want:
                    continue
                if seq != want or length > lay.slot_size:
                    raise SHMFormatError(f"reply {want} has an impossible header (id {seq}, "
                                         f"{length} bytes): the segment is corrupted")
                self._correlation = None
                self._received += 1
                return data, encoding
            if self._replier_gone():
                if atom.load(word) == want:
                    continue
                raise SHMPeerGoneError(
                    f"the replier of channel {self.name!r} closed or died before replying")
            if timeout == 0:
                return None
            atom.fetch_or(L.WAITERS, bit)
            try:
                # Announce, then look (the replier stores the id, then reads our bit).
                if atom.load(word) == value and not sleep_on(atom, word, value, deadline):
                    return None
            finally:
                atom.fetch_and(L.WAITERS, ~bit & _MASK64)

    def stats(self) -> dict[str, Any]:
        """This requester's counters: ``sent``, ``received`` (replies), ``given_up`` (requests
        whose reply was still due when the next one was sent: their replies are dropped),
        ``timeouts`` (of :meth:`request`),
        ``replier_alive``, ``reconnects`` (to a restarted replier), ``row``."""
        self._ensure_open()
        return {
            "channel": self.name,
            "sent": self._sent,
            "received": self._received,
            "given_up": self._given_up,
            "timeouts": self._timeouts,
            "outstanding": self._correlation is not None,
            "replier_alive": not self._replier_gone(force=True),
            "reconnects": self._reconnects,
            "row": self.row,
        }

    def close(self) -> None:
        """Leave the channel (frees this requester's row). Idempotent. A task awaiting
        :meth:`request_async` wakes and gets :class:`SHMClosedError`."""
        if self._ready is not None:
            self._ready.close()
        self._finalizer()

    def __enter__(self) -> Requester:
        return self

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._sent} sent"
        return f"<Requester {self.name!r} row={self.row} {state}>"

    # --- event loops (notify.py, aio.py) ---

    _ready: Readiness | None = None

    async def request_async(self, obj: Any, timeout: float = 5.0) -> Any:
        """Await the reply to ``obj``: the awaitable :meth:`request`, same errors.

        Nothing spins while it waits, for a free queue slot or for the reply. If it is
        cancelled after the request went out, that request is given up as after a timeout
        of :meth:`request` (its reply is dropped when it comes). Raises
        :class:`SHMClosedError` if the requester is closed, also while it waits. One task at
        a time may await a requester.
        """
        from . import aio

        deadline = time.monotonic() + timeout
        data, encoding = self._serializer.encode(obj), self._serializer.encoding
        while True:
            try:
                self._send(data, encoding, 0)
                break
            except SHMBufferFullError as exc:
                if time.monotonic() >= deadline:
                    self._timeouts += 1
                    raise SHMTimeoutError(f"no reply from channel {self.name!r} within "
                                          f"{timeout} s: the request queue stayed full") from exc
            await self._wait_async(aio, self._queue_full_watch, deadline)
        while True:
            got = self._next(0)
            if got is not None:
                return self._serializer.decode(got[0], got[1])
            if time.monotonic() >= deadline:
                self._timeouts += 1
                raise SHMTimeoutError(f"no reply from channel {self.name!r} within {timeout} s")
            await self._wait_async(aio, self._reply_watch, deadline)

    async def _wait_async(self, aio: Any, arm: Any, deadline: float) -> None:
        """Arm with ``arm(ready)`` (False: look again now) and wait up to ``MAX_SLEEP`` (the
        replier's liveness is checked between waits, as in :meth:`recv`); the watch never
        outlives the wait."""
        if self._ready is None:
            self._ensure_open()
            self._ready = ready = Readiness()
            weakref.finalize(self, ready.close)
        ready = self._ready
        withdraw = arm(ready)
        if withdraw is None:
            return
        try:
            await aio.wait_readable(ready, min(MAX_SLEEP, max(0.0, deadline - time.monotonic())),
                                    f"requester of {self.name!r}")
        finally:
            if ready.disarm():
                withdraw()
        self._ensure_open()

    def _reply_watch(self, ready: Readiness) -> Callable[[], None] | None:
        atom, bit, word = self._atom, 1 << self.row, self._rec + L.REC_REPLY

        def withdraw() -> None:
            atom.fetch_and(L.WAITERS, ~bit & _MASK64)

        # Announce, then look (the replier stores the id, then reads our bit).
        atom.fetch_or(L.WAITERS, bit)
        value = atom.load(word)
        if (value != self._correlation and not atom.load(L.CLOSED)
                and ready.arm(atom, word, value, L.WAITERS, bit,
                              notify.WITHDRAW_BITS)):
            return withdraw
        withdraw()
        return None

    def _queue_full_watch(self, ready: Readiness) -> Callable[[], None] | None:
        atom, lay = self._atom, self._layout
        position = atom.load(L.QUEUE_TAIL)
        offset = lay.entries_offset + 8 * (position % lay.num_slots)

        def withdraw() -> None:
            atom.fetch_add(L.REQ_PRODUCERS_WAITING, -1)

        # Announce, then look (the replier frees the slot, then reads the count).
        atom.fetch_add(L.REQ_PRODUCERS_WAITING, 1)
        entry = atom.load(offset)
        still_full = entry >> L.QUEUE_LAP_SHIFT < position // lay.num_slots
        if still_full and ready.arm(atom, offset, entry,
                                    L.REQ_PRODUCERS_WAITING, 1, notify.WITHDRAW_COUNT):
            return withdraw
        withdraw()
        return None
