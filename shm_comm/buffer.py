"""Low-level reads of a channel's ring, for hand-written receive loops (tuning guide §3).

Most code should use :class:`shm_comm.Subscriber`, whose ``recv`` already waits without
spinning. ``read_message_spsc`` is for a consumer that drives its own loop, e.g. a busy-wait::

    from shm_comm.buffer import attach, read_message_spsc
    shm = attach("joints")              # read-only; changes nothing the publisher counts
    tail = shm_tail(shm)                # start with the next message
    while True:
        result = read_message_spsc(shm, tail)
        if result:
            data, tail = result
            break
"""

from __future__ import annotations

import weakref

from . import layout as L
from .errors import SHMFormatError
from .naming import segment_name
from .ring import RingReader
from .segment import Segment
from .trust import TrustedUsers, trusted_uids

__all__ = ["attach", "read_message_spsc", "shm_tail"]

_readers: weakref.WeakKeyDictionary[Segment, RingReader] = weakref.WeakKeyDictionary()


def _segment_of(shm: object) -> Segment:
    if isinstance(shm, Segment):
        return shm
    segment = getattr(shm, "_segment", None)
    if isinstance(segment, Segment):
        return segment
    raise TypeError(f"expected a Segment (shm_comm.buffer.attach) or a Subscriber, "
                    f"got {type(shm).__name__}")


def attach(channel: str, trusted_users: TrustedUsers = None) -> Segment:
    """Map pub/sub channel ``channel`` read-only. Raises ``FileNotFoundError`` if absent and
    :class:`~shm_comm.SHMUntrustedSegmentError` if its segment belongs to a user that is not
    this process's own, root, or in ``trusted_users`` (names or uids; docs/security.md)."""
    return Segment.attach(segment_name("pubsub", channel), channel, L.KIND_PUBSUB,
                          readonly=True, trusted=trusted_uids(trusted_users))


def shm_tail(shm: object) -> int:
    """The sequence number the next message will get (where a new reader starts)."""
    return _segment_of(shm).atom.load(L.HEAD)


def read_message_spsc(shm: object, tail: int) -> tuple[bytes, int] | None:
    """Read message ``tail`` without waiting: ``(payload, next_tail)``, or None if not there yet.

    If ``tail`` was already overwritten, the oldest message still in the ring is returned and
    ``next_tail`` jumps accordingly (the gap is what was lost). The payload is a copy that was
    validated against concurrent overwrites. Reads never modify the segment. A malformed
    message (a corrupted segment) raises :class:`~shm_comm.SHMFormatError` whose
    ``next_tail`` attribute is the tail to go on with (past it).
    """
    segment = _segment_of(shm)
    reader = _readers.get(segment)
    if reader is None:
        reader = RingReader(segment.atom, segment.layout, None, tail)
        _readers[segment] = reader
    reader.cursor = tail
    try:
        got = reader.take_copy()
    except SHMFormatError as exc:
        exc.next_tail = reader.cursor  # type: ignore[attr-defined]
        raise
    return None if got is None else (got[0], reader.cursor)
