"""The StatsMonitor widget: a live table of channel statistics (it subscribes to nothing)."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from typing import Any

import traitlets

import shm_comm
from shm_comm.errors import SHMError

from ._base import _CSS, _asset, _ThreadedWidget

__all__ = ["StatsMonitor"]


class StatsMonitor(_ThreadedWidget):
    """A small live table of channel statistics, from :func:`shm_comm.channel_info`.

    Args:
        channels: channel names (they need not exist yet).
        interval: seconds between updates (default 0.33, about 3 Hz).
        autostart: start polling immediately (else call :meth:`start`).

    Per channel: publisher state and pid, message rate (Hz) and bandwidth over the last
    second, messages and drops so far, subscriber count, age of the newest message, and the
    shared memory (``/dev/shm``) the channel takes. It only
    reads the segment header, it subscribes to nothing. ``rows`` holds the same numbers for
    Python code.
    """

    _esm = _asset("statsmonitor.js")
    _css = _CSS

    channels = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    rows = traitlets.List(traitlets.Dict(), read_only=True).tag(sync=True)

    def __init__(
        self, channels: Iterable[str] | str, *, interval: float = 0.33, autostart: bool = True
    ) -> None:
        names = [channels] if isinstance(channels, str) else list(channels)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise TypeError(f"channels must be a list of channel names, got {channels!r}")
        if not 0.05 <= interval <= 60:
            raise ValueError(f"interval must be 0.05 to 60 seconds, got {interval!r}")
        super().__init__()
        self.set_trait("channels", names)
        self.interval = float(interval)
        self._history: dict[str, collections.deque[tuple[float, int, int, int, Any]]] = {
            n: collections.deque() for n in names
        }
        if autostart:
            self.start()

    def __repr__(self) -> str:
        return f"StatsMonitor({list(self.channels)!r})"

    def row(self, channel: str) -> dict[str, Any]:
        """The latest statistics of one channel (KeyError if it is not monitored)."""
        for r in self.rows:
            if r["channel"] == channel:
                return dict(r)
        raise KeyError(channel)

    def _run(self) -> None:
        while not self._stop_event.is_set():
            tick = time.monotonic()
            self.set_trait("rows", [self._row(name, tick) for name in self.channels])
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - tick)))

    def _row(self, name: str, now: float) -> dict[str, Any]:
        try:
            info = shm_comm.channel_info(name)
        except (SHMError, OSError, ValueError) as err:
            info = None
            error = str(err)
        else:
            error = ""
        history = self._history[name]
        if info is None:
            history.clear()
            return {
                "channel": name, "state": "missing",
                "publisher_text": error or "waiting for publisher", "publisher_alive": None,
                "rate_hz": None, "bytes_per_s": None, "drops_per_s": None, "msg_count": None,
                "drop_count": None, "subscribers": None, "age_s": None, "shm_bytes": None,
            }  # fmt: skip
        pid = info.get("publisher_pid")
        alive = bool(info.get("publisher_alive"))
        count = int(info.get("msg_count") or 0)
        nbytes = int(info.get("bytes_total") or 0)
        drops = int(info.get("drop_count") or 0)
        if history and (history[-1][4] != pid or history[-1][1] > count):
            history.clear()  # a new publisher: counters restarted
        history.append((now, count, nbytes, drops, pid))
        while len(history) > 2 and now - history[1][0] >= 1.0:
            history.popleft()
        rate = bandwidth = drop_rate = None
        if len(history) >= 2 and history[-1][0] - history[0][0] > 0.1:
            dt = history[-1][0] - history[0][0]
            rate = (history[-1][1] - history[0][1]) / dt
            bandwidth = (history[-1][2] - history[0][2]) / dt
            drop_rate = (history[-1][3] - history[0][3]) / dt
        stamp = info.get("last_timestamp")
        age = max(0.0, time.time() - float(stamp)) if stamp else None
        return {
            "channel": name, "state": "alive" if alive else "gone",
            "publisher_text": f"pid {pid}" if alive else f"gone (pid {pid})",
            "publisher_alive": alive, "rate_hz": rate, "bytes_per_s": bandwidth,
            "drops_per_s": drop_rate, "msg_count": count, "drop_count": drops,
            "subscribers": info.get("subscribers"), "age_s": age,
            "shm_bytes": info.get("shm_bytes"),
        }  # fmt: skip
