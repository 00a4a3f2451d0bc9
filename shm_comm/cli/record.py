"""``shm-comm record CHANNEL... -o FILE``: record channels to an MCAP file."""

from __future__ import annotations

import argparse
import time

from ._common import (
    EXIT_USAGE,
    CLIError,
    Commands,
    add_command,
    add_wait_option,
    non_negative,
    valid_name,
    wait_for_channel,
)
from ._format import note, write_line

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Record pub/sub channels into an MCAP file until --duration, Ctrl-C or SIGTERM."""
    from ..recording import Recorder, require_mcap

    names = [valid_name(name) for name in args.channels]
    try:
        require_mcap()  # before anything is announced or waited for
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    deadline = time.monotonic() + args.timeout
    for name in names:  # a missing one is reported (with close matches) before anything else
        wait_for_channel(name, max(0.0, deadline - time.monotonic()), "pubsub")
    try:
        recorder = Recorder(names, args.output, json_compatible=args.json_messages,
                            timeout_connect=max(0.0, deadline - time.monotonic()),
                            foxglove_schemas=not args.exact_arrays)
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    until = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
    write_line(f"recording {', '.join(names)} to {args.output} {until}")
    try:
        # On Ctrl-C / SIGTERM, run() finishes the file (a valid MCAP) before re-raising.
        recorder.run(args.duration or None)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    finally:
        stats = recorder.stats
        if stats.channels:  # it did record: say what the file holds
            write_line(stats.summary())
            if stats.missed:
                note(f"the recorder missed {stats.missed} message(s): it fell a whole ring "
                     "behind (the channels' subscribers were not affected)")
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``record`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "record", run, "record channels to an MCAP file",
        "Record pub/sub channels (plain and typed) into an MCAP file until "
        "--duration seconds pass or Ctrl-C. The recorder attaches as a read-only "
        "observer: the channels' subscribers and drop counts are unaffected; "
        "messages the recorder itself missed are counted and reported. Needs the "
        "mcap package (pip install -e '.[record]' in the checkout, or pip install mcap); "
        "docs/recording.md describes the file.")
    sub.add_argument("channels", nargs="+", metavar="CHANNEL", help="channel names")
    sub.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="the MCAP file to write (replaced if it exists)")
    sub.add_argument("--duration", type=non_negative, default=0.0, metavar="SECONDS",
                     help="stop after this many seconds (default 0: until Ctrl-C)")
    sub.add_argument("--json-messages", action="store_true",
                     help="store pickle/msgpack messages that are dicts of JSON values as JSON, "
                          "which Foxglove displays (their replay is then re-encoded, not byte "
                          "for byte)")
    sub.add_argument("--exact-arrays", action="store_true",
                     help="store image and point-cloud channels as shm_comm typed arrays "
                          "(exact bytes) instead of Foxglove's foxglove.RawImage / "
                          "foxglove.PointCloud, which Foxglove shows (load and play give back "
                          "the same arrays either way)")
    add_wait_option(sub)
