"""Reading one channel on a widget's thread: as an observer, waiting for the channel to
appear, following a restarted publisher, and the status a widget shows of it.

Each widget reads its channel with ``ArraySubscriber(name, observer=True)`` on its own
daemon thread, so it never slows the publisher or changes its drop count, and notebook
cells stay responsive.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from typing import Any

import shm_comm
from shm_comm.errors import SHMError

RETRY_INTERVAL = 0.5
"""Seconds between attempts to find a missing channel or a restarted publisher."""
STALE_AFTER = 2.0
"""Seconds without a new message after which a live channel is shown as stale."""


class _ChannelWatch:
    """Reads one channel as an observer; waits for it to appear, follows restarts.

    ``start_with_newest``: start with the newest message already published (an image view
    shows the last image at once), else with the next one.

    The core's subscriber re-attaches by itself when a restarted publisher replaces the
    segment (checked when its ``stats()`` are read); its ``reconnects`` counter tells us to
    describe the channel again (the dtype may have changed) and start afresh. Subclasses
    say what they need to know about the dtype in :meth:`_describe` (ValueError if it does
    not fit) and read in their own way.
    """

    start_with_newest = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.subscriber: Any = None
        self.alive = False
        self.status = "waiting"
        self.status_text = "waiting for publisher"
        self.generation = 0  # +1 on each (re)connection: the window restarts
        self.missed = 0  # messages the publisher overwrote before we read them
        self._missed_before = 0  # from earlier subscribers (after an error)
        self.last_arrival = 0.0  # time.monotonic() of the last message
        self._described = False
        self._reconnects = 0
        self._next_check = -math.inf
        self._rate_marks: collections.deque[tuple[float, int]] = collections.deque()

    def close(self) -> None:
        if self.subscriber is not None:
            with contextlib.suppress(Exception):
                self.subscriber.close()
        self._missed_before = self.missed
        self.subscriber = None

    def _describe(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _connected(self) -> None:
        self._described = False
        self._describe()
        self._described = True
        self.generation += 1
        self._rate_marks.clear()
        self.last_arrival = time.monotonic()

    def _connect(self) -> None:
        if shm_comm.channel_info(self.name) is None:
            self.status, self.status_text = "waiting", "waiting for publisher"
            return
        self.subscriber = shm_comm.ArraySubscriber(self.name, observer=True, timeout_connect=1.0,
                                                   latest=self.start_with_newest)  # fmt: skip
        self._reconnects = 0
        self._described = False
        self._connected()

    def _check(self, now: float) -> None:
        """Every RETRY_INTERVAL: connect, notice restarts, update the status."""
        if now < self._next_check:
            return
        self._next_check = now + RETRY_INTERVAL
        if self.subscriber is None:
            self._connect()
            if self.subscriber is None:
                return
        stats = self.subscriber.stats()  # also switches to a restarted publisher
        self.alive = bool(stats.get("publisher_alive"))
        self.missed = self._missed_before + self._dropped(stats)
        if stats.get("reconnects", 0) != self._reconnects or not self._described:
            self._reconnects = stats.get("reconnects", 0)
            self._connected()
        if not self.alive:
            self.status, self.status_text = "gone", "publisher gone"
        elif now - self.last_arrival > STALE_AFTER:
            self.status = "stale"
            self.status_text = f"no data for {now - self.last_arrival:.0f} s"
        else:
            rate = self.rate(now)
            text = f"live, {rate:.0f} msg/s" if rate else "live"
            if self.missed:
                # The observer fell more than num_slots messages behind (a busy kernel).
                text += f", {self.missed} missed"
            self.status, self.status_text = "live", text

    def _dropped(self, stats: dict[str, Any]) -> int:
        return int(stats.get("dropped", 0))

    def check(self) -> None:
        """Connect, notice restarts and update the status (at most every RETRY_INTERVAL);
        a dtype that does not fit shows as an error and is retried."""
        now = time.monotonic()
        try:
            self._check(now)
        except (ValueError, TypeError, SHMError) as err:
            # Fields that do not fit the dtype, a channel that is not a typed-array one...
            # show it, and retry later: the publisher may be restarted with another dtype.
            self.close()
            self._described = False
            self.status, self.status_text = "error", str(err)
            self._next_check = now + 2.0

    def _arrived(self, now: float, messages: int) -> None:
        self.last_arrival = now
        self._rate_marks.append(
            (now, (self._rate_marks[-1][1] if self._rate_marks else 0) + messages)
        )
        if self.status in ("stale", "waiting") and self.alive:
            self.status, self.status_text = "live", "live"

    def rate(self, now: float) -> float:
        """Messages per second over the last two seconds."""
        marks = self._rate_marks
        while len(marks) > 1 and now - marks[0][0] > 2.0:
            marks.popleft()
        if len(marks) < 2 or marks[-1][0] - marks[0][0] < 0.2:
            return 0.0
        return (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
