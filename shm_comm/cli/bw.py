"""``shm-comm bw NAME``: bytes per second, from the channel's byte counter."""

from __future__ import annotations

import argparse
import time
from collections import deque
from typing import Any

from ..wait import sleep
from ._common import (
    Commands,
    add_command,
    add_json_option,
    add_report_options,
    add_wait_option,
    counter_rate,
    lookup,
    positive,
    wait_for_channel,
)
from ._format import format_bytes, to_json, write_line

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Report bandwidth from the channel's byte counter, like ``ros2 topic bw``."""
    name = args.name
    info = wait_for_channel(name, args.timeout)
    kind = info["kind"]
    history: deque[tuple[float, dict[str, Any]]] = deque([(time.monotonic(), info)])
    keep = max(1, round(args.window / args.interval))
    reports = 0
    next_report = time.monotonic() + args.interval
    while args.count <= 0 or reports < args.count:
        sleep(max(0.0, next_report - time.monotonic()))
        next_report += args.interval
        now = time.monotonic()
        current = lookup(name, kind)
        reports += 1
        if current is None:
            if args.json:
                write_line(to_json({"channel": name, "time": time.time(), "bytes_per_s": None,
                                    "gone": True}))
            else:
                write_line("channel is gone; waiting for it to come back")
            continue
        history.append((now, current))
        while len(history) > keep + 1:
            history.popleft()
        then, old = history[0]
        rate = counter_rate(old, current, now - then)
        if rate is None:  # restarted: start over from this snapshot
            history.clear()
            history.append((now, current))
            rate = (0.0, 0.0, 0)
        msg_rate, byte_rate, messages = rate
        data = current["bytes_total"] - old["bytes_total"] if messages else 0
        mean = data / messages if messages else None
        if args.json:
            write_line(to_json({"channel": name, "time": time.time(), "bytes_per_s": byte_rate,
                                "messages_per_s": msg_rate, "mean_size": mean, "messages": messages,
                                "window": now - then}))
        elif not messages:
            write_line("no new messages")
        else:
            assert mean is not None
            write_line(f"{format_bytes(byte_rate)}/s from {messages} messages "
                       f"({msg_rate:.4g} msg/s)")
            write_line(f"\tmessage size mean: {format_bytes(mean)} window: {now - then:.3g} s")
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``bw`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "bw", run, "measure the bandwidth",
        "Bytes per second and mean message size of a channel (any kind), from "
        "deltas of its byte and message counters over a window.")
    sub.add_argument("name", help="channel name")
    sub.add_argument("-w", "--window", type=positive, default=5.0, metavar="SECONDS",
                     help="average over this many seconds (default 5)")
    add_report_options(sub)
    add_wait_option(sub)
    add_json_option(sub, streaming=True)
