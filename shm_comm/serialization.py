"""How objects become bytes: pickle (default), msgpack, or raw bytes.

The only module that imports pickle and msgpack. Pickle runs code while loading: a subscriber
using pickle trusts whoever can write the channel's segment (docs/security.md). Use msgpack or
raw bytes where that is not acceptable; a msgpack or raw subscriber never unpickles.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import layout as L
from .errors import SHMSerializationError

__all__ = ["Serializer", "get_serializer", "msgpack_available"]


@dataclass(frozen=True)
class Serializer:
    """A named pair of functions between objects and bytes, with its encoding id."""

    name: str
    encoding: int
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes | memoryview], Any]

    def encode(self, obj: Any) -> bytes:
        """Serialize ``obj``; raises :class:`SHMSerializationError` if it cannot be."""
        try:
            return self.dumps(obj)
        except Exception as exc:
            raise SHMSerializationError(
                f"cannot serialize {type(obj).__name__} with {self.name}: {exc}"
            ) from exc

    def decode(self, data: bytes | memoryview, encoding: int) -> Any:
        """Deserialize a payload; raises :class:`SHMSerializationError` if it cannot be."""
        if encoding != self.encoding:
            if encoding == L.ENCODING_ARRAY:
                raise SHMSerializationError(
                    "message is a typed NumPy array (the channel has an ArrayPublisher); "
                    "receive it with shm_comm.ArraySubscriber, or with recv_bytes() and "
                    "shm_comm.decode_array()"
                )
            got = L.ENCODING_NAMES.get(encoding, f"unknown ({encoding})")
            raise SHMSerializationError(
                f"message is encoded as {got} but this subscriber uses {self.name}; "
                f"create it with serialization={got!r} (or use recv_bytes)"
            )
        try:
            return self.loads(data)
        except Exception as exc:
            raise SHMSerializationError(f"cannot deserialize a {self.name} message: {exc}") from exc


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _raw_dumps(obj: Any) -> bytes:
    return bytes(memoryview(obj))


def _raw_loads(data: bytes | memoryview) -> bytes:
    return bytes(data)


def _msgpack() -> Serializer:
    try:
        import msgpack  # type: ignore[import-untyped]
    except ImportError:
        raise ValueError(
            'serialization="msgpack" needs the msgpack package: pip install msgpack'
        ) from None
    # One Packer per serializer (so per channel end, which is single-threaded): reusing it
    # saves a third of the packing time of msgpack.packb for small dicts.
    packer = msgpack.Packer(use_bin_type=True)

    def dumps(obj: Any) -> bytes:
        return packer.pack(obj)  # type: ignore[no-any-return]

    def loads(data: bytes | memoryview) -> Any:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)

    return Serializer("msgpack", L.ENCODING_MSGPACK, dumps, loads)


PICKLE = Serializer("pickle", L.ENCODING_PICKLE, _pickle_dumps, pickle.loads)
RAW = Serializer("raw", L.ENCODING_RAW, _raw_dumps, _raw_loads)


def get_serializer(name: str) -> Serializer:
    """The serializer called ``name``: ``"pickle"``, ``"msgpack"`` or ``"raw"``.

    Raises ``ValueError`` for another name or when msgpack is not installed.
    """
    if name == "pickle":
        return PICKLE
    if name == "msgpack":
        return _msgpack()
    if name == "raw":
        return RAW
    raise ValueError(f'serialization must be "pickle", "msgpack" or "raw", got {name!r}')


def msgpack_available() -> bool:
    """Whether the msgpack package can be imported (``serialization="msgpack"`` needs it)."""
    try:
        import msgpack  # noqa: F401
    except ImportError:
        return False
    return True
