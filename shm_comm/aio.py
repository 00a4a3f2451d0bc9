"""Awaiting channel ends from an event loop: what ``recv_async``, ``async for``,
``request_async`` and ``Puller.recv_async`` are made of.

Every wait here is the blocking receive's wait (docs/design.md, "Waiting") with one change:
instead of sleeping on the futex itself, the task arms the channel end's
:class:`~shm_comm.notify.Readiness` (the process's notifier thread sleeps on the futex in its
place) and awaits the descriptor. Slices, liveness checks, the back-off while a publisher is
gone and the reconnect are the same, so an awaiting receiver behaves like a blocking one.

* **asyncio** is served directly. The descriptor stays registered with the loop between
  awaits (adding and removing a reader costs ~20 µs here, more than a wake-up), and the
  loop's callback empties it and wakes the one task waiting.
* **Any other loop** (trio) goes through ``anyio.wait_readable``, an optional dependency
  (the ``async`` extra: ``pip install -e ".[async]"`` in the checkout, or ``pip install
  anyio``).

Cancellation safety: a message is taken only by the awaiting task itself, after its await
returned and in the same step as the return, so an await that is cancelled or times out has
taken nothing and the next receive gets the message. One task waits on a channel end at a
time; a second one gets ``RuntimeError`` (as trio's ``BusyResourceError`` says for sockets).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import layout as L
from ._optional import missing
from .errors import SHMClosedError
from .notify import Readiness, arm_subscriber, drain
from .wait import OBSERVER_POLL, SUBSCRIBER_SLICE

if TYPE_CHECKING:
    from .pubsub import _ChannelReader

__all__ = ["receive", "sleep", "wait_readable"]

T = TypeVar("T")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _anyio() -> Any:
    try:
        import anyio
    except ImportError as exc:  # asyncio needs nothing; other loops (trio) need anyio
        raise missing("awaiting shm_comm outside asyncio", "async", "anyio", exc) from exc
    return anyio


async def sleep(seconds: float) -> None:
    """Sleep in whatever event loop runs this."""
    if _running_loop() is not None:
        await asyncio.sleep(seconds)
    else:
        await _anyio().sleep(seconds)


class _LoopBinding:
    """A readiness descriptor registered with one asyncio loop, kept between awaits."""

    def __init__(self, ready: Readiness, loop: asyncio.AbstractEventLoop) -> None:
        self.ready = ready
        self.loop = loop
        self.waiter: asyncio.Future[bool] | None = None
        self.fd = ready.fileno()
        self.attached = ready.hold()
        if self.attached:
            loop.add_reader(ready.fileno(), self._on_readable)
            ready.binding = self
            ready.on_close = self._on_close

    def _on_readable(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
        # Level-triggered: empty it, or the loop calls us again every round. (Open for as
        # long as we are registered: the registration holds it.)
        drain(self.fd)

    def detach(self) -> None:
        """Unregister (in the loop's thread, or while the loop does not run) and wake the
        waiting task; then let go of the descriptor."""
        if not self.attached:
            return
        self.attached = False
        if self.ready.binding is self:
            self.ready.binding = None
            self.ready.on_close = None
        if not self.loop.is_closed():
            self.loop.remove_reader(self.ready.fileno())
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
        self.ready.release()

    def _on_close(self) -> None:
        # close() may run in any thread; the loop's selector belongs to the loop's thread.
        if self.loop.is_running() and _running_loop() is not self.loop:
            try:
                self.loop.call_soon_threadsafe(self.detach)
                return
            except RuntimeError:  # closed meanwhile
                pass
        self.detach()


def _binding(ready: Readiness, loop: asyncio.AbstractEventLoop) -> _LoopBinding | None:
    binding = ready.binding
    if isinstance(binding, _LoopBinding):
        if binding.loop is loop:
            return binding
        binding.detach()  # used from another loop before (a new asyncio.run, say)
    made = _LoopBinding(ready, loop)
    return made if made.attached else None


def _busy(what: str) -> RuntimeError:
    return RuntimeError(f"another task is already waiting on {what}; receive from one task "
                        "per channel end (fan out with an asyncio.Queue if several need it)")


async def wait_readable(ready: Readiness, timeout: float | None, what: str) -> bool:
    """Wait until ``ready`` is readable (True) or ``timeout`` seconds passed (False).

    Returns True at once if ``ready`` is closed. ``what`` names the channel end in errors.
    """
    loop = _running_loop()
    if loop is None:
        return await _wait_readable_anyio(ready, timeout, what)
    binding = _binding(ready, loop)
    if binding is None:
        return True  # closed
    if binding.waiter is not None:
        raise _busy(what)
    waiter: asyncio.Future[bool] = loop.create_future()
    binding.waiter = waiter
    timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
    try:
        return await waiter
    finally:
        binding.waiter = None
        if timer is not None:
            timer.cancel()


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


async def _wait_readable_anyio(ready: Readiness, timeout: float | None, what: str) -> bool:
    anyio = _anyio()
    if not ready.hold():
        return True
    try:
        with anyio.move_on_after(timeout) as scope:
            try:
                await anyio.wait_readable(ready.fileno())
            except anyio.BusyResourceError:
                raise _busy(what) from None
            ready.clear()
        return not scope.cancelled_caught
    finally:
        ready.release()


# --- subscribers (pubsub.py, arrays.py) ----------------------------------------------------

async def subscriber_wait(end: _ChannelReader, deadline: float | None) -> bool:
    """The awaitable twin of ``_ChannelReader._wait``: wait for the next message; False when
    the deadline passed. Returns True early now and then (callers look again)."""
    from .pubsub import DEAD_POLL, DEAD_POLL_MAX

    if end._alive and end._next_check:
        # About to wait for the doorbell: whatever matters rings it (see _wait).
        if deadline is not None and time.monotonic() >= deadline:
            return False
    else:
        now = end._idle_check()
        if deadline is not None and now >= deadline:
            return False
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not end._alive:
        # Nothing will ring: look for a restarted publisher as recv does (10 ms, backing off
        # to 200 ms).
        end._dead_polls += 1
        pause = min(DEAD_POLL_MAX, DEAD_POLL * end._dead_polls)
        await sleep(pause if remaining is None else min(pause, remaining))
        end._next_check = 0.0
        return True
    end._dead_polls = 0
    ready = end._readiness()
    segment, reader = end._segment, end._reader
    # The watch itself fires at the end of a slice, so that the loop needs no timer unless
    # the caller gave a timeout.
    longest = OBSERVER_POLL if end.observer else SUBSCRIBER_SLICE
    if ready.armed or arm_subscriber(ready, segment.atom, reader.cursor, reader.waiter_bit,
                                     longest):
        await wait_readable(ready, remaining, f"subscriber of {end.name!r}")
    if not end._closed and segment.atom.load(L.HEAD) <= reader.cursor:
        end._next_check = 0.0  # woken without a message: check the publisher next round
    return True


async def receive(end: _ChannelReader, take: Callable[[], T | None],
                  timeout: float | None) -> T | None:
    """Await the next message of a subscriber: ``take()`` is its non-blocking receive.

    Returns None at the timeout (``timeout=None``: no limit; ``0``: only look). Raises
    :class:`SHMClosedError` if the subscriber is closed, or is closed while this waits (as a
    blocking receive in another thread does).
    """
    end._ensure_open()
    got = take()
    if got is not None or timeout == 0:
        if got is None:
            end._idle_check()
        return got
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        waited = await subscriber_wait(end, deadline)
        if end._closed:
            raise SHMClosedError(f"subscriber of channel {end.name!r} was closed while a task "
                                 "awaited it")
        got = take()  # (SHMClosedError if another thread closes it just now)
        if got is not None or not waited:
            return got
