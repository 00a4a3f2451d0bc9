"""What every channel end shares: its segment name, closed state, ``with`` exit, and letting go
of its segment in a ``fork()``ed child.

A child shares the parent's open file descriptions: keeping them would keep the creator's
liveness lock held after the parent died, and the child's exit handlers would close the
parent's channel or free its row. So in a child every live end becomes closed, untouched.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from .segment import Segment

__all__ = ["ForkAware"]


class ForkAware:
    """Base of the classes that own a segment handle (publishers, subscribers, queues).

    Subclasses call :meth:`_track` once their ``_finalizer`` and ``_segment`` exist.
    """

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

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _track(self) -> None:
        _LIVE.add(self)

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
