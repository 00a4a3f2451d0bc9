"""Live Jupyter widgets for shm_comm channels: :class:`LivePlot`, :class:`ImageView` and
:class:`StatsMonitor`.

    from shm_comm.widgets import LivePlot, StatsMonitor
    plot = LivePlot("imu", fields=["ax", "ay", "az"], window=10.0)
    plot                                  # displays; updates while the channel has data
    ImageView("camera")                   # a camera channel, live
    StatsMonitor(["imu", "joints", "camera"])
    plot.stop(); plot.close()

This module is the outer ring of the package: it imports the core, the core never imports
it, and it needs the ``jupyter`` extra (anywidget, ipywidgets).

Design (the why):

* **Observer, background thread.** Each widget reads its channel with
  ``ArraySubscriber(name, observer=True)`` on its own daemon thread, so it never slows the
  publisher or changes its drop count, and notebook cells stay responsive. The thread drains
  everything that arrived since the last frame with ``recv_batch`` (vectorised) into a
  rolling window kept in Python.
* **Binary frames, paced by the browser.** A frame is one custom comm message holding all
  series: a small JSON description (dtype, shape, labels, status) plus two binary buffers,
  float32 time offsets and float32 values; never JSON lists. The front end acknowledges
  each frame after drawing it and Python keeps at most ``MAX_UNACKED`` frames
  unacknowledged (as jupyter_rfb does), aiming at about 30 frames per second. The
  acknowledgements of all widgets of a kernel share one message, at most every 50 ms (each
  comm message makes the kernel publish busy/idle, which JupyterLab redraws its indicators
  for). Frames carry only
  the samples that are new since the previous frame; a view that appears, a resume after
  pause, or a lost frame gets one "reset" frame with the whole window.
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

Status shown by a LivePlot: ``waiting`` (no such channel yet; retried every
``RETRY_INTERVAL`` s), ``live``, ``stale`` (publisher alive, nothing new for a while),
``gone`` (publisher exited; a restarted publisher is picked up automatically),
``error`` (e.g. fields that do not exist; retried), ``stopped``.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib.resources
import math
import re
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shm_comm._optional import missing

try:
    import anywidget
    import traitlets
except ImportError as _exc:
    raise missing("shm_comm.widgets", "jupyter", "anywidget ipywidgets jupyterlab pillow",
                  _exc) from _exc

import shm_comm
from shm_comm.errors import SHMError
from shm_comm.imaging import (
    COLORMAPS,
    ENCODINGS,
    ImageSpec,
    colorize,
    encode_image,
    image_spec,
    value_range,
)

__all__ = ["ImageView", "LivePlot", "StatsMonitor"]

FRAME_RATE = 30.0
"""Target frames per second of a LivePlot."""
MAX_UNACKED = 3
"""Frames a LivePlot may have in flight before it waits for the browser's acknowledgement
(the page acknowledges at most every 50 ms, all widgets of a kernel in one message)."""
STALL_TIMEOUT = 1.0
"""Seconds after which unacknowledged frames are assumed lost (or the kernel busy)."""
RETRY_INTERVAL = 0.5
"""Seconds between attempts to find a missing channel or a restarted publisher."""
STALE_AFTER = 2.0
"""Seconds without a new message after which a live channel is shown as stale."""
MAX_SERIES = 16
"""Series a LivePlot picks by itself when ``fields`` is None."""
MAX_WINDOW_SAMPLES = 1_000_000
"""Samples a LivePlot keeps per window; older ones are dropped first."""
MAX_FRAME_SAMPLES = 20_000
"""Samples per frame above which a frame is reduced to a min/max envelope."""
BATCH = 4096
"""Messages taken per ``recv_batch`` call."""
BLIND_FRAMES_PER_S = 90.0
"""While a cell runs: frames per second of all widgets together (the kernel-to-browser path
carries about 130-200 messages per second, other output included)."""
BLIND_BYTES_PER_S = 8_000_000
"""While a cell runs: bytes per second of all widgets' frames together."""
VIEWED_WITHIN = 5.0
"""Seconds before a cell started within which a view must have acknowledged a frame for the
widget to keep streaming while the cell runs."""

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]


def _asset(name: str) -> str:
    """Text of a packaged front-end file (``widgets/`` is the package shm_comm._frontend)."""
    try:
        return importlib.resources.files("shm_comm._frontend").joinpath(name).read_text("utf-8")
    except ModuleNotFoundError:
        # Running from a source checkout that is not installed (PYTHONPATH=repo).
        return (Path(__file__).resolve().parents[1] / "widgets" / name).read_text("utf-8")


_CSS = _asset("widgets.css")
_LIVE_WIDGETS: weakref.WeakSet[_ThreadedWidget] = weakref.WeakSet()
# Streaming widgets by widget (model) id: the front end acknowledges the frames of all views
# drawn in the same animation frame in one message, sent on one of their comms.
_STREAMS: weakref.WeakValueDictionary[str, _StreamWidget] = weakref.WeakValueDictionary()


@atexit.register
def _stop_all() -> None:
    # Stop the reader threads before the interpreter tears down the modules they use.
    for widget in list(_LIVE_WIDGETS):
        with contextlib.suppress(Exception):
            widget.stop(timeout=1.0)


class _ThreadedWidget(anywidget.AnyWidget):
    """An AnyWidget with one background worker thread, started and stopped explicitly."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stop_event = threading.Event()
        self._wake = threading.Event()  # set by stop() and by anything the thread awaits
        self._thread: threading.Thread | None = None

    def _run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) the background reader thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop_event.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"shm_comm {type(self).__name__}", daemon=True
        )
        _LIVE_WIDGETS.add(self)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader thread and close its subscriber; idempotent.

        Waits up to ``timeout`` seconds for the thread to finish. The widget stays displayed
        with its last data; :meth:`start` resumes reading.
        """
        self._stop_event.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        _LIVE_WIDGETS.discard(self)

    @property
    def running(self) -> bool:
        """True while the background thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread, then close the widget (its views disappear); idempotent."""
        self.stop()
        super().close()


# --------------------------------------------------------------------------------------
# Pacing: by the browser's acknowledgements between cells, by time and a budget during one.


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
        if room and since >= 0.95 / FRAME_RATE:
            return "acked"
        return None

    def _wait_time(self, now: float) -> float:
        """How long the thread may sleep before a frame could be due (an ack wakes it)."""
        period = 1.0 / FRAME_RATE
        if self._blind:
            return max(0.002, min(period, self._last_send + period - now))
        with self._lock:
            room = self._frame - self._acked < self._max_unacked
        if room and 0 < self._last_send + period - now < period:
            return self._last_send + period - now
        return period

    def _next_frame(self) -> int:
        with self._lock:
            self._frame += 1
            return self._frame

    def close(self) -> None:
        """Stop the thread, then close the widget (its views disappear); idempotent."""
        _STREAMS.pop(self._key, None)
        super().close()


# --------------------------------------------------------------------------------------
# Field selection: which columns of a message become series, and where time comes from.


@dataclass(frozen=True)
class _Column:
    label: str
    field: str | None  # structured field name, or None for a plain array
    index: int | None  # flat index inside the field / the message, or None for a scalar


@dataclass(frozen=True)
class _Selection:
    """The series a LivePlot draws from one channel's messages (fixed per dtype)."""

    columns: tuple[_Column, ...]
    time_field: str | None
    records_per_message: int

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.columns]

    def records(self, batch: np.ndarray) -> np.ndarray:
        """One record (sample) per row: shape (k * records_per_message, ...)."""
        if batch.dtype.names is not None:
            return batch.reshape(-1)
        return batch.reshape(batch.shape[0], -1)

    def values(self, records: np.ndarray) -> Float32Array:
        """Series values as float32, shape (n, number of columns)."""
        n = records.shape[0]
        out = np.empty((n, len(self.columns)), dtype=np.float32)
        for j, col in enumerate(self.columns):
            data = records[col.field] if col.field is not None else records
            data = data.reshape(n, -1)
            out[:, j] = data[:, col.index if col.index is not None else 0]
        return out


_FIELD_ITEM = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<index>\d+)\]$")


def _select(channel: str, dtype: np.dtype[Any], shape: tuple[int, ...],
            fields: Sequence[str | int] | None) -> _Selection:  # fmt: skip
    """Map ``fields`` onto a channel's dtype and shape; ValueError if they do not fit."""
    available: list[_Column] = []
    time_field = None
    if dtype.names is not None:
        records = math.prod(shape)
        for name in dtype.names:
            ftype = dtype.fields[name][0] if dtype.fields else dtype
            base = ftype.base
            if base.kind not in "biuf":
                continue
            size = math.prod(ftype.shape)
            if name == "t" and size == 1:
                time_field = name
                continue
            if size == 1:
                available.append(_Column(name, name, None))
            else:
                available.extend(_Column(f"{name}[{i}]", name, i) for i in range(size))
    else:
        if dtype.kind not in "biuf":
            raise ValueError(f"channel {channel!r} carries {dtype}, which is not numeric")
        records = 1
        size = math.prod(shape)
        if size == 1:
            available.append(_Column(channel, None, None))
        else:
            available.extend(_Column(f"[{i}]", None, i) for i in range(size))
    if fields is None:
        if len(available) > MAX_SERIES:
            raise ValueError(
                f"channel {channel!r} has {len(available)} columns; pass fields= to pick"
                f" at most a few (for example fields=[0, 1, 2])"
            )
        chosen = available
    else:
        chosen = []
        by_label = {c.label: c for c in available}
        for item in fields:
            if isinstance(item, int):
                if not -len(available) <= item < len(available):
                    raise ValueError(
                        f"column {item} out of range: channel {channel!r} has"
                        f" {len(available)} columns"
                    )
                chosen.append(available[item])
            elif item in by_label:
                chosen.append(by_label[item])
            elif dtype.names is not None and any(c.field == item for c in available):
                chosen.extend(c for c in available if c.field == item)
            elif (m := _FIELD_ITEM.match(item)) and f"{m['name']}[{m['index']}]" in by_label:
                chosen.append(by_label[f"{m['name']}[{m['index']}]"])
            else:
                names = ", ".join(c.label for c in available[:20])
                raise ValueError(f"channel {channel!r} has no field {item!r}; it has: {names}")
    if not chosen:
        raise ValueError(f"channel {channel!r} has no numeric field to plot")
    return _Selection(tuple(chosen), time_field, records)


def _check_fields(fields: Sequence[str | int] | str | int | None) -> list[str | int] | None:
    if fields is None:
        return None
    if isinstance(fields, (str, int)):
        return [fields]
    out = list(fields)
    for item in out:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise TypeError(f"fields must be names (str) or column indexes (int), got {item!r}")
    if not out:
        raise ValueError("fields must not be empty; use None for all numeric fields")
    return out


def _envelope(t: FloatArray, y: Float32Array, max_n: int) -> tuple[FloatArray, Float32Array]:
    """Reduce to at most ``max_n`` samples, keeping each bucket's min and max (NaN-aware)."""
    k = t.shape[0]
    if k <= max_n:
        return t, y
    size = math.ceil(k / (max_n // 2))
    nb = k // size
    head = k - nb * size  # a few leading samples that do not fill a bucket are dropped
    yb = y[head:].reshape(nb, size, y.shape[1])
    tb = t[head:].reshape(nb, size)
    # fmin/fmax ignore NaNs without the "All-NaN slice" warning of nanmin/nanmax.
    lo = np.fmin.reduce(yb, axis=1)
    hi = np.fmax.reduce(yb, axis=1)
    t_out = np.empty(nb * 2)
    t_out[0::2] = tb[:, 0]
    t_out[1::2] = tb[:, -1]
    y_out = np.empty((nb * 2, y.shape[1]), dtype=np.float32)
    y_out[0::2] = lo
    y_out[1::2] = hi
    return t_out, y_out


# --------------------------------------------------------------------------------------
# The channel reader used by LivePlot (runs on the widget's thread only).


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


class _ChannelReader(_ChannelWatch):
    """The reader of a LivePlot: drains everything new into (times, values) of its series."""

    def __init__(self, name: str, fields: list[str | int] | None) -> None:
        super().__init__(name)
        self.fields = fields
        self.selection: _Selection | None = None
        self.samples = 0
        self._batch = BATCH

    def _describe(self) -> None:
        sub = self.subscriber
        self.selection = None
        self.selection = _select(self.name, sub.dtype, tuple(sub.shape), self.fields)
        # recv_batch allocates max_n messages up front: keep that under about 8 MB.
        self._batch = max(
            1, min(BATCH, (8 << 20) // max(1, sub.dtype.itemsize * math.prod(sub.shape)))
        )

    def poll(self) -> tuple[FloatArray, Float32Array] | None:
        """Everything received since the last call as (times, values), or None."""
        now = time.monotonic()
        self.check()
        if self.status == "error":
            self.selection = None
        sub, selection = self.subscriber, self.selection
        if sub is None or selection is None:
            return None
        parts_t: list[FloatArray] = []
        parts_y: list[Float32Array] = []
        messages = 0
        while True:
            batch = sub.recv_batch(max_n=self._batch, timeout=0.0)
            k = int(batch.shape[0])
            if k == 0:
                break
            messages += k
            records = selection.records(batch)
            parts_y.append(selection.values(records))
            if selection.time_field is not None:
                parts_t.append(np.asarray(records[selection.time_field], dtype=np.float64))
            else:
                stamps = np.asarray(sub.last_batch_timestamps, dtype=np.float64)
                if stamps.shape[0] != k:  # not expected; fall back to arrival time
                    stamps = np.full(k, time.time())
                per = selection.records_per_message
                parts_t.append(np.repeat(stamps, per) if per > 1 else stamps)
            if k < self._batch:
                break
        if not parts_t:
            return None
        t = np.concatenate(parts_t) if len(parts_t) > 1 else parts_t[0]
        y = np.concatenate(parts_y) if len(parts_y) > 1 else parts_y[0]
        self.samples += int(t.shape[0])
        self._arrived(now, messages)
        return t, y


# --------------------------------------------------------------------------------------


class LivePlot(_StreamWidget):
    """A rolling time-series plot of one shm_comm channel, live in the notebook.

    Args:
        channel: the channel name (need not exist yet: the plot waits for it).
        fields: what to plot. For a structured dtype, field names (a sub-array field such as
            ``"q"`` of shape (6,) gives six series ``q[0]`` ... ``q[5]``; ``"q[2]"`` picks
            one); for a plain array, column indexes into the flattened message. Integers
            always index the list of all numeric columns. None plots every numeric column
            (at most ``MAX_SERIES``). A field named ``"t"`` is used as the time stamp
            (seconds); without one, the publisher's message time stamps are used.
        window: seconds of history shown (rolling).
        height: canvas height in CSS pixels; the width follows the notebook.
        title: shown above the plot (default: the channel name).
        y_label: the y axis label.
        y_range: fixed ``(low, high)``; None autoscales to the visible samples.
        autostart: start reading immediately (else call :meth:`start`).

    The widget reads the channel as an observer on a background thread: it never slows the
    publisher or changes its counters. NaN samples show as gaps. Call :meth:`stop` to stop
    reading (the last data stays visible) and :meth:`close` to remove the widget.
    Thread safety: call the methods from one thread (the notebook's).
    """

    _esm = _asset("scheduler.js") + _asset("liveplot.js")
    _css = _CSS

    channel = traitlets.Unicode(read_only=True).tag(sync=True)
    window = traitlets.Float(10.0).tag(sync=True)
    height = traitlets.Int(240).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    y_label = traitlets.Unicode("").tag(sync=True)
    y_range = traitlets.List(traitlets.Float(), default_value=[]).tag(sync=True)
    paused = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        channel: str,
        fields: Sequence[str | int] | str | int | None = None,
        *,
        window: float = 10.0,
        height: int = 240,
        title: str = "",
        y_label: str = "",
        y_range: tuple[float, float] | None = None,
        autostart: bool = True,
    ) -> None:
        if not isinstance(channel, str) or not channel:
            raise TypeError(f"channel must be a non-empty str, got {channel!r}")
        if not (isinstance(window, (int, float)) and 0 < window < math.inf):
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        if y_range is not None and not (len(y_range) == 2 and y_range[0] < y_range[1]):
            raise ValueError(f"y_range must be (low, high) with low < high, got {y_range!r}")
        self._fields = _check_fields(fields)
        super().__init__(
            window=float(window), height=int(height), title=title, y_label=y_label,
            y_range=list(y_range) if y_range is not None else [],
        )  # fmt: skip
        self.set_trait("channel", channel)
        self._want_reset = True
        self._status = ("waiting", "waiting for publisher")
        self._samples = 0
        self._missed = 0
        self.observe(self._on_paused, names="paused")
        if autostart:
            self.start()

    def __repr__(self) -> str:
        # Deterministic (no memory address), so notebook outputs compare across runs.
        return f"LivePlot({self.channel!r}, fields={self._fields!r}, window={self.window!r})"

    # -- Python-side state, for notebooks and tests

    @property
    def status(self) -> str:
        """One of waiting, live, stale, gone, error, stopped (see the module docstring)."""
        return self._status[0]

    @property
    def status_text(self) -> str:
        """The status as shown in the widget's badge."""
        return self._status[1]

    @property
    def samples_received(self) -> int:
        """Samples (records) read from the channel since the widget started."""
        return self._samples

    @property
    def samples_missed(self) -> int:
        """Messages overwritten before the widget read them (it lagged by ``num_slots``)."""
        return self._missed

    @property
    def frames_sent(self) -> int:
        """Frames sent to the front end."""
        return self._frame + 1

    def pause(self) -> None:
        """Freeze the display (the channel is still read, so nothing is lost)."""
        self.paused = True

    def resume(self) -> None:
        """Resume live updates after :meth:`pause`."""
        self.paused = False

    def wait_for_data(self, n: int = 1, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` samples were read; False on timeout (seconds)."""
        deadline = time.monotonic() + timeout
        while self._samples < n:
            if time.monotonic() > deadline or not self.running:
                return False
            time.sleep(0.02)
        return True

    # -- messages from the front end (kernel main thread)

    def _on_view(self, content: dict[str, Any]) -> None:
        if content.get("type") in ("ready", "resync"):
            with self._lock:
                self._want_reset = True

    def _on_paused(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            with self._lock:
                self._want_reset = True

    # -- the reader thread

    def _run(self) -> None:
        reader = _ChannelReader(self.channel, self._fields)
        times = np.empty(0)
        values = np.empty((0, 0), dtype=np.float32)
        pending_t: list[FloatArray] = []
        pending_y: list[Float32Array] = []
        pending_n = 0
        generation = 0
        labels: list[str] = []
        sent_status: tuple[str, str] | None = None
        try:
            while not self._stop_event.is_set():
                tick = time.monotonic()
                got = reader.poll()
                if reader.generation != generation:  # (re)connected: start a fresh window
                    generation = reader.generation
                    assert reader.selection is not None
                    labels = reader.selection.labels
                    times, values = np.empty(0), np.empty((0, len(labels)), dtype=np.float32)
                    pending_t, pending_y, pending_n = [], [], 0
                    with self._lock:
                        self._want_reset = True
                if got is not None:
                    t, y = got
                    if times.size and t[0] < times[-1] - self.window:
                        # Time went backwards by more than the window (a new clock): restart.
                        times, values = np.empty(0), values[:0]
                        pending_t, pending_y, pending_n = [], [], 0
                        with self._lock:
                            self._want_reset = True
                    times = np.concatenate([times, t])
                    values = np.concatenate([values, y])
                    keep = np.searchsorted(times, times[-1] - self.window * 1.05, side="left")
                    keep = max(int(keep), times.size - MAX_WINDOW_SAMPLES)
                    if keep > 0:
                        times, values = times[keep:], values[keep:]
                    pending_t.append(t)
                    pending_y.append(y)
                    pending_n += t.size
                    if pending_n > MAX_WINDOW_SAMPLES:  # nobody is listening: resend later
                        pending_t, pending_y, pending_n = [], [], 0
                        with self._lock:
                            self._want_reset = True
                self._samples = reader.samples
                self._missed = reader.missed
                status = (reader.status, reader.status_text)
                self._status = status

                with self._lock:
                    reset = self._want_reset
                wanted = status != sent_status or (
                    not self.paused and (reset or pending_n > 0))
                due = self._due(tick) if wanted else None
                if due is None:
                    pass
                elif self.paused:
                    # Frozen display: only status changes go out; data waits in `times`.
                    if status != sent_status:
                        self._send_frame(times[:0], values[:0], labels, status, False, None)
                        sent_status = status
                else:
                    if reset:
                        with self._lock:
                            self._want_reset = False
                        t_send, y_send = times, values
                    elif pending_n > 0:
                        t_send, y_send = np.concatenate(pending_t), np.concatenate(pending_y)
                    else:
                        t_send, y_send = times[:0], values[:0]
                    pending_t, pending_y, pending_n = [], [], 0
                    tnow = float(times[-1]) if times.size else None
                    self._send_frame(t_send, y_send, labels, status, reset, tnow)
                    sent_status = status
                # Sleep until the next frame could be due. With the window full, wait for an
                # acknowledgement instead (it wakes us), so the frame goes out as soon as there
                # is room rather than at the next tick.
                self._wake.wait(self._wait_time(time.monotonic()))
                self._wake.clear()
        finally:
            reader.close()
            self._status = ("stopped", "stopped")
            with contextlib.suppress(Exception):
                tnow = float(times[-1]) if times.size else None
                self._send_frame(times[:0], values[:0], labels, self._status, False, tnow)

    def _send_frame(self, t: FloatArray, y: Float32Array, labels: list[str],
                    status: tuple[str, str], reset: bool, tnow: float | None) -> None:  # fmt: skip
        t, y = _envelope(t, y, MAX_FRAME_SAMPLES)
        t0 = float(t[0]) if t.size else (tnow or 0.0)
        k, m = int(t.shape[0]), len(labels)
        frame = self._next_frame()
        content = {
            "type": "frame", "id": self.model_id, "frame": frame, "reset": reset,
            "ack": not self._blind,
            "status": status[0], "status_text": status[1], "labels": labels,
            "t0": t0, "tnow": tnow,
            "arrays": [
                {"name": "t", "dtype": "float32", "shape": [k]},
                {"name": "y", "dtype": "float32", "shape": [k, m]},
            ],
        }  # fmt: skip
        buffers = [
            np.ascontiguousarray(t - t0, dtype="<f4").tobytes(),
            np.ascontiguousarray(y, dtype="<f4").tobytes(),
        ]
        self._expected_bytes = sum(len(b) for b in buffers)
        self._last_send = time.monotonic()
        self.send(content, buffers)


# --------------------------------------------------------------------------------------


class _ImageReader(_ChannelWatch):
    """The reader of an ImageView: only the newest image matters; the ones it skips (or that
    were overwritten before it looked) are counted from the sequence numbers."""

    start_with_newest = True

    def __init__(self, name: str, field: str | None) -> None:
        super().__init__(name)
        self.field = field
        self.spec: ImageSpec | None = None
        self.frames = 0  # images read
        self.skipped = 0  # images published while connected that were never read
        self._last_seq = -1

    def _describe(self) -> None:
        sub = self.subscriber
        self.spec = None
        self.spec = image_spec(self.name, sub.dtype, tuple(sub.shape), self.field)
        self._last_seq = -1

    def _dropped(self, stats: dict[str, Any]) -> int:
        return 0  # recv_latest counts its skips as drops: `skipped` says it better

    def latest(self, timeout: float) -> tuple[np.ndarray[Any, Any], int, int] | None:
        """The newest image not read yet as (message, publisher time ns, seq), or None."""
        self.check()
        sub, spec = self.subscriber, self.spec
        if sub is None or spec is None:
            return None
        message = sub.recv_latest(timeout=timeout, copy=True)
        if message is None:
            return None
        seq = int(sub.last_seq)
        new = 1 if self._last_seq < 0 or seq <= self._last_seq else seq - self._last_seq
        self.skipped += new - 1
        self._last_seq = seq
        self.frames += 1
        self._arrived(time.monotonic(), new)
        return message, int(sub.last_timestamp_ns), seq


class ImageView(_StreamWidget):
    """A live image of one shm_comm channel (a camera, a depth sensor) in the notebook.

    Args:
        channel: the channel name (need not exist yet: the view waits for it).
        field: for a structured dtype, the field holding the image (needed unless exactly
            one field is an array of two or more dimensions).
        vrange: for depth and other non-uint8 single-channel images, the values shown as the
            first and last colour of the colormap, ``(low, high)``; None (the default) picks
            the 1st to 99th percentile of each frame.
        colormap: ``"turbo"`` (default for depth), ``"viridis"``, ``"inferno"`` or
            ``"gray"``; for uint8 grey images the default None shows grey levels as they are.
        zero_is_invalid: show pixels equal to 0 as black and leave them out of the
            automatic range (depth cameras write 0 where they measured nothing); default:
            True for unsigned integer depth, else False.
        encoding: ``"auto"`` (raw bytes for small images, else JPEG; PNG for RGBA with
            transparency), ``"jpeg"``, ``"png"`` or ``"raw"``.
        quality: JPEG quality, 1-95.
        width: the largest width shown, in CSS pixels (0: the image's own width, at most
            the notebook's). Frames wider than the view are downscaled in the kernel.
        title: shown above the image (default: the channel name).
        autostart: start reading immediately (else call :meth:`start`).

    Images: uint8 ``(H, W)`` grey, ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA; uint16, float32
    and other numbers ``(H, W)`` through a colormap (see :mod:`shm_comm.imaging`). The view
    reads the channel as an observer on a background thread and shows only the newest image:
    it never slows the publisher or changes its counters. Its badge shows frames per second
    in the browser, the age of the image shown (from the publisher's time stamp) and how
    many published images were not shown. Thread safety: call the methods from one thread.
    """

    _esm = _asset("scheduler.js") + _asset("imageview.js")
    _css = _CSS
    # One more image in flight than a plot: the browser decodes each image before it draws
    # and acknowledges it, which lengthens the round trip that paces the stream.
    _max_unacked = MAX_UNACKED + 1

    channel = traitlets.Unicode(read_only=True).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    width = traitlets.Int(0).tag(sync=True)
    paused = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self,
        channel: str,
        field: str | None = None,
        *,
        vrange: tuple[float, float] | None = None,
        colormap: str | None = None,
        zero_is_invalid: bool | None = None,
        encoding: str = "auto",
        quality: int = 80,
        width: int = 0,
        title: str = "",
        autostart: bool = True,
    ) -> None:
        if not isinstance(channel, str) or not channel:
            raise TypeError(f"channel must be a non-empty str, got {channel!r}")
        if field is not None and not isinstance(field, str):
            raise TypeError(f"field must be a field name (str) or None, got {field!r}")
        if vrange is not None and not (len(vrange) == 2 and vrange[0] < vrange[1]):
            raise ValueError(f"vrange must be (low, high) with low < high, got {vrange!r}")
        if colormap is not None and colormap not in COLORMAPS:
            raise ValueError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}")
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if not 1 <= quality <= 95:
            raise ValueError(f"quality must be 1 to 95, got {quality!r}")
        if width < 0:
            raise ValueError(f"width must be >= 0 CSS pixels, got {width!r}")
        super().__init__(title=title, width=int(width))
        self.set_trait("channel", channel)
        self._field = field
        self._vrange = (float(vrange[0]), float(vrange[1])) if vrange is not None else None
        self._colormap = colormap
        self._zero_is_invalid = zero_is_invalid
        self._encoding = encoding
        self._quality = int(quality)
        self._view_width = 0  # device pixels available in the view (0: unknown)
        self._want_image = True  # a view appeared or resumed: send the newest image again
        self._want_status = False  # a view appeared: send the status again
        self._status = ("waiting", "waiting for publisher")
        self._frames_read = 0
        self._frames_skipped = 0
        self._bytes_sent = 0
        self._images_sent = 0
        self._last_bytes = 0
        self._frame_age = math.nan
        self._shown_range: tuple[float, float] | None = None
        self.observe(self._on_paused, names="paused")
        if autostart:
            self.start()

    def __repr__(self) -> str:
        return f"ImageView({self.channel!r}, field={self._field!r})"

    # -- Python-side state, for notebooks and tests

    @property
    def status(self) -> str:
        """One of waiting, live, stale, gone, error, stopped (as for LivePlot)."""
        return self._status[0]

    @property
    def status_text(self) -> str:
        """The status as shown in the widget's badge."""
        return self._status[1]

    @property
    def frames_read(self) -> int:
        """Images read from the channel since the widget started."""
        return self._frames_read

    @property
    def frames_skipped(self) -> int:
        """Images published while the view was connected that it never sent (it shows the
        newest one only: a camera faster than the view, a paused view or no view)."""
        return self._frames_skipped

    @property
    def frames_sent(self) -> int:
        """Images sent to the front end."""
        return self._images_sent

    @property
    def bytes_sent(self) -> int:
        """Encoded image bytes sent to the front end."""
        return self._bytes_sent

    @property
    def last_frame_bytes(self) -> int:
        """Size of the last image sent, encoded."""
        return self._last_bytes

    @property
    def frame_age(self) -> float:
        """Seconds from the publisher's time stamp to sending, for the last image sent."""
        return self._frame_age

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The value range of the last colormapped image sent (None for colour and grey)."""
        return self._shown_range

    def pause(self) -> None:
        """Freeze the picture (the channel is still watched; the newest image shows on
        :meth:`resume`)."""
        self.paused = True

    def resume(self) -> None:
        """Resume live updates after :meth:`pause`."""
        self.paused = False

    def wait_for_frames(self, n: int = 1, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` images were sent; False on timeout (seconds)."""
        deadline = time.monotonic() + timeout
        while self._images_sent < n:
            if time.monotonic() > deadline or not self.running:
                return False
            time.sleep(0.02)
        return True

    # -- messages from the front end (kernel main thread)

    def _on_view(self, content: dict[str, Any]) -> None:
        width = content.get("width")
        if isinstance(width, (int, float)) and width > 0:
            self._view_width = int(width)
        if content.get("type") in ("ready", "resync"):
            self._want_image = True  # a new view has seen nothing yet: image and status
            self._want_status = True

    def _on_paused(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            self._want_image = True
            self._wake.set()

    # -- the reader thread

    def _run(self) -> None:
        reader = _ImageReader(self.channel, self._field)
        latest: tuple[np.ndarray[Any, Any], int, int] | None = None
        shown: tuple[np.ndarray[Any, Any], int, int] | None = None
        sent_status: tuple[str, str] | None = None
        generation = 0
        replaced = 0
        try:
            while not self._stop_event.is_set():
                got = reader.latest(0.0)
                if reader.generation != generation:  # (re)connected: the dtype may differ
                    generation = reader.generation
                    latest = shown = None
                if got is not None:
                    if latest is not None and latest is not shown:
                        replaced += 1  # read, but a newer one came before it could be sent
                    latest = got
                self._frames_read = reader.frames
                self._frames_skipped = reader.skipped + replaced
                status = (reader.status, reader.status_text)
                self._status = status
                if self._want_status:
                    self._want_status = False
                    sent_status = None
                if latest is None and self._want_image and not self.paused:
                    latest = shown  # a new view or a resume: show the last image again
                    self._want_image = False
                image = latest if not self.paused else None
                wanted = image is not None or status != sent_status
                if wanted and self._due(time.monotonic()) is not None:
                    self._send_image(image, status, reader.spec, self._frames_skipped)
                    sent_status = status
                    if image is not None:
                        shown, latest = image, None
                # Wait for what could change that: a new image (polled, as observers are), or
                # room in the acknowledgement window (an ack wakes us).
                wait = self._wait_time(time.monotonic())
                if latest is None and reader.subscriber is not None and not self.paused:
                    got = reader.latest(min(wait, 0.02))
                    if got is not None:
                        latest = got
                    continue
                self._wake.wait(min(wait, RETRY_INTERVAL))
                self._wake.clear()
        finally:
            reader.close()
            self._status = ("stopped", "stopped")
            with contextlib.suppress(Exception):
                self._send_image(None, self._status, None, self._frames_skipped)

    def _send_image(self, image: tuple[np.ndarray[Any, Any], int, int] | None,
              status: tuple[str, str], spec: ImageSpec | None, skipped: int) -> None:  # fmt: skip
        frame = self._next_frame()
        content: dict[str, Any] = {
            "type": "frame", "id": self.model_id, "frame": frame, "ack": not self._blind,
            "status": status[0], "status_text": status[1], "dropped": skipped, "image": False,
        }  # fmt: skip
        buffers: list[bytes] = []
        if image is not None and spec is not None:
            message, stamp_ns, seq = image
            pixels = spec.pixels(message)
            if spec.kind == "scalar" or (spec.kind == "mono" and self._colormap is not None):
                zero_invalid = (
                    self._zero_is_invalid
                    if self._zero_is_invalid is not None
                    else spec.dtype.kind == "u" and spec.kind == "scalar"
                )
                vrange = self._vrange or value_range(pixels, zero_invalid) or (0.0, 1.0)
                pixels = colorize(pixels, vrange, self._colormap or "turbo", zero_invalid)
                self._shown_range = vrange
                content["vrange"] = list(vrange)
                content["colormap"] = self._colormap or "turbo"
            max_width = self._view_width or None  # the view says what it can show
            encoded = encode_image(pixels, encoding=self._encoding, quality=self._quality,
                                   max_width=max_width)  # fmt: skip
            now = time.time()
            content.update(
                image=True, format=encoded.format, width=encoded.width, height=encoded.height,
                channels=encoded.channels, src_width=int(pixels.shape[1]),
                src_height=int(pixels.shape[0]), stamp=stamp_ns / 1e9, sent=now, seq=seq,
                bytes=len(encoded.data),
            )  # fmt: skip
            buffers.append(encoded.data)
            self._frame_age = now - stamp_ns / 1e9
            self._last_bytes = len(encoded.data)
            self._bytes_sent += len(encoded.data)
            self._images_sent += 1
            self._expected_bytes = len(encoded.data)
        self._last_send = time.monotonic()
        self.send(content, buffers)


# --------------------------------------------------------------------------------------


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
