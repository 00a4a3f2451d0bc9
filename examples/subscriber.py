"""Print what arrives on a channel.

    python examples/subscriber.py                # waits up to 5 s for the publisher
    python examples/subscriber.py --channel joints --count 10

Stops after --count messages, or when nothing arrives for --idle seconds.
"""

from __future__ import annotations

import argparse
import sys

from shm_comm import SHMConnectionError, Subscriber


def main(argv: list[str] | None = None) -> int:
    """Run the subscriber; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channel", default="joints")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    parser.add_argument("--idle", type=float, default=2.0, help="stop after this long silent")
    parser.add_argument("--every", type=int, default=50, help="print every Nth message")
    args = parser.parse_args(argv)
    try:
        sub = Subscriber(args.channel, timeout_connect=5.0)
    except SHMConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    received = 0
    with sub:
        try:
            while args.count == 0 or received < args.count:
                msg = sub.recv(timeout=args.idle)
                if msg is None:
                    break
                received += 1
                if received == 1 or received % args.every == 0:
                    q = ", ".join(f"{v:+.3f}" for v in msg["q"])
                    print(f"#{msg['seq']:5d}  q = [{q}]", flush=True)
        except KeyboardInterrupt:
            pass
        stats = sub.stats()
    print(f"received {stats['received']}, dropped {stats['dropped']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
