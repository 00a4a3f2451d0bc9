"""Typed NumPy channels: arrays with a dtype/shape header, zero-copy views and loans.

Every message is a typed-array payload (layout.py: array header, then the data 64-byte
aligned) sent with the same ring as raw bytes, so a plain :class:`~shm_comm.Subscriber` can
receive it with ``recv_bytes`` and :func:`decode_array` turns it into an array.

Lifetime rule (docs/typed-channels.md): an array returned by ``ArraySubscriber.recv()`` views
shared memory directly and stays valid and unchanged until the same subscriber's next
receive call or its ``close()``. Until then the publisher does not reuse that buffer (it
writes into a spare one instead, so nobody waits and nobody else loses messages). After that
the view stays memory-safe (the mapping lives as long as any view does) but its contents may
change: keep ``recv(copy=True)`` or ``arr.copy()`` for data you keep.
"""

from __future__ import annotations

import ast
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from . import layout as L
from .errors import SHMFormatError, SHMSerializationError
from .pubsub import Publisher, _ChannelReader
from .serialization import RAW

__all__ = ["ArrayPublisher", "ArraySubscriber", "decode_array"]

ShapeLike = int | Sequence[int]


def _shape(value: ShapeLike, what: str) -> tuple[int, ...]:
    shape = (value,) if isinstance(value, int) else tuple(int(d) for d in value)
    if any(d < 0 for d in shape) or len(shape) > L.ARRAY_MAX_NDIM:
        raise ValueError(f"{what} must have at most {L.ARRAY_MAX_NDIM} non-negative "
                         f"dimensions, got {value!r}")
    return shape


def _check_dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise TypeError(f"dtype {dt} holds Python objects, which cannot live in shared memory; "
                        "use a fixed-size dtype (numbers, fixed-length strings, structs)")
    if dt.itemsize == 0:
        raise TypeError(f"dtype {dt} has no size; give strings a length, e.g. 'U16'")
    return dt


def _descr(dt: np.dtype[Any]) -> str:
    return repr(np.lib.format.dtype_to_descr(dt))


@lru_cache(maxsize=256)
def _dtype_from_descr(descr: str) -> np.dtype[Any]:
    try:
        dt = np.lib.format.descr_to_dtype(ast.literal_eval(descr))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise SHMFormatError(f"typed-array header holds an invalid dtype {descr[:80]!r}: "
                             f"{exc}") from None
    if dt.hasobject:
        raise SHMFormatError("typed-array header declares an object dtype")
    return dt


def decode_array(payload: bytes | memoryview) -> tuple[np.ndarray[Any, Any], L.ArrayHeader]:
    """Turn a typed-array payload (e.g. from ``Subscriber.recv_bytes``) into an array.

    Returns ``(array, header)``; the array views ``payload`` (read-only for ``bytes``).
    Raises :class:`SHMFormatError` if the payload is not a well-formed typed array.
    """
    header = L.unpack_array_header(payload)
    dt = _dtype_from_descr(header.descr)
    count = math.prod(header.shape)
    if header.data_offset + count * dt.itemsize > len(payload):
        raise SHMFormatError(f"typed-array header declares {count} x {dt.itemsize} bytes but "
                             f"the payload holds {len(payload) - header.data_offset}")
    arr = np.frombuffer(payload, dtype=dt, count=count, offset=header.data_offset)
    return arr.reshape(header.shape), header


class ArrayPublisher(Publisher):
    """Publisher of NumPy arrays of one dtype, either of a fixed ``shape`` or of any shape up
    to ``max_shape`` (same number of dimensions, each no larger).

    Slots are sized for the largest array. ``send`` copies once into shared memory; ``loan``
    lets you fill the slot in place. Wrong dtype raises ``TypeError``, wrong shape
    ``ValueError``; nothing is published then.
    """

    def __init__(self, name: str, *, dtype: npt.DTypeLike, shape: ShapeLike | None = None,
                 max_shape: ShapeLike | None = None, num_slots: int = 64,
                 max_subscribers: int = 32, permissions: int = 0o600) -> None:
        if (shape is None) == (max_shape is None):
            raise ValueError("give exactly one of shape= (fixed) or max_shape= (variable)")
        self.dtype = _check_dtype(dtype)
        self.fixed_shape = shape is not None
        self.shape = _shape(shape if shape is not None else max_shape, "shape")  # type: ignore[arg-type]
        self._descr = _descr(self.dtype)
        capacity = math.prod(self.shape) * self.dtype.itemsize
        header = L.array_header_size(len(self.shape), len(self._descr.encode()))
        metadata = json.dumps({"type": "ndarray", "dtype": self._descr,
                               "shape": list(self.shape), "fixed": self.fixed_shape}).encode()
        self._serializer = RAW
        self._create_channel(name, num_slots, max(1, header + capacity), max_subscribers,
                             L.ENCODING_ARRAY, metadata, permissions)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if self.fixed_shape:
            if shape != self.shape:
                raise ValueError(f"channel {self.name!r} carries arrays of shape {self.shape}, "
                                 f"got {shape}")
        elif len(shape) != len(self.shape) or any(
                d > m for d, m in zip(shape, self.shape, strict=True)):
            raise ValueError(f"channel {self.name!r} carries arrays of up to {self.shape}, "
                             f"got {shape}")

    def _target(self, index: int, shape: tuple[int, ...], seq: int
                ) -> tuple[np.ndarray[Any, Any], int]:
        view = self._writer.payload_view(index)
        data_offset = L.pack_array_header(view, 0, self._descr, shape, seq, time.time_ns())
        count = math.prod(shape)
        out = np.frombuffer(view, dtype=self.dtype, count=count, offset=data_offset)
        return out.reshape(shape), data_offset + count * self.dtype.itemsize

    def send(self, obj: Any, *, block: bool = False, timeout: float | None = None) -> bool:
        """Publish array ``obj`` (copied once into shared memory); True once published.

        Non-contiguous arrays are fine (the copy gathers them). Raises ``TypeError`` for
        another dtype and ``ValueError`` for a shape the channel does not allow. Blocking
        rules as in :meth:`Publisher.send`.
        """
        arr = np.asarray(obj)
        if arr.dtype != self.dtype:
            raise TypeError(f"channel {self.name!r} carries {self.dtype}, got {arr.dtype}; "
                            f"convert with arr.astype({str(self.dtype)!r})")
        self._check_shape(arr.shape)
        if self._closed:
            raise ValueError(f"publisher of channel {self.name!r} is closed")
        if block and not self._wait_for_room(timeout):
            return False
        writer = self._writer
        index = writer.reserve()
        try:
            out, length = self._target(index, arr.shape, writer.head)
            np.copyto(out, arr, casting="no")
        except BaseException:
            writer.cancel(index)
            raise
        del out
        writer.commit(index, length, L.ENCODING_ARRAY, time.time_ns())
        return True

    def send_bytes(self, data: bytes | bytearray | memoryview, *, block: bool = False,
                   timeout: float | None = None) -> bool:
        """Not available on typed channels: raises ``TypeError`` (use :meth:`send`)."""
        raise TypeError("a typed-array channel carries arrays: use send(array) or loan()")

    @contextmanager
    def loan(self, shape: ShapeLike | None = None) -> Iterator[np.ndarray[Any, Any]]:
        """Zero-copy publish: yields a writable array in shared memory, published on exit.

        Fill all of it: it holds whatever the buffer held before. An exception inside the
        ``with`` block discards the loan (nothing is published). Do not keep the array after
        the block. ``shape`` is required for variable-shape channels.
        """
        if self._closed:
            raise ValueError(f"publisher of channel {self.name!r} is closed")
        target_shape = self.shape if shape is None else _shape(shape, "shape")
        if shape is None and not self.fixed_shape:
            raise ValueError("loan() on a variable-shape channel needs shape=")
        self._check_shape(target_shape)
        writer = self._writer
        index = writer.reserve()
        try:
            out, length = self._target(index, target_shape, writer.head)
            yield out
        except BaseException:
            writer.cancel(index)
            raise
        writer.commit(index, length, L.ENCODING_ARRAY, time.time_ns())

    def __repr__(self) -> str:
        kind = "shape" if self.fixed_shape else "max_shape"
        return f"<ArrayPublisher {self.name!r} {self.dtype} {kind}={self.shape}>"


class ArraySubscriber(_ChannelReader):
    """Receiver of a typed channel; learns dtype and shape from the channel itself.

    ``recv()`` returns a read-only array viewing shared memory, valid until this subscriber's
    next receive or ``close()`` (module docstring). Observers (``observer=True``) always get
    copies, since they never write to the segment. Other parameters as for
    :class:`~shm_comm.Subscriber`. Not thread-safe.
    """

    def __init__(self, name: str, *, timeout_connect: float = 5.0, latest: bool = False,
                 observer: bool = False, poll_interval: float | None = None) -> None:
        super().__init__(name, timeout_connect=timeout_connect, latest=latest,
                         observer=observer, poll_interval=poll_interval)
        self._on_reconnect()
        self.last_timestamp_ns = 0
        self.last_seq = -1
        self.last_batch_timestamps: np.ndarray[Any, Any] = np.empty(0)

    def _on_reconnect(self) -> None:
        self._ro_view = self._segment.view.toreadonly()
        self._holding_enabled = False
        meta = self._segment.header.metadata
        try:
            spec = json.loads(meta.decode()) if meta else None
        except (UnicodeDecodeError, ValueError):
            spec = None
        if not isinstance(spec, dict) or spec.get("type") != "ndarray":
            raise SHMSerializationError(
                f"channel {self.name!r} is not a typed-array channel; use Subscriber")
        self.dtype = _dtype_from_descr(str(spec["dtype"]))
        self.shape = tuple(int(d) for d in spec["shape"])
        self.fixed_shape = bool(spec["fixed"])
        self._item_size = math.prod(self.shape) * self.dtype.itemsize
        self._data_offset = L.array_header_size(len(self.shape), len(str(spec["dtype"]).encode()))

    @property
    def last_timestamp(self) -> float | None:
        """Publisher's send time of the last received array, seconds since the epoch."""
        return self.last_timestamp_ns / 1e9 if self.last_seq >= 0 else None

    def _take(self, copy: bool) -> np.ndarray[Any, Any] | None:
        reader = self._reader
        hold = not copy and not self.observer
        if hold and not self._holding_enabled:
            reader.enable_holding()
            self._holding_enabled = True
        while True:
            message = reader.poll(hold=hold)
            if message is None:
                return None
            if message.encoding != L.ENCODING_ARRAY:
                reader.validate(message)
                raise SHMSerializationError(
                    f"message {message.seq} on {self.name!r} is not a typed array")
            try:
                header = L.unpack_array_header(self._ro_view, message.offset, message.length)
                dt = _dtype_from_descr(header.descr)
                count = math.prod(header.shape)
                if header.data_offset + count * dt.itemsize > message.length:
                    raise SHMFormatError("typed-array header declares more data than sent")
            except SHMFormatError:
                if not hold and not reader.validate(message):
                    continue  # overwritten while we read it: not a format problem
                if hold:
                    reader.validate(message)
                raise
            arr = np.frombuffer(self._ro_view, dtype=dt, count=count,
                                offset=message.offset + header.data_offset).reshape(header.shape)
            if not hold:
                arr = arr.copy()
            if reader.validate(message):
                self.last_timestamp_ns = message.timestamp_ns
                self.last_seq = message.seq
                return arr

    def recv(self, timeout: float | None = None, copy: bool = False
             ) -> np.ndarray[Any, Any] | None:
        """The next array, or None if none arrived within ``timeout`` seconds.

        ``copy=False``: a read-only view of shared memory (lifetime rule above).
        ``copy=True``: a private, writable copy. Raises :class:`SHMFormatError` for a
        malformed header (the message is consumed; the channel stays usable).
        """
        self._ensure_open()
        got = self._take(copy)
        if got is not None:
            return got
        if timeout == 0:
            self._idle_check()
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._wait(deadline):
            got = self._take(copy)
            if got is not None:
                return got
        return self._take(copy)

    def recv_latest(self, timeout: float | None = None, copy: bool = False
                    ) -> np.ndarray[Any, Any] | None:
        """The newest array, skipping (and counting as dropped) older unread ones."""
        self._ensure_open()
        self._reader.skip_to_latest()
        return self.recv(timeout, copy)

    def recv_batch(self, max_n: int = 1000, timeout: float = 0.0) -> np.ndarray[Any, Any]:
        """All waiting arrays (up to ``max_n``) stacked into one new array ``(k, *shape)``.

        Waits up to ``timeout`` seconds for the first one; ``k`` may be 0. Needs a
        fixed-shape channel (``TypeError`` otherwise). Publisher timestamps of the batch
        (seconds) are in ``last_batch_timestamps``.
        """
        self._ensure_open()
        if not self.fixed_shape:
            raise TypeError(f"recv_batch needs a fixed-shape channel; {self.name!r} is "
                            "variable-shape: call recv() per message")
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        if timeout and not self._reader.pending():
            deadline = time.monotonic() + timeout
            while not self._reader.pending() and self._wait(deadline):
                pass
        out = np.empty((max_n, *self.shape), dtype=self.dtype)
        stamps: list[int] = []
        flat = out.reshape(-1).view(np.uint8).data
        first, count = self._reader.read_batch(max_n, flat, self._item_size, self._data_offset,
                                               stamps)
        if not count:
            if self._reader.pending():
                # A message of another size is next: receive it the careful way, which
                # raises SHMFormatError for a malformed one (consuming it).
                single = self._take(copy=True)
                if single is not None and single.shape == self.shape:
                    out[0] = single
                    stamps.append(self.last_timestamp_ns)
                    first, count = 0, 1
            else:
                self._idle_check()
        result = out[first:first + count]
        self.last_batch_timestamps = np.asarray(stamps, dtype=np.float64) / 1e9
        if count:
            self.last_timestamp_ns = stamps[-1]
            self.last_seq = self._reader.cursor - 1
        return result

    def __enter__(self) -> ArraySubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ArraySubscriber {self.name!r} {self.dtype} shape={self.shape}>"
