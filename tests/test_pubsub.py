"""Publisher / Subscriber API behaviour in one process, and the helpers the tuning guide names."""

from __future__ import annotations

import array
import gc
import os
import pickle
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
from helpers import spawn_python, stop, wait_for_line

from shm_comm import (
    ArrayPublisher,
    ArraySubscriber,
    Publisher,
    SHMConnectionError,
    SHMError,
    SHMFormatError,
    SHMSerializationError,
    SHMTimeoutError,
    Subscriber,
    channel_info,
    force_unlink,
    list_channels,
    list_segments,
)
from shm_comm import layout as L
from shm_comm.buffer import attach, read_message_spsc, shm_tail
from shm_comm.naming import segment_name
from shm_comm.sync import FileLock
from shm_comm.utils import poll_until, pub_segment_name

SHM = Path("/dev/shm")


def seg_path(channel: str) -> Path:
    return SHM / segment_name("pubsub", channel)


@pytest.fixture
def pub_sub(channel: str) -> Iterator[tuple[Publisher, Subscriber]]:
    pub = Publisher(channel, num_slots=8, slot_size=256)
    sub = Subscriber(channel, timeout_connect=2)
    try:
        yield pub, sub
    finally:
        sub.close()
        pub.close()


def finish(proc: subprocess.Popen[str], timeout: float = 10.0) -> tuple[str, str]:
    """Kill ``proc`` if it still runs, reap it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def drain(sub: Subscriber, timeout: float = 0.0) -> list[object]:
    out = []
    while True:
        got = sub.recv(timeout=timeout)
        if got is None:
            return out
        out.append(got)


# --------------------------------------------------------------------------- basics


def test_defaults(channel: str) -> None:
    with Publisher(channel) as pub, Subscriber(channel) as sub:
        assert (pub.num_slots, pub.slot_size) == (64, 4096)
        stats = pub.stats()
        assert stats["serialization"] == "pickle"
        assert (stats["num_slots"], stats["slot_size"]) == (64, 4096)
        result = pub.send({"a": 1, "b": [1.5, "x"]})
        assert result is True
        assert sub.recv(timeout=2) == {"a": 1, "b": [1.5, "x"]}
        # Pickle carries arbitrary objects, NumPy arrays included.
        assert pub.send(np.arange(5)) is True
        np.testing.assert_array_equal(sub.recv(timeout=2), np.arange(5))
        info = channel_info(channel)
        assert info is not None
        assert info["encoding"] == "pickle"
        assert info["format_version"] == "2.0"
        # Plain subscribers copy: no spare buffers for zero-copy holders on a plain channel.
        assert (info["max_holders"], info["num_buffers"]) == (0, 64 + 1)
        assert (stats["max_holders"], stats["holders"]) == (0, 0)
        assert stats["shm_bytes"] >= info["size"]


def test_repr_and_properties(pub_sub: tuple[Publisher, Subscriber]) -> None:
    pub, sub = pub_sub
    assert pub.name in repr(pub)
    assert "0 sent" in repr(pub)
    assert sub.name in repr(sub)
    assert pub.segment_name == segment_name("pubsub", pub.name)
    assert not pub.closed
    assert not sub.closed


def test_recv_timeout_returns_none_after_about_the_timeout(
        pub_sub: tuple[Publisher, Subscriber]) -> None:
    _pub, sub = pub_sub
    t0 = time.monotonic()
    assert sub.recv(timeout=0) is None
    assert time.monotonic() - t0 < 1.0
    for timeout in (0.05, 0.3):
        t0 = time.monotonic()
        assert sub.recv(timeout=timeout) is None
        elapsed = time.monotonic() - t0
        assert timeout * 0.9 <= elapsed < timeout + 2.0, elapsed
    t0 = time.monotonic()
    assert sub.recv_bytes(timeout=0.1) is None
    assert 0.09 <= time.monotonic() - t0 < 2.1


@pytest.mark.parametrize("poll_interval", [0, 0.001, None])
def test_recv_waits_for_a_message_with_each_poll_strategy(channel: str,
                                                          poll_interval: float | None) -> None:
    with Publisher(channel) as pub, Subscriber(channel, poll_interval=poll_interval) as sub:
        t0 = time.monotonic()
        assert sub.recv(timeout=0.1) is None
        assert 0.09 <= time.monotonic() - t0 < 2.1
        pub.send("x")
        assert sub.recv(timeout=5) == "x"


def test_send_and_receive_in_order(pub_sub: tuple[Publisher, Subscriber]) -> None:
    pub, sub = pub_sub
    for i in range(5):
        assert pub.send(i) is True
    assert drain(sub) == [0, 1, 2, 3, 4]
    stats = sub.stats()
    assert (stats["received"], stats["dropped"], stats["cursor"], stats["pending"]) == (
        5, 0, 5, 0)
    assert sub.last_seq == 4


def test_last_timestamp(pub_sub: tuple[Publisher, Subscriber]) -> None:
    pub, sub = pub_sub
    assert sub.last_timestamp is None
    before = time.time()
    pub.send("t")
    after = time.time()
    assert sub.recv(timeout=2) == "t"
    assert sub.last_timestamp is not None
    assert before - 0.01 <= sub.last_timestamp <= after + 0.01


def test_msgpack_path(channel: str) -> None:
    with Publisher(channel, serialization="msgpack") as pub, \
            Subscriber(channel, serialization="msgpack") as sub:
        message = {"x": 1.5, "ids": [1, 2, 3], "name": "imu", "raw": b"\x00\x01", 7: None}
        assert pub.send(message) is True
        assert sub.recv(timeout=2) == message
        assert pub.stats()["serialization"] == "msgpack"
        # What went over the wire is plain msgpack.
        pub.send([1, 2])
        raw = sub.recv_bytes(timeout=2)
        assert raw == msgpack.packb([1, 2], use_bin_type=True)
        # Something msgpack cannot encode: an error, nothing sent.
        before = pub.stats()["msg_count"]
        with pytest.raises(SHMSerializationError, match="msgpack"):
            pub.send({1, 2, 3})
        assert pub.stats()["msg_count"] == before
        assert sub.recv(timeout=0) is None


def test_raw_path(channel: str) -> None:
    with Publisher(channel, serialization="raw") as pub, \
            Subscriber(channel, serialization="raw") as sub:
        for payload in (b"abc", bytearray(b"de"), memoryview(b"fgh"), b""):
            assert pub.send(payload) is True
        assert drain(sub) == [b"abc", b"de", b"fgh", b""]
        arr = np.arange(4, dtype=np.int32)
        assert pub.send(arr) is True  # any buffer
        assert sub.recv(timeout=2) == arr.tobytes()
        with pytest.raises(SHMSerializationError):
            pub.send("a str is not a buffer")


def test_publisher_survives_a_failed_send_bytes(pub_sub: tuple[Publisher, Subscriber]) -> None:
    pub, sub = pub_sub
    with pytest.raises((TypeError, ValueError)):
        pub.send_bytes(np.arange(3, dtype=np.float64)[::2])  # not contiguous
    with pytest.raises(ValueError, match="does not fit"):
        pub.send_bytes(np.zeros(33, dtype=np.float64))  # 264 bytes > 256
    assert pub.stats()["msg_count"] == 0
    assert pub.send_bytes(b"still works") is True
    assert sub.recv_bytes(timeout=2) == b"still works"
    assert sub.recv_bytes(timeout=0) is None


@pytest.mark.parametrize("make", [
    lambda: np.arange(3, dtype=np.float64),
    lambda: np.arange(6, dtype=np.uint8).reshape(2, 3),
    lambda: array.array("d", [1.0, 2.0]),
], ids=["float64", "uint8-2d", "array.array"])
def test_send_bytes_takes_any_buffer(pub_sub: tuple[Publisher, Subscriber], make) -> None:
    pub, sub = pub_sub
    data = make()
    assert pub.send_bytes(data) is True  # type: ignore[arg-type]
    assert sub.recv_bytes(timeout=2) == bytes(memoryview(data).cast("B"))


def test_send_bytes_and_recv_bytes_work_with_any_serializer(
        pub_sub: tuple[Publisher, Subscriber]) -> None:
    pub, sub = pub_sub
    assert pub.send_bytes(b"\x00raw\xff") is True
    assert sub.recv_bytes(timeout=2) == b"\x00raw\xff"
    pub.send({"k": 1})
    assert pickle.loads(sub.recv_bytes(timeout=2)) == {"k": 1}


def test_serialization_mismatch_raises_and_channel_stays_usable(channel: str) -> None:
    with Publisher(channel) as pub, Subscriber(channel, serialization="msgpack") as sub, \
            Subscriber(channel) as pickled:
        pub.send({"a": 1})
        pub.send({"b": 2})
        with pytest.raises(SHMSerializationError, match="pickle") as excinfo:
            sub.recv(timeout=2)
        assert isinstance(excinfo.value, SHMError)
        # The bad message was consumed and counted as received; the next one is fine.
        assert sub.stats()["received"] == 1
        assert pickle.loads(sub.recv_bytes(timeout=2)) == {"b": 2}
        # A pickle subscriber given raw bytes: the same.
        assert pickled.recv(timeout=2) == {"a": 1}
        assert pickled.recv(timeout=2) == {"b": 2}
        pub.send_bytes(b"not a pickle")
        pub.send("fine")
        with pytest.raises(SHMSerializationError, match="raw"):
            pickled.recv(timeout=2)
        assert pickled.recv(timeout=2) == "fine"


def test_corrupt_pickle_raises_serialization_error(pub_sub: tuple[Publisher, Subscriber]
                                                   ) -> None:
    pub, sub = pub_sub
    payload = pickle.dumps([1, 2, 3])[:-3]
    pub._writer.write(payload, L.ENCODING_PICKLE, time.time_ns())
    pub.send("after")
    with pytest.raises(SHMSerializationError, match="deserialize"):
        sub.recv(timeout=2)
    assert sub.recv(timeout=2) == "after"


def test_unpicklable_object_is_refused(pub_sub: tuple[Publisher, Subscriber]) -> None:
    pub, sub = pub_sub
    with pytest.raises(SHMSerializationError, match="cannot serialize"):
        pub.send(lambda: None)
    assert pub.stats()["msg_count"] == 0
    assert sub.recv(timeout=0) is None


@pytest.mark.parametrize("how", ["send_bytes", "send", "send_block"])
def test_oversize_payload_raises_and_writes_nothing(channel: str, how: str) -> None:
    with Publisher(channel, num_slots=4, slot_size=100) as pub, Subscriber(channel) as sub:
        pub.send_bytes(b"k" * 100)  # exactly one slot fits
        assert sub.recv_bytes(timeout=2) == b"k" * 100
        before = pub.stats()
        big = b"x" * 101
        size = 101 if how == "send_bytes" else len(pickle.dumps(big, pickle.HIGHEST_PROTOCOL))
        send = {"send_bytes": pub.send_bytes, "send": pub.send,
                "send_block": lambda b: pub.send(b, block=True, timeout=1)}[how]
        with pytest.raises(ValueError, match=f"{size} bytes") as excinfo:
            send(big)
        assert "slot of 100 bytes" in str(excinfo.value)
        after = pub.stats()
        assert after["msg_count"] == before["msg_count"] == 1
        assert after["bytes_total"] == before["bytes_total"]
        assert sub.recv(timeout=0) is None
        assert pub.send_bytes(b"ok") is True
        assert sub.recv_bytes(timeout=2) == b"ok"


@pytest.mark.parametrize("name", [
    "", "a" * 201, "a/b", "/abs", "..", "a..b", "../etc", ".hidden", "-dash", "sp ace",
    "tab\t", "nul\0", "ünïcode", "日本", "a\nb", "semi;colon", "star*",
])
def test_bad_names_raise_value_error(name: str) -> None:
    with pytest.raises(ValueError):
        Publisher(name)
    with pytest.raises(ValueError):
        Subscriber(name, timeout_connect=0)
    with pytest.raises(ValueError):
        channel_info(name)
    if name and "/" not in name and "\0" not in name and len(name) < 200:
        assert not (SHM / f"shmcp_{name}").exists()


@pytest.mark.parametrize("name", [None, 12, b"bytes", ["list"], Path("p")])
def test_non_str_names_raise_type_error(name: object) -> None:
    with pytest.raises(TypeError):
        Publisher(name)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Subscriber(name, timeout_connect=0)  # type: ignore[arg-type]


def test_valid_unusual_names(channel: str) -> None:
    for name in (f"{channel}.a-b_c", f"_{channel}", f"{channel}" + "9" * 50):
        with Publisher(name) as pub, Subscriber(name) as sub:
            pub.send(name)
            assert sub.recv(timeout=2) == name


def test_long_names_map_to_short_segment_names(channel: str) -> None:
    long_a = (channel + "_" + "a" * 200)[:200]
    long_b = long_a[:-1] + "b"
    assert len(long_a) == len(long_b) == 200
    with Publisher(long_a) as pa, Publisher(long_b) as pb, Subscriber(long_a) as sa, \
            Subscriber(long_b) as sb:
        for p in (pa, pb):
            assert len(p.segment_name) <= 30
            assert p.segment_name.startswith("shmcp_")
            assert (SHM / p.segment_name).exists()
        assert pa.segment_name != pb.segment_name
        pa.send("a")
        pb.send("b")
        assert sa.recv(timeout=2) == "a"
        assert sb.recv(timeout=2) == "b"
        info = channel_info(long_a)
        assert info is not None
        assert info["name"] == long_a
    assert pub_segment_name(long_a) == pa.segment_name


def test_short_names_map_directly(channel: str) -> None:
    assert segment_name("pubsub", channel) == f"shmcp_{channel}"
    assert len(segment_name("pubsub", "x" * 24)) == 30
    assert segment_name("pubsub", "x" * 24) == "shmcp_" + "x" * 24
    assert len(segment_name("pubsub", "x" * 25)) == 30
    assert segment_name("pubsub", "x" * 25) != "shmcp_" + "x" * 25


@pytest.fixture
def junk_segment(channel: str) -> Iterator[Path]:
    path = seg_path(channel)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("content", ["random", "zeros", "other major", "other kind",
                                     "other channel"])
def test_foreign_segment_is_refused(channel: str, junk_segment: Path, content: str) -> None:
    if content == "random":
        data = b"\x7fELF" + os.urandom(8188)
    elif content == "zeros":
        data = bytes(8192)
    else:
        kind = L.KIND_REQREP if content == "other kind" else L.KIND_PUBSUB
        name = "somebody_else" if content == "other channel" else channel
        lay = L.SegmentLayout(kind, 4, 64, 2)
        buf = bytearray(lay.total_size)
        with memoryview(buf) as view:
            L.SegmentHeader(lay, L.ENCODING_PICKLE, 1, 2, 3, name).pack_into(view)
        if content == "other major":
            buf[8] = 9
        data = bytes(buf)
    junk_segment.write_bytes(data)
    t0 = time.monotonic()
    with pytest.raises(SHMError) as sub_exc:
        Subscriber(channel, timeout_connect=5)
    assert time.monotonic() - t0 < 4, "a foreign segment must be refused, not waited on"
    expected = {"random": "magic", "zeros": "magic", "other major": "version 9",
                "other kind": "reqrep", "other channel": "somebody_else"}[content]
    assert expected in str(sub_exc.value)
    if content in ("random", "zeros", "other major"):
        assert isinstance(sub_exc.value, SHMFormatError)
    else:
        assert isinstance(sub_exc.value, SHMConnectionError)
    assert junk_segment.read_bytes() == data
    if content == "other kind":
        # A readable shm_comm segment of this name whose owner is gone is stale: reclaimed.
        with Publisher(channel) as pub:
            assert L.read_header(junk_segment.read_bytes()).layout.kind == L.KIND_PUBSUB
            assert pub.stats()["msg_count"] == 0
        return
    with pytest.raises(SHMConnectionError) as excinfo:
        Publisher(channel)
    message = str(excinfo.value)
    assert junk_segment.name in message
    if content == "other channel":
        assert "somebody_else" in message
    else:
        assert "not a readable shm_comm channel" in message
        assert "force_unlink" in message
    # Neither side removed or changed somebody else's file.
    assert junk_segment.read_bytes() == data
    entry = [s for s in list_channels() if s["segment"] == junk_segment.name]
    assert entry
    if content != "other channel":
        assert "error" in entry[0]
        assert entry[0]["stale"] is False


def test_empty_foreign_file_is_refused_by_publisher(channel: str, junk_segment: Path) -> None:
    junk_segment.write_bytes(b"")
    with pytest.raises(SHMConnectionError, match="force_unlink"):
        Publisher(channel)
    with pytest.raises(SHMFormatError, match="empty"):
        Subscriber(channel, timeout_connect=0.1)
    assert junk_segment.exists()


def test_segments_are_owner_only(channel: str) -> None:
    old = os.umask(0)
    try:
        with Publisher(channel) as pub:
            mode = stat.S_IMODE((SHM / pub.segment_name).stat().st_mode)
            assert mode == 0o600
            # No temporary file is left beside it.
            assert not [n for n in os.listdir(SHM) if n.startswith(f".{pub.segment_name}.")]
    finally:
        os.umask(old)


def test_second_live_publisher_is_refused(channel: str) -> None:
    with Publisher(channel) as pub:
        with pytest.raises(SHMConnectionError, match="live publisher"):
            Publisher(channel)
        assert not pub.closed
        assert seg_path(channel).exists()


def test_context_managers_and_idempotent_close(channel: str) -> None:
    with Publisher(channel) as pub:
        with Subscriber(channel) as sub:
            assert pub.stats()["subscribers"] == 1
        assert sub.closed
        sub.close()
        assert pub.stats()["subscribers"] == 0
        with pytest.raises(ValueError, match="closed"):
            sub.recv(timeout=0)
        with pytest.raises(ValueError, match="closed"):
            sub.stats()
        with pytest.raises(ValueError, match="closed"):
            sub.recv_latest(timeout=0)
    assert pub.closed
    assert not seg_path(channel).exists()
    pub.close()
    pub.close()
    with pytest.raises(ValueError, match="closed"):
        pub.send(1)
    with pytest.raises(ValueError, match="closed"):
        pub.send_bytes(b"1")
    assert "closed" in repr(pub)


def test_publisher_garbage_collection_removes_segment(channel: str) -> None:
    pub = Publisher(channel)
    assert seg_path(channel).exists()
    del pub
    gc.collect()
    assert not seg_path(channel).exists()


def test_subscriber_garbage_collection_frees_its_row(channel: str) -> None:
    with Publisher(channel) as pub:
        sub = Subscriber(channel)
        assert pub.stats()["subscribers"] == 1
        del sub
        gc.collect()
        assert pub.stats()["subscribers"] == 0


def test_subscriber_sees_publisher_close_without_hanging(channel: str) -> None:
    pub = Publisher(channel, num_slots=8)
    with Subscriber(channel) as sub:
        assert sub.publisher_alive
        pub.send("last words")
        pub.close()
        assert not sub.publisher_alive
        assert sub.stats()["publisher_alive"] is False
        # What was published before the close is still delivered, then recv times out.
        assert sub.recv(timeout=2) == "last words"
        t0 = time.monotonic()
        assert sub.recv(timeout=0.3) is None
        assert time.monotonic() - t0 < 2.5


def test_subscriber_follows_a_restarted_publisher(channel: str) -> None:
    first = Publisher(channel)
    sub = Subscriber(channel)
    try:
        first.send(1)
        assert sub.recv(timeout=2) == 1
        first.close()
        with Publisher(channel) as second:
            second.send(2)
            second.send(3)
            assert sub.recv(timeout=5) == 2
            assert sub.recv(timeout=5) == 3
            stats = sub.stats()
            assert stats["reconnects"] == 1
            assert stats["received"] == 3
            assert stats["publisher_alive"] is True
            assert second.stats()["subscribers"] == 1
    finally:
        sub.close()
        first.close()


def test_polling_subscriber_follows_a_restart_once_it_checks_the_publisher(channel: str
                                                                         ) -> None:
    """recv(timeout=0) "only checks" the ring; reading publisher_alive (or stats()) is what
    switches a polling subscriber to a restarted publisher."""
    first = Publisher(channel)
    sub = Subscriber(channel)
    try:
        first.close()
        with Publisher(channel) as second:
            second.send("new")
            assert sub.publisher_alive is True
            assert sub.stats()["reconnects"] == 1
            assert poll_until(lambda: sub.recv(timeout=0), timeout=5) == "new"
    finally:
        sub.close()
        first.close()


def test_subscriber_connect_timeout(channel: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(SHMConnectionError, match="no publisher"):
        Subscriber(channel, timeout_connect=0.2)
    assert 0.18 <= time.monotonic() - t0 < 3
    with pytest.raises(ValueError):
        Subscriber(channel, timeout_connect=-1)


def test_subscriber_waits_for_a_publisher_to_appear(channel: str) -> None:
    code = (
        "import sys, time\n"
        "from shm_comm import Publisher, Subscriber\n"
        "sub = Subscriber(sys.argv[1], timeout_connect=20)\n"
        "print('CONNECTED', flush=True)\n"
        "print('GOT', sub.recv(timeout=20), flush=True)\n"
        "sub.close()\n"
    )
    proc = spawn_python(code, channel)
    try:
        with Publisher(channel) as pub:
            assert poll_until(lambda: pub.stats()["subscribers"] == 1, timeout=20)
            wait_for_line(proc, "CONNECTED")
            pub.send("hello")
            assert wait_for_line(proc, "GOT") == "GOT hello"
            assert proc.wait(timeout=10) == 0
    finally:
        finish(proc)


@pytest.mark.parametrize(("kwargs", "exc"), [
    ({"num_slots": 0}, ValueError), ({"num_slots": 65536}, ValueError),
    ({"slot_size": 0}, ValueError), ({"max_subscribers": 0}, ValueError),
    ({"max_subscribers": 65}, ValueError), ({"serialization": "json"}, ValueError),
])
def test_bad_publisher_parameters(channel: str, kwargs: dict[str, object],
                                  exc: type[Exception]) -> None:
    with pytest.raises(exc):
        Publisher(channel, **kwargs)  # type: ignore[arg-type]
    assert not seg_path(channel).exists()


def test_bad_subscriber_parameters(channel: str) -> None:
    with Publisher(channel):
        with pytest.raises(ValueError):
            Subscriber(channel, serialization="yaml")
        with pytest.raises(ValueError):
            Subscriber(channel, poll_interval=-1)


def test_max_subscribers(channel: str) -> None:
    with Publisher(channel, max_subscribers=2) as pub, Subscriber(channel), Subscriber(channel):
        with pytest.raises(SHMConnectionError, match="max_subscribers"):
            Subscriber(channel)
        # Observers take no row.
        with Subscriber(channel, observer=True) as obs:
            pub.send(1)
            assert obs.recv(timeout=2) == 1


# --------------------------------------------------------------------------- joining, dropping


def test_late_subscriber_starts_at_head(channel: str) -> None:
    with Publisher(channel) as pub:
        for i in range(5):
            pub.send(i)
        with Subscriber(channel) as late:
            assert late.recv(timeout=0.05) is None
            pub.send(5)
            assert late.recv(timeout=2) == 5
            assert late.stats()["dropped"] == 0


def test_latest_starts_with_the_newest_message(channel: str) -> None:
    with Publisher(channel) as pub:
        with Subscriber(channel, latest=True) as empty:
            assert empty.recv(timeout=0.05) is None  # nothing published yet
        for i in range(5):
            pub.send(i)
        with Subscriber(channel, latest=True) as sub:
            assert sub.recv(timeout=2) == 4
            pub.send(5)
            assert sub.recv(timeout=2) == 5
            assert sub.stats()["dropped"] == 0
            assert pub.stats()["drop_count"] == 0


def test_slow_subscriber_loses_oldest_counted(channel: str) -> None:
    with Publisher(channel, num_slots=8) as pub, Subscriber(channel) as sub:
        for i in range(30):
            assert pub.send(i) is True
        assert pub.stats()["drop_count"] == 22  # counted before the subscriber notices
        assert pub.stats()["free_slots"] == 0
        got = drain(sub)
        assert got == list(range(22, 30))
        stats = sub.stats()
        assert (stats["received"], stats["dropped"]) == (8, 22)
        assert stats["received"] + pub.stats()["drop_count"] == pub.stats()["msg_count"] == 30
        assert pub.stats()["free_slots"] == 8


def test_drop_count_survives_a_lagging_subscriber_closing(channel: str) -> None:
    with Publisher(channel, num_slots=4) as pub:
        sub = Subscriber(channel)
        for i in range(10):
            pub.send(i)
        assert pub.stats()["drop_count"] == 6
        sub.close()
        assert pub.stats()["drop_count"] == 6


def test_recv_latest_counts_skipped_as_dropped(channel: str) -> None:
    with Publisher(channel, num_slots=16) as pub, Subscriber(channel) as sub:
        for i in range(10):
            pub.send(i)
        assert sub.recv_latest(timeout=2) == 9
        stats = sub.stats()
        assert (stats["received"], stats["dropped"]) == (1, 9)
        assert pub.stats()["drop_count"] == 9
        assert sub.recv_latest(timeout=0) is None
        pub.send(10)
        assert sub.recv_latest(timeout=2) == 10
        assert sub.stats()["dropped"] == 9


def test_blocking_send(channel: str) -> None:
    with Publisher(channel, num_slots=4) as pub, Subscriber(channel) as sub:
        for i in range(4):
            assert pub.send(i, block=True, timeout=1) is True
        t0 = time.monotonic()
        assert pub.send(4, block=True, timeout=0.2) is False
        assert 0.18 <= time.monotonic() - t0 < 3
        assert pub.stats()["msg_count"] == 4
        assert pub.stats()["drop_count"] == 0
        assert sub.recv(timeout=2) == 0
        assert pub.send(4, block=True, timeout=1) is True
        assert drain(sub) == [1, 2, 3, 4]
        assert pub.stats()["drop_count"] == 0


def test_blocking_send_waits_for_a_reconnected_subscriber(channel: str) -> None:
    n = 4
    first = Publisher(channel, num_slots=n)
    sub = Subscriber(channel)
    try:
        first.close()
        with Publisher(channel, num_slots=n) as second:
            for i in range(n + 1):  # nobody attached yet: never blocks
                assert second.send(i, block=True, timeout=1) is True
            assert sub.publisher_alive  # notices the restart: reattaches from the oldest
            assert sub.stats()["reconnects"] == 1
            assert second.stats()["subscribers"] == 1
            results = [second.send(i, block=True, timeout=0.05) for i in range(n + 1, 2 * n)]
            # block=True must never cost an attached subscriber a message.
            assert second.stats()["drop_count"] == 0, results
            got = drain(sub)
            assert got == list(range(got[0], got[0] + len(got)))
            assert sub.stats()["dropped"] == 0
    finally:
        sub.close()
        first.close()


def test_blocking_send_without_subscribers_never_blocks(channel: str) -> None:
    with Publisher(channel, num_slots=2) as pub:
        t0 = time.monotonic()
        for i in range(20):
            assert pub.send(i, block=True, timeout=5) is True
        assert time.monotonic() - t0 < 5


def test_observers_change_nothing_the_publisher_counts(channel: str) -> None:
    with Publisher(channel, num_slots=4) as pub, Subscriber(channel, observer=True) as obs:
        assert obs.observer
        assert pub.stats()["subscribers"] == 0
        path = seg_path(channel)
        before = path.read_bytes()[L.COUNTERS_OFFSET:L.RECORDS_OFFSET + 64 * 32]
        for i in range(20):  # the observer never reads: it must not block this
            assert pub.send(i, block=True, timeout=2) is True
        stats = pub.stats()
        assert (stats["drop_count"], stats["subscribers"]) == (0, 0)
        assert obs.recv(timeout=2) == 16
        assert obs.stats()["dropped"] == 16
        assert obs.recv_latest(timeout=2) == 19
        assert pub.stats()["drop_count"] == 0
        after = path.read_bytes()[L.COUNTERS_OFFSET:L.RECORDS_OFFSET + 64 * 32]
        # Only the publisher's own counters (head, bytes_total) moved; no row was touched.
        assert after[L.RECORDS_OFFSET - L.COUNTERS_OFFSET:] == before[
            L.RECORDS_OFFSET - L.COUNTERS_OFFSET:]
        with pytest.raises((TypeError, ValueError, OSError)):
            obs._segment.atom.store(L.HEAD, 0)  # mapped read-only


def test_observer_does_not_change_drop_count_with_a_real_subscriber(channel: str) -> None:
    with Publisher(channel, num_slots=4) as pub, Subscriber(channel) as sub, \
            Subscriber(channel, observer=True, latest=True):
        for i in range(10):
            pub.send(i)
        assert pub.stats()["drop_count"] == 6
        assert pub.stats()["subscribers"] == 1
        assert drain(sub) == [6, 7, 8, 9]
        assert pub.stats()["drop_count"] == 6


# shm-comm 1.0's keys, on both ends (tests/test_compat_1_0.py checks their values).
RING_STATS = {"head", "tail", "num_slots", "slot_size", "msg_count", "drop_count", "used_slots",
              "free_slots"}
PUB_STATS = RING_STATS | {"channel", "segment", "subscribers", "bytes_total", "serialization",
                          "pid", "max_holders", "holders", "shm_bytes"}
SUB_STATS = RING_STATS | {"local_tail", "channel", "received", "dropped", "cursor", "pending",
                          "publisher_alive", "reconnects", "observer", "malformed", "torn_reads",
                          "zero_copy", "copied_views", "holders", "max_holders"}


def test_stats_keys(pub_sub: tuple[Publisher, Subscriber]) -> None:
    pub, sub = pub_sub
    pub.send_bytes(b"12345")
    pub.send_bytes(b"678")
    stats = pub.stats()
    assert set(stats) == PUB_STATS
    assert stats["channel"] == pub.name
    assert stats["segment"] == pub.segment_name
    assert stats["msg_count"] == 2
    assert stats["bytes_total"] == 8
    assert stats["pid"] == os.getpid()
    assert stats["subscribers"] == 1
    assert stats["free_slots"] == 6
    sstats = sub.stats()
    assert set(sstats) == SUB_STATS
    assert sstats["pending"] == 2
    assert sstats["observer"] is False
    assert sstats["reconnects"] == 0
    assert (sstats["malformed"], sstats["torn_reads"]) == (0, 0)


# --------------------------------------------------------------------------- tools


def test_list_channels_channel_info_force_unlink(channel: str) -> None:
    pub = Publisher(channel, num_slots=8, slot_size=64)
    try:
        with Subscriber(channel) as sub:
            pub.send_bytes(b"abc")
            assert sub.recv_bytes(timeout=2) == b"abc"
            mine = [s for s in list_channels() if s.get("name") == channel]
            assert pub.segment_name in list_segments()
            assert len(mine) == 1
            entry = mine[0]
            assert entry["segment"] == pub.segment_name
            info = channel_info(channel)
            assert info is not None
            for key in ("name", "kind", "encoding", "publisher_pid", "publisher_alive",
                        "stale", "msg_count", "bytes_total", "drop_count", "subscribers",
                        "num_slots", "slot_size", "size", "created", "last_timestamp",
                        "format_version", "segment"):
                assert key in info, key
            assert info["publisher_pid"] == os.getpid()
            assert info["publisher_alive"] is True
            assert info["stale"] is False
            assert (info["msg_count"], info["bytes_total"], info["subscribers"]) == (1, 3, 1)
            assert (info["num_slots"], info["slot_size"]) == (8, 64)
            assert info["kind"] == "pubsub"
            assert info["size"] == (SHM / pub.segment_name).stat().st_size
            assert abs(info["last_timestamp"] - time.time()) < 60
            assert entry["msg_count"] == 1
        assert channel_info(channel + "_absent") is None
        # A live channel is left alone unless asked for with live=True.
        assert force_unlink(channel) is False
        assert seg_path(channel).exists()
        assert force_unlink(channel, live=True) is True
        assert not seg_path(channel).exists()
        assert force_unlink(channel) is False
        assert force_unlink(channel, live=True) is False
        assert channel_info(channel) is None
        assert pub.segment_name not in list_segments()
        assert not [s for s in list_channels() if s.get("name") == channel]
    finally:
        pub.close()  # must not fail although its name is gone


FULL_SPEED_PUBLISHER = r"""
import select, sys
from shm_comm import Publisher
with Publisher(sys.argv[1], num_slots=64, slot_size=64) as pub:
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:  # until stdin closes
        for _ in range(1000):
            pub.send_bytes(b"x" * 40)
"""


def test_channel_info_counters_are_one_snapshot_while_a_publisher_sends(channel: str) -> None:
    """``msg_count`` and ``bytes_total`` describe the same messages, however busy the
    publisher (another process sending 40-byte messages as fast as it can, preempted now and
    then between its stores on a loaded machine): tools divide one by the other (``bw``'s
    mean size)."""
    proc = spawn_python(FULL_SPEED_PUBLISHER, channel, stdin=subprocess.PIPE)
    try:
        wait_for_line(proc, "ready")
        assert poll_until(lambda: (channel_info(channel) or {}).get("msg_count", 0) > 0, 10)
        seen = set()  # until 100 snapshots caught it sending (few per slice on a busy machine)
        deadline = time.monotonic() + 60
        while len(seen) < 100:
            info = channel_info(channel)
            assert info is not None
            assert info["bytes_total"] == 40 * info["msg_count"], info
            seen.add(info["msg_count"])
            assert time.monotonic() < deadline, f"the publisher sent {len(seen)} times"
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(10) == 0
        assert channel_info(channel) is None  # it closed its channel
    finally:
        stop(proc)
        force_unlink(channel)  # only if it was killed (a stale segment)


def test_channel_info_unknown_kind_is_a_value_error(channel: str) -> None:
    with pytest.raises(ValueError, match="bogus"):
        channel_info(channel, kind="bogus")


def test_force_unlink_by_segment_name(channel: str) -> None:
    with Publisher(channel) as pub:
        assert force_unlink(pub.segment_name, live=True) is True
        assert not seg_path(channel).exists()


def test_publisher_close_does_not_unlink_a_successor(channel: str) -> None:
    first = Publisher(channel)
    try:
        assert force_unlink(channel, live=True)
        with Publisher(channel) as second:
            first.close()  # the name now belongs to `second`
            assert seg_path(channel).exists()
            with Subscriber(channel) as sub:
                second.send("mine")
                assert sub.recv(timeout=2) == "mine"
    finally:
        first.close()


def test_read_message_spsc_with_attach(channel: str) -> None:
    with Publisher(channel, num_slots=4) as pub:
        shm = attach(channel)
        try:
            tail = shm_tail(shm)
            assert tail == 0
            assert read_message_spsc(shm, tail) is None
            pub.send_bytes(b"one")
            pub.send_bytes(b"two")
            data, tail = read_message_spsc(shm, tail)
            assert (data, tail) == (b"one", 1)
            assert read_message_spsc(shm, tail) == (b"two", 2)
            assert read_message_spsc(shm, 2) is None
            # A tail that was overwritten jumps to the oldest message still there.
            for i in range(10):
                pub.send_bytes(bytes([i]))
            assert read_message_spsc(shm, 2) == (bytes([6]), 9)
            # Reading changes nothing the publisher counts.
            assert pub.stats()["drop_count"] == 0
            assert pub.stats()["subscribers"] == 0
        finally:
            shm.close()
    with pytest.raises(FileNotFoundError):
        attach(channel)


@pytest.mark.timeout(20)
def test_tuning_guide_busy_wait_snippet(channel: str) -> None:
    """The guide's recv_busy, verbatim, with a Subscriber and with a read-only attach."""

    # WARNING: consumes 100% of one CPU core
    def recv_busy(shm, tail):
        while True:
            result = read_message_spsc(shm, tail)
            if result:
                data, tail = result
                return data, tail

    with Publisher(channel) as pub, Subscriber(channel) as sub:
        pub.send({"q": [0.1] * 6})
        data, tail = recv_busy(sub, 0)
        assert pickle.loads(data) == {"q": [0.1] * 6}
        assert tail == 1
        shm = attach(channel)
        try:
            pub.send_bytes(b"next")
            assert recv_busy(shm, tail) == (b"next", 2)
        finally:
            shm.close()
        with pytest.raises(TypeError):
            read_message_spsc(object(), 0)


def test_poll_until() -> None:
    calls = []

    def predicate() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert poll_until(predicate, timeout=5) == 3
    calls.clear()
    assert poll_until(predicate, timeout=5, interval=0) == 3
    t0 = time.monotonic()
    assert poll_until(lambda: None, timeout=0.1) is None
    assert 0.09 <= time.monotonic() - t0 < 2.1
    assert poll_until(lambda: [], timeout=0) is None
    assert poll_until(lambda: "now", timeout=None) == "now"
    with pytest.raises(ValueError):
        poll_until(lambda: True, interval=-1)


def test_poll_until_waits_for_a_message(pub_sub: tuple[Publisher, Subscriber]) -> None:
    pub, sub = pub_sub
    pub.send("x")
    assert poll_until(lambda: sub.recv(timeout=0), timeout=5) == "x"


def test_file_lock_in_one_process(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with FileLock(path) as lock:
        assert lock.locked
        other = FileLock(path, timeout=0.1)
        t0 = time.monotonic()
        with pytest.raises(SHMTimeoutError):
            other.acquire()
        assert 0.09 <= time.monotonic() - t0 < 2.1
        with pytest.raises(TimeoutError):  # SHMTimeoutError is a TimeoutError too
            other.acquire(timeout=0)
        assert not other.locked
        with pytest.raises(RuntimeError):
            lock.acquire()
    assert not lock.locked
    lock.release()  # no-op
    with FileLock(str(path), timeout=0.5):
        pass


def test_file_lock_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    code = (
        "import sys\n"
        "from shm_comm.sync import FileLock\n"
        "lock = FileLock(sys.argv[1])\n"
        "lock.acquire()\n"
        "print('LOCKED', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = spawn_python(code, str(path), stdin=subprocess.PIPE)
    try:
        wait_for_line(proc, "LOCKED")
        with pytest.raises(SHMTimeoutError):
            FileLock(path, timeout=0.2).acquire()
        proc.kill()  # the OS releases the lock of a dead holder
        proc.wait(timeout=10)
        lock = FileLock(path, timeout=5)
        lock.acquire()
        assert lock.locked
        lock.release()
    finally:
        finish(proc)


# --------------------------------------------------------------------------- tuning guide


def test_guide_right_size_the_slot(channel: str) -> None:
    # For a 6-DOF joint state: 6 x float64 = 48 bytes; 128 bytes is plenty.
    pub = Publisher(f"{channel}_joints", slot_size=128)
    try:
        with Subscriber(f"{channel}_joints") as sub:
            q = np.linspace(0, 1, 6)
            assert pub.send_bytes(q.tobytes()) is True
            np.testing.assert_array_equal(np.frombuffer(sub.recv_bytes(timeout=2)), q)
            assert pub.send(tuple(q.tolist())) is True
            assert sub.recv(timeout=2) == tuple(q.tolist())
            # "A slot smaller than your payload forces a ValueError."
            with pytest.raises(ValueError, match="128"):
                pub.send_bytes(bytes(129))
    finally:
        pub.close()


def test_guide_ring_depth_for_bursts(channel: str) -> None:
    # High-rate IMU at 1 kHz - give consumers space to breathe.
    pub = Publisher(f"{channel}_imu", num_slots=256, slot_size=64)
    try:
        sample = np.arange(6, dtype=np.float64).tobytes()  # 48 bytes of accel + gyro
        with Subscriber(f"{channel}_imu") as keeping_up:
            for _ in range(1000):
                pub.send_bytes(sample)
                assert keeping_up.recv_bytes(timeout=2) == sample
            assert pub.stats()["drop_count"] == 0
            # A burst of 300 with a consumer that does not read: 300 - 256 are lost.
            for _ in range(300):
                pub.send_bytes(sample)
            assert pub.stats()["drop_count"] == 44
            received = 0
            while keeping_up.recv_bytes(timeout=0) is not None:
                received += 1
            assert received == 256
            assert pub.stats()["drop_count"] == 44
    finally:
        pub.close()


def test_guide_numpy_raw_bytes_snippet(channel: str) -> None:
    pub = Publisher(f"{channel}_np")
    sub = Subscriber(f"{channel}_np")
    try:
        arr = np.array([1.0, 2.0, 3.0], dtype=np.float64)

        pub.send_bytes(arr.tobytes())

        # Receiver:
        raw = sub.recv_bytes(timeout=0.01)
        arr_back = np.frombuffer(raw, dtype=np.float64)

        np.testing.assert_array_equal(arr_back, arr)
    finally:
        sub.close()
        pub.close()


def test_guide_msgpack_snippet(channel: str) -> None:
    # Requires: pip install msgpack
    pub = Publisher(f"{channel}_sensors", serialization="msgpack")
    sub = Subscriber(f"{channel}_sensors", serialization="msgpack")
    try:
        reading = {"temperature": 21.5, "humidity": 40, "ok": True}
        pub.send(reading)
        assert sub.recv(timeout=2) == reading
        assert pub.stats()["drop_count"] == 0
    finally:
        sub.close()
        pub.close()


# --------------------------------------------------------------------------- typed channels


def test_typed_subscriber_follows_a_restart_and_old_views_stay_valid(channel: str) -> None:
    first = ArrayPublisher(channel, dtype=np.float32, shape=(4,))
    sub = ArraySubscriber(channel)
    try:
        first.send(np.full(4, 1.5, dtype=np.float32))
        old = sub.recv(timeout=2)
        assert old is not None
        first.close()
        with ArrayPublisher(channel, dtype=np.int16, shape=(2, 3)) as second:
            second.send(np.arange(6, dtype=np.int16).reshape(2, 3))
            new = sub.recv(timeout=5)
            assert new is not None
            assert new.dtype == np.int16
            assert new.shape == (2, 3)
            np.testing.assert_array_equal(new, np.arange(6).reshape(2, 3))
            assert (sub.dtype, sub.shape) == (np.dtype(np.int16), (2, 3))
            assert sub.stats()["reconnects"] == 1
            # The view of the old channel's segment is still mapped and unchanged.
            np.testing.assert_array_equal(old, np.full(4, 1.5, dtype=np.float32))
    finally:
        sub.close()
        first.close()
