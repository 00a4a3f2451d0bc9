"""``shm-comm top``: a live table of every channel, refreshed in place."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TextIO

from ..channels import list_channels
from ..wait import sleep
from ._common import (
    EXIT_USAGE,
    CLIError,
    Commands,
    add_command,
    add_pattern_argument,
    age_of,
    counter_rate,
    matches,
    positive,
    segment_state,
)
from ._format import format_age, format_bytes, format_rate, render_table

__all__ = ["SORT_KEYS", "add_parser", "render_top", "run", "top_rows"]


# ANSI: the alternate screen keeps the user's scrollback intact, as htop does.
ALT_SCREEN_ON, ALT_SCREEN_OFF = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l"
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"
BOLD, RED, RESET = "\x1b[1m", "\x1b[31m", "\x1b[0m"

SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "name": lambda r: r["name"],
    "rate": lambda r: -(r["rate"] or 0.0),
    "bw": lambda r: -(r["bandwidth"] or 0.0),
    "drops": lambda r: -r["drop_count"],
}


def top_rows(old: dict[str, tuple[float, dict[str, Any]]],
             new: dict[str, tuple[float, dict[str, Any]]], sort: str) -> list[dict[str, Any]]:
    """One row per readable channel in ``new``, with rates against the ``old`` snapshot."""
    now = time.time()
    rows = []
    for seg, (when, info) in new.items():
        if "error" in info:
            continue
        rate = bandwidth = None
        new_drops = 0
        if seg in old:
            then, previous = old[seg]
            counted = counter_rate(previous, info, when - then)
            if counted is not None:
                rate, bandwidth, _ = counted
                new_drops = max(0, info["drop_count"] - previous["drop_count"])
        rows.append({**info, "rate": rate, "bandwidth": bandwidth, "new_drops": new_drops,
                     "age": age_of(info["last_timestamp"], now), "state": segment_state(info)})
    rows.sort(key=SORT_KEYS[sort])
    return rows


def render_top(rows: list[dict[str, Any]], unreadable: int, interval: float,
               ansi: bool) -> list[str]:
    """The lines of one ``top`` frame."""
    title = (f"shm-comm top  {datetime.now().strftime('%H:%M:%S')}  {len(rows)} channel"
             f"{'' if len(rows) == 1 else 's'}  every {interval:g} s  (Ctrl-C quits)")
    if unreadable:
        title += f"  {unreadable} unreadable"
    table = []
    for r in rows:
        drops = str(r["drop_count"]) + (f" (+{r['new_drops']})" if r["new_drops"] else "")
        table.append([r["name"], r["kind"], str(r["publisher_pid"]), format_rate(r["rate"]),
                      "-" if r["bandwidth"] is None else format_bytes(r["bandwidth"]) + "/s",
                      str(r["msg_count"]), drops, str(r["subscribers"]), format_age(r["age"]),
                      r["state"]])
    header = ["CHANNEL", "KIND", "PID", "RATE", "BANDWIDTH", "MSGS", "DROPS", "SUBS", "LAST",
              "STATE"]
    lines = render_table(header, table, right=frozenset({2, 3, 4, 5, 6, 7, 8}))
    if ansi:
        lines[0] = BOLD + lines[0] + RESET
        lines = [lines[0], *(RED + line + RESET if r["new_drops"] or r["state"] == "stale"
                             else line for line, r in zip(lines[1:], rows, strict=True))]
    return [title, "", *lines] if rows else [title, "", "no channels"]


def _snapshot(pattern: str | None) -> dict[str, tuple[float, dict[str, Any]]]:
    now = time.monotonic()
    return {info["segment"]: (now, info) for info in list_channels()
            if pattern is None or matches(info, pattern)}


@contextlib.contextmanager
def _keyboard(enabled: bool) -> Iterator[Callable[[float], bool]]:
    """Yields ``wait(seconds) -> quit?``: with a terminal, pressing ``q`` quits early."""
    if not enabled:

        def pause(seconds: float) -> bool:
            sleep(seconds)
            return False

        yield pause
        return
    import select
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready and os.read(fd, 1) in (b"q", b"Q"):
                return True
        return False

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(args: argparse.Namespace) -> int:
    """A live table of every channel, refreshed in place (``--once``/``-n`` for scripts)."""
    if args.interval <= 0:
        raise CLIError("--interval must be > 0", EXIT_USAGE)
    frames = 1 if args.once else args.iterations
    tty_out = sys.stdout.isatty() and not args.plain
    fullscreen = tty_out and frames <= 0
    keys = fullscreen and sys.stdin.isatty()
    out = sys.stdout
    if fullscreen:
        out.write(ALT_SCREEN_ON)
    try:
        with _keyboard(keys) as wait:
            previous = _snapshot(args.pattern)
            shown = 0
            while frames <= 0 or shown < frames:
                if wait(args.interval):
                    break
                current = _snapshot(args.pattern)
                rows = top_rows(previous, current, args.sort)
                unreadable = sum(1 for _, info in current.values() if "error" in info)
                lines = render_top(rows, unreadable, args.interval, tty_out)
                _draw(out, lines, tty_out)
                previous = current
                shown += 1
    finally:
        if fullscreen:
            out.write(ALT_SCREEN_OFF)
            out.flush()
    return 0


def _draw(out: TextIO, lines: list[str], ansi: bool) -> None:
    if not ansi:
        out.write("\n".join(lines) + "\n\n")
        out.flush()
        return
    size = shutil.get_terminal_size((100, 24))
    if len(lines) > size.lines - 1:
        hidden = len(lines) - (size.lines - 2)
        lines = [*lines[:size.lines - 2], f"... {hidden} more (resize the terminal)"]
    # Home, then overwrite each line and clear its tail: no flicker, unlike clearing first.
    body = "".join(line + CLEAR_LINE + "\n" for line in lines)
    out.write(HOME + body + CLEAR_BELOW)
    out.flush()


def add_parser(commands: Commands) -> None:
    """Add ``top`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "top", run, "live table of all channels",
        "Every channel with its rate, bandwidth, messages, drops (and new drops), "
        "subscribers and age of the last message, refreshed in place. Reads "
        "counters only. On a terminal, q or Ctrl-C quits.")
    add_pattern_argument(sub, "arm.*")
    sub.add_argument("-d", "--interval", type=positive, default=1.0, metavar="SECONDS",
                     help="seconds between refreshes (default 1)")
    sub.add_argument("-n", "--iterations", type=int, default=0, metavar="ITER",
                     help="exit after ITER refreshes (default: until q or Ctrl-C)")
    sub.add_argument("--once", action="store_true",
                     help="print one table (after one interval) and exit")
    sub.add_argument("--sort", choices=sorted(SORT_KEYS), default="name",
                     help="sort by channel name (default), rate, bandwidth or drops")
    sub.add_argument("--plain", action="store_true",
                     help="no ANSI codes: print each refresh below the last")
