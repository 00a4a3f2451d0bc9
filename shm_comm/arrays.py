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

Zero-copy holders: a channel has one spare buffer per subscriber that may hold a view at once
(``ArrayPublisher(max_holders=2)`` by default), so its memory follows what is used. A
subscriber beyond the limit still gets every array, as a read-only private copy with the same
contents and a longer life than a view, counted in its ``stats()["copied_views"]``; it takes a
place as soon as one is free (docs/typed-channels.md, "Zero-copy holders").
"""

from __future__ import annotations

import ast
import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from . import layout as L
from . import ring
from .endpoint import closed_call
from .errors import SHMClosedError, SHMFormatError, SHMSerializationError
from .pubsub import Publisher, _ChannelReader
from .serialization import RAW
from .trust import TrustedUsers

__all__ = ["ArrayPublisher", "ArraySubscriber", "Loan", "decode_array"]

ShapeLike = int | Sequence[int]
_SEQ_TIMESTAMP_AT = 8
_SMALL = 4096  # below this, bytes copies beat np.copyto's per-call overhead


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
    return _array_at(payload, 0, len(payload))


def _array_at(buf: bytes | memoryview, offset: int, length: int
              ) -> tuple[np.ndarray[Any, Any], L.ArrayHeader]:
    """The array of the typed-array payload at ``buf[offset:offset + length]`` (a view of
    ``buf``) and its header. The one check of a received header, on every read path: anything
    malformed raises :class:`SHMFormatError`, never a bare NumPy error."""
    header = L.unpack_array_header(buf, offset, length)
    dt = _dtype_from_descr(header.descr)
    count = math.prod(header.shape)
    if header.data_offset + count * dt.itemsize > length:
        raise SHMFormatError(f"typed-array header declares {count} x {dt.itemsize} bytes but "
                             f"the payload holds {length - header.data_offset}")
    # NumPy refuses shapes whose non-zero dimensions multiply past what it can address, even
    # when another dimension is 0 and nothing is there, e.g. (0, 2**63, 2).
    if math.prod(d for d in header.shape if d) * dt.itemsize > sys.maxsize:
        raise SHMFormatError(f"typed-array header declares an impossible shape {header.shape}")
    try:
        arr = np.frombuffer(buf, dtype=dt, count=count, offset=offset + header.data_offset)
        return arr.reshape(header.shape), header
    except (ValueError, TypeError) as exc:  # (e.g. a dtype of size 0)
        raise SHMFormatError(f"typed-array header describes no array NumPy can make: {exc}"
                             ) from None


class ArrayPublisher(Publisher):
    """Publisher of NumPy arrays of one dtype, either of a fixed ``shape`` or of any shape up
    to ``max_shape`` (same number of dimensions, each no larger).

    Slots are sized for the largest array. ``send`` copies once into shared memory; ``loan``
    lets you fill the slot in place. Wrong dtype raises ``TypeError``, wrong shape
    ``ValueError``; nothing is published then.

    ``max_holders`` (default 2, at most ``max_subscribers``) is how many subscribers may hold
    a zero-copy view at the same time; the channel has that many spare buffers plus one, so
    its shared memory is ``(num_slots + max_holders + 1)`` buffers of one array each (a
    1080p RGB camera 4 deep: 41.5 MiB). Subscribers beyond it get copies (module docstring).
    """

    def __init__(self, name: str, *, dtype: npt.DTypeLike, shape: ShapeLike | None = None,
                 max_shape: ShapeLike | None = None, num_slots: int = 64,
                 max_subscribers: int = 32, permissions: int = 0o600,
                 max_holders: int = 2) -> None:
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
        self._headers: dict[tuple[int, ...], tuple[bytes, int, int]] = {}
        self._create_channel(name, num_slots, max(1, header + capacity), max_subscribers,
                             L.ENCODING_ARRAY, metadata, permissions, max_holders)
        self._full_header = self._header_for(self.shape)[0]
        self._ring = self._writer.fast
        # One writable array per buffer, of the channel's full shape, made once: a loan's
        # enter is then one C call and a list index (docs/performance.md, "loan()").
        offset = self._header_for(self.shape)[1]
        self._targets: list[np.ndarray[Any, Any]] = [
            np.frombuffer(self._segment.view, dtype=self.dtype, count=math.prod(self.shape),
                          offset=self._writer.payload_offset(index) + offset).reshape(self.shape)
            for index in range(self._layout.num_buffers)]
        self._loan = Loan(self, self.shape)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if self.fixed_shape:
            if shape != self.shape:
                raise ValueError(f"channel {self.name!r} carries arrays of shape {self.shape}, "
                                 f"got {shape}")
        elif len(shape) != len(self.shape) or any(
                d > m for d, m in zip(shape, self.shape, strict=True)):
            raise ValueError(f"channel {self.name!r} carries arrays of up to {self.shape}, "
                             f"got {shape}")

    def _header_for(self, shape: tuple[int, ...]) -> tuple[bytes, int, int]:
        """``(header bytes with seq/timestamp zero, data offset, payload length)`` of a shape."""
        cached = self._headers.get(shape)
        if cached is None:
            scratch = memoryview(bytearray(L.array_header_size(len(shape),
                                                               len(self._descr.encode()))))
            data_offset = L.pack_array_header(scratch, 0, self._descr, shape, 0, 0)
            cached = (bytes(scratch), data_offset,
                      data_offset + math.prod(shape) * self.dtype.itemsize)
            if len(self._headers) < 64:
                self._headers[shape] = cached
        return cached

    def _target(self, index: int, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
        """The writable array of ``shape`` where buffer ``index`` holds its data."""
        if shape == self.shape:
            return self._targets[index]
        data_offset = self._header_for(shape)[1]
        return np.frombuffer(self._segment.view, dtype=self.dtype, count=math.prod(shape),
                             offset=self._writer.payload_offset(index) + data_offset
                             ).reshape(shape)

    def send(self, obj: Any, *, block: bool = False, timeout: float | None = None) -> bool:
        """Publish array ``obj`` (copied once into shared memory); True once published.

        Non-contiguous arrays are fine (the copy gathers them). Raises ``TypeError`` for
        another dtype and ``ValueError`` for a shape the channel does not allow. Blocking
        rules as in :meth:`Publisher.send`.
        """
        arr = obj if type(obj) is np.ndarray else np.asarray(obj)
        if arr.dtype is not self.dtype and arr.dtype != self.dtype:
            dtype = str(self.dtype)
            if arr is obj:
                raise TypeError(f"channel {self.name!r} carries {dtype}, got {arr.dtype}; "
                                f"convert with arr.astype({dtype!r})")
            raise TypeError(f"channel {self.name!r} carries {dtype}, got a "
                            f"{type(obj).__name__} that NumPy reads as {arr.dtype}; pass "
                            f"np.asarray(value, dtype={dtype!r})")
        if arr.shape != self.shape or not self.fixed_shape:
            self._check_shape(arr.shape)
        try:
            if self._closed:
                raise SHMClosedError(f"publisher of channel {self.name!r} is closed")
            if block and not self._wait_for_room(timeout):
                return False
            writer = self._writer
            timestamp_ns = time.time_ns()
            if arr.nbytes <= _SMALL:
                # Small arrays: header and data (tobytes gathers any layout in C order) as one
                # payload through the C publish path.
                header = self._full_header if arr.shape == self.shape else self._header_for(
                    arr.shape)[0]
                writer.write_stamped(header, arr.tobytes(), _SEQ_TIMESTAMP_AT,
                                     L.ENCODING_ARRAY, timestamp_ns)
                return True
            header, _data_offset, length = self._header_for(arr.shape)
            if arr.flags.c_contiguous:
                # One C copy of the bytes (without the GIL, streamed for big frames: see
                # _ring.c, copy_payload), header and stamps in the same call.
                writer.write_stamped(header, arr.reshape(-1).view(np.uint8).data, _SEQ_TIMESTAMP_AT,
                                     L.ENCODING_ARRAY, timestamp_ns)
                return True
            index = writer.reserve()  # any other layout: np.copyto gathers it in place
            try:
                np.copyto(self._target(index, arr.shape), arr, casting="no")
            except BaseException as exc:
                writer.cancel(index)
                if isinstance(exc, ValueError):
                    self._raise_if_closed_meanwhile(exc)
                raise
            writer.commit_stamped(index, length, L.ENCODING_ARRAY, timestamp_ns, header,
                                  _SEQ_TIMESTAMP_AT)
        except SHMClosedError as exc:
            return closed_call(exc, 0.0, False)
        return True

    def send_bytes(self, data: bytes | bytearray | memoryview, *, block: bool = False,
                   timeout: float | None = None) -> bool:
        """Not available on typed channels: raises ``TypeError`` (use :meth:`send`)."""
        raise TypeError("a typed-array channel carries arrays: use send(array) or loan()")

    def send_bytes_batch(self, payloads: Iterable[Any], *, block: bool = False,
                         timeout: float | None = None) -> int:
        """Not available on typed channels: raises ``TypeError`` (use :meth:`send_batch`)."""
        raise TypeError("a typed-array channel carries arrays: use send_batch(arrays)")

    def send_batch(self, objs: Iterable[Any], *, block: bool = False,
                   timeout: float | None = None) -> int:
        """Publish several arrays, each as by :meth:`send`; returns how many were published."""
        count = 0
        for obj in objs:
            if not self.send(obj, block=block, timeout=timeout):
                break
            count += 1
        return count

    def loan(self, shape: ShapeLike | None = None) -> Loan:
        """Zero-copy publish: ``with pub.loan() as out:`` gives a writable array in shared
        memory, published when the block ends.

        Fill all of it: it holds whatever the buffer held before. An exception inside the
        ``with`` block discards the loan (nothing is published). Do not keep the array after
        the block. ``shape`` is required for variable-shape channels.
        """
        if self._closed:  # (at interpreter exit: a loan that publishes nothing, see Loan)
            closed_call(SHMClosedError(f"publisher of channel {self.name!r} is closed"), 0.0,
                        None)
        if shape is None and self.fixed_shape:
            loan = self._loan  # reusable while it is not in use
            return loan if loan._index == -1 else Loan(self, self.shape)
        target_shape = self.shape if shape is None else _shape(shape, "shape")
        if shape is None and not self.fixed_shape:
            raise ValueError("loan() on a variable-shape channel needs shape=")
        self._check_shape(target_shape)
        return Loan(self, target_shape)

    def close(self) -> None:
        """Close the channel and remove its segment. Idempotent."""
        self._targets.clear()
        super().close()

    def __repr__(self) -> str:
        kind = "shape" if self.fixed_shape else "max_shape"
        return f"<ArrayPublisher {self.name!r} {self.dtype} {kind}={self.shape}>"


class Loan:
    """What :meth:`ArrayPublisher.loan` returns: a context manager that reserves a buffer on
    entry and gives its array, then publishes it on a normal exit or gives it back unpublished
    when the block raised.

    Entry and exit are one C call each (reserve; write the array header, stamp and publish),
    because a loan typically runs right after the caller filled or processed megabytes, with
    every CPU cache flushed: then each cache line a Python step touches comes from memory,
    and the old four-frame path cost 35-45 µs instead of 2 (docs/performance.md).
    """

    __slots__ = ("_header", "_index", "_length", "_pub", "_ring", "_shape", "_targets")

    _SCRATCH = -2  # _index of a loan on a publisher that interpreter exit closed

    def __init__(self, pub: ArrayPublisher, shape: tuple[int, ...]) -> None:
        self._pub = pub
        self._ring = pub._ring
        self._targets = pub._targets if shape == pub.shape else None
        self._shape = shape
        self._header, _data_offset, self._length = pub._header_for(shape)
        self._index = -1

    def __enter__(self) -> np.ndarray[Any, Any]:
        if self._index != -1:
            raise RuntimeError("this loan is in use; call pub.loan() for another")
        try:
            index = self._ring.reserve()
        except SHMClosedError as exc:
            # At interpreter exit only (else this raises): a private array; nothing is
            # published.
            scratch = closed_call(exc, 0.0, np.empty(self._shape, self._pub.dtype))
            self._index = self._SCRATCH
            return scratch
        self._index = index
        targets = self._targets
        if targets is not None:
            return targets[index]
        try:
            return self._pub._target(index, self._shape)
        except BaseException as exc:
            self._index = -1
            self._ring.cancel(index)
            if isinstance(exc, ValueError):
                self._pub._raise_if_closed_meanwhile(exc)
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> None:
        index, self._index = self._index, -1
        if index == self._SCRATCH:
            return
        if exc_type is not None:
            self._ring.cancel(index)
            return
        try:
            self._ring.commit_stamped(index, self._length, L.ENCODING_ARRAY, time.time_ns(),
                                      self._header, _SEQ_TIMESTAMP_AT)
        except SHMClosedError as exc:
            closed_call(exc, 0.0, None)


class ArraySubscriber(_ChannelReader):
    """Receiver of a typed channel; learns dtype and shape from the channel itself.

    ``recv()`` returns a read-only array viewing shared memory, valid until this subscriber's
    next receive or ``close()`` (module docstring), or a read-only copy while every one of the
    channel's ``max_holders`` zero-copy places is taken (counted in ``stats()``). Observers
    (``observer=True``) always get copies, since they never write to the segment. Other
    parameters (``trusted_users``...) as for :class:`~shm_comm.Subscriber`. Not thread-safe.
    """

    def __init__(self, name: str, *, timeout_connect: float = 5.0, latest: bool = False,
                 observer: bool = False, poll_interval: float | None = None,
                 trusted_users: TrustedUsers = None) -> None:
        super().__init__(name, timeout_connect=timeout_connect, latest=latest,
                         observer=observer, poll_interval=poll_interval,
                         trusted_users=trusted_users)
        self._on_reconnect()
        self._copied_views = 0
        self.last_timestamp_ns = 0
        self.last_seq = -1
        self.last_batch_timestamps: np.ndarray[Any, Any] = np.empty(0)

    def _on_reconnect(self) -> None:
        self._ro_view = self._segment.view.toreadonly()
        self._holding_enabled = False
        self._holder_retry = 0.0  # after a refusal: when to try for a place again
        self._holder_membership = -1
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
        # Fast path for fixed shapes: every header equals this one but for seq and timestamp,
        # and each buffer's data always sits at the same place, so its view can be reused.
        scratch = memoryview(bytearray(self._data_offset))
        L.pack_array_header(scratch, 0, str(spec["dtype"]), self.shape, 0, 0)
        self._template = bytes(scratch)
        self._template_head = bytes(scratch[:8])
        self._template_tail = bytes(scratch[24:])
        self._fixed_length = self._data_offset + self._item_size if self.fixed_shape else -1
        self._views: dict[int, np.ndarray[Any, Any]] = {}

    @property
    def last_timestamp(self) -> float | None:
        """Publisher's send time of the last received array, seconds since the epoch."""
        return self.last_timestamp_ns / 1e9 if self.last_seq >= 0 else None

    def _claim_holder(self) -> bool:
        """Whether this subscriber has one of the channel's zero-copy places, taking one if it
        is free. After a refusal it tries again when a subscriber left or joined, and at
        least once a second, then also freeing the places of holders that died."""
        if self._holding_enabled:
            return True
        atom = self._segment.atom
        membership = atom.load(L.MEMBERSHIP)
        now = time.monotonic()
        if membership == self._holder_membership and now < self._holder_retry:
            return False
        if self._holder_retry and now >= self._holder_retry:
            ring.reap_dead_records(atom, self._segment.layout, self._segment.liveness)
            membership = atom.load(L.MEMBERSHIP)
        self._holding_enabled = self._reader.enable_holding()
        self._holder_membership, self._holder_retry = membership, now + 1.0
        return self._holding_enabled

    def _take(self, copy: bool) -> np.ndarray[Any, Any] | None:
        if not copy and not self.observer:
            if self._claim_holder():
                return self._take_view()
            arr = self._take(copy=True)  # no place free: a copy, read-only like a view
            if arr is not None:
                arr.flags.writeable = False
                self._copied_views += 1
            return arr
        reader = self._reader  # copies: read, then validate (observers never pin buffers)
        while True:
            message = reader.poll()
            if message is None:
                return None
            if (self.fixed_shape and message.length == self._fixed_length
                    and message.encoding == L.ENCODING_ARRAY):
                ro, off = self._ro_view, message.offset
                if (ro[off:off + 8] == self._template_head
                        and ro[off + 24:off + self._data_offset] == self._template_tail):
                    arr = self._views.get(message.buffer)
                    if arr is None:
                        arr = np.frombuffer(ro, dtype=self.dtype, count=math.prod(self.shape),
                                            offset=off + self._data_offset).reshape(self.shape)
                        self._views[message.buffer] = arr
                    arr = arr.copy()
                    if reader.validate(message):
                        self.last_timestamp_ns = message.timestamp_ns
                        self.last_seq = message.seq
                        return arr
                    continue
            if message.encoding != L.ENCODING_ARRAY:
                reader.validate(message)
                raise SHMSerializationError(
                    f"message {message.seq} on {self.name!r} is not a typed array")
            try:
                arr = _array_at(self._ro_view, message.offset, message.length)[0].copy()
            except SHMFormatError as exc:
                if not reader.validate(message):
                    continue  # overwritten while we read it: not a format problem
                raise reader.consume_malformed(message.seq, f"on {self.name!r}: {exc}"
                                               ) from None
            if reader.validate(message):
                self.last_timestamp_ns = message.timestamp_ns
                self.last_seq = message.seq
                return arr

    def _take_view(self) -> np.ndarray[Any, Any] | None:
        """The next array as a read-only view of its pinned buffer (the zero-copy path, for a
        subscriber that has a zero-copy place)."""
        got = self._reader.take_held(self._template, _SEQ_TIMESTAMP_AT, self._fixed_length)
        if got is None:
            return None
        seq, index, off, length, encoding, timestamp_ns, matches = got
        ro = self._ro_view
        if matches and encoding == L.ENCODING_ARRAY:  # the channel's fixed-shape array
            arr = self._views.get(index)
            if arr is None:
                arr = np.frombuffer(ro, dtype=self.dtype, count=math.prod(self.shape),
                                    offset=off + self._data_offset).reshape(self.shape)
                self._views[index] = arr
        else:
            # Consumed either way: a bad message raises and the next receive goes on.
            if encoding != L.ENCODING_ARRAY:
                raise SHMSerializationError(f"message {seq} on {self.name!r} is not a typed array")
            try:
                arr = _array_at(ro, off, length)[0]
            except SHMFormatError as exc:
                raise self._reader.consume_malformed(seq, f"on {self.name!r}: {exc}") from None
        self.last_timestamp_ns = timestamp_ns
        self.last_seq = seq
        return arr

    def recv(self, timeout: float | None = None, copy: bool = False
             ) -> np.ndarray[Any, Any] | None:
        """The next array, or None if none arrived within ``timeout`` seconds.

        ``copy=False``: a read-only view of shared memory (lifetime rule above).
        ``copy=True``: a private, writable copy. Raises :class:`SHMFormatError` for a
        malformed header, never a NumPy error (the message is consumed and counted in
        ``stats()["malformed"]``; the next call returns the next array).
        """
        try:
            if not copy and self._holding_enabled and not self._closed:
                arr = self._take_view()  # the common case first: a view of a waiting message
                if arr is not None:
                    return arr
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
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)

    def recv_latest(self, timeout: float | None = None, copy: bool = False
                    ) -> np.ndarray[Any, Any] | None:
        """The newest array, skipping (and counting as dropped) older unread ones."""
        try:
            self._ensure_open()
            self._reader.skip_to_latest()
        except SHMClosedError as exc:
            return closed_call(exc, timeout, None)
        return self.recv(timeout, copy)

    def recv_batch(self, max_n: int = 1000, timeout: float = 0.0) -> np.ndarray[Any, Any]:
        """All waiting arrays (up to ``max_n``) stacked into one new array ``(k, *shape)``.

        Waits up to ``timeout`` seconds for the first one; ``k`` may be 0. Needs a
        fixed-shape channel (``TypeError`` otherwise). Publisher timestamps of the batch
        (seconds) are in ``last_batch_timestamps``.
        """
        if not self.fixed_shape:
            raise TypeError(f"recv_batch needs a fixed-shape channel; {self.name!r} is "
                            "variable-shape: call recv() per message")
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        try:
            return self._recv_batch(max_n, timeout)
        except SHMClosedError as exc:
            return closed_call(exc, timeout, np.empty((0, *self.shape), dtype=self.dtype))

    def _recv_batch(self, max_n: int, timeout: float) -> np.ndarray[Any, Any]:
        self._ensure_open()
        if timeout and not self._reader.pending():
            deadline = time.monotonic() + timeout
            while not self._reader.pending() and self._wait(deadline):
                pass
        reader = self._reader
        rows = max(1, min(max_n, reader.pending(), self._segment.layout.num_slots))
        out = np.empty((rows, *self.shape), dtype=self.dtype)
        stamps = np.empty(rows, dtype=np.uint64)
        first, count = reader.read_batch(rows, out.data, stamps.data, self._data_offset,
                                         self._item_size, L.ENCODING_ARRAY, self._template,
                                         _SEQ_TIMESTAMP_AT)
        if count:
            self.last_batch_timestamps = stamps[first:first + count].astype(np.float64) / 1e9
            self.last_timestamp_ns = int(stamps[first + count - 1])
            self.last_seq = reader.cursor - 1
            return out[first:first + count]
        if reader.pending():
            # The next message is not a well-formed array of this channel: receive it the
            # careful way, which says what is wrong with it (or returns it, if it is fine).
            single = self._take(copy=True)
            if single is not None and single.shape == self.shape:
                self.last_batch_timestamps = np.array([self.last_timestamp_ns / 1e9])
                return single.reshape(1, *self.shape)
        else:
            self._idle_check()
        return np.empty((0, *self.shape), dtype=self.dtype)

    def close(self) -> None:
        """Leave the channel (views received earlier stay memory-safe). Idempotent."""
        self._views = {}
        super().close()

    def __enter__(self) -> ArraySubscriber:
        return self

    def __repr__(self) -> str:
        return f"<ArraySubscriber {self.name!r} {self.dtype} shape={self.shape}>"

    # --- event loops (aio.py) ---

    async def recv_async(self, timeout: float | None = None, copy: bool = False
                         ) -> np.ndarray[Any, Any] | None:
        """Await the next array; None if none arrived within ``timeout`` seconds.

        The awaitable :meth:`recv`, same ``copy`` and lifetime rule (a view stays valid until
        this subscriber's next receive). Cancelling it loses no message;
        :class:`SHMClosedError` if the subscriber is closed, also while it waits. See
        :meth:`Subscriber.recv_async <shm_comm.Subscriber.recv_async>`.
        """
        from . import aio

        return await aio.receive(self, lambda: self._take(copy), timeout)

    async def recv_batch_async(self, max_n: int = 1000, timeout: float | None = None
                               ) -> np.ndarray[Any, Any]:
        """Await at least one array, then return all waiting ones (up to ``max_n``) as in
        :meth:`recv_batch`; ``k == 0`` if none came within ``timeout`` seconds (None: no
        limit)."""
        from . import aio

        def take() -> np.ndarray[Any, Any] | None:
            batch = self.recv_batch(max_n, 0.0)
            return batch if len(batch) else None

        got = await aio.receive(self, take, timeout)
        return np.empty((0, *self.shape), dtype=self.dtype) if got is None else got

    def __aiter__(self) -> ArraySubscriber:
        return self

    async def __anext__(self) -> np.ndarray[Any, Any]:
        """``async for arr in sub``: every array (read-only views, valid until the next
        one), until the subscriber is closed."""
        from . import aio

        try:
            got = await aio.receive(self, lambda: self._take(False), None)
        except SHMClosedError:
            raise StopAsyncIteration from None
        if got is None:  # (not with timeout=None; for the type checker)
            raise StopAsyncIteration
        return got
