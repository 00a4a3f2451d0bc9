"""Two channels in one asyncio loop: ``async for`` over each, side by side with asyncio.gather.

    python examples/async_subscriber.py              # starts examples/robot_sim.py itself
    python examples/async_subscriber.py --attach     # reads a simulator already running
    python examples/async_subscriber.py --seconds 10

Follows ``joints`` (500 Hz) and ``imu`` (1 kHz) with one task each, prints what arrived every
second, and stops after ``--seconds``: closing the subscribers ends both ``async for`` loops.
No thread spins and no task polls: between messages the loop sleeps (docs/event-loops.md).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from shm_comm import ArraySubscriber, SHMConnectionError

HERE = Path(__file__).resolve().parent


async def follow(sub: ArraySubscriber, counts: dict[str, int], last: dict[str, float]) -> None:
    """Count every message of one channel until the subscriber is closed."""
    async for sample in sub:  # read-only views, valid until the next one
        counts[sub.name] += 1
        last[sub.name] = float(sample["t"])


async def report(subs: list[ArraySubscriber], counts: dict[str, int], seconds: float) -> None:
    """Print the rate of each channel once a second, then close the subscribers."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        before = dict(counts)
        await asyncio.sleep(min(1.0, end - loop.time()))
        line = "  ".join(f"{name} {counts[name] - before[name]:5d}/s" for name in counts)
        dropped = sum(s.stats()["dropped"] for s in subs)
        print(f"{line}  dropped {dropped}", flush=True)
    for sub in subs:
        sub.close()  # ends its `async for`


async def main_async(seconds: float) -> dict[str, int]:
    subs = [ArraySubscriber("joints", timeout_connect=10.0),
            ArraySubscriber("imu", timeout_connect=10.0)]
    counts = {s.name: 0 for s in subs}
    last: dict[str, float] = {}
    print("ready", flush=True)
    await asyncio.gather(*(follow(s, counts, last) for s in subs),
                         report(subs, counts, seconds))
    print("last samples at t =", ", ".join(f"{k} {v:.3f}" for k, v in last.items()), flush=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run the example; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="stop after this long")
    parser.add_argument("--attach", action="store_true",
                        help="do not start examples/robot_sim.py; read one already running")
    args = parser.parse_args(argv)
    sim = None
    if not args.attach:
        sim = subprocess.Popen(
            [sys.executable, str(HERE / "robot_sim.py"), "--channels", "joints,imu",
             "--exit-with-parent"], stdout=subprocess.PIPE, text=True)
        assert sim.stdout is not None
        if not sim.stdout.readline().startswith("ready"):
            print("error: the simulator did not start", file=sys.stderr)
            return 1
    try:
        counts = asyncio.run(main_async(args.seconds))
    except SHMConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(timeout=10)
    print("received", counts, flush=True)
    return 0 if all(counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
