"""The LivePlot widget: a rolling time-series plot of one channel.

The reader thread drains everything that arrived since the last frame with ``recv_batch``
(vectorised) into a rolling window kept in Python. A frame is one custom comm message
holding all series: a small JSON description (dtype, shape, labels, status) plus two binary
buffers, float32 time offsets and float32 values; never JSON lists. Frames carry only the
samples that are new since the previous frame; a view that appears, a resume after pause,
or a lost frame gets one "reset" frame with the whole window. Frames are paced as
``_pacing`` says; the front end is ``widgets/liveplot.js``.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import traitlets

from ._base import _CSS, _asset
from ._channel import _ChannelWatch, _ChannelWidget, _check_channel

__all__ = ["LivePlot"]

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
# The channel reader (runs on the widget's thread only).


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


class LivePlot(_ChannelWidget):
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

    _esm = _asset("scheduler.js") + _asset("channelview.js") + _asset("liveplot.js")
    _css = _CSS

    window = traitlets.Float(10.0).tag(sync=True)
    height = traitlets.Int(240).tag(sync=True)
    y_label = traitlets.Unicode("").tag(sync=True)
    y_range = traitlets.List(traitlets.Float(), default_value=[]).tag(sync=True)

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
        _check_channel(channel)
        if not (isinstance(window, (int, float)) and 0 < window < math.inf):
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        if y_range is not None and not (len(y_range) == 2 and y_range[0] < y_range[1]):
            raise ValueError(f"y_range must be (low, high) with low < high, got {y_range!r}")
        self._fields = _check_fields(fields)
        super().__init__(
            channel, window=float(window), height=int(height), title=title, y_label=y_label,
            y_range=list(y_range) if y_range is not None else [],
        )  # fmt: skip
        self._want_reset = True
        self._samples = 0
        self._missed = 0
        if autostart:
            self.start()

    def __repr__(self) -> str:
        # Deterministic (no memory address), so notebook outputs compare across runs.
        return f"LivePlot({self.channel!r}, fields={self._fields!r}, window={self.window!r})"

    # -- Python-side state, for notebooks and tests

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

    def wait_for_data(self, n: int = 1, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` samples were read; False on timeout (seconds)."""
        return self._wait_until(lambda: self._samples, n, timeout)

    # -- messages from the front end (kernel main thread)

    def _on_view(self, content: dict[str, Any]) -> None:
        if content.get("type") in ("ready", "resync"):
            with self._lock:
                self._want_reset = True

    def _resumed(self) -> None:
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
        self._mark_sent()
        self.send(content, buffers)
