"""Processes the fault and soak tests start: ``python tests/workers.py ROLE ARGS...``.

Each role prints ``ready`` (or progress lines) on stdout so tests wait on output, not on time.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import struct
import sys
import time

import numpy as np

from shm_comm import ArraySubscriber, Publisher, Subscriber

RECORD = struct.Struct("<QQQ")  # incarnation (pid), sequence, payload length


def checked_payload(incarnation: int, seq: int, rng: random.Random) -> bytes:
    """A message whose integrity the receiver can verify: header, random body, checksum."""
    body = rng.randbytes(rng.randrange(16, 200))
    head = RECORD.pack(incarnation, seq, len(body))
    return head + body + hashlib.blake2b(head + body, digest_size=8).digest()


def verify_payload(data: bytes) -> tuple[int, int]:
    """Return ``(incarnation, seq)`` of a checked payload; AssertionError if it is corrupt."""
    assert len(data) >= RECORD.size + 8, f"short message ({len(data)} bytes)"
    incarnation, seq, length = RECORD.unpack_from(data)
    assert len(data) == RECORD.size + length + 8, "length does not match"
    digest = hashlib.blake2b(data[:-8], digest_size=8).digest()
    assert digest == data[-8:], "checksum mismatch: torn or corrupted message"
    return incarnation, seq


def publish_forever(channel: str, seed: int) -> None:
    """Publish checked payloads as fast as possible until killed."""
    rng = random.Random(seed)
    pub = Publisher(channel, num_slots=16, slot_size=256)
    seq = 0
    while True:
        pub.send_bytes(checked_payload(os.getpid(), seq, rng))
        seq += 1
        if seq % 64 == 0:
            time.sleep(0)  # let the subscriber run on a 2-core machine


def kill_loop(channel: str, kills: int, seed: int) -> None:
    """Fork publishers and SIGKILL each at a random moment, ``kills`` times (after every
    tenth, nobody publishes for 0.2 s); then publish FINAL messages until told to stop."""
    rng = random.Random(seed)
    for i in range(kills):
        pid = os.fork()
        if pid == 0:
            try:
                publish_forever(channel, seed + i)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.02))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print(f"killed {i + 1}", flush=True)
        if i % 10 == 9:
            time.sleep(0.2)  # a while with no publisher at all: subscribers must notice
    with Publisher(channel, num_slots=16, slot_size=256) as pub:
        print("final", flush=True)
        rng2 = random.Random(seed)
        seq = 0
        import select

        while not select.select([sys.stdin], [], [], 0.005)[0]:
            pub.send_bytes(b"FINAL" + checked_payload(os.getpid(), seq, rng2))
            seq += 1
    print("stopped", flush=True)


def hold_and_wait(channel: str) -> None:
    """Receive one zero-copy view, report it, and hold it until killed."""
    sub = ArraySubscriber(channel, timeout_connect=10)
    view = sub.recv(timeout=10)
    assert view is not None
    print(f"holding {sub.last_seq} {float(view.reshape(-1)[0])}", flush=True)
    signal.pause()


SENTINEL = 1 << 63


def soak_subscriber(channel: str, mode: str, seconds: float) -> None:
    """Receive a counter stream until the first sentinel (value >= 2**63); report as JSON.

    Modes: ``normal``; ``slow`` (sleeps 2 ms per message); ``stalled`` (receives nothing for
    the first ``seconds``, then drains); ``holder`` (zero-copy views of the typed twin
    channel, checking each held view never changes until the next receive). The report has
    what is needed to check accounting exactly: counters received, the sentinel index seen,
    and the subscriber's own drop count.
    """
    if mode == "holder":
        sub: Subscriber | ArraySubscriber = ArraySubscriber(channel + "_arr", timeout_connect=10)
    else:
        sub = Subscriber(channel, serialization="raw", timeout_connect=10)
    print("ready", flush=True)
    last = -1
    first = None
    out_of_order = 0
    received = 0
    changed = 0
    held: np.ndarray | None = None
    held_copy: np.ndarray | None = None
    if mode == "stalled":
        time.sleep(seconds)
    hard_deadline = time.monotonic() + 3 * seconds + 60
    sentinel_index = None
    while time.monotonic() < hard_deadline:
        if mode == "holder":
            if held is not None and not np.array_equal(held, held_copy):
                changed += 1
            arr = sub.recv(timeout=0.5)
            if arr is None:
                continue
            value = int(arr[0])
            held, held_copy = arr, arr.copy()
        else:
            data = sub.recv_bytes(timeout=0.5)
            if data is None:
                continue
            value = struct.unpack_from("<Q", data)[0]
            if mode == "slow":
                time.sleep(0.002)
        if value >= SENTINEL:
            sentinel_index = value - SENTINEL
            break
        if first is None:
            first = value
        if value <= last:
            out_of_order += 1
        last = value
        received += 1
    stats = sub.stats()
    print(json.dumps({"mode": mode, "received": received, "dropped": stats["dropped"],
                      "out_of_order": out_of_order, "first": first, "last": last,
                      "sentinel": sentinel_index, "held_changed": changed,
                      "stats_received": stats["received"]}), flush=True)
    sub.close()


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "kill-loop":
        kill_loop(rest[0], int(rest[1]), int(rest[2]))
    elif role == "hold":
        hold_and_wait(rest[0])
    elif role == "soak-sub":
        soak_subscriber(rest[0], rest[1], float(rest[2]))
    else:
        raise SystemExit(f"unknown role {role}")
