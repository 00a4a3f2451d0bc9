"""Batch APIs: send_batch / send_bytes_batch and recv_batch / recv_bytes_batch."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import spawn_python, stop, wait_for_line

from shm_comm import ArrayPublisher, ArraySubscriber, Publisher, Subscriber
from shm_comm import layout as L


def test_batches_round_trip_in_order(channel: str) -> None:
    with Publisher(channel, num_slots=256) as pub, Subscriber(channel) as sub:
        assert pub.send_batch([{"i": i} for i in range(100)]) == 100
        assert pub.send_bytes_batch([bytes([i]) * 3 for i in range(50)]) == 50
        assert pub.stats()["msg_count"] == 150
        got = sub.recv_batch(max_n=60)
        assert got == [{"i": i} for i in range(60)]
        assert sub.recv_batch(max_n=40) == [{"i": i} for i in range(60, 100)]
        raw = sub.recv_bytes_batch(max_n=1000)
        assert raw == [bytes([i]) * 3 for i in range(50)]
        assert sub.recv_bytes_batch(timeout=0.01) == []
        assert sub.stats()["received"] == 150


def test_oversize_message_in_a_batch_publishes_nothing(channel: str) -> None:
    with Publisher(channel, slot_size=16) as pub:
        with pytest.raises(ValueError, match="17 bytes does not fit in a slot of 16"):
            pub.send_bytes_batch([b"ok", bytes(17)])
        assert pub.stats()["msg_count"] == 0
        assert pub.send_bytes_batch([np.arange(2, dtype=np.float64)]) == 1  # any buffer


def test_batch_accounting_is_exact_when_the_reader_lags(channel: str) -> None:
    with Publisher(channel, num_slots=8) as pub, Subscriber(channel) as sub:
        for _ in range(10):
            pub.send_bytes_batch([b"x"] * 7)
        got = sub.recv_bytes_batch(max_n=1000)
        stats = sub.stats()
        assert len(got) == 8
        assert stats["received"] + pub.stats()["drop_count"] == 70
        assert stats["dropped"] == 62


def test_blocking_batch_waits_for_room_and_times_out(channel: str) -> None:
    with Publisher(channel, num_slots=8) as pub, Subscriber(channel) as sub:
        assert pub.send_bytes_batch([b"a"] * 6, block=True, timeout=1) == 6
        assert pub.send_bytes_batch([b"b"] * 3, block=True, timeout=0.05) == 0  # no room
        assert len(sub.recv_bytes_batch()) == 6
        assert pub.send_bytes_batch([b"b"] * 3, block=True, timeout=1) == 3
        with pytest.raises(ValueError, match="cannot fit"):
            pub.send_bytes_batch([b"c"] * 9, block=True)
        assert pub.stats()["drop_count"] == 0


STREAMER = r"""
import sys
from shm_comm import Publisher
from shm_comm.utils import poll_until
with Publisher(sys.argv[1], num_slots=4096, slot_size=16) as pub:
    print("ready", flush=True)
    assert poll_until(lambda: pub.stats()["subscribers"] >= 1, timeout=20, interval=0.001)
    for b in range(200):
        batch = [(b * 500 + i).to_bytes(8, "little") for i in range(500)]
        assert pub.send_bytes_batch(batch, block=True, timeout=20) == 500
    print("sent", pub.stats()["msg_count"], pub.stats()["drop_count"], flush=True)
    sys.stdin.read()
"""


def test_batches_across_processes_lose_nothing_with_block(channel: str) -> None:
    import subprocess

    proc = spawn_python(STREAMER, channel, stdin=subprocess.PIPE)
    try:
        wait_for_line(proc, "ready")
        with Subscriber(channel, timeout_connect=10) as sub:
            values: list[int] = []
            while len(values) < 100_000:
                batch = sub.recv_bytes_batch(max_n=3000, timeout=10)
                assert batch, f"stream stopped after {len(values)}"
                values.extend(int.from_bytes(b, "little") for b in batch)
            assert values == list(range(100_000))
            assert sub.stats()["dropped"] == 0
        assert wait_for_line(proc, "sent") == "sent 100000 0"
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(20) == 0
    finally:
        stop(proc)


def test_typed_recv_batch_skips_nothing_and_reports_a_bad_message(channel: str) -> None:
    with ArrayPublisher(channel, shape=(3,), dtype=np.float32, num_slots=64) as pub, \
            ArraySubscriber(channel) as sub:
        for i in range(10):
            pub.send(np.full(3, i, dtype=np.float32))
        # Break the array header of message 5: the batch stops before it...
        entry = pub._segment.atom.load(pub._segment.layout.entry(5))
        payload = pub._segment.layout.payload(entry & L.ENTRY_INDEX_MASK)
        pub._segment.view[payload:payload + 2] = b"XX"
        first = sub.recv_batch(100)
        assert first[:, 0].tolist() == [0, 1, 2, 3, 4]
        assert len(sub.last_batch_timestamps) == 5
        # ...and the next call reports it (consumed, counted as received), then goes on.
        from shm_comm import SHMFormatError

        with pytest.raises(SHMFormatError):
            sub.recv_batch(100)
        assert sub.recv_batch(100)[:, 0].tolist() == [6, 7, 8, 9]
        assert sub.stats()["dropped"] == 0
