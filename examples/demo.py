"""The README's demo: a publisher and a subscriber in two processes, printing what arrives.

    python examples/demo.py

Starts examples/subscriber.py and examples/publisher.py as separate processes (as a robot and
a logger would be), relays their output, and exits when both are done.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _relay(prefix: str, proc: subprocess.Popen[str], ready: threading.Event | None) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready is not None and line.startswith("ready"):
            ready.set()
        print(f"[{prefix}] {line}", end="", flush=True)


def main() -> int:
    """Run both processes; returns non-zero if either failed."""
    python = sys.executable
    pub = subprocess.Popen([python, str(HERE / "publisher.py"), "--rate", "200", "--count",
                            "1000", "--wait-subscribers", "1"], stdout=subprocess.PIPE, text=True)
    pub_ready = threading.Event()
    threads = [threading.Thread(target=_relay, args=("publisher ", pub, pub_ready))]
    threads[0].start()
    if not pub_ready.wait(15):
        pub.kill()
        print("publisher did not start", file=sys.stderr)
        return 1
    sub = subprocess.Popen([python, str(HERE / "subscriber.py"), "--count", "1000",
                            "--every", "200"], stdout=subprocess.PIPE, text=True)
    threads.append(threading.Thread(target=_relay, args=("subscriber", sub, None)))
    threads[1].start()
    codes = [sub.wait(60), pub.wait(60)]
    for t in threads:
        t.join()
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
