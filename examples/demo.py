"""The README's demo: a publisher and a subscriber in two processes, printing what arrives.

    python examples/demo.py

Starts examples/publisher.py and examples/subscriber.py as separate processes (as a robot and
a logger would be), relays their output, and ends with what was sent, received and lost.
Exits non-zero if either process failed or a message is unaccounted for.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent


COUNT, RATE = 1000, 200


def _relay(prefix: str, proc: subprocess.Popen[str], ready: threading.Event | None,
           lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready is not None and line.startswith("ready"):
            ready.set()
        lines.append(line)
        print(f"[{prefix}] {line}", end="", flush=True)


def _number(pattern: str, lines: list[str]) -> int | None:
    found = [m for line in lines if (m := re.search(pattern, line))]
    return int(found[-1].group(1)) if found else None


def main(argv: list[str] | None = None) -> int:
    """Run both processes; returns non-zero if either failed or a message went missing."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"Sends {COUNT} joint states at {RATE} Hz; takes about {COUNT / RATE:g} s.")
    # A name of its own, so two demos (or CI runs) on one machine never meet.
    parser.add_argument("--channel", default=f"demo_joints_{os.getpid()}",
                        help="channel name (default: demo_joints_<pid>)")
    channel = parser.parse_args(argv).channel
    python = sys.executable
    pub = subprocess.Popen([python, str(HERE / "publisher.py"), "--channel", channel, "--rate",
                            str(RATE), "--count", str(COUNT), "--wait-subscribers", "1"],
                           stdout=subprocess.PIPE, text=True)
    pub_lines: list[str] = []
    sub_lines: list[str] = []
    pub_ready = threading.Event()
    threads = [threading.Thread(target=_relay, args=("publisher ", pub, pub_ready, pub_lines))]
    threads[0].start()
    if not pub_ready.wait(15):
        pub.kill()
        print("publisher did not start", file=sys.stderr)
        return 1
    sub = subprocess.Popen([python, str(HERE / "subscriber.py"), "--channel", channel,
                            "--count", str(COUNT), "--every", str(RATE)],
                           stdout=subprocess.PIPE, text=True)
    threads.append(threading.Thread(target=_relay, args=("subscriber", sub, None, sub_lines)))
    threads[1].start()
    codes = [sub.wait(60), pub.wait(60)]
    for t in threads:
        t.join()
    sent = _number(r"done: sent (\d+)", pub_lines)
    received = _number(r"received (\d+), dropped", sub_lines)
    lost = _number(r"received \d+, dropped (\d+)", sub_lines)
    if max(codes) or sent is None or received is None or lost is None:
        print(f"demo failed (exit codes: subscriber {codes[0]}, publisher {codes[1]})")
        return max(codes) or 1
    print(f"demo: the publisher sent {sent} messages; the subscriber, another process, "
          f"received {received} and lost {lost}")
    return 0 if received + lost == sent else 1


if __name__ == "__main__":
    sys.exit(main())
