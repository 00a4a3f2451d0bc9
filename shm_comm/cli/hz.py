"""``shm-comm hz NAME``: the publishing rate, from the publisher's timestamps."""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from typing import Any

from ._common import (
    EXIT_USAGE,
    CLIError,
    Commands,
    add_command,
    add_json_option,
    add_report_options,
    add_wait_option,
    attach_observer,
    receive,
)
from ._format import to_json, write_line

__all__ = ["RateWindow", "add_parser", "run"]


class RateWindow:
    """Publishing rate over the last ``window`` messages, from publisher timestamps.

    Fed ``(seq, timestamp_ns)`` of each message seen. The rate counts messages by sequence
    number, so messages the watcher skipped still count; the period statistics use only
    consecutive pairs. A sequence number that goes backwards (publisher restarted) resets
    the window.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.stamps: deque[tuple[int, int]] = deque(maxlen=window + 1)
        self.periods: deque[float] = deque(maxlen=window)
        self.new = 0
        self.skipped = 0

    def add(self, seq: int, timestamp_ns: int) -> None:
        """Record one message."""
        if self.stamps:
            last_seq, last_ts = self.stamps[-1]
            if seq <= last_seq:
                self.stamps.clear()
                self.periods.clear()
            elif seq == last_seq + 1:
                self.periods.append((timestamp_ns - last_ts) / 1e9)
            else:
                self.skipped += seq - last_seq - 1
        self.stamps.append((seq, timestamp_ns))
        self.new += 1

    def report(self) -> dict[str, Any] | None:
        """Rate and period statistics now, or None if nothing new arrived since last time."""
        if not self.new:
            return None
        self.new = 0
        result: dict[str, Any] = {"rate": None, "min": None, "max": None, "std": None,
                                  "window": len(self.stamps), "skipped": self.skipped}
        if len(self.stamps) >= 2:
            (seq0, ts0), (seq1, ts1) = self.stamps[0], self.stamps[-1]
            result.update(first_seq=seq0, last_seq=seq1)
            if ts1 > ts0:
                result["rate"] = (seq1 - seq0) / ((ts1 - ts0) / 1e9)
        if self.periods:
            result.update(min=min(self.periods), max=max(self.periods),
                          std=statistics.pstdev(self.periods))
        return result


def run(args: argparse.Namespace) -> int:
    """Report the publishing rate every ``--interval`` seconds, like ``ros2 topic hz``."""
    if args.window < 1:
        raise CLIError("--window must be at least 1", EXIT_USAGE)
    sub = attach_observer(args.name, args.timeout, "hz")
    rates = RateWindow(args.window)
    reports = 0
    with sub:
        next_report = time.monotonic() + args.interval
        while args.count <= 0 or reports < args.count:
            now = time.monotonic()
            if now >= next_report:
                _print_rate(args, rates.report())
                reports += 1
                next_report = max(next_report + args.interval, now)
                continue
            # Each message is received into a buffer we drop: hz needs only its stamp.
            if receive(sub, next_report - now) is not None:
                rates.add(sub.last_seq, sub.last_timestamp_ns)
    return 0


def _print_rate(args: argparse.Namespace, result: dict[str, Any] | None) -> None:
    if args.json:
        write_line(to_json({"channel": args.name, "time": time.time(),
                            **(result or {"rate": None, "window": 0})}))
    elif result is None or result["rate"] is None:
        write_line("no new messages")
    else:
        write_line(f"average rate: {result['rate']:.3f}")
        if result["min"] is not None:
            write_line(f"\tmin: {result['min']:.6f}s max: {result['max']:.6f}s "
                       f"std dev: {result['std']:.6f}s window: {result['window']}")
        if result["skipped"]:
            write_line(f"\t(this watcher skipped {result['skipped']} messages; the rate "
                             "counts them)")


def add_parser(commands: Commands) -> None:
    """Add ``hz`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "hz", run, "measure the publishing rate",
        "Publishing rate of a pub/sub channel, from the timestamps the publisher "
        "wrote into each message (not arrival times, so it stays right for large "
        "messages and for a watcher that falls behind), with min/max/std dev of the "
        "periods over a window, reported every interval.")
    sub.add_argument("name", help="channel name")
    sub.add_argument("-w", "--window", type=int, default=10000, metavar="N",
                     help="messages in the statistics window (default 10000)")
    add_report_options(sub)
    add_wait_option(sub)
    add_json_option(sub, streaming=True)
