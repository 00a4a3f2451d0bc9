"""The exceptions shm_comm raises.

Misuse (a bad argument, a payload too large for its slot) raises the built-in ``ValueError`` or
``TypeError``. Everything that goes wrong with shared memory, a peer or the bytes in a segment
raises a subclass of :class:`SHMError`, so ``except SHMError`` catches every failure of the
transport without hiding programming errors.
"""

from __future__ import annotations

__all__ = [
    "SHMBufferFullError",
    "SHMClosedError",
    "SHMConnectionError",
    "SHMError",
    "SHMFormatError",
    "SHMPeerGoneError",
    "SHMSerializationError",
    "SHMTimeoutError",
    "SHMUntrustedSegmentError",
]


class SHMError(Exception):
    """Base class of every transport error raised by shm_comm."""


class SHMConnectionError(SHMError):
    """A segment could not be created or attached.

    Raised when a subscriber gave up waiting for its publisher (``timeout_connect``), when a
    channel already has a live publisher, or when the operating system refused the segment
    (for example ``/dev/shm`` is full).
    """


class SHMTimeoutError(SHMError, TimeoutError):
    """A blocking call that promises an answer (such as ``Requester.request``) timed out."""


class SHMBufferFullError(SHMError):
    """A non-blocking send found no free slot in a queue that must not drop messages."""


class SHMSerializationError(SHMError):
    """A message could not be serialized, or received bytes could not be deserialized.

    The channel stays usable: the offending message is consumed and counted as received.
    """


class SHMFormatError(SHMError):
    """A segment or message header is not in a format this version of shm_comm can read.

    This covers segments made by another program, by an incompatible version of shm_comm, and
    segments whose header bytes were corrupted.
    """


class SHMClosedError(SHMError, ValueError):
    """This channel end is closed: it was closed before the call, or while the call was in
    progress (``close()`` from another thread, garbage collection, interpreter exit).

    A call asleep in another thread when the end is closed wakes at once and raises this
    (docs/design.md, "Closing while calls are in flight"). It is also a ``ValueError``, which
    calls on a closed end raised before it existed.
    """


class SHMPeerGoneError(SHMConnectionError):
    """The process on the other end of a channel exited or closed the channel."""


class SHMUntrustedSegmentError(SHMConnectionError):
    """The segment at a channel's name is not one this process may trust.

    It belongs to a user this channel end does not trust, can be written by every user, or is
    not a regular file (a symbolic link, a FIFO). Nothing was read from it. The message names
    the owner and what to do: trust that user explicitly (``trusted_users=``, see
    docs/security.md) or have the segment removed.
    """
