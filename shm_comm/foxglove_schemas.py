"""How shm_comm channels look to Foxglove: its well-known schemas for typed channels, JSON
for records and dicts, and back again.

Used by the recorder (``shm-comm record``: images and point clouds in MCAP files that
Foxglove shows) and by the Foxglove bridge (``shm-comm foxglove``). It knows nothing of
either's I/O.

=========================================== ============================================
typed channel                               Foxglove schema (``protobuf`` encoding)
=========================================== ============================================
uint8 ``(H, W)``, ``(H, W, 3)``, ``(H, W, 4)`` ``foxglove.RawImage`` ``mono8``/``rgb8``/``rgba8``
little-endian uint16 / float32 ``(H, W)``    ``foxglove.RawImage`` ``16UC1``/``32FC1`` (depth)
the same images, ``compressed=True``         ``foxglove.CompressedImage`` (JPEG; PNG for 16UC1)
little-endian float32 ``(N, 3)``/``(N, 4)``  ``foxglove.PointCloud``: ``x y z [intensity]``
=========================================== ============================================

A leading axis of length 1 is ignored (``(1, H, W, 3)`` is an image). Variable-shape
channels map the same way (each message carries its own size). Structured dtypes and small
numeric arrays become JSON (:func:`json_of_array`, with a JSON schema from the dtype,
:func:`json_schema_of_dtype`); everything else has no well-known form.

The protobuf schemas are Foxglove's own (``foxglove-schemas-protobuf``), encoded with
Google's ``protobuf``: the ``record`` extra (``pip install -e ".[record]"`` in the checkout,
or ``pip install protobuf foxglove-schemas-protobuf``). Both are imported only when a mapping
is built.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._optional import missing

__all__ = [
    "JSON_MAX_ELEMENTS",
    "Mapping",
    "array_from_message",
    "json_of_array",
    "json_of_value",
    "json_schema_of_dtype",
    "json_schema_of_value",
    "mapping_for",
    "message_decoder",
]

PROTOBUF = "protobuf"
RAW_IMAGE = "foxglove.RawImage"
COMPRESSED_IMAGE = "foxglove.CompressedImage"
POINT_CLOUD = "foxglove.PointCloud"
JSON_MAX_ELEMENTS = 4096
"""Plain numeric arrays of at most this many elements become JSON (``{"data": [...]}``)."""

# (dtype, channels) -> RawImage encoding. Foxglove reads 16UC1 and 32FC1 as little-endian.
_IMAGE_ENCODINGS: dict[tuple[np.dtype[Any], int], str] = {
    (np.dtype("u1"), 1): "mono8",
    (np.dtype("u1"), 3): "rgb8",
    (np.dtype("u1"), 4): "rgba8",
    (np.dtype("<u2"), 1): "16UC1",
    (np.dtype("<f4"), 1): "32FC1",
}
_IMAGE_DTYPES = {encoding: key for key, encoding in _IMAGE_ENCODINGS.items()}
_FLOAT32 = 7  # foxglove.PackedElementField.NumericType.FLOAT32
_POINT_FIELDS = {3: ("x", "y", "z"), 4: ("x", "y", "z", "intensity")}


def _require_protobuf() -> None:
    try:
        import foxglove_schemas_protobuf  # noqa: F401
        import google.protobuf  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        raise missing("Foxglove's schemas", "record", "protobuf foxglove-schemas-protobuf",
                      exc) from exc


@functools.lru_cache(maxsize=8)
def _file_descriptor_set(schema_name: str) -> bytes:
    """The schema data MCAP and Foxglove expect for a protobuf message: a serialized
    FileDescriptorSet of its .proto file and every file it imports (imports first)."""
    from google.protobuf.descriptor_pb2 import (  # type: ignore[import-untyped]
        FileDescriptorSet,
    )

    descriptor = _message_class(schema_name).DESCRIPTOR
    out = FileDescriptorSet()
    seen: set[str] = set()

    def add(file: Any) -> None:
        if file.name in seen:
            return
        for dependency in file.dependencies:
            add(dependency)
        seen.add(file.name)
        file.CopyToProto(out.file.add())

    add(descriptor.file)
    return bytes(out.SerializeToString())


def _message_class(schema_name: str) -> Any:
    _require_protobuf()
    if schema_name == RAW_IMAGE:
        from foxglove_schemas_protobuf.RawImage_pb2 import RawImage

        return RawImage
    if schema_name == COMPRESSED_IMAGE:
        from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage

        return CompressedImage
    if schema_name == POINT_CLOUD:
        from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud

        return PointCloud
    raise ValueError(f"no protobuf class for {schema_name!r}")


@dataclass(frozen=True)
class Mapping:
    """A typed channel as a Foxglove schema: what to register and how to encode a message.

    ``encode(array, timestamp_ns)`` turns one message (as received) into the bytes of one
    Foxglove message.
    """

    schema_name: str
    schema_encoding: str
    schema_data: bytes
    message_encoding: str
    encode: Callable[[np.ndarray[Any, Any], int], bytes]


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 2 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _image_kind(dtype: np.dtype[Any], shape: tuple[int, ...]) -> str | None:
    shape = _squeeze(shape)
    if len(shape) == 2:
        channels = 1
    elif len(shape) == 3 and shape[2] in (1, 3, 4):
        channels = shape[2]
    else:
        return None
    return _IMAGE_ENCODINGS.get((dtype, channels))


def _is_point_cloud(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bool:
    shape = _squeeze(shape)
    return dtype == np.dtype("<f4") and len(shape) == 2 and shape[1] in (3, 4)


def _stamp(message: Any, timestamp_ns: int) -> None:
    message.timestamp.seconds = timestamp_ns // 1_000_000_000
    message.timestamp.nanos = timestamp_ns % 1_000_000_000


def mapping_for(channel: str, dtype: np.dtype[Any], shape: tuple[int, ...], *,
                compressed: bool = False, quality: int = 90) -> Mapping | None:  # fmt: skip
    """The well-known Foxglove schema of a typed channel (module docstring), or None.

    ``channel`` becomes the messages' ``frame_id``. ``compressed=True`` sends images as
    ``foxglove.CompressedImage``: JPEG (``quality``) for 8-bit images, PNG for RGBA and for
    16-bit depth (which JPEG would ruin); float depth stays a RawImage. That needs Pillow.
    """
    shape = tuple(int(d) for d in shape)
    # float32 (N, 3) and (N, 4) are points, not depth images 3 or 4 pixels wide.
    encoding = None if _is_point_cloud(dtype, shape) else _image_kind(dtype, shape)
    if encoding == "32FC1":
        compressed = False  # no lossless compressed form for float depth in Foxglove
    if encoding is not None and not compressed:
        cls = _message_class(RAW_IMAGE)

        def encode_raw(array: np.ndarray[Any, Any], timestamp_ns: int) -> bytes:
            pixels = np.ascontiguousarray(array.reshape(_squeeze(array.shape)))
            message = cls(frame_id=channel, width=pixels.shape[1], height=pixels.shape[0],
                          encoding=encoding, step=pixels.strides[0], data=pixels.tobytes())
            _stamp(message, timestamp_ns)
            return bytes(message.SerializeToString())

        return Mapping(RAW_IMAGE, PROTOBUF, _file_descriptor_set(RAW_IMAGE), PROTOBUF,
                       encode_raw)  # fmt: skip
    if encoding is not None:
        cls = _message_class(COMPRESSED_IMAGE)
        fmt = "jpeg" if dtype == np.uint8 and encoding != "rgba8" else "png"

        def encode_compressed(array: np.ndarray[Any, Any], timestamp_ns: int) -> bytes:
            from shm_comm.imaging import encode_image

            pixels = np.ascontiguousarray(array.reshape(_squeeze(array.shape)))
            if pixels.ndim == 3 and pixels.shape[2] == 1:
                pixels = pixels[:, :, 0]
            if pixels.dtype == np.uint8:
                data = encode_image(pixels, encoding=fmt, quality=quality).data
            else:
                data = _png_of_depth(pixels)
            message = cls(frame_id=channel, format=fmt, data=data)
            _stamp(message, timestamp_ns)
            return bytes(message.SerializeToString())

        return Mapping(COMPRESSED_IMAGE, PROTOBUF, _file_descriptor_set(COMPRESSED_IMAGE),
                       PROTOBUF, encode_compressed)  # fmt: skip
    if _is_point_cloud(dtype, shape):
        cls = _message_class(POINT_CLOUD)
        names = _POINT_FIELDS[_squeeze(shape)[1]]

        def encode_points(array: np.ndarray[Any, Any], timestamp_ns: int) -> bytes:
            points = np.ascontiguousarray(array.reshape(_squeeze(array.shape)))
            message = cls(frame_id=channel, point_stride=4 * len(names), data=points.tobytes())
            message.pose.orientation.w = 1.0
            for i, name in enumerate(names):
                message.fields.add(name=name, offset=4 * i, type=_FLOAT32)
            _stamp(message, timestamp_ns)
            return bytes(message.SerializeToString())

        return Mapping(POINT_CLOUD, PROTOBUF, _file_descriptor_set(POINT_CLOUD), PROTOBUF,
                       encode_points)  # fmt: skip
    return None


def _png_of_depth(pixels: np.ndarray[Any, Any]) -> bytes:
    import io

    from PIL import Image

    if pixels.dtype != np.dtype("<u2"):
        raise ValueError("CompressedImage carries 8-bit images or 16-bit depth; record float "
                         "depth uncompressed")  # fmt: skip
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def message_decoder(schema_name: str, schema_data: bytes) -> Callable[[bytes], Any]:
    """A function that parses one protobuf message of the given schema (from a file or a
    server), built from the schema's FileDescriptorSet itself."""
    _require_protobuf()
    from google.protobuf import descriptor_pool, message_factory
    from google.protobuf.descriptor_pb2 import FileDescriptorSet

    pool = descriptor_pool.DescriptorPool()
    for file in FileDescriptorSet.FromString(schema_data).file:
        pool.Add(file)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(schema_name))
    return cls.FromString  # type: ignore[no-any-return]


def array_from_message(schema_name: str, message: Any, dtype: np.dtype[Any] | None = None,
                       shape: tuple[int, ...] | None = None) -> np.ndarray[Any, Any]:  # fmt: skip
    """The array a decoded RawImage or PointCloud message holds (a copy of its data).

    ``dtype``/``shape`` (the recorded channel's, when known) restore the exact array,
    leading axes of length 1 included; otherwise they follow from the message.
    """
    array: np.ndarray[Any, Any]
    if schema_name == RAW_IMAGE:
        if message.encoding not in _IMAGE_DTYPES:
            raise ValueError(f"RawImage encoding {message.encoding!r} is not one shm_comm maps")
        pixel_dtype, channels = _IMAGE_DTYPES[message.encoding]
        row = message.width * channels * pixel_dtype.itemsize
        data = np.frombuffer(message.data, dtype=np.uint8)
        rows = data[: message.height * message.step].reshape(message.height, message.step)
        pixels = np.ascontiguousarray(rows[:, :row]).view(pixel_dtype)
        natural = (message.height, message.width) + ((channels,) if channels > 1 else ())
        array = pixels.reshape(natural)
    elif schema_name == POINT_CLOUD:
        width = message.point_stride // 4
        array = np.frombuffer(message.data, dtype="<f4").reshape(-1, width).copy()
    else:
        raise ValueError(f"{schema_name!r} does not hold an shm_comm array")
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if shape is not None:
        lead = tuple(d for d in shape[: len(shape) - array.ndim])
        if len(shape) > array.ndim and all(d == 1 for d in lead):
            array = array.reshape(lead + array.shape)
        elif len(shape) == 3 and array.ndim == 2 and shape[2] == 1:
            array = array.reshape(*array.shape, 1)
    return array


# ------------------------------------------------------------------------------------------
# JSON: records, small arrays and dict messages.


def _json_schema_of_item(dtype: np.dtype[Any]) -> dict[str, Any]:
    if dtype.names is not None:
        return json_schema_of_dtype(dtype)
    base: dict[str, Any]
    if dtype.kind == "b":
        base = {"type": "boolean"}
    elif dtype.kind in "iu":
        base = {"type": "integer"}
    elif dtype.kind == "f":
        base = {"type": ["number", "null"]}  # NaN and infinities travel as null
    elif dtype.kind in "US":
        base = {"type": "string"}
    else:
        base = {}
    return base


def json_schema_of_dtype(dtype: np.dtype[Any], shape: tuple[int, ...] = ()) -> dict[str, Any]:
    """A JSON schema (draft 2020-12) for the JSON form of messages of ``dtype`` and ``shape``
    (:func:`json_of_array`)."""
    if dtype.names is not None:
        fields: Any = dtype.fields or {}
        properties = {}
        for name in dtype.names:
            ftype = fields[name][0]
            item = _json_schema_of_item(ftype.base)
            for _ in ftype.shape:
                item = {"type": "array", "items": item}
            properties[name] = item
        record = {"type": "object", "properties": properties,
                  "required": list(dtype.names)}  # fmt: skip
        if not shape:
            return {"$schema": "https://json-schema.org/draft/2020-12/schema", **record}
        item = record
    else:
        item = _json_schema_of_item(dtype)
    for _ in shape:
        item = {"type": "array", "items": item}
    key = "records" if dtype.names is not None else "data"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": {key: item}, "required": [key]}  # fmt: skip


def _plain(value: Any) -> Any:
    """Lists and numbers JSON can hold: non-finite floats become None, bytes text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _record(record: Any, dtype: np.dtype[Any]) -> dict[str, Any]:
    return {name: _plain(np.asarray(record[name]).tolist()) for name in dtype.names or ()}


def json_of_array(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """The JSON form of one typed message: a structured scalar is one object with a key per
    field, more records are ``{"records": [...]}``, plain arrays ``{"data": [...]}``."""
    dtype = array.dtype
    if dtype.names is not None:
        if array.shape == ():
            return _record(array[()], dtype)
        flat = [_record(r, dtype) for r in array.reshape(-1)]
        nested: Any = flat
        for size in reversed(array.shape[1:]):
            nested = [nested[i : i + size] for i in range(0, len(nested), size)]
        return {"records": nested}
    return {"data": _plain(array.tolist())}


def json_fits(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bool:
    """Whether messages of ``dtype``/``shape`` go to Foxglove as JSON (module docstring)."""
    if dtype.names is not None:
        return True
    return dtype.kind in "biuf" and math.prod(shape) <= JSON_MAX_ELEMENTS


def json_of_value(value: Any) -> bytes | None:
    """JSON of a dict message (pickle/msgpack), or None if it is not a dict JSON can hold."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    try:
        return json.dumps(_plain_value(value), allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return None


def _plain_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    return _plain(value)


def json_schema_of_value(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema from the first dict message of a channel: its keys and their types."""

    def of(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"type": "boolean"}
        if isinstance(v, (int, np.integer)):
            return {"type": "integer"}
        if isinstance(v, (float, np.floating)):
            return {"type": ["number", "null"]}
        if isinstance(v, (str, bytes)):
            return {"type": "string"}
        if isinstance(v, dict):
            return {"type": "object", "properties": {str(k): of(x) for k, x in v.items()}}
        if isinstance(v, (list, tuple, np.ndarray)):
            items = list(v)
            return {"type": "array", "items": of(items[0]) if items else {}}
        return {}

    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **of(value)}
