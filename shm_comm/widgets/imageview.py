"""The ImageView widget: the newest image of one channel (a camera, a depth sensor).

Only the newest image matters: the reader thread keeps the newest one read, encodes it
(``shm_comm.imaging``: colormaps, JPEG/PNG/raw, downscaling to the view) when a frame is due
(``_pacing``) and counts the ones it never sent. The front end is ``widgets/imageview.js``.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import traitlets

from shm_comm.imaging import (
    COLORMAPS,
    ENCODINGS,
    ImageSpec,
    colorize,
    encode_image,
    image_spec,
    value_range,
)

from ._base import _CSS, _asset
from ._channel import RETRY_INTERVAL, _ChannelWatch, _ChannelWidget, _check_channel
from ._pacing import MAX_UNACKED

__all__ = ["ImageView"]


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


class ImageView(_ChannelWidget):
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

    _esm = _asset("scheduler.js") + _asset("channelview.js") + _asset("imageview.js")
    _css = _CSS
    # One more image in flight than a plot: the browser decodes each image before it draws
    # and acknowledges it, which lengthens the round trip that paces the stream.
    _max_unacked = MAX_UNACKED + 1

    width = traitlets.Int(0).tag(sync=True)

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
        _check_channel(channel)
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
        super().__init__(channel, title=title, width=int(width))
        self._field = field
        self._vrange = (float(vrange[0]), float(vrange[1])) if vrange is not None else None
        self._colormap = colormap
        self._zero_is_invalid = zero_is_invalid
        self._encoding = encoding
        self._quality = int(quality)
        self._view_width = 0  # device pixels available in the view (0: unknown)
        self._want_image = True  # a view appeared or resumed: send the newest image again
        self._want_status = False  # a view appeared: send the status again
        self._frames_read = 0
        self._frames_skipped = 0
        self._bytes_sent = 0
        self._images_sent = 0
        self._last_bytes = 0
        self._frame_age = math.nan
        self._shown_range: tuple[float, float] | None = None
        if autostart:
            self.start()

    def __repr__(self) -> str:
        return f"ImageView({self.channel!r}, field={self._field!r})"

    # -- Python-side state, for notebooks and tests

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

    def wait_for_frames(self, n: int = 1, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` images were sent; False on timeout (seconds)."""
        return self._wait_until(lambda: self._images_sent, n, timeout)

    # -- messages from the front end (kernel main thread)

    def _on_view(self, content: dict[str, Any]) -> None:
        width = content.get("width")
        if isinstance(width, (int, float)) and width > 0:
            self._view_width = int(width)
        if content.get("type") in ("ready", "resync"):
            self._want_image = True  # a new view has seen nothing yet: image and status
            self._want_status = True

    def _resumed(self) -> None:
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
        self._mark_sent()
        self.send(content, buffers)
