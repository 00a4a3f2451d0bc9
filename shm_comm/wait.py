"""How a receiver waits for the next message: the only module that sleeps.

Three strategies, chosen by ``poll_interval``:

* ``None`` (default): sleep in the kernel on the segment's doorbell word (a futex on Linux),
  which every wake-up bumps after changing ``head`` or ``closed``, and be woken by the
  publisher's next send, typically within tens of microseconds, using no CPU meanwhile.
  Whatever retires a segment wakes its sleepers: the publisher's ``close()``, a new publisher
  reclaiming a dead one's segment, ``remove_stale``; closing the subscriber itself (from
  another thread) wakes it too. Sleeps are cut into slices of at most ``SUBSCRIBER_SLICE``
  seconds: that is when a subscriber notices a publisher killed outright (nothing wakes it
  then), and the safety net for the one wake-up that can be lost, the publisher dying
  between storing ``head`` and waking (see docs/design.md, "Publisher gone").
  Platforms without futexes fall back to polling every ``FALLBACK_POLL`` seconds.
  Adaptive spinning: when the previous wait ended within ``QUICK_WAIT`` (messages are
  coming back to back, as in request/response loops), the next wait first polls ``head``
  for up to ``SPIN`` before sleeping, which saves the sleep/wake round trip. A slow or
  silent channel never spins.
* ``0``: busy-wait. Lowest latency; burns a whole core. Avoid on small machines.
* ``> 0``: sleep that many seconds between polls (the tuning guide's 100 µs knob).
"""

from __future__ import annotations

import time

from . import layout as L
from ._atomic import AtomicBuffer, has_futex

__all__ = ["FALLBACK_POLL", "MAX_SLEEP", "OBSERVER_POLL", "QUICK_WAIT", "SPIN", "SUBSCRIBER_SLICE",
           "Waiter"]

MAX_SLEEP = 0.05  # request/reply and push/pull waits, which also watch their peers
SUBSCRIBER_SLICE = 10.0  # a silent channel costs a subscriber one wake-up per 10 s
FALLBACK_POLL = 100e-6
OBSERVER_POLL = 0.002
QUICK_WAIT = 200e-6  # a wait this short means messages come back to back...
SPIN = 50e-6  # ...so the next wait polls this long before it sleeps


class Waiter:
    """Waits until ``head`` passes a cursor, the channel closes, or a deadline passes."""

    def __init__(self, poll_interval: float | None, observer: bool = False) -> None:
        if poll_interval is not None and poll_interval < 0:
            raise ValueError(f"poll_interval must be None, 0 or positive, got {poll_interval}")
        self.poll_interval = poll_interval
        self.observer = observer
        self.use_futex = poll_interval is None and bool(has_futex)
        self._spin_next = False

    def wait(self, atom: AtomicBuffer, cursor: int, deadline: float | None,
             waiter_bit: int) -> bool:
        """Block until a message past ``cursor`` may be there; False once ``deadline`` passed.

        Returns True early now and then (a slice ended, the channel closed): callers re-check
        their own conditions and call again. ``deadline`` is a ``time.monotonic()`` value;
        ``waiter_bit`` the reader's bit in the ``waiters`` word (0 for none).
        """
        if self.poll_interval == 0:
            return self._spin(atom, cursor, deadline)
        remaining = SUBSCRIBER_SLICE if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            return False
        if not self.use_futex:
            interval = FALLBACK_POLL if self.poll_interval is None else self.poll_interval
            time.sleep(min(interval, remaining))
            return True
        if self.observer:
            # Observers never write to the segment, so nobody wakes them on purpose; they
            # still wake at once when a subscriber's wake-up is broadcast.
            atom.wait_past(L.HEAD, cursor, L.WAITERS, 0, L.CLOSED, L.DOORBELL,
                           min(remaining, OBSERVER_POLL))
            return True
        started = time.perf_counter()
        if self._spin_next:
            load, clock = atom.load, time.perf_counter
            until = started + min(SPIN, remaining)
            while load(L.HEAD) <= cursor:
                if clock() >= until:
                    break
            else:
                return True  # arrived while spinning: keep spinning next time
        # Announce, look, sleep, withdraw: one C call (see _atomic.c for the ordering).
        atom.wait_past(L.HEAD, cursor, L.WAITERS, waiter_bit, L.CLOSED, L.DOORBELL,
                       min(remaining, SUBSCRIBER_SLICE))
        self._spin_next = time.perf_counter() - started < QUICK_WAIT
        return True

    def futex_sleep(self, deadline: float | None) -> float | None:
        """Seconds the next wait may sleep on the futex straight away, or None when it must go
        through :meth:`wait` (spinning first, polling, an observer, or the deadline passed).

        For callers that do the sleep themselves together with their receive (one C call);
        they report how long it took with :meth:`slept`.
        """
        if not self.use_futex or self.observer or self._spin_next:
            return None
        if deadline is None:
            return SUBSCRIBER_SLICE
        remaining = deadline - time.monotonic()
        return min(remaining, SUBSCRIBER_SLICE) if remaining > 0 else None

    def slept(self, seconds: float) -> None:
        """After a :meth:`futex_sleep`: a short wait means messages come back to back."""
        self._spin_next = seconds < QUICK_WAIT

    def _spin(self, atom: AtomicBuffer, cursor: int, deadline: float | None) -> bool:
        load = atom.load
        spins = 0
        while load(L.HEAD) <= cursor:
            spins += 1
            if spins & 0x3FF == 0:
                if load(L.CLOSED):
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        return True


def sleep(seconds: float) -> None:
    """Sleep; the one entry point for code that must pause (blocking sends, retries)."""
    time.sleep(seconds)
