"""``shm-comm play FILE``: publish an MCAP recording again with its timing."""

from __future__ import annotations

import argparse

from ._common import EXIT_USAGE, CLIError, Commands, add_command, non_negative, positive
from ._format import write_line

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Publish an MCAP recording again with its recorded timing."""
    from ..recording import parse_remap, play, require_mcap

    try:
        remap = parse_remap(args.remap)
        require_mcap()
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    looping = ", looping" if args.loop else ""
    write_line(f"playing {args.file} at {args.rate:g}x speed{looping} (Ctrl-C stops)")
    try:
        stats = play(args.file, rate=args.rate, loop=args.loop, remap=remap,
                     wait_subscribers=args.wait_subscribers, timeout_connect=args.timeout)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except KeyError as exc:  # a --remap of a channel the file does not have
        raise CLIError(str(exc.args[0]), EXIT_USAGE) from None
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot play {args.file}: {exc}") from None
    write_line(f"published {stats.messages} message(s) in {stats.duration:.2f} s "
               f"({stats.passes} pass(es)); {stats.late} more than 1 ms late "
               f"(max {stats.max_lateness * 1e3:.1f} ms)")
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``play`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "play", run, "replay an MCAP recording",
        "Publish a recording made by `shm-comm record` again, with the recorded "
        "timing (publisher timestamps, deadline-scheduled, scaled by --rate) and the "
        "recorded payload bytes. A channel whose publisher runs cannot be published "
        "twice: --remap it to another name.")
    sub.add_argument("file", metavar="FILE", help="the MCAP file")
    sub.add_argument("-r", "--rate", type=positive, default=1.0, metavar="X",
                     help="speed factor (default 1; 2: twice as fast; inf: as fast as possible)")
    sub.add_argument("--loop", action="store_true",
                     help="start over after the last message, until Ctrl-C")
    sub.add_argument("--remap", action="append", default=[], metavar="OLD:NEW",
                     help="publish recorded channel OLD as NEW (repeatable)")
    sub.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                     help="wait for N subscribers on every channel before the first message")
    sub.add_argument("--timeout", type=non_negative, default=10.0, metavar="SECONDS",
                     help="how long --wait-subscribers waits (default 10)")
