"""shm_comm.foxglove_schemas in one process: which typed channels map to which Foxglove
schema, messages decoded back with Foxglove's own protobuf classes, and the JSON forms."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

pytest.importorskip("foxglove_schemas_protobuf")
Image = pytest.importorskip("PIL.Image")

from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage  # noqa: E402
from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud  # noqa: E402
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage  # noqa: E402

from shm_comm.foxglove_schemas import (  # noqa: E402
    array_from_message,
    json_fits,
    json_of_array,
    json_of_value,
    json_schema_of_dtype,
    json_schema_of_value,
    mapping_for,
    message_decoder,
)

STAMP = 1_700_000_000_123_456_789


@pytest.mark.parametrize(
    ("dtype", "shape", "schema"),
    [
        ("u1", (4, 5), "foxglove.RawImage"),
        ("u1", (4, 5, 3), "foxglove.RawImage"),
        ("u1", (1, 4, 5, 4), "foxglove.RawImage"),
        ("<u2", (4, 5), "foxglove.RawImage"),
        ("<f4", (4, 5), "foxglove.RawImage"),
        ("<f4", (7, 3), "foxglove.PointCloud"),
        ("<f4", (7, 4), "foxglove.PointCloud"),
        (">u2", (4, 5), None),  # Foxglove reads 16UC1 as little-endian
        ("<f8", (7, 3), None),
        ("u1", (4, 5, 2), None),
        ("<i4", (4, 5), None),
    ],
)
def test_which_channels_map(dtype: str, shape: tuple[int, ...], schema: str | None) -> None:
    mapping = mapping_for("cam", np.dtype(dtype), shape)
    assert (mapping.schema_name if mapping else None) == schema
    if mapping is None:
        return
    assert (mapping.schema_encoding, mapping.message_encoding) == ("protobuf", "protobuf")
    array = (np.arange(int(np.prod(shape))) % 200).astype(dtype).reshape(shape)
    data = mapping.encode(array, STAMP)
    # The schema data is a FileDescriptorSet that decodes the message by itself...
    parsed = message_decoder(mapping.schema_name, mapping.schema_data)(data)
    assert parsed.timestamp.seconds * 10**9 + parsed.timestamp.nanos == STAMP
    assert parsed.frame_id == "cam"
    # ...into the same array, with Foxglove's classes too.
    cls = RawImage if schema == "foxglove.RawImage" else PointCloud
    back = array_from_message(mapping.schema_name, cls.FromString(data), np.dtype(dtype), shape)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == shape
    assert np.array_equal(back, array)


def test_compressed_images() -> None:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, 32:] = (200, 40, 40)
    mapping = mapping_for("cam", np.dtype("u1"), rgb.shape, compressed=True)
    assert mapping is not None
    assert mapping.schema_name == "foxglove.CompressedImage"
    message = CompressedImage.FromString(mapping.encode(rgb, STAMP))
    assert message.format == "jpeg"
    decoded = np.asarray(Image.open(io.BytesIO(message.data)))
    assert np.abs(decoded[24, 50].astype(int) - (200, 40, 40)).max() <= 10
    depth = (np.arange(48 * 64, dtype="<u2") * 13).reshape(48, 64)
    mapping = mapping_for("depth", np.dtype("<u2"), depth.shape, compressed=True)
    assert mapping is not None
    message = CompressedImage.FromString(mapping.encode(depth, STAMP))
    assert message.format == "png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(message.data))), depth)  # lossless
    float_depth = mapping_for("depth", np.dtype("<f4"), (48, 64), compressed=True)
    assert float_depth is not None
    assert float_depth.schema_name == "foxglove.RawImage"  # no lossless compressed form


def test_json_forms() -> None:
    rec = np.dtype([("t", "<f8"), ("q", "<f4", (2,)), ("name", "U4"), ("ok", "?")])
    one = np.zeros((), rec)
    one["t"], one["q"], one["name"], one["ok"] = 1.5, [math.nan, 2.0], "arm", True
    assert json_of_array(one) == {"t": 1.5, "q": [None, 2.0], "name": "arm", "ok": True}
    many = np.zeros((2, 2), rec)
    many["t"] = [[0, 1], [2, 3]]
    records = json_of_array(many)["records"]
    assert [[r["t"] for r in row] for row in records] == [[0, 1], [2, 3]]
    assert json_of_array(np.array([[1, 2], [3, 4]], np.int16)) == {"data": [[1, 2], [3, 4]]}
    schema = json_schema_of_dtype(rec)
    assert schema["properties"]["q"] == {"type": "array", "items": {"type": ["number", "null"]}}
    assert schema["properties"]["name"] == {"type": "string"}
    assert schema["required"] == ["t", "q", "name", "ok"]
    assert json_schema_of_dtype(rec, (2,))["properties"]["records"]["type"] == "array"
    assert json_schema_of_dtype(np.dtype("<f8"), (3,))["properties"]["data"] == {
        "type": "array", "items": {"type": ["number", "null"]}}
    assert json_fits(rec, (100,))
    assert json_fits(np.dtype("<f8"), (64, 64))
    assert not json_fits(np.dtype("<f8"), (100, 100))
    text = json_of_value({"i": 1, "x": np.float32(0.5), "v": np.arange(2), "n": math.inf})
    assert text is not None
    assert json.loads(text) == {"i": 1, "x": 0.5, "v": [0, 1], "n": None}
    assert json_of_value({1: "int key"}) is None
    assert json_of_value([1, 2]) is None
    assert json_of_value({"b": b"\xff"}) is not None
    assert json_schema_of_value({"i": 1, "x": 0.5, "s": "a", "l": [1.0], "d": {"k": True}}
                                )["properties"] == {
        "i": {"type": "integer"}, "x": {"type": ["number", "null"]}, "s": {"type": "string"},
        "l": {"type": "array", "items": {"type": ["number", "null"]}},
        "d": {"type": "object", "properties": {"k": {"type": "boolean"}}}}
