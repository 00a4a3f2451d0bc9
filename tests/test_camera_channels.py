"""Camera-sized channels across real processes: the first frames as fast as later ones."""

from __future__ import annotations

import statistics
import time

import numpy as np
from helpers import spawn_python, stop

from shm_comm import ArrayPublisher

FRAME_BYTES = 16 * 2**20

READER = """
import sys, time
import numpy as np
from shm_comm import ArraySubscriber
sub = ArraySubscriber(sys.argv[1], timeout_connect=20)
private = np.empty(sub.shape, sub.dtype)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "stop":
        break
    arr = sub.recv(timeout=20)
    assert arr is not None, "no frame"
    t0 = time.perf_counter_ns()
    np.copyto(private, arr)  # touch every byte of the frame
    print(time.perf_counter_ns() - t0, int(private[0]), flush=True)
sub.close()
"""


def test_first_frames_cost_what_later_ones_do(channel: str) -> None:
    """The first send into each buffer and the first read of it by another process cost no
    more than later ones (the mapping is populated when it is created and attached), within
    a generous 3x of the steady state: medians of messages 1-8 against 9-24, one run."""
    frames = 24
    with ArrayPublisher(channel, shape=(FRAME_BYTES // 8,), dtype=np.float64,
                        num_slots=4) as pub:
        proc = spawn_python(READER, channel, stdin=-1)
        try:
            assert proc.stdout is not None
            assert proc.stdin is not None
            assert proc.stdout.readline().strip() == "ready"
            frame = np.ones(FRAME_BYTES // 8)
            send_ns, read_ns = [], []
            for i in range(frames):
                frame[0] = i
                t0 = time.perf_counter_ns()
                pub.send(frame)
                send_ns.append(time.perf_counter_ns() - t0)
                proc.stdin.write("next\n")
                proc.stdin.flush()
                took, first = proc.stdout.readline().split()
                assert int(first) == i  # lockstep: one frame in flight, nothing dropped
                read_ns.append(int(took))
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            stop(proc)
    for what, samples in (("send", send_ns), ("read", read_ns)):
        first, later = statistics.median(samples[:8]), statistics.median(samples[8:])
        print(f"\n{what}: first 8 median {first / 1e6:.2f} ms, later {later / 1e6:.2f} ms, "
              f"ratio {first / later:.2f}")
        assert first <= 3 * later, (what, samples)
