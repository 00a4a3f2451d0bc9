"""Publish/subscribe between two terminals: a robot publishes its pose, loggers print it.

    python examples/simple_pubsub.py publisher     # terminal 1: 10 poses a second
    python examples/simple_pubsub.py subscriber    # terminal 2, 3, ...: print them

Start them in any order (a subscriber waits up to 10 s for the publisher) and stop them with
Ctrl-C. Each subscriber gets every pose in order while it keeps up; a new one starts with the
next pose. ``--channel NAME`` picks another channel than ``example_pose``. This is shm-comm
1.0's example command line, and the code uses only 1.0's API.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from shm_comm import Publisher, Subscriber

RATE_HZ = 10.0


def publish(channel: str) -> None:
    """Send a pose dict every 0.1 s until Ctrl-C."""
    with Publisher(channel, num_slots=64, slot_size=256) as pub:
        print(f"publishing poses on {channel!r} at {RATE_HZ:g} Hz (Ctrl-C stops)", flush=True)
        start = time.monotonic()
        count = 0
        try:
            while True:
                angle = count / RATE_HZ
                pose = {"seq": count, "stamp": time.time(),
                        "x": round(math.cos(angle), 3), "y": round(math.sin(angle), 3)}
                pub.send(pose)
                print(f"sent #{count}: x={pose['x']:+.3f} y={pose['y']:+.3f}", flush=True)
                count += 1
                time.sleep(max(0.0, start + count / RATE_HZ - time.monotonic()))
        except KeyboardInterrupt:
            stats = pub.stats()
            print(f"stopped after {stats['msg_count']} poses; subscribers lost "
                  f"{stats['drop_count']}", flush=True)


def subscribe(channel: str) -> None:
    """Print each pose as it arrives until Ctrl-C."""
    with Subscriber(channel, timeout_connect=10.0) as sub:
        print(f"subscribed to {channel!r} (Ctrl-C stops)", flush=True)
        received = 0
        try:
            while True:
                pose = sub.recv(timeout=1.0)
                if pose is None:
                    print("no pose for 1 s; is the publisher running?", flush=True)
                    continue
                received += 1
                age_ms = (time.time() - pose["stamp"]) * 1e3
                print(f"got #{pose['seq']}: x={pose['x']:+.3f} y={pose['y']:+.3f} "
                      f"({age_ms:.2f} ms after it was sent)", flush=True)
        except KeyboardInterrupt:
            print(f"received {received} poses", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the role named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Run the publisher in one terminal and "
                                            "subscribers in others.")
    parser.add_argument("role", choices=("publisher", "subscriber"))
    parser.add_argument("--channel", default="example_pose", help="default: example_pose")
    args = parser.parse_args(argv)
    (publish if args.role == "publisher" else subscribe)(args.channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
