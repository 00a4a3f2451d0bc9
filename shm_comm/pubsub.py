"""Publisher and Subscriber: named pub/sub channels over a shared-memory ring.

A thin layer over ``ring.py`` (the algorithm), ``segment.py`` (the OS), ``wait.py`` (sleeping)
and ``serialization.py`` (bytes). Semantics, in short (docs/design.md has the details):

* A publisher never blocks by default. A subscriber that falls more than ``num_slots``
  messages behind loses the oldest ones, and every loss is counted: with one subscriber,
  ``received + pub.stats()["drop_count"] == sent`` exactly.
* Each subscriber has its own cursor: a slow or stalled one never costs the others anything.
* A subscriber that attaches late starts with the next message (``latest=True``: with the
  newest one already there). Observers (``observer=True``) map the segment read-only and
  change nothing the publisher does or counts.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterable
from typing import Any

from . import layout as L
from . import notify, ring
from .endpoint import ForkAware, closed_call, leave
from .errors import SHMClosedError, SHMConnectionError, SHMUntrustedSegmentError
from .naming import segment_name, validate_channel_name
from .notify import Readiness
from .ring import RingReader, RingWriter
from .segment import Segment
from .serialization import RAW, get_serializer
from .trust import TrustedUsers, trusted_uids
from .wait import OBSERVER_POLL, SUBSCRIBER_SLICE, Waiter, sleep

_time_ns = time.time_ns
_RAW_ENCODING = RAW.encoding

__all__ = ["Publisher", "Subscriber"]

BytesLike = bytes | bytearray | memoryview

LIVENESS_CHECK_INTERVAL = 0.2
DEAD_POLL = 0.01  # a subscriber whose publisher is gone looks for a new one this often...
DEAD_POLL_MAX = 0.2  # ...backing off to this
CONNECT_POLL = 0.002
BLOCKING_SEND_POLL = 50e-6


def _close_segment(segment: Segment, writer: RingWriter | None) -> None:
    if writer is not None and not segment.closed:
        writer.close()
        segment.unlink()
    segment.close()


class Publisher(ForkAware):
    """The single writer of a pub/sub channel.

    ``num_slots`` messages fit in the ring; each holds up to ``slot_size`` bytes of payload.
    ``max_subscribers`` (at most 64) bounds concurrent subscribers. ``permissions`` is the
    segment's file mode: owner-only 0o600 by default; 0o640/0o660 share with the owner's group
    (docs/security.md). Creating a publisher for a
    channel whose previous publisher died reclaims the segment; a channel with a live
    publisher raises :class:`SHMConnectionError`. ``close()`` (also on ``with`` exit, garbage
    collection and interpreter exit) removes the segment; subscribers then see the publisher
    as gone. Not thread-safe: send from one thread at a time.
    """

    def __init__(self, name: str, num_slots: int = 64, slot_size: int = 4096,
                 serialization: str = "pickle", *, max_subscribers: int = 32,
                 permissions: int = 0o600) -> None:
        self._serializer = get_serializer(serialization)
        self._create_channel(name, num_slots, slot_size, max_subscribers,
                             self._serializer.encoding, permissions=permissions)

    def _create_channel(self, name: str, num_slots: int, slot_size: int, max_subscribers: int,
                        encoding: int, metadata: bytes = b"", permissions: int = 0o600,
                        max_holders: int = 0) -> None:
        # Plain subscribers copy, so a plain channel needs no buffers for zero-copy holders.
        self.name = validate_channel_name(name)
        layout = L.SegmentLayout(L.KIND_PUBSUB, num_slots, slot_size, max_subscribers,
                                 max_holders)
        self._segment = Segment.create(segment_name("pubsub", name), layout, encoding, name,
                                       metadata, permissions)
        self._writer = RingWriter(self._segment.atom, self._segment.view, layout)
        self._layout = layout
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_segment, self._segment, self._writer)
        self._track()

    @property
    def num_slots(self) -> int:
        """Ring depth: how many messages a subscriber may lag before it loses some."""
        return self._layout.num_slots

    @property
    def slot_size(self) -> int:
        """Largest payload in bytes."""
        return self._layout.slot_size

    def send(self, obj: Any, *, block: bool = False, timeout: float | None = None) -> bool:
        """Serialize ``obj`` and publish it; returns True once published.

        With ``block=False`` (default) it always publishes; subscribers that are a whole ring
        behind lose their oldest message (counted in ``drop_count``). With ``block=True`` it
        first waits until no active subscriber would lose anything, for at most ``timeout``
        seconds (None: no limit), and returns False, publishing nothing, if time ran out.
        Raises ``ValueError`` if the serialized message does not fit in a slot and
        :class:`SHMSerializationError` if ``obj`` cannot be serialized; nothing is sent then.
        """
        serializer = self._serializer
        try:
            if block:
                data = serializer.encode(obj)
                if self._closed or self._writer.write_if_room(data, serializer.encoding,
                                                              _time_ns()) is None:
                    return self._publish(data, serializer.encoding, True, timeout)
                return True
            if self._closed:
                return self._publish(serializer.encode(obj), serializer.encoding, block, timeout)
            self._writer.write(serializer.encode(obj), serializer.encoding, _time_ns())
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, False)
        return True

    def send_bytes(self, data: BytesLike, *, block: bool = False,
                   timeout: float | None = None) -> bool:
        """Publish raw bytes (any buffer, e.g. ``arr.tobytes()``) with no serializer.

        Same blocking rules and errors as :meth:`send`.
        """
        try:
            if block:  # the common case, room for it, in the same one call as without block
                if self._closed or self._writer.write_if_room(data, _RAW_ENCODING,
                                                              _time_ns()) is None:
                    return self._publish(data, _RAW_ENCODING, True, timeout)
                return True
            if self._closed:
                return self._publish(data, _RAW_ENCODING, block, timeout)
            self._writer.write(data, _RAW_ENCODING, _time_ns())  # the common case, inlined
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, False)
        return True

    def _publish(self, data: BytesLike, encoding: int, block: bool,
                 timeout: float | None) -> bool:
        if self._closed:
            raise SHMClosedError(f"publisher of channel {self.name!r} is closed")
        if block and not self._wait_for_room(timeout):
            return False
        self._writer.write(data, encoding, _time_ns())
        return True

    def send_batch(self, objs: Iterable[Any], *, block: bool = False,
                   timeout: float | None = None) -> int:
        """Serialize and publish several objects at once; returns how many (0 on timeout).

        Cheaper per message than :meth:`send`: one head update and one wake-up for all.
        ``block``/``timeout`` as for :meth:`send`, waiting for room for the whole batch
        (which must then fit in the ring). If any message does not fit in a slot,
        ``ValueError`` is raised and nothing is published.
        """
        encode = self._serializer.encode
        return self._publish_many([encode(obj) for obj in objs], self._serializer.encoding,
                                  block, timeout)

    def send_bytes_batch(self, payloads: Iterable[BytesLike], *, block: bool = False,
                         timeout: float | None = None) -> int:
        """Publish several raw payloads at once (see :meth:`send_batch`); returns how many."""
        return self._publish_many(
            [p if type(p) is bytes else memoryview(p).cast("B") for p in payloads], RAW.encoding,
            block, timeout)

    def _publish_many(self, payloads: list[bytes | memoryview], encoding: int, block: bool,
                      timeout: float | None) -> int:
        if block and len(payloads) > self._layout.num_slots:
            raise ValueError(f"a blocking batch of {len(payloads)} messages cannot fit in "
                             f"a ring of {self._layout.num_slots} slots")
        try:
            if self._closed:
                raise SHMClosedError(f"publisher of channel {self.name!r} is closed")
            if block and not self._wait_for_room(timeout, len(payloads)):
                return 0
            return self._writer.write_many(payloads, encoding, time.time_ns())
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, 0)

    def _wait_for_room(self, timeout: float | None, count: int = 1) -> bool:
        has_room = self._writer.has_room  # in C, scanning the rows only when it must
        if has_room(count):
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        next_reap = time.monotonic() + 0.1
        while True:
            if has_room(count):
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if now >= next_reap:
                ring.reap_dead_records(self._segment.atom, self._layout,
                                       self._segment.liveness)
                next_reap = now + 0.1
            sleep(BLOCKING_SEND_POLL)

    def stats(self) -> dict[str, Any]:
        """Counters of this channel (a snapshot; exact once subscribers are idle).

        ``msg_count`` messages sent; ``drop_count`` messages lost, summed over subscribers
        (including ones a stalled subscriber has not noticed yet); ``free_slots`` how many more
        messages fit before the slowest subscriber loses one; ``subscribers`` attached now;
        ``holders`` of the ``max_holders`` zero-copy places taken; ``shm_bytes`` of shared
        memory the channel takes; and shm-comm 1.0's ``head``, ``tail``, ``used_slots`` (see
        :func:`shm_comm.ring.ring_counters`). Subscribers whose process died are removed here.
        """
        atom, lay = self._segment.atom, self._layout
        if not self._closed:
            ring.reap_dead_records(atom, lay, self._segment.liveness)
        return {
            "channel": self.name,
            "segment": self._segment.name,
            **ring.ring_counters(atom, lay),
            "subscribers": len(ring.read_records(atom, lay)),
            "bytes_total": self._writer.bytes_total,
            "serialization": self._serializer.name,
            "pid": os.getpid(),
            "max_holders": lay.max_holders,
            "holders": ring.holder_count(atom),
            "shm_bytes": self._segment.shm_bytes,
        }

    def close(self) -> None:
        """Close the channel and remove its segment. Idempotent."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> Publisher:
        return self

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._writer.head} sent"
        return f"<Publisher {self.name!r} {self.num_slots}x{self.slot_size} {state}>"


def _release_reader(segment: Segment, reader: RingReader | None) -> None:
    leave(segment, None if reader is None else reader.row)


class _ChannelReader(ForkAware):
    """Attaching, reconnecting, waiting and accounting shared by all subscriber kinds."""

    _holding_enabled = False  # whether this reader has a zero-copy place (typed channels)
    _copied_views = 0  # views it was refused and given copies instead

    _kind = L.KIND_PUBSUB

    def __init__(self, name: str, *, timeout_connect: float, latest: bool, observer: bool,
                 poll_interval: float | None, trusted_users: TrustedUsers = None) -> None:
        self.name = validate_channel_name(name)
        if timeout_connect < 0:
            raise ValueError(f"timeout_connect must be >= 0, got {timeout_connect}")
        self._trusted = trusted_uids(trusted_users)
        self._latest = latest
        self.observer = observer
        self._waiter = Waiter(poll_interval, observer)
        self._segment_name = segment_name("pubsub", name)
        self._reconnects = 0
        self._received_before = 0
        self._dropped_before = 0
        self._malformed_before = 0
        self._torn_before = 0
        self._next_check = 0.0
        self._alive = True
        self._dead_polls = 0
        self._closed = False
        self._segment, self._reader = self._attach(timeout_connect, latest)
        self._finalizer = weakref.finalize(self, _release_reader, self._segment, self._reader)
        self._track()

    def _attach(self, timeout: float, latest: bool, from_oldest: bool = False
                ) -> tuple[Segment, RingReader]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                segment = Segment.attach(self._segment_name, self.name, self._kind,
                                         readonly=self.observer, trusted=self._trusted)
                break
            except FileNotFoundError:
                if time.monotonic() >= deadline:
                    raise SHMConnectionError(
                        f"no publisher for channel {self.name!r} appeared within {timeout} s "
                        f"(segment {self._segment_name}); start the publisher first or raise "
                        "timeout_connect"
                    ) from None
                sleep(CONNECT_POLL)
        try:
            atom, lay = segment.atom, segment.layout
            if self.observer:
                head = atom.load(L.HEAD)
                cursor = max(0, head - lay.num_slots) if from_oldest else (
                    max(0, head - 1) if latest else head)
                reader = RingReader(atom, lay, None, cursor)
            else:
                pid, live = os.getpid(), segment.liveness
                token = live.token(pid)
                # After a publisher restart, take what the new one sent before we came.
                try:
                    row, cursor = ring.claim_record(atom, lay, pid, token, latest, from_oldest,
                                                    live)
                except SHMConnectionError:
                    if not ring.reap_dead_records(atom, lay, live):
                        raise
                    row, cursor = ring.claim_record(atom, lay, pid, token, latest, from_oldest,
                                                    live)
                reader = RingReader(atom, lay, row, cursor)
        except BaseException:
            segment.close()
            raise
        return segment, reader

    def _check_publisher(self) -> None:
        """Note whether the publisher lives; switch to a restarted one if there is one.

        Raises :class:`SHMUntrustedSegmentError` if what now sits at the channel's name is
        not a segment this end trusts (it stays on the old one).
        """
        self._ensure_open()
        self._alive = self._segment.owner_alive()
        if self._alive or not self._segment.replaced():
            return
        try:
            segment, reader = self._attach(0.0, False, from_oldest=True)
        except SHMUntrustedSegmentError:
            raise
        except (FileNotFoundError, SHMConnectionError):
            return
        if self._closed:  # closed by another thread meanwhile: do not come back to life
            _release_reader(segment, reader)
            self._ensure_open()
        old_reader = self._reader
        self._received_before += old_reader.received
        self._dropped_before += old_reader.dropped
        self._malformed_before += old_reader.malformed
        self._torn_before += old_reader.torn
        self._drop_watch()
        self._finalizer()
        self._segment, self._reader = segment, reader
        self._finalizer = weakref.finalize(self, _release_reader, segment, reader)
        self._reconnects += 1
        self._alive = segment.owner_alive()
        self._on_reconnect()

    def _on_reconnect(self) -> None:
        """Hook for subclasses that cache things about the segment."""

    def _idle_check(self) -> float:
        """Every LIVENESS_CHECK_INTERVAL while no message comes: is the publisher alive, was
        it restarted? Also when only polling with timeout=0. Returns the current time."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + LIVENESS_CHECK_INTERVAL
            self._check_publisher()
        if self._ready is not None:
            self._rearm()  # a receive found nothing: fileno() turns readable at the next one
        return now

    def _wait(self, deadline: float | None) -> bool:
        """Wait for the next message; False when the deadline passed."""
        if self._waiter.use_futex and self._alive and self._next_check:
            # About to sleep on the futex: whatever matters wakes us (see wait.py), and a
            # wake without a message checks the publisher then, so no check is due now.
            if deadline is not None and time.monotonic() >= deadline:
                return False
        else:
            now = self._idle_check()
            if deadline is not None and now >= deadline:
                return False
        if not self._alive:
            # Nothing will wake us: poll for a restarted publisher, every 10 ms at first and
            # less often the longer it stays away (at most every 200 ms).
            self._dead_polls += 1
            pause = min(DEAD_POLL_MAX, DEAD_POLL * self._dead_polls)
            sleep(pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic())))
            self._next_check = 0.0
            return True
        self._dead_polls = 0
        atom, cursor = self._segment.atom, self._reader.cursor
        if self._ready is not None:
            self._park()
        woke = self._waiter.wait(atom, cursor, deadline, self._reader.waiter_bit)
        if self._waiter.use_futex and atom.load(L.HEAD) <= cursor:
            # Woken without a message: a slice ended, or the segment was closed or retired
            # (a reclaiming publisher wakes us). Check the publisher on the next round.
            self._next_check = 0.0
        return woke

    def _ensure_open(self) -> None:
        if self._closed:
            raise SHMClosedError(f"subscriber of channel {self.name!r} is closed")

    @property
    def publisher_alive(self) -> bool:
        """Whether the channel's publisher is alive and has not closed the channel."""
        self._ensure_open()
        try:
            self._check_publisher()
        except SHMUntrustedSegmentError:
            return False  # recv says why
        return self._alive

    def stats(self) -> dict[str, Any]:
        """This subscriber's counters: ``received``, ``dropped``, ``cursor``, ``pending``...

        ``dropped`` counts messages that were evicted before this subscriber read them (it
        learns of them when it next receives), and messages skipped by ``recv_latest``.
        ``malformed`` counts messages a receive consumed by raising :class:`SHMFormatError`
        (a corrupted length or typed-array header; they count in ``received`` too, as
        undecodable ones do). ``torn_reads`` counts reads the reader check threw away because
        the publisher overwrote the message while it was being copied (each is also in
        ``dropped``): a sign that this subscriber falls a whole ring behind mid-copy. The
        channel's counters come with them under shm-comm 1.0's keys (``head``, ``tail``,
        ``msg_count``, ``drop_count``, ``used_slots``, ``free_slots``...: see
        :func:`shm_comm.ring.ring_counters`), and ``local_tail``, 1.0's name for ``cursor``.
        Zero-copy places (typed channels): ``zero_copy`` (this subscriber has one),
        ``copied_views`` (``recv(copy=False)`` calls answered with a copy because all were
        taken; observers always copy and count none), ``holders`` and ``max_holders``
        (taken and available on the channel).
        """
        self._ensure_open()
        reader = self._reader
        return {
            **ring.ring_counters(self._segment.atom, self._segment.layout),
            "local_tail": reader.cursor,
            "channel": self.name,
            "received": self._received_before + reader.received,
            "dropped": self._dropped_before + reader.dropped,
            "malformed": self._malformed_before + reader.malformed,
            "torn_reads": self._torn_before + reader.torn,
            "cursor": reader.cursor,
            "pending": reader.pending(),
            "publisher_alive": self.publisher_alive,
            "reconnects": self._reconnects,
            "observer": self.observer,
            "zero_copy": self._holding_enabled,
            "copied_views": self._copied_views,
            "holders": ring.holder_count(self._segment.atom),
            "max_holders": self._segment.layout.max_holders,
        }

    def close(self) -> None:
        """Leave the channel (frees this subscriber's row). Idempotent.

        Safe while another thread is inside a call on this subscriber: that call returns at
        once by raising :class:`SHMClosedError`, and the mapping lives until it has left.
        Zero-copy views received earlier stay memory-safe, but their contents may change
        once the subscriber is closed. A task awaiting this subscriber wakes: ``async for``
        ends, ``recv_async`` raises :class:`SHMClosedError`; ``fileno()``'s descriptor is
        closed.
        """
        self._closed = True
        if self._ready is not None:
            self._ready.close()
        self._finalizer()

    # --- event loops: fileno() and the awaitable receives (logic in notify.py, aio.py) ---

    _ready: Readiness | None = None

    def fileno(self) -> int:
        """A file descriptor that is readable while a message is waiting for this subscriber.

        For ``selectors``, ``loop.add_reader``, Qt's ``QSocketNotifier``. Level-triggered,
        with one rule: it can stay readable after the last waiting message was taken, until
        a receive finds nothing (``recv(timeout=0)`` returning None, an empty batch), which
        re-arms it. So when it fires, receive with ``timeout=0`` until nothing is left. It
        may also fire when nothing is there (a publisher restart, a blocking receive in
        between); receiving nothing then re-arms it. Valid until :meth:`close`, which
        closes it: unregister it first. Do not wait on it in a loop in which this subscriber
        is also awaited (``recv_async``, ``async for``): those use it themselves.
        """
        self._ensure_open()
        ready = self._readiness()
        self._rearm()
        return ready.fileno()

    def _readiness(self) -> Readiness:
        if self._ready is None:
            self._ensure_open()
            self._ready = ready = Readiness()
            weakref.finalize(self, ready.close)
        return self._ready

    def _rearm(self) -> None:
        """Arm the readiness descriptor unless it is armed; readable if something is there."""
        ready = self._ready
        if ready is None or ready.closed or ready.armed:
            return
        atom, reader = self._segment.atom, self._reader
        if not self._alive:
            # Nothing rings a dead publisher's doorbell: look again when recv would.
            if not ready.arm(atom, L.DOORBELL, atom.load(L.DOORBELL), bump=True,
                             timeout=DEAD_POLL_MAX):
                ready.set()
        elif not notify.arm_subscriber(ready, atom, reader.cursor, reader.waiter_bit,
                                       OBSERVER_POLL if self.observer else SUBSCRIBER_SLICE):
            ready.set()  # (the slice: a look at the publisher now and then, as recv does)

    def _park(self) -> None:
        """A blocking receive is about to sleep, announcing itself with the same bit: take the
        watch back. The descriptor turns readable (nothing is known from now on)."""
        ready = self._ready
        if ready is not None and not ready.closed:
            notify.disarm_subscriber(ready, self._segment.atom, self._reader.waiter_bit)
            ready.set()

    def _drop_watch(self) -> None:
        """The segment is about to be replaced (a reconnect): its record, and the watch's
        announcement with it, goes; the descriptor turns readable."""
        if self._ready is not None and not self._ready.closed:
            self._ready.disarm()
            self._ready.set()



class Subscriber(_ChannelReader):
    """One reader of a pub/sub channel, receiving every message in order while it keeps up.

    ``serialization`` must match the publisher's (``recv_bytes`` works with any). Waits up
    to ``timeout_connect`` seconds for the channel to appear, then raises
    :class:`SHMConnectionError`. ``latest=True`` starts with the newest message already
    published; ``observer=True`` watches read-only without being counted or waited for.
    ``poll_interval``: None wakes promptly without spinning (default), 0 busy-waits, a
    positive value sleeps that many seconds between polls.

    Only a segment owned by this process's user (or root) is accepted, at attach and at every
    reconnect; ``trusted_users`` (user names or uids) adds the users whose publishers you
    mean to receive from (docs/security.md). Another user's segment at the channel's name
    raises :class:`SHMUntrustedSegmentError`, unread. Not thread-safe.
    """

    def __init__(self, name: str, timeout_connect: float = 5.0, serialization: str = "pickle",
                 *, latest: bool = False, observer: bool = False,
                 poll_interval: float | None = None,
                 trusted_users: TrustedUsers = None) -> None:
        self._serializer = get_serializer(serialization)
        super().__init__(name, timeout_connect=timeout_connect, latest=latest,
                         observer=observer, poll_interval=poll_interval,
                         trusted_users=trusted_users)

    def _take(self) -> tuple[bytes, int] | None:
        got = self._reader.take_copy()
        if got is None:
            return None
        data, self.last_encoding, self.last_timestamp_ns, self.last_seq = got
        return data, self.last_encoding

    def _next(self, timeout: float | None) -> tuple[bytes, int] | None:
        self._ensure_open()
        got = self._take()
        if got is not None:
            return got
        if timeout == 0:
            self._idle_check()
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slept, taken = self._sleep_and_take(deadline)
            if taken is not None:
                data, self.last_encoding, self.last_timestamp_ns, self.last_seq = taken
                return data, self.last_encoding
            if slept:
                continue
            if not self._wait(deadline):
                return self._take()
            got = self._take()
            if got is not None:
                return got

    def _sleep_and_take(self, deadline: float | None
                        ) -> tuple[bool, tuple[bytes, int, int, int] | None]:
        """Take, sleep on the futex, take: one C call, so nothing runs in Python around the
        wake-up. ``(False, None)`` when this wait must go through :meth:`_wait` instead
        (spinning first, polling, a publisher to check, the deadline passed)."""
        sleep_for = self._waiter.futex_sleep(deadline) if self._alive and self._next_check else None
        if sleep_for is None:
            return False, None
        if self._ready is not None:
            self._park()
        started = time.perf_counter()
        taken = self._reader.take_copy(sleep=sleep_for)
        self._waiter.slept(time.perf_counter() - started)
        if taken is None:
            self._next_check = 0.0  # woken without a message: check the publisher
        return True, taken

    def recv(self, timeout: float | None = None) -> Any:
        """The next message, deserialized; None if none arrived within ``timeout`` seconds.

        ``timeout=None`` waits until a message arrives (also across a publisher restart);
        ``0`` only checks. Raises :class:`SHMSerializationError` for a message that cannot be
        decoded and :class:`SHMFormatError` for a malformed one (a corrupted segment; counted
        in ``stats()["malformed"]``): either way it is consumed, once, and the next call
        returns the next message. :class:`SHMClosedError` if this subscriber is closed,
        also by another thread while this call waits.
        """
        try:
            got = self._take() if not self._closed else None
            if got is None:
                got = self._next(timeout)
                if got is None:
                    return None
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        return self._serializer.decode(got[0], got[1])

    def recv_bytes(self, timeout: float | None = None) -> bytes | None:
        """The next message's payload bytes, whatever its encoding; None on timeout.

        Errors as for :meth:`recv` (a malformed message raises once and is consumed)."""
        try:
            if not self._closed:  # the common cases first: a message is waiting, or will be
                taken = self._reader.take_copy()
                if taken is None and timeout is None:
                    taken = self._sleep_and_take(None)[1]
                if taken is not None:
                    data, self.last_encoding, self.last_timestamp_ns, self.last_seq = taken
                    return data
            got = self._next(timeout)
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        return None if got is None else got[0]

    def recv_bytes_batch(self, max_n: int = 1000, timeout: float = 0.0) -> list[bytes]:
        """All waiting messages (up to ``max_n``) as payload bytes, oldest first.

        Waits up to ``timeout`` seconds for the first one; may return an empty list. Much
        cheaper per message than :meth:`recv_bytes` when messages queue up.
        """
        return self._take_many(max_n, timeout)[0]

    def _take_many(self, max_n: int, timeout: float) -> tuple[list[bytes], list[int]]:
        # (payloads, encodings) of up to max_n waiting messages, waiting up to timeout for one
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        try:
            self._ensure_open()
            payloads, encodings = self._reader.take_many(max_n)
            if not payloads and timeout:
                deadline = time.monotonic() + timeout
                while not payloads and self._wait(deadline):
                    payloads, encodings = self._reader.take_many(max_n)  # (replaced on reconnect)
            if not payloads:
                self._idle_check()
        except SHMClosedError as exc:
            return closed_call(exc, timeout, ([], []))
        return payloads, encodings

    def recv_batch(self, max_n: int = 1000, timeout: float = 0.0) -> list[Any]:
        """All waiting messages (up to ``max_n``), deserialized, oldest first.

        Raises :class:`SHMSerializationError` if one cannot be decoded (the batch up to it is
        consumed with it; the channel stays usable).
        """
        payloads, encodings = self._take_many(max_n, timeout)
        decode = self._serializer.decode
        return [decode(p, e) for p, e in zip(payloads, encodings, strict=True)]

    def recv_latest(self, timeout: float | None = None) -> Any:
        """The newest message, skipping (and counting as dropped) any older unread ones."""
        try:
            self._ensure_open()
            self._reader.skip_to_latest()
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        return self.recv(timeout)

    def __enter__(self) -> Subscriber:
        return self

    def __repr__(self) -> str:
        kind = "observer" if self.observer else "subscriber"
        return f"<Subscriber {self.name!r} {kind} cursor={self._reader.cursor}>"

    last_timestamp_ns: int = 0
    """Publisher's send time of the last received message, ns since the epoch."""
    last_seq: int = -1
    """Sequence number of the last received message (-1 before the first)."""
    last_encoding: int = -1
    """Encoding of the last received message (``shm_comm.layout.ENCODING_*``)."""

    @property
    def last_timestamp(self) -> float | None:
        """Publisher's send time of the last received message, seconds since the epoch."""
        return self.last_timestamp_ns / 1e9 if self.last_seq >= 0 else None

    # --- event loops (aio.py) ---

    async def recv_async(self, timeout: float | None = None) -> Any:
        """Await the next message, deserialized; None if none arrived within ``timeout`` s.

        The awaitable :meth:`recv`, for asyncio (also inside Jupyter's running loop) and,
        through anyio, trio. Nothing spins while it waits: a shared helper thread sleeps on
        the channel's futex for it (docs/event-loops.md). Cancelling it (or
        ``asyncio.timeout``) loses no message: the next receive gets it. Raises
        :class:`SHMClosedError` if the subscriber is closed, also while it waits (as a
        blocking ``recv`` in another thread does). One task at a time may await a subscriber.
        """
        got = await self._receive_async(timeout)
        return None if got is None else self._serializer.decode(got[0], got[1])

    async def recv_bytes_async(self, timeout: float | None = None) -> bytes | None:
        """Await the next message's payload bytes (see :meth:`recv_async`)."""
        got = await self._receive_async(timeout)
        return None if got is None else got[0]

    async def recv_batch_async(self, max_n: int = 1000, timeout: float | None = None
                               ) -> list[Any]:
        """Await at least one message, then return all waiting ones (up to ``max_n``),
        deserialized, oldest first; an empty list if none came within ``timeout`` seconds
        (None: no limit). :class:`SHMClosedError` as for :meth:`recv_async`."""
        from . import aio

        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        def take() -> tuple[list[bytes], list[int]] | None:
            batch = self._take_many(max_n, 0.0)
            return batch if batch[0] else None

        got = await aio.receive(self, take, timeout)
        if got is None:
            return []
        payloads, encodings = got
        decode = self._serializer.decode
        return [decode(p, e) for p, e in zip(payloads, encodings, strict=True)]

    async def _receive_async(self, timeout: float | None) -> tuple[bytes, int] | None:
        from . import aio

        return await aio.receive(self, self._take, timeout)

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Any:
        """``async for msg in sub``: every message, until the subscriber is closed."""
        from . import aio

        try:
            got = await aio.receive(self, self._take, None)
        except SHMClosedError:
            raise StopAsyncIteration from None
        if got is None:  # (not with timeout=None; for the type checker)
            raise StopAsyncIteration
        return self._serializer.decode(got[0], got[1])
