"""Reading one channel on a widget's thread: as an observer, waiting for the channel to
appear, following a restarted publisher, and the status a widget shows of it; and what the
widgets of one channel (LivePlot, ImageView) share: the channel, the status, pause and resume.

Each widget reads its channel with ``ArraySubscriber(name, observer=True)`` on its own
daemon thread, so it never slows the publisher or changes its drop count, and notebook
cells stay responsive.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import traitlets

import shm_comm
from shm_comm.errors import SHMError

from ._pacing import _StreamWidget

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


def _check_channel(channel: object) -> None:
    """TypeError unless ``channel`` is a non-empty str (the name's syntax is checked when the
    reader connects, and shows as the widget's error status)."""
    if not isinstance(channel, str) or not channel:
        raise TypeError(f"channel must be a non-empty str, got {channel!r}")


class _ChannelWidget(_StreamWidget):
    """A streaming widget of one channel: the channel, its status, pause and resume.

    Subclasses check the channel with :func:`_check_channel` before anything else, read it on
    their thread (keeping ``_status`` up to date) and say in :meth:`_resumed` what a resume
    asks of that thread.
    """

    channel = traitlets.Unicode(read_only=True).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    paused = traitlets.Bool(False).tag(sync=True)

    def __init__(self, channel: str, **traits: Any) -> None:
        super().__init__(**traits)
        self.set_trait("channel", channel)
        self._status = ("waiting", "waiting for publisher")
        self.observe(self._on_paused, names="paused")

    @property
    def status(self) -> str:
        """One of waiting, live, stale, gone, error, stopped (see :mod:`shm_comm.widgets`)."""
        return self._status[0]

    @property
    def status_text(self) -> str:
        """The status as shown in the widget's badge."""
        return self._status[1]

    def pause(self) -> None:
        """Freeze the display; the channel is still read, and :meth:`resume` shows what is
        new (a plot everything that came meanwhile, an image view the newest image)."""
        self.paused = True

    def resume(self) -> None:
        """Resume live updates after :meth:`pause`."""
        self.paused = False

    def _wait_until(self, count: Callable[[], int], n: int, timeout: float) -> bool:
        """Block until ``count()`` reaches ``n``; False on timeout (seconds) or if the thread
        stopped."""
        deadline = time.monotonic() + timeout
        while count() < n:
            if time.monotonic() > deadline or not self.running:
                return False
            time.sleep(0.02)
        return True

    def _on_paused(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            self._resumed()

    def _resumed(self) -> None:  # pragma: no cover - overridden
        """The view was resumed (kernel main thread): what the reader thread should send."""
        raise NotImplementedError
