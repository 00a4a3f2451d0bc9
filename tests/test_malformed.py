"""A malformed message is consumed once (issue 12, part 4).

A corrupted length field, ring entry or typed-array header in a real segment raises
:class:`SHMFormatError` exactly once (never a bare NumPy error), is counted in the
subscriber's ``stats()["malformed"]``, and the next receive returns the next message, on
every read path: single, batch, typed views, typed copies, observers.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import spawn_python, stop, wait_for_line

from shm_comm import (
    ArrayPublisher,
    ArraySubscriber,
    Publisher,
    SHMFormatError,
    Subscriber,
    decode_array,
)
from shm_comm import layout as L
from shm_comm.segment import Segment

SHAPE_AT = L.ARRAY_HEADER.size  # the shape's u64s follow the fixed part of the header


def _buffer_of(segment: Segment, seq: int) -> int:
    """Offset of message ``seq``'s buffer (header first, then the payload)."""
    entry = segment.atom.load(segment.layout.entry(seq))
    assert (entry >> L.ENTRY_INDEX_BITS) - 1 == seq
    return segment.layout.buffer(entry & L.ENTRY_INDEX_MASK)


def corrupt_length(pub: Publisher, seq: int, length: int = 0xFFFF_FFF0) -> None:
    struct.pack_into("<I", pub._segment.view, _buffer_of(pub._segment, seq) + 16, length)


def corrupt_entry(pub: Publisher, seq: int) -> None:
    """Make message ``seq``'s ring entry name a buffer that does not exist."""
    segment = pub._segment
    segment.atom.store(segment.layout.entry(seq), (seq + 1) << L.ENTRY_INDEX_BITS | 0xFFFF)


def corrupt_shape(pub: Publisher, seq: int, shape: tuple[int, ...]) -> None:
    payload = _buffer_of(pub._segment, seq) + L.BUFFER_HEADER_SIZE
    struct.pack_into(f"<{len(shape)}Q", pub._segment.view, payload + SHAPE_AT, *shape)


def _receive_all(recv: Callable[[], Any], expect: list[Any]) -> tuple[list[Any], int]:
    """Call ``recv`` until ``expect`` arrived; returns what arrived and how often it raised."""
    got: list[Any] = []
    errors: list[str] = []
    for _ in range(len(expect) + 5):
        try:
            item = recv()
        except SHMFormatError as exc:
            errors.append(str(exc))
            continue
        if isinstance(item, list):
            got.extend(item)
        elif item is not None:
            got.append(item)
        if len(got) >= len(expect):
            break
    assert all("skipped" in e for e in errors), errors
    return got, len(errors)


RECEIVES: dict[str, Callable[[Subscriber], Any]] = {
    "recv": lambda s: s.recv(timeout=1),
    "recv_bytes": lambda s: s.recv_bytes(timeout=1),
    "recv_batch": lambda s: s.recv_batch(timeout=1),
    "recv_bytes_batch": lambda s: s.recv_bytes_batch(timeout=1),
}


@pytest.mark.parametrize("observer", [False, True], ids=["subscriber", "observer"])
@pytest.mark.parametrize("how", list(RECEIVES))
@pytest.mark.parametrize("corrupt", [corrupt_length, corrupt_entry],
                         ids=["length field", "ring entry"])
def test_a_corrupted_message_raises_once_and_the_next_one_comes(
        channel: str, how: str, corrupt: Callable[[Publisher, int], None],
        observer: bool) -> None:
    with Publisher(channel, num_slots=16, slot_size=64) as pub, \
            Subscriber(channel, observer=observer) as sub:
        for i in range(6):
            pub.send(i)
        corrupt(pub, 2)
        raw = how in ("recv_bytes", "recv_bytes_batch")
        got, errors = _receive_all(lambda: RECEIVES[how](sub), [0, 1, 3, 4, 5])
        if raw:
            import pickle

            got = [pickle.loads(g) for g in got]
        assert (got, errors) == ([0, 1, 3, 4, 5], 1)
        stats = sub.stats()
        assert (stats["malformed"], stats["received"], stats["dropped"]) == (1, 6, 0)
        assert sub.recv(timeout=0) is None
        if not observer:  # the publisher's accounting still adds up
            assert stats["received"] + pub.stats()["drop_count"] == 6


ABSURD = [(0, 2**63, 2), (0, 2**62, 2), (2**40, 2**40, 0), (1, 1, 2**60)]


@pytest.mark.parametrize("shape", ABSURD, ids=[str(s) for s in ABSURD])
@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
def test_an_absurd_typed_shape_raises_once(channel: str, shape: tuple[int, ...],
                                            copy: bool) -> None:
    with ArrayPublisher(channel, max_shape=(2, 3, 4), dtype=np.float64, num_slots=8) as pub, \
            ArraySubscriber(channel) as sub:
        for i in range(4):
            pub.send(np.full((1, 3, 4), float(i)))
        corrupt_shape(pub, 1, shape)
        got, errors = _receive_all(lambda: sub.recv(timeout=1, copy=copy), [0, 2, 3])
        assert [float(a.flat[0]) for a in got] == [0.0, 2.0, 3.0]
        assert errors == 1
        assert sub.stats()["malformed"] == 1
        assert sub.recv(timeout=0, copy=copy) is None


@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
def test_a_broken_header_on_a_fixed_shape_channel(channel: str, copy: bool) -> None:
    with ArrayPublisher(channel, shape=(4,), dtype=np.float32, num_slots=8) as pub, \
            ArraySubscriber(channel) as sub:
        for i in range(3):
            pub.send(np.full(4, i, dtype=np.float32))
        payload = _buffer_of(pub._segment, 1) + L.BUFFER_HEADER_SIZE
        pub._segment.view[payload:payload + 2] = b"XX"  # the magic
        got, errors = _receive_all(lambda: sub.recv(timeout=1, copy=copy), [0, 2])
        assert ([float(a[0]) for a in got], errors) == ([0.0, 2.0], 1)
        # Typed batches: the batch stops before the bad one, which raises once, then on.
        for i in range(3, 7):
            pub.send(np.full(4, i, dtype=np.float32))
        corrupt_length(pub, 5)
        batches, errors = _receive_all(lambda: list(sub.recv_batch(timeout=1)), [3, 4, 6])
        assert ([float(a[0]) for a in batches], errors) == ([3.0, 4.0, 6.0], 1)
        assert sub.stats()["malformed"] == 2


def test_decode_array_refuses_absurd_shapes() -> None:
    buf = memoryview(bytearray(256))
    end = L.pack_array_header(buf, 0, repr("<f8"), (2, 3, 4), 0, 0)
    for shape in ABSURD:
        struct.pack_into("<3Q", buf, SHAPE_AT, *shape)
        with pytest.raises(SHMFormatError):
            decode_array(bytes(buf[:end]))
    zero_size = memoryview(bytearray(256))
    end = L.pack_array_header(zero_size, 0, repr("|V0"), (3,), 0, 0)
    with pytest.raises(SHMFormatError, match="NumPy"):
        decode_array(bytes(zero_size[:end]))


CHILD = """
import sys
from shm_comm import SHMFormatError, Subscriber
sub = Subscriber(sys.argv[1], serialization="raw", timeout_connect=10)
print("ready", flush=True)
got = []
while len(got) < 8:
    try:
        data = sub.recv_bytes(timeout=10)
    except SHMFormatError:
        got.append("malformed")
        continue
    got.append(data.decode() if data is not None else "timeout")
print(" ".join(got), sub.stats()["malformed"], flush=True)
"""


def test_a_subscriber_in_another_process_skips_a_corrupted_message(channel: str) -> None:
    with Publisher(channel, num_slots=16, slot_size=64, serialization="raw") as pub:
        proc = spawn_python(CHILD, channel, stdin=subprocess.DEVNULL)
        try:
            wait_for_line(proc, "ready")
            for i in range(4):
                pub.send_bytes(b"m%d" % i)
            corrupt_length(pub, 2)
            for i in range(4, 8):
                pub.send_bytes(b"m%d" % i)
            assert wait_for_line(proc, "m0") == "m0 m1 malformed m3 m4 m5 m6 m7 1"
        finally:
            stop(proc)


def test_read_message_spsc_says_where_to_go_on(channel: str) -> None:
    """The tuning guide's hand-written loop: a malformed message raises once and its
    ``next_tail`` skips it."""
    from shm_comm.buffer import attach, read_message_spsc

    with Publisher(channel, num_slots=8, slot_size=64, serialization="raw") as pub:
        shm = attach(channel)
        try:
            for i in range(3):
                pub.send_bytes(b"m%d" % i)
            corrupt_length(pub, 1)
            got, tail = read_message_spsc(shm, 0) or (b"", 0)
            assert (got, tail) == (b"m0", 1)
            with pytest.raises(SHMFormatError) as raised:
                read_message_spsc(shm, tail)
            tail = raised.value.next_tail  # type: ignore[attr-defined]
            assert read_message_spsc(shm, tail) == (b"m2", 3)
        finally:
            shm.close()
