"""A camera-like publisher: 640x480x3 frames at 30 Hz, written in place with ``loan()``.

    python examples/camera.py                 # 3 s of frames, with a viewer process
    python examples/camera.py --seconds 10 --fps 60

The viewer (a separate process) receives zero-copy views and reports frame rate and the
latency from the publisher's timestamp to arrival.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time

import numpy as np

from shm_comm import ArrayPublisher, ArraySubscriber
from shm_comm.utils import poll_until

SHAPE = (480, 640, 3)


def viewer(channel: str, seconds: float) -> None:
    """Receive frames for ``seconds`` and print rate and latency."""
    sub = ArraySubscriber(channel, timeout_connect=10)
    print("viewer ready", flush=True)
    latencies = []
    frames = 0
    start = last = None
    end = time.monotonic() + seconds + 10
    while time.monotonic() < end:
        frame = sub.recv(timeout=1.0)  # zero-copy, valid until the next recv
        if frame is None:
            if frames:
                break
            continue
        latencies.append(time.time() - sub.last_timestamp)  # type: ignore[operator]
        last = time.monotonic()
        start = start or last
        frames += 1
        assert frame[0, 0, 0] == frame[-1, -1, -1], "frame changed while held"
    elapsed = max((last or 0) - (start or 0), 1e-9) * frames / max(frames - 1, 1)
    lat = np.array(latencies) * 1e6
    print(f"viewer: {frames} frames, {frames / elapsed:.1f} fps, latency p50 "
          f"{np.percentile(lat, 50):.0f} us, p99 {np.percentile(lat, 99):.0f} us, "
          f"dropped {sub.stats()['dropped']}", flush=True)
    sub.close()


def main(argv: list[str] | None = None) -> int:
    """Publish frames while a viewer process watches; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--channel", default="camera_demo")
    args = parser.parse_args(argv)
    with ArrayPublisher(args.channel, shape=SHAPE, dtype=np.uint8, num_slots=4) as cam:
        proc = mp.get_context("spawn").Process(target=viewer, args=(args.channel, args.seconds))
        proc.start()
        poll_until(lambda: cam.stats()["subscribers"] >= 1, timeout=15, interval=0.001)
        period = 1.0 / args.fps
        deadline = time.monotonic()
        n = int(args.seconds * args.fps)
        for i in range(n):
            with cam.loan() as frame:      # shared memory, filled in place: no copy
                frame[...] = i % 256
            deadline += period
            time.sleep(max(0.0, deadline - time.monotonic()))
        print(f"camera: published {n} frames of {np.prod(SHAPE) / 1e6:.2f} MB", flush=True)
        proc.join(20)
    return proc.exitcode or 0


if __name__ == "__main__":
    sys.exit(main())
