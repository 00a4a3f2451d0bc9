"""How a widget's frames reach the browser: paced by the browser's acknowledgements between
cells, by time and a budget shared by all widgets while a cell runs.

Design (the why):

* **Paced by the browser.** The front end acknowledges each frame after drawing it and
  Python keeps at most ``MAX_UNACKED`` frames unacknowledged (as jupyter_rfb does), aiming
  at about ``FRAME_RATE`` frames per second. The acknowledgements of all widgets of a kernel
  share one message, at most every 50 ms (each comm message makes the kernel publish
  busy/idle, which JupyterLab redraws its indicators for; ``widgets/scheduler.js``).
* **Kernel busy: time-based pacing.** Acknowledgements are comm messages, which the kernel
  reads only between cells (its shell channel handles one request at a time, and the running
  cell is one). While a cell runs, a widget whose view acknowledged frames shortly before
  (or that was displayed by the running cell while the page was live) streams without
  acknowledgements: at most ``FRAME_RATE`` frames per second each, and all such widgets
  together within ``BLIND_FRAMES_PER_S`` messages and ``BLIND_BYTES_PER_S`` bytes per
  second, well under what the kernel-to-browser path carries (beyond it, messages are lost
  silently). Those frames ask for no acknowledgement (none could arrive before the cell
  ends); the front end keeps only the newest image. The kernel learns that a cell starts
  and ends from IPython's ``pre_run_cell``/``post_run_cell`` events. Without a recent view
  the widget falls back to one frame per ``STALL_TIMEOUT`` seconds.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from typing import Any

from ._base import _ThreadedWidget

FRAME_RATE = 30.0
"""Target frames per second of a LivePlot or an ImageView."""
MAX_UNACKED = 3
"""Frames a LivePlot may have in flight before it waits for the browser's acknowledgement
(an ImageView one more; the page acknowledges at most every 50 ms, all widgets of a kernel
in one message)."""
STALL_TIMEOUT = 1.0
"""Seconds after which unacknowledged frames are assumed lost (or the kernel busy)."""
BLIND_FRAMES_PER_S = 90.0
"""While a cell runs: frames per second of all widgets together (the kernel-to-browser path
carries about 130-200 messages per second, other output included)."""
BLIND_BYTES_PER_S = 8_000_000
"""While a cell runs: bytes per second of all widgets' frames together."""
VIEWED_WITHIN = 5.0
"""Seconds before a cell started within which a view must have acknowledged a frame for the
widget to keep streaming while the cell runs."""

# Streaming widgets by widget (model) id: the front end acknowledges the frames of all views
# drawn in the same animation frame in one message, sent on one of their comms.
_STREAMS: weakref.WeakValueDictionary[str, _StreamWidget] = weakref.WeakValueDictionary()


class _KernelActivity:
    """Whether a notebook cell is running, from IPython's ``pre/post_run_cell`` events.

    Installed once, from the first streaming widget (created by a running cell, so the
    state starts as busy). Outside IPython it never reports a running cell.
    """

    def __init__(self) -> None:
        self.busy = False
        self.busy_since = -math.inf  # time.monotonic() when the running cell started
        self.last_ack = -math.inf  # the newest acknowledgement of any widget (a live page)
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - ipywidgets depends on IPython
            return
        shell = get_ipython()
        if shell is None:
            return
        shell.events.register("pre_run_cell", self._cell_starts)
        shell.events.register("post_run_cell", self._cell_ends)
        self._cell_starts(None)

    def _cell_starts(self, _info: object) -> None:
        self.busy_since = time.monotonic()
        self.busy = True

    def _cell_ends(self, _result: object) -> None:
        self.busy = False
        for widget in list(_STREAMS.values()):
            widget._wake.set()  # back to acknowledgements: send now if there is room


_ACTIVITY = _KernelActivity()


class _BlindBudget:
    """The frames and bytes per second that all widgets together may send while a cell runs.

    A token bucket for each (a burst of a few frames), plus the number of widgets streaming,
    so that each one spaces its frames by its share instead of racing the others.
    """

    BURST = 3.0

    def __init__(self, frames_per_s: float, bytes_per_s: float) -> None:
        self.frames_per_s = frames_per_s
        self.bytes_per_s = bytes_per_s
        self._lock = threading.Lock()
        self._frames = self.BURST
        self._bytes = bytes_per_s * self.BURST / FRAME_RATE
        self._at = time.monotonic()
        self._streaming: dict[int, float] = {}  # id(widget) -> last time it asked

    def period(self, widget: object, now: float) -> float:
        """Seconds between this widget's frames while it streams blind."""
        with self._lock:
            self._streaming[id(widget)] = now
            for key, seen in list(self._streaming.items()):
                if now - seen > 1.0:
                    del self._streaming[key]
            return max(1.0 / FRAME_RATE, len(self._streaming) / self.frames_per_s)

    def take(self, now: float, expected_bytes: int) -> bool:
        """Spend one frame of ``expected_bytes`` if the budget has it."""
        with self._lock:
            elapsed = max(0.0, now - self._at)
            self._at = now
            self._frames = min(self.BURST, self._frames + elapsed * self.frames_per_s)
            cap = self.bytes_per_s * self.BURST / FRAME_RATE
            self._bytes = min(max(cap, expected_bytes), self._bytes + elapsed * self.bytes_per_s)
            if self._frames < 1.0 or self._bytes < expected_bytes:
                return False
            self._frames -= 1.0
            self._bytes -= expected_bytes
            return True


_BLIND = _BlindBudget(BLIND_FRAMES_PER_S, BLIND_BYTES_PER_S)


class _StreamWidget(_ThreadedWidget):
    """A widget whose thread sends frames paced by acknowledgements, or by time and budget
    while a cell runs (module docstring). Subclasses call :meth:`_due` and
    :meth:`_next_frame` and handle ``ready``/``resync``/``view`` in :meth:`_on_view`."""

    _max_unacked = MAX_UNACKED

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._acked = -1
        self._frame = -1
        self._last_send = -math.inf
        self._slot = -math.inf  # where the newest frame sits in a schedule of FRAME_RATE
        self._last_ack = -math.inf  # time.monotonic() of this widget's newest acknowledgement
        self._displayed_at = -math.inf
        self._blind = False
        self._expected_bytes = 0  # a guess at the next frame's size, for the blind budget
        _ACTIVITY.install()
        self._key = self.model_id
        _STREAMS[self._key] = self
        self.on_msg(self._on_front_end_message)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self._displayed_at = time.monotonic()
        return super()._repr_mimebundle_(**kwargs)

    @property
    def streaming_blind(self) -> bool:
        """True while a cell runs and frames go out paced by time, not acknowledgements."""
        return self._blind

    def _on_front_end_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "ack":
            frames = content.get("frames")
            if isinstance(frames, dict):
                for widget_id, frame in frames.items():
                    widget = _STREAMS.get(widget_id)
                    if widget is not None and isinstance(frame, int):
                        widget._acknowledge(frame)
            return
        if kind in ("ready", "resync"):
            with self._lock:
                self._acked = self._frame  # a new view: do not wait for old frames
        self._on_view(content)
        self._wake.set()

    def _on_view(self, content: dict[str, Any]) -> None:
        """A message from a view other than an acknowledgement (ready, resync, view size)."""

    def _acknowledge(self, frame: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._acked = max(self._acked, frame)
            self._last_ack = now
        _ACTIVITY.last_ack = now
        self._wake.set()  # a frame may be waiting for room in the window

    def _viewed(self) -> bool:
        """Whether a view is likely to be showing this widget while the current cell runs."""
        since = _ACTIVITY.busy_since
        if self._last_ack >= since - VIEWED_WITHIN:
            return True
        # Displayed by the running cell, in a notebook whose page was live just before.
        return self._displayed_at >= since and _ACTIVITY.last_ack >= since - 30.0

    def _due(self, now: float) -> str | None:
        """Whether a frame may go out now: ``"acked"``, ``"blind"`` or None (not yet)."""
        blind = _ACTIVITY.busy and self._viewed()
        if self._blind and not blind:
            with self._lock:  # the cell ended: frames sent meanwhile need no acknowledgement
                self._acked = self._frame
        self._blind = blind
        since = now - self._last_send
        if blind:
            period = _BLIND.period(self, now)
            if since < period * 0.95:
                return None
            return "blind" if _BLIND.take(now, self._expected_bytes) else None
        with self._lock:
            in_flight = self._frame - self._acked
        room = in_flight < self._max_unacked or since > STALL_TIMEOUT
        if room and now >= self._slot + 0.95 / FRAME_RATE:
            return "acked"
        return None

    def _wait_time(self, now: float) -> float:
        """How long the thread may sleep before a frame could be due (an ack wakes it)."""
        period = 1.0 / FRAME_RATE
        if self._blind:
            return max(0.002, min(period, self._last_send + period - now))
        with self._lock:
            room = self._frame - self._acked < self._max_unacked
        if room and 0 < self._slot + period - now < period:
            return self._slot + period - now
        return period

    def _mark_sent(self) -> None:
        """Record that a frame went out just now (subclasses call it for every frame)."""
        now = time.monotonic()
        self._last_send = now
        # The frame's place in a schedule of one frame per period: one that went out late
        # (it arrived late, or waited for room) does not push the next one back by a whole
        # period, so a source at FRAME_RATE is followed frame for frame despite jitter (it was
        # not: 4 % of a 30 Hz camera's frames gave way to the next); at most half a period is
        # made up, so the rate stays FRAME_RATE.
        period = 1.0 / FRAME_RATE
        self._slot = max(self._slot + period, now - period / 2)

    def _next_frame(self) -> int:
        with self._lock:
            self._frame += 1
            return self._frame

    def close(self) -> None:
        """Stop the thread, then close the widget (its views disappear); idempotent."""
        _STREAMS.pop(self._key, None)
        super().close()
