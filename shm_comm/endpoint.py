"""What every channel end shares: letting go of its segment in a ``fork()``ed child.

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
