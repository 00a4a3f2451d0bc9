"""shm_comm.imaging in one process: which messages are images, colormaps, value ranges,
encoding (decoded back with Pillow), and the widgets' pacing while a cell runs."""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest

from shm_comm.imaging import (
    COLORMAPS,
    RAW_MAX_BYTES,
    colorize,
    encode_image,
    image_spec,
    value_range,
)

Image = pytest.importorskip("PIL.Image")


@pytest.mark.parametrize(
    ("dtype", "shape", "kind", "size"),
    [
        ("u1", (480, 640), "mono", (480, 640)),
        ("u1", (480, 640, 1), "mono", (480, 640)),
        ("u1", (480, 640, 3), "rgb", (480, 640)),
        ("u1", (1, 480, 640, 4), "rgba", (480, 640)),
        ("<u2", (240, 320), "scalar", (240, 320)),
        ("<f4", (1, 240, 320), "scalar", (240, 320)),
    ],
)
def test_image_kinds(dtype: str, shape: tuple[int, ...], kind: str, size: tuple[int, int]
                     ) -> None:
    spec = image_spec("cam", np.dtype(dtype), shape)
    assert (spec.kind, (spec.height, spec.width)) == (kind, size)
    message = np.zeros(shape, dtype)
    assert spec.pixels(message).shape[:2] == size


def test_structured_channels_pick_a_field() -> None:
    dt = np.dtype([("t", "f8"), ("image", "u1", (48, 64, 3)), ("depth", "<u2", (48, 64))])
    with pytest.raises(ValueError, match="pass field="):
        image_spec("cam", dt, ())
    spec = image_spec("cam", dt, (), field="depth")
    assert spec.kind == "scalar"
    msg = np.zeros((), dt)
    msg["depth"][2, 3] = 7
    assert spec.pixels(msg)[2, 3] == 7
    with pytest.raises(ValueError, match="no field"):
        image_spec("cam", dt, (), field="nope")
    one = np.dtype([("t", "f8"), ("image", "u1", (48, 64, 3))])
    assert image_spec("cam", one, (2,)).field == "image"  # the only image field


@pytest.mark.parametrize(
    ("dtype", "shape", "match"),
    [
        ("u1", (10,), "an image is"),
        ("u1", (4, 4, 2), "an image is"),
        ("<f4", (4, 4, 3), "must be uint8"),
        ("U4", (4, 4), "not numeric"),
    ],
)
def test_not_images(dtype: str, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        image_spec("cam", np.dtype(dtype), shape)


def test_colormaps_and_ranges() -> None:
    for lut in COLORMAPS.values():
        assert lut.shape == (256, 3)
        assert lut.dtype == np.uint8
    assert COLORMAPS["gray"][0].tolist() == [0, 0, 0]
    assert COLORMAPS["gray"][255].tolist() == [255, 255, 255]
    assert COLORMAPS["viridis"][0].tolist() == [68, 1, 84]
    depth = np.full((100, 100), 2000, np.uint16)
    depth[:, :50] = 1000
    depth[0, 0] = 0
    out = colorize(depth, (1000.0, 3000.0), "gray", zero_is_invalid=True)
    assert out[50, 10].tolist() == [0, 0, 0]
    assert out[50, 80].tolist() in ([127, 127, 127], [128, 128, 128])
    assert out[0, 0].tolist() == [0, 0, 0]
    floats = np.linspace(0, 1, 10_000, dtype=np.float32).reshape(100, 100)
    floats[0, :10] = np.nan
    lo, hi = value_range(floats) or (math.nan, math.nan)
    assert lo == pytest.approx(0.01, abs=0.01)
    assert hi == pytest.approx(0.99, abs=0.01)
    assert colorize(floats, (lo, hi), "turbo")[0, 0].tolist() == [0, 0, 0]  # NaN: black
    assert value_range(np.zeros((8, 8), np.uint16), zero_is_invalid=True) is None
    flat = value_range(np.full((8, 8), 5.0))
    assert flat == (5.0, 6.0)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_encoding_raw_jpeg_png_and_downscaling() -> None:
    small = np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)
    enc = encode_image(small)
    assert (enc.format, enc.width, enc.height, enc.channels) == ("raw", 64, 48, 1)
    assert enc.data == small.tobytes()

    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, :320] = (250, 10, 10)
    rgb[:, 320:] = (10, 10, 250)
    assert rgb.nbytes > RAW_MAX_BYTES
    enc = encode_image(rgb, quality=80)
    assert enc.format == "jpeg"
    assert len(enc.data) < rgb.nbytes // 20
    back = decode(enc.data)
    assert np.abs(back[240, 100].astype(int) - (250, 10, 10)).max() <= 8
    assert np.abs(back[240, 500].astype(int) - (10, 10, 250)).max() <= 8

    half = encode_image(rgb, max_width=320)
    assert (half.width, half.height) == (320, 240)
    assert decode(half.data).shape == (240, 320, 3)

    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[..., 3] = 255
    assert encode_image(rgba).format == "jpeg"  # opaque: the alpha goes
    rgba[:100, :, 3] = 0
    enc = encode_image(rgba)
    assert enc.format == "png"
    assert np.array_equal(decode(enc.data), rgba)  # PNG is exact
    with pytest.raises(ValueError, match="encoding"):
        encode_image(rgb, encoding="gif")


def test_blind_budget_bounds_all_widgets_together() -> None:
    pytest.importorskip("anywidget")
    from shm_comm.widgets._pacing import _BlindBudget

    budget = _BlindBudget(frames_per_s=90.0, bytes_per_s=1_000_000)
    widgets = [object() for _ in range(6)]
    now = time.monotonic()
    periods = [budget.period(w, now) for w in widgets]
    assert periods[-1] == pytest.approx(6 / 90.0)  # six widgets share 90 frames/s
    sent = 0
    sent_bytes = 0
    for step in range(1000):  # 10 s of 10 ms ticks, every widget asking every tick
        t = now + step * 0.01
        for _ in widgets:
            if budget.take(t, 20_000):
                sent += 1
                sent_bytes += 20_000
    # The bytes budget binds first (1 MB/s of 20 kB frames), plus a burst of 0.1 s.
    assert sent_bytes <= 10 * 1_000_000 + 100_000
    assert sent >= 10 * 45  # and it is used


def test_widget_streams_blind_only_while_a_cell_runs_and_it_was_viewed() -> None:
    pytest.importorskip("anywidget")
    from shm_comm import widgets as W

    view = W.ImageView("nonexistent_channel_for_pacing", autostart=False)
    activity = W._pacing._ACTIVITY
    saved = (activity.busy, activity.busy_since, activity.last_ack)
    try:
        now = time.monotonic()
        activity.busy, activity.busy_since = False, -math.inf
        assert view._due(now) == "acked"  # room in the window
        view._frame = 10  # ten frames unacknowledged: wait (until STALL_TIMEOUT)
        view._last_send = now
        assert view._due(now + 0.05) is None
        # A cell starts; the view acknowledged a frame just before: paced by time instead.
        view._acknowledge(9)
        activity.busy, activity.busy_since = True, time.monotonic()
        assert view._due(time.monotonic() + 0.05) == "blind"
        assert view.streaming_blind
        # The cell ends: back on acknowledgements, blind frames need none.
        activity.busy = False
        assert view._due(time.monotonic() + 0.1) == "acked"
        assert view._acked == view._frame
        # Never viewed (no acknowledgement for long before the cell): no blind streaming,
        # so a full window waits (one frame per STALL_TIMEOUT).
        view._last_ack = -math.inf
        activity.busy, activity.busy_since = True, time.monotonic()
        view._frame = view._acked + 10
        view._last_send = time.monotonic()
        assert view._due(time.monotonic() + 0.05) is None
        assert not view.streaming_blind
        assert view._due(time.monotonic() + W.STALL_TIMEOUT + 0.1) == "acked"
    finally:
        activity.busy, activity.busy_since, activity.last_ack = saved
        view.close()
