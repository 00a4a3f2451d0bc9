"""Sharing NumPy arrays between processes: the raw-bytes pattern and typed channels.

    python examples/numpy_sharing.py

1. The tuning guide's raw path: ``send_bytes(arr.tobytes())`` and ``np.frombuffer`` on the
   receiving side. Simple; the receiver must know dtype and shape; two copies.
2. Typed channels: ``ArrayPublisher`` / ``ArraySubscriber``. dtype and shape travel with the
   channel; the receiver gets a read-only zero-copy view, valid until its next receive.
3. ``loan()``: fill the slot in place, no copy at all on either side.
Each part runs the receiver in a separate process.
"""

from __future__ import annotations

import multiprocessing as mp
import sys

import numpy as np

from shm_comm import ArrayPublisher, ArraySubscriber, Publisher, Subscriber
from shm_comm.utils import poll_until


def raw_receiver(ready: mp.synchronize.Event, n: int) -> None:
    sub = Subscriber("np_raw", timeout_connect=10)
    ready.set()
    for _ in range(n):
        raw = sub.recv_bytes(timeout=5)
        assert raw is not None, "timed out"
        arr_back = np.frombuffer(raw, dtype=np.float64)
        print(f"  raw     received {arr_back}")
    sub.close()


def typed_receiver(ready: mp.synchronize.Event, n: int) -> None:
    sub = ArraySubscriber("np_typed", timeout_connect=10)
    ready.set()
    for _ in range(n):
        frame = sub.recv(timeout=5)
        assert frame is not None, "timed out"
        # A read-only view of shared memory: no copy, valid until the next recv.
        print(f"  typed   received {frame.dtype} {frame.shape} mean={frame.mean():.2f} "
              f"writeable={frame.flags.writeable} seq={sub.last_seq}")
    sub.close()


def run(target: object, n: int) -> tuple[mp.process.BaseProcess, mp.synchronize.Event]:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=target, args=(ready, n))
    proc.start()
    return proc, ready


def main() -> int:
    """Run the three parts; returns the exit code."""
    print("1. raw bytes (the tuning guide's pattern)")
    with Publisher("np_raw", slot_size=128) as pub:
        proc, ready = run(raw_receiver, 3)
        ready.wait(10)
        poll_until(lambda: pub.stats()["subscribers"] >= 1, timeout=10, interval=0.001)
        for i in range(3):
            arr = np.array([1.0, 2.0, 3.0], dtype=np.float64) * (i + 1)
            pub.send_bytes(arr.tobytes())
        proc.join(10)

    print("2. typed channel: send() copies once, the receiver gets a zero-copy view")
    with ArrayPublisher("np_typed", shape=(480, 640, 3), dtype=np.uint8, num_slots=8) as cam:
        proc, ready = run(typed_receiver, 4)
        ready.wait(10)
        poll_until(lambda: cam.stats()["subscribers"] >= 1, timeout=10, interval=0.001)
        for i in range(2):
            cam.send(np.full((480, 640, 3), i * 10, dtype=np.uint8), block=True, timeout=5)
        print("3. loan(): write the frame straight into shared memory")
        for i in range(2, 4):
            with cam.loan() as frame:
                frame[...] = i * 10
        proc.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
