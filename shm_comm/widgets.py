"""Live Jupyter widgets for shm_comm channels: :class:`LivePlot` and :class:`StatsMonitor`.

    from shm_comm.widgets import LivePlot, StatsMonitor
    plot = LivePlot("imu", fields=["ax", "ay", "az"], window=10.0)
    plot                                  # displays; updates while the channel has data
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
  each frame after drawing it and Python keeps at most two frames unacknowledged (as
  jupyter_rfb does), aiming at about 30 frames per second. The acknowledgements of all
  plots drawn in the same animation frame share one message (each comm message makes the
  kernel publish busy/idle, which JupyterLab redraws its indicators for). Frames carry only
  the samples that are new since the previous frame; a view that appears, a resume after
  pause, or a lost frame gets one "reset" frame with the whole window.
* **Kernel busy.** Acknowledgements are comm messages, which the kernel reads only between
  cells. While a cell runs, the plot falls back to one frame per ``STALL_TIMEOUT`` seconds
  and catches up as soon as the kernel is idle.

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

import anywidget
import numpy as np
import numpy.typing as npt
import traitlets

import shm_comm
from shm_comm.errors import SHMError

__all__ = ["LivePlot", "StatsMonitor"]

FRAME_RATE = 30.0
"""Target frames per second of a LivePlot."""
MAX_UNACKED = 2
"""Frames a LivePlot may have in flight before it waits for the browser's acknowledgement."""
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
# LivePlots by widget (model) id: the front end acknowledges the frames of all plots drawn in
# the same animation frame in one message, sent on one of their comms.
_PLOTS: weakref.WeakValueDictionary[str, LivePlot] = weakref.WeakValueDictionary()


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


class _ChannelReader:
    """Reads one channel as an observer; waits for it to appear, follows restarts.

    The core's subscriber re-attaches by itself when a restarted publisher replaces the
    segment (checked when ``publisher_alive`` is read); its ``reconnects`` counter tells
    us to rebuild the selection (the dtype may have changed) and restart the window.
    """

    def __init__(self, name: str, fields: list[str | int] | None) -> None:
        self.name = name
        self.fields = fields
        self.subscriber: Any = None
        self.selection: _Selection | None = None
        self.alive = False
        self.status = "waiting"
        self.status_text = "waiting for publisher"
        self.generation = 0  # +1 on each (re)connection: the window restarts
        self.samples = 0
        self.missed = 0  # messages the publisher overwrote before we read them
        self._missed_before = 0  # from earlier subscribers (after an error)
        self.last_arrival = 0.0  # time.monotonic() of the last sample
        self._reconnects = 0
        self._batch = BATCH
        self._next_check = -math.inf
        self._rate_marks: collections.deque[tuple[float, int]] = collections.deque()

    def close(self) -> None:
        if self.subscriber is not None:
            with contextlib.suppress(Exception):
                self.subscriber.close()
        self._missed_before = self.missed
        self.subscriber = None

    def _select(self) -> None:
        sub = self.subscriber
        self.selection = _select(self.name, sub.dtype, tuple(sub.shape), self.fields)
        # recv_batch allocates max_n messages up front: keep that under about 8 MB.
        self._batch = max(
            1, min(BATCH, (8 << 20) // max(1, sub.dtype.itemsize * math.prod(sub.shape)))
        )
        self.generation += 1
        self._rate_marks.clear()
        self.last_arrival = time.monotonic()

    def _connect(self) -> None:
        if shm_comm.channel_info(self.name) is None:
            self.status, self.status_text = "waiting", "waiting for publisher"
            return
        self.subscriber = shm_comm.ArraySubscriber(self.name, observer=True, timeout_connect=1.0)
        self._reconnects = 0
        self.selection = None
        self._select()

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
        self.missed = self._missed_before + int(stats.get("dropped", 0))
        if stats.get("reconnects", 0) != self._reconnects or self.selection is None:
            self._reconnects = stats.get("reconnects", 0)
            self.selection = None
            self._select()
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

    def rate(self, now: float) -> float:
        """Messages per second over the last two seconds."""
        marks = self._rate_marks
        while len(marks) > 1 and now - marks[0][0] > 2.0:
            marks.popleft()
        if len(marks) < 2 or marks[-1][0] - marks[0][0] < 0.2:
            return 0.0
        return (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])

    def poll(self) -> tuple[FloatArray, Float32Array] | None:
        """Everything received since the last call as (times, values), or None."""
        now = time.monotonic()
        try:
            self._check(now)
        except (ValueError, TypeError, SHMError) as err:
            # Fields that do not fit the dtype, a channel that is not a typed-array one...
            # show it, and retry later: the publisher may be restarted with another dtype.
            self.close()
            self.selection = None
            self.status, self.status_text = "error", str(err)
            self._next_check = now + 2.0
            return None
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
        self.last_arrival = now
        self._rate_marks.append(
            (now, (self._rate_marks[-1][1] if self._rate_marks else 0) + messages)
        )
        if self.status in ("stale", "waiting") and self.alive:
            self.status, self.status_text = "live", "live"
        return t, y


# --------------------------------------------------------------------------------------


class LivePlot(_ThreadedWidget):
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

    _esm = _asset("liveplot.js")
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
        self._lock = threading.Lock()
        self._acked = -1
        self._frame = -1
        self._last_send = -math.inf
        self._want_reset = True
        self._status = ("waiting", "waiting for publisher")
        self._samples = 0
        self._missed = 0
        _PLOTS[self.model_id] = self
        self.on_msg(self._on_front_end_message)
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

    def _on_front_end_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "ack":
            frames = content.get("frames")
            if isinstance(frames, dict):
                for widget_id, frame in frames.items():
                    plot = _PLOTS.get(widget_id)
                    if plot is not None and isinstance(frame, int):
                        plot._acknowledge(frame)
            return
        if kind in ("ready", "resync"):
            with self._lock:
                self._want_reset = True
                self._acked = self._frame  # a new view: do not wait for old frames
            self._wake.set()

    def _acknowledge(self, frame: int) -> None:
        with self._lock:
            self._acked = max(self._acked, frame)
        self._wake.set()  # a frame may be waiting for room in the window

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
        period = 1.0 / FRAME_RATE
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
                    in_flight = self._frame - self._acked
                    reset = self._want_reset
                room = in_flight < MAX_UNACKED or tick - self._last_send > STALL_TIMEOUT
                # Frames at least `period` apart, whatever wakes us.
                if not room or tick - self._last_send < period * 0.95:
                    pass
                elif self.paused:
                    # Frozen display: only status changes go out; data waits in `times`.
                    if status != sent_status:
                        self._send_frame(times[:0], values[:0], labels, status, False, None)
                        sent_status = status
                elif reset or pending_n > 0 or status != sent_status:
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
                # Sleep until the next frame is due. With the window full, wait for an
                # acknowledgement instead (it wakes us), so the frame goes out as soon as there
                # is room rather than at the next tick.
                with self._lock:
                    room = self._frame - self._acked < MAX_UNACKED
                timeout = period
                if room and 0 < self._last_send + period - time.monotonic() < period:
                    timeout = self._last_send + period - time.monotonic()
                self._wake.wait(max(0.001, timeout))
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
        with self._lock:
            self._frame += 1
            frame = self._frame
        content = {
            "type": "frame", "id": self.model_id, "frame": frame, "reset": reset,
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
    second, messages and drops so far, subscriber count, age of the newest message. It only
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
                "drop_count": None, "subscribers": None, "age_s": None,
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
        }  # fmt: skip
