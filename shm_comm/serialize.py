"""shm-comm 1.0's serialization functions: ``serialize``, ``deserialize``,
``is_msgpack_available``.

Thin wrappers over :mod:`shm_comm.serialization` (which owns pickle and msgpack), keeping 1.0's
contract: bytes-like objects pass through :func:`serialize` unchanged whatever the method, and
every failure (an unknown method, msgpack not installed, an object or bytes that cannot be
converted) raises :class:`~shm_comm.errors.SHMSerializationError`. As with any pickle,
``deserialize(data, "pickle")`` runs code chosen by whoever wrote ``data``.
"""

from __future__ import annotations

from typing import Any

from .errors import SHMSerializationError
from .serialization import Serializer, get_serializer, msgpack_available

__all__ = ["deserialize", "is_msgpack_available", "serialize"]


def _serializer(method: str) -> Serializer:
    try:
        return get_serializer(method)
    except ValueError as exc:  # unknown method, or msgpack not installed
        raise SHMSerializationError(str(exc)) from None


def serialize(obj: Any, method: str = "pickle") -> bytes:
    """``obj`` as bytes by ``method`` (``"pickle"``, ``"msgpack"`` or ``"raw"``).

    ``bytes``, ``bytearray`` and ``memoryview`` are returned as ``bytes``, unconverted.
    Raises :class:`SHMSerializationError` if ``obj`` cannot be serialized by ``method``, the
    method is unknown, or msgpack is requested but not installed.
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    return _serializer(method).encode(obj)


def deserialize(data: bytes | bytearray | memoryview, method: str = "pickle") -> Any:
    """The object :func:`serialize` made ``data`` from with the same ``method``.

    Raises :class:`SHMSerializationError` if ``data`` is not valid for ``method``, the method
    is unknown, or msgpack is requested but not installed.
    """
    serializer = _serializer(method)
    return serializer.decode(bytes(data) if isinstance(data, bytearray) else data,
                             serializer.encoding)


def is_msgpack_available() -> bool:
    """Whether ``method="msgpack"`` can be used (the msgpack package is installed)."""
    return msgpack_available()
