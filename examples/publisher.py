"""Publish joint states from a script, as a robot process would.

    python examples/publisher.py                 # 6-DOF joint states at 100 Hz for 5 s
    python examples/publisher.py --rate 500 --count 2000

Prints "ready" once the channel exists, then one line per second. Ctrl-C stops it cleanly;
the channel's segment is removed on exit.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time

from shm_comm import Publisher


def main(argv: list[str] | None = None) -> int:
    """Run the publisher; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channel", default="joints")
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--count", type=int, default=500, help="messages to send (0: forever)")
    parser.add_argument("--wait-subscribers", type=int, default=0,
                        help="wait until this many subscribers attached before sending")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    with Publisher(args.channel, slot_size=256) as pub:
        print("ready", flush=True)
        deadline = time.monotonic() + 10
        while pub.stats()["subscribers"] < args.wait_subscribers:
            if time.monotonic() > deadline:
                print("no subscriber came", file=sys.stderr)
                return 1
            time.sleep(0.005)
        period = 1.0 / args.rate
        next_send = time.monotonic()
        sent = 0
        try:
            while args.count == 0 or sent < args.count:
                t = time.time()
                q = [round(math.sin(t + i), 4) for i in range(6)]
                pub.send({"seq": sent, "t": t, "q": q})
                sent += 1
                if sent % max(1, int(args.rate)) == 0:
                    print(f"sent {sent}", flush=True)
                next_send += period
                delay = next_send - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except KeyboardInterrupt:
            pass
        stats = pub.stats()
        # drop_count also counts the losses of subscribers that have already left.
        still = f"; {stats['subscribers']} subscriber(s) still attached" if stats[
            "subscribers"] else ""
        print(f"done: sent {stats['msg_count']}; subscribers lost {stats['drop_count']} "
              f"of them{still}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
