"""The reader check under real concurrency (issue 12, part 6).

Writers publish checksummed messages as fast as they can into rings so small that the
buffer a reader copies is reused within a few messages; readers in other processes take
them every way there is (C copy, batch copy, observer copy, typed view, typed copy through
the careful path, typed batch). The reader check (``intact_from`` in ``_ring.c``, the one
place that decides whether a copy is intact, and the pin check of zero-copy views) must
fire, and no delivered payload may be torn: every checksum holds, and a view held while the
writer laps the ring stays unchanged. ``torn_reads`` in ``stats()`` counts the discards.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import spawn_python, stop, wait_for_line

WRITER = r"""
import struct, sys, threading, zlib
import numpy as np
from shm_comm import ArrayPublisher, Publisher
channel, size = sys.argv[1], int(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
bodies = [bytes([b]) * (size - 12) for b in range(256)]

def message(seq):
    head = struct.pack("<Q", seq)
    body = bodies[seq & 0xFF]
    return head + body + struct.pack("<I", zlib.crc32(body, zlib.crc32(head)))

if channel.endswith("raw"):
    pub = Publisher(channel, num_slots=2, slot_size=size, max_subscribers=2,
                    serialization="raw")
    send = pub.send_bytes
else:
    pub = ArrayPublisher(channel, shape=(size,), dtype=np.uint8, num_slots=2,
                         max_subscribers=3)
    send = lambda data: pub.send(np.frombuffer(data, np.uint8))
print("ready", flush=True)
seq = 0
while not stop.is_set():
    for _ in range(256):
        send(message(seq))
        seq += 1
print("sent", seq, flush=True)
pub.close()
"""

READER = r"""
import json, struct, sys, time, zlib
import numpy as np
from shm_comm import ArraySubscriber, Subscriber
from shm_comm.layout import HEAD
channel, how, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])

def intact(data):
    data = bytes(data)
    crc = struct.unpack_from("<I", data, len(data) - 4)[0]
    return zlib.crc32(data[8:-4], zlib.crc32(data[:8])) == crc and \
        data[8:-4] == bytes([struct.unpack_from("<Q", data)[0] & 0xFF]) * (len(data) - 12)

if how in ("copy", "batch", "observer"):
    sub = Subscriber(channel, serialization="raw", observer=how == "observer")
else:
    sub = ArraySubscriber(channel)
print("ready", flush=True)
received = bad = held_checks = 0
until = time.monotonic() + seconds
while time.monotonic() < until:
    if how in ("copy", "observer"):
        got = [sub.recv_bytes(timeout=0.1)]
    elif how == "batch":
        got = sub.recv_bytes_batch(16, timeout=0.1)
    elif how == "typed batch":
        got = list(sub.recv_batch(16, timeout=0.1))
    else:
        got = [sub.recv(timeout=0.1, copy=how == "typed copy")]
    for data in got:
        if data is None:
            continue
        received += 1
        if not intact(data):
            bad += 1
        if how == "view" and received % 64 == 0:
            # Hold it while the writer laps the ring several times: it must not change.
            before = bytes(data)
            atom = sub._segment.atom
            until_lapped = atom.load(HEAD) + 4 * sub._segment.layout.num_buffers
            deadline = time.monotonic() + 0.5
            while atom.load(HEAD) < until_lapped and time.monotonic() < deadline:
                pass
            held_checks += 1
            if bytes(data) != before:
                bad += 1
stats = sub.stats()
print(json.dumps({"how": how, "received": received, "bad": bad, "torn": stats["torn_reads"],
                  "dropped": stats["dropped"], "held_checks": held_checks}), flush=True)
"""

HOWS = {"raw": ["copy", "batch", "observer"],
        "typed": ["view", "typed copy", "typed batch"]}


def run_stress(channel: str, seconds: float, size: int = 4096) -> list[dict[str, int | str]]:
    writers, readers = [], []
    try:
        for kind in HOWS:
            writer = spawn_python(WRITER, f"{channel}{kind}", str(size), stdin=subprocess.PIPE)
            writers.append(writer)
            wait_for_line(writer, "ready")
        for kind, hows in HOWS.items():
            for how in hows:
                reader = spawn_python(READER, f"{channel}{kind}", how, str(seconds))
                readers.append(reader)
        for reader in readers:
            wait_for_line(reader, "ready")
        results = [json.loads(wait_for_line(r, "{", timeout=seconds + 60)) for r in readers]
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.close()
            wait_for_line(writer, "sent")
        return results
    finally:
        for proc in readers + writers:
            stop(proc)


def check(results: list[dict[str, int | str]]) -> None:
    print("\n" + "\n".join(json.dumps(r) for r in results))
    assert [r["bad"] for r in results] == [0] * len(results), results  # no torn payload
    assert all(int(r["received"]) > 0 for r in results), results
    assert sum(int(r["torn"]) for r in results) > 0, "the reader check never fired"
    view = next(r for r in results if r["how"] == "view")
    assert int(view["held_checks"]) > 0


def test_no_torn_payload_under_a_lapping_writer(channel: str) -> None:
    check(run_stress(channel, seconds=6.0))


@pytest.mark.slow
def test_no_torn_payload_under_a_lapping_writer_long(channel: str) -> None:
    results = run_stress(channel, seconds=120.0)
    check(results)
    # Long enough for each copying path's own discard branch to fire.
    assert all(int(r["torn"]) > 0 for r in results if r["how"] != "view"), results
