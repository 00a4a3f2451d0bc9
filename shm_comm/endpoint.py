"""What every channel end shares: its segment name, closed state, ``with`` exit, leaving its
segment while other threads may still be inside a call, and letting go of its segment in a
``fork()``ed child.

A child shares the parent's open file descriptions: keeping them would keep the creator's
liveness lock held after the parent died, and the child's exit handlers would close the
parent's channel or free its row. So in a child every live end becomes closed, untouched.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Any, TypeVar

from . import layout as L
from . import ring
from ._atomic import AtomicBuffer
from .errors import SHMClosedError
from .segment import Segment
from .wait import sleep

__all__ = ["ForkAware", "closed_call", "leave"]

T = TypeVar("T")

_exiting = False  # the interpreter is exiting: set before the exit hooks close our ends
_exit_hook_added = False


def _note_exit() -> None:
    global _exiting
    _exiting = True


def closed_call(exc: SHMClosedError, timeout: float | None, result: T) -> T:
    """What a public call does when its end is closed (``except SHMClosedError as exc``).

    Raises ``exc``, except in other threads than the main one while the interpreter exits:
    the exit hooks close every end, and daemon threads may still be inside (or about to
    make) calls on them. Those calls then behave as on a silent channel, without a
    traceback: they sleep out ``timeout`` (None: until the interpreter stops the thread) and
    return ``result`` (None, an empty batch, False for a send: nothing is published).
    """
    if not _exiting or threading.current_thread() is threading.main_thread():
        raise exc  # (the main thread runs the exit hooks themselves: it must not sleep)
    if timeout is None:
        while True:
            sleep(3600.0)
    sleep(max(0.0, timeout))
    return result


def leave(segment: Segment, row: int | None) -> None:
    """Close a channel end's handle of ``segment``, first freeing its ``row`` (if any).

    Other threads of this process may be inside a call on the same end (close from another
    thread, garbage collection, interpreter exit): the segment is refused to them first (a
    call asleep in one wakes and raises :class:`SHMClosedError`; the mapping stays until it
    has left, see docs/design.md), and only then is the row freed, through a private handle,
    so no thread of ours writes to the row once it may be somebody else's.
    """
    if segment.closed:
        return
    segment.atom.release()
    if row is not None:
        atom = AtomicBuffer(segment.view)
        try:
            lay = segment.layout
            state = atom.load(lay.record(row) + L.REC_STATE)
            if state >> L.STATE_BITS == os.getpid() and state & 0xFF == L.STATE_ACTIVE:
                ring.release_record(atom, lay, row, state)
        finally:
            atom.release()
        segment.liveness.unclaim(row)  # (after the row is free: see ring.RowLiveness)
    segment.close()


class ForkAware:
    """Base of the classes that own a segment handle (publishers, subscribers, queues).

    Subclasses call :meth:`_track` once their ``_finalizer`` and ``_segment`` exist.
    """

    name: str
    _finalizer: weakref.finalize[..., Any]
    _segment: Segment
    _closed: bool = False

    @property
    def segment_name(self) -> str:
        """The shared-memory object's name (in ``/dev/shm`` on Linux)."""
        return self._segment.name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or this is a ``fork()``ed copy)."""
        return self._closed or not self._finalizer.alive

    def close(self) -> None:
        """Release this end of the channel. Idempotent."""
        raise NotImplementedError

    def _raise_if_closed_meanwhile(self, exc: ValueError) -> None:
        """From an ``except ValueError``: if this end was closed while the call ran (another
        thread closed it; a released view of the segment raises a bare ValueError), raise
        :class:`SHMClosedError` instead. Returns otherwise, and the caller re-raises."""
        if self.closed and not isinstance(exc, SHMClosedError):
            raise SHMClosedError(f"{type(self).__name__} of {self.name!r} was closed while "
                                 "this call was using it") from exc

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _track(self) -> None:
        global _exit_hook_added
        _LIVE.add(self)
        if not _exit_hook_added:
            # Added after weakref.finalize's own exit hook (made with our first finalizer),
            # so it runs before the finalizers close the ends (exit hooks run last-in first).
            atexit.register(_note_exit)
            _exit_hook_added = True

    def _forget_in_child(self) -> None:
        self._finalizer.detach()
        self._closed = True
        self._segment.forget()


_LIVE: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def _forget_all_after_fork() -> None:
    for obj in list(_LIVE):
        obj._forget_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all_after_fork)
