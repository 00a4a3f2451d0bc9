"""Sharing NumPy arrays between processes: the raw-bytes pattern and typed channels.

    python examples/numpy_sharing.py               # the three ways below, in one run
    python examples/numpy_sharing.py publisher     # terminal 1: joint angles, 10 per second
    python examples/numpy_sharing.py subscriber    # terminal 2: print them

1. The tuning guide's raw path: ``send_bytes(arr.tobytes())`` and ``np.frombuffer`` on the
   receiving side. Simple; the receiver must know dtype and shape; two copies.
2. Typed channels: ``ArrayPublisher`` / ``ArraySubscriber``. dtype and shape travel with the
   channel; the receiver gets a read-only zero-copy view, valid until its next receive.
3. ``loan()``: fill the slot in place, no copy at all on either side.
Each part runs the receiver in a separate process. The ``publisher``/``subscriber`` roles
(shm-comm 1.0's command line) run part 1 between two terminals until Ctrl-C.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time

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


def demo() -> int:
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


JOINTS = 6  # a 6-DOF arm: six float64 joint angles per message


def publish_joints(channel: str) -> None:
    """Publish a float64 array of joint angles (raw bytes) 10 times a second until Ctrl-C."""
    with Publisher(channel, num_slots=64, slot_size=JOINTS * 8) as pub:
        print(f"publishing {JOINTS} float64 joint angles on {channel!r} (Ctrl-C stops)",
              flush=True)
        phase = np.arange(JOINTS) * 0.5
        count = 0
        try:
            while True:
                angles = 90.0 * np.sin(count * 0.1 + phase)
                pub.send_bytes(angles.tobytes())
                print(f"sent {np.round(angles, 2)}", flush=True)
                count += 1
                time.sleep(0.1)
        except KeyboardInterrupt:
            print(f"sent {count} arrays", flush=True)


def receive_joints(channel: str) -> None:
    """Print each joint-angle array as it arrives until Ctrl-C."""
    with Subscriber(channel, timeout_connect=10.0) as sub:
        print(f"receiving joint angles from {channel!r} (Ctrl-C stops)", flush=True)
        count = 0
        try:
            while True:
                raw = sub.recv_bytes(timeout=1.0)
                if raw is None:
                    print("nothing for 1 s; is the publisher running?", flush=True)
                    continue
                angles = np.frombuffer(raw, dtype=np.float64)  # read-only, no copy of raw
                print(f"received {np.round(angles, 2)}", flush=True)
                count += 1
        except KeyboardInterrupt:
            print(f"received {count} arrays", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the demo, or one role of the two-terminal version."""
    parser = argparse.ArgumentParser(
        description="Share NumPy arrays between processes: raw bytes, typed channels, loan().",
        epilog="Without a role, runs all three ways in one go.")
    parser.add_argument("role", nargs="?", choices=("publisher", "subscriber"),
                        help="run one side of the raw-bytes pattern until Ctrl-C")
    parser.add_argument("--channel", default="example_numpy",
                        help="channel of the publisher/subscriber roles (default example_numpy)")
    args = parser.parse_args(argv)
    if args.role == "publisher":
        publish_joints(args.channel)
    elif args.role == "subscriber":
        receive_joints(args.channel)
    else:
        return demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
