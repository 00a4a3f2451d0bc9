"""Images from typed channels: what a message is (colour, grey, depth), and turning it into
pixels a viewer can show (colormaps, value ranges, downscaling, JPEG/PNG encoding).

Used by :class:`shm_comm.widgets.ImageView` and by the Foxglove bridge; it knows nothing of
Jupyter or Foxglove. Encoding needs Pillow (the ``jupyter`` extra: ``pip install -e ".[jupyter]"``
in the checkout, or ``pip install pillow``), imported only when an image is encoded.

Which messages are images (after picking a structured field and dropping leading axes of
length 1):

==================== ========= ====================================================
dtype                shape     kind
==================== ========= ====================================================
uint8                (H, W)    ``mono``: grey levels (a colormap may be applied)
uint8                (H, W, 3) ``rgb``
uint8                (H, W, 4) ``rgba``
other numbers        (H, W)    ``scalar``: depth and the like, shown through a
                                colormap over a fixed or automatic value range
==================== ========= ====================================================
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._optional import missing

__all__ = [
    "COLORMAPS",
    "EncodedImage",
    "ImageSpec",
    "colorize",
    "encode_image",
    "image_spec",
    "value_range",
]

UInt8Array = npt.NDArray[np.uint8]

# Colormaps as evenly spaced anchor colours, interpolated to 256 entries. viridis and inferno
# are matplotlib's (its 11-step values); turbo is Google's, from its published polynomial
# approximation; gray is linear.
_ANCHORS: dict[str, Sequence[tuple[int, int, int]]] = {
    "viridis": [(68, 1, 84), (72, 36, 117), (65, 68, 135), (53, 95, 141), (42, 120, 142),
                (33, 145, 140), (34, 168, 132), (68, 191, 112), (122, 209, 81),
                (189, 223, 38), (253, 231, 37)],
    "inferno": [(0, 0, 4), (22, 11, 57), (66, 10, 104), (106, 23, 110), (147, 38, 103),
                (188, 55, 84), (221, 81, 58), (243, 120, 25), (252, 165, 10), (246, 215, 70),
                (252, 255, 164)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}  # fmt: skip
_TURBO = (
    (0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943),
    (0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604),
    (0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973),
)


def _lut(name: str) -> UInt8Array:
    t = np.linspace(0.0, 1.0, 256)
    if name == "turbo":
        rgb = np.stack([np.polynomial.polynomial.polyval(t, c) for c in _TURBO], axis=1)
        return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    anchors = np.asarray(_ANCHORS[name], dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(anchors))
    rgb = np.stack([np.interp(t, at, anchors[:, k]) for k in range(3)], axis=1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


COLORMAPS: dict[str, UInt8Array] = {name: _lut(name) for name in ("turbo", "viridis",
                                                                    "inferno", "gray")}
"""256-entry RGB lookup tables by name."""

RANGE_PERCENTILES = (1.0, 99.0)
"""Automatic value range: these percentiles of the valid pixels (outliers do not wash out
the picture)."""
RANGE_SAMPLES = 20_000
"""Pixels sampled (evenly strided) to find the automatic range."""


@dataclass(frozen=True)
class ImageSpec:
    """How to read images out of a channel's messages.

    ``field``: the structured field holding the image (None for plain arrays); ``index``: how
    to index one message to get the (H, W[, C]) array; ``kind``: ``mono``, ``rgb``, ``rgba``
    or ``scalar``; ``dtype``: the pixel dtype.
    """

    field: str | None
    index: tuple[int, ...]
    kind: str
    dtype: np.dtype[Any]
    height: int
    width: int

    def pixels(self, message: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The (H, W[, C]) image inside one message (a view where possible)."""
        arr = message[self.field] if self.field is not None else message
        arr = arr[self.index] if self.index else arr
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        return arr


def _image_fields(dtype: np.dtype[Any]) -> list[str]:
    fields: Any = dtype.fields or {}
    return [name for name, (ftype, *_) in fields.items()
            if ftype.base.kind in "biuf" and len(ftype.shape) >= 2]  # fmt: skip


def image_spec(channel: str, dtype: np.dtype[Any], shape: Sequence[int],
               field: str | None = None) -> ImageSpec:  # fmt: skip
    """Work out how a channel's messages hold an image; ValueError saying why if they do not.

    ``shape`` is the message shape (the channel's, or its maximum for variable shapes).
    Structured dtypes need ``field`` unless exactly one field is an array of two or more
    dimensions. Leading axes of length 1 are ignored: ``(1, H, W, 3)`` is an RGB image. For
    structured messages holding several records, the first record's image is shown.
    """
    shape = tuple(int(d) for d in shape)
    if dtype.names is not None:
        candidates = _image_fields(dtype)
        if field is None:
            if len(candidates) != 1:
                raise ValueError(
                    f"channel {channel!r} has fields {list(dtype.names)}; pass field= to pick "
                    f"the image (candidates: {candidates or 'none'})"
                )
            field = candidates[0]
        elif dtype.fields is None or field not in dtype.fields:
            raise ValueError(f"channel {channel!r} has no field {field!r}; it has "
                             f"{list(dtype.names)}")  # fmt: skip
        ftype = dtype.fields[field][0]  # type: ignore[index]
        index = (0,) * len(shape)  # the first record
        pixel_shape = tuple(ftype.shape)
        pixel_dtype = ftype.base
    else:
        if field is not None:
            raise ValueError(f"channel {channel!r} carries plain {dtype} arrays; it has no "
                             f"field {field!r}")  # fmt: skip
        lead = 0
        while len(shape) - lead > 2 and shape[lead] == 1 and not (
            len(shape) - lead == 3 and shape[-1] in (1, 3, 4)
        ):
            lead += 1
        index = (0,) * lead
        pixel_shape = shape[lead:]
        pixel_dtype = dtype
    if len(pixel_shape) == 3 and pixel_shape[2] == 1:
        pixel_shape = pixel_shape[:2]
    if len(pixel_shape) not in (2, 3) or (len(pixel_shape) == 3 and pixel_shape[2] not in (3, 4)):
        raise ValueError(
            f"channel {channel!r} carries {pixel_shape} arrays; an image is (H, W), (H, W, 3) "
            "or (H, W, 4)"
        )
    if pixel_dtype.kind not in "biuf":
        raise ValueError(f"channel {channel!r} carries {pixel_dtype}, which is not numeric")
    if len(pixel_shape) == 3:
        if pixel_dtype != np.uint8:
            raise ValueError(
                f"channel {channel!r} carries {pixel_dtype} colour images; colour must be "
                "uint8 (convert with (x * 255).clip(0, 255).astype(np.uint8))"
            )
        kind = "rgb" if pixel_shape[2] == 3 else "rgba"
    else:
        kind = "mono" if pixel_dtype == np.uint8 else "scalar"
    return ImageSpec(field, index, kind, np.dtype(pixel_dtype), pixel_shape[0], pixel_shape[1])


def _valid(values: np.ndarray[Any, Any], zero_is_invalid: bool) -> np.ndarray[Any, Any]:
    valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    if zero_is_invalid:
        valid &= values != 0
    return valid


def value_range(values: np.ndarray[Any, Any], zero_is_invalid: bool = False
                ) -> tuple[float, float] | None:  # fmt: skip
    """The automatic display range of a scalar image: RANGE_PERCENTILES of its valid pixels.

    Valid means finite, and non-zero when ``zero_is_invalid`` (depth cameras write 0 where
    they measured nothing). None if no pixel is valid.
    """
    step = max(1, int(math.sqrt(values.size / RANGE_SAMPLES)))
    sample = values[::step, ::step]
    sample = sample[_valid(sample, zero_is_invalid)]
    if sample.size == 0:
        return None
    lo, hi = np.percentile(sample, RANGE_PERCENTILES)
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def colorize(values: np.ndarray[Any, Any], vrange: tuple[float, float], colormap: str,
             zero_is_invalid: bool = False) -> UInt8Array:  # fmt: skip
    """A scalar (H, W) image through a colormap: (H, W, 3) uint8; invalid pixels black.

    ``vrange``: the values shown as the first and last colour (outside: clipped).
    """
    lut = COLORMAPS[colormap]
    lo, hi = vrange
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    scaled = (values.astype(np.float32) - np.float32(lo)) * np.float32(scale)
    np.clip(scaled, 0, 255, out=scaled)
    valid = _valid(values, zero_is_invalid)
    index = np.where(valid, scaled, 0).astype(np.uint8)
    out = lut[index]
    out[~valid] = 0
    return out


@dataclass(frozen=True)
class EncodedImage:
    """One image ready to send: ``format`` is ``jpeg``, ``png`` or ``raw`` (``channels``
    bytes per pixel, row-major, no padding); ``width``/``height`` after downscaling."""

    data: bytes
    format: str
    width: int
    height: int
    channels: int


RAW_MAX_BYTES = 32 * 1024
"""``encoding="auto"`` sends images up to this many bytes uncompressed."""
ENCODINGS = ("auto", "jpeg", "png", "raw")


def encode_image(pixels: UInt8Array, *, encoding: str = "auto", quality: int = 80,
                 max_width: int | None = None) -> EncodedImage:  # fmt: skip
    """Encode a uint8 (H, W), (H, W, 3) or (H, W, 4) image, downscaled to ``max_width``.

    ``encoding="auto"``: raw when it is at most RAW_MAX_BYTES, else JPEG (``quality`` 1-95),
    or PNG for RGBA with some transparency (JPEG has no alpha). Needs Pillow.
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise missing("encoding images", "jupyter", "pillow", exc) from exc

    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 4 and encoding in ("auto", "jpeg") and bool(np.all(pixels[:, :, 3] == 255)):
        pixels, channels = pixels[:, :, :3], 3  # opaque: JPEG needs no alpha
    image = None
    if max_width is not None and 0 < max_width < width:
        image = Image.fromarray(np.ascontiguousarray(pixels))
        new_height = max(1, round(height * max_width / width))
        image = image.resize((max_width, new_height), Image.Resampling.BILINEAR,
                             reducing_gap=2.0)  # fmt: skip
        width, height = image.size
    nbytes = width * height * channels
    if encoding == "raw" or (encoding == "auto" and nbytes <= RAW_MAX_BYTES):
        data = image.tobytes() if image is not None else np.ascontiguousarray(pixels).tobytes()
        return EncodedImage(data, "raw", width, height, channels)
    if image is None:
        image = Image.fromarray(np.ascontiguousarray(pixels))
    fmt = "png" if encoding == "png" or (encoding == "auto" and channels == 4) else "jpeg"
    if fmt == "jpeg" and channels == 4:
        image = image.convert("RGB")  # encoding="jpeg" asked for: the alpha goes
        channels = 3
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, format="JPEG", quality=max(1, min(95, int(quality))))
    else:
        image.save(out, format="PNG", compress_level=1)
    return EncodedImage(out.getvalue(), fmt, width, height, channels)
