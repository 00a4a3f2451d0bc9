"""``shm-comm pub NAME VALUE``: publish a Python literal (or a string)."""

from __future__ import annotations

import argparse
import ast
import time
from typing import Any

from ..errors import SHMError, SHMSerializationError
from ..pubsub import Publisher
from ..serialization import get_serializer
from ..wait import sleep
from ._common import CHANNEL_POLL, EXIT_USAGE, CLIError, Commands, add_command, valid_name
from ._format import write_line

__all__ = ["add_parser", "parse_value", "run"]


def parse_value(text: str) -> Any:
    """``VALUE`` as a Python literal (``ast.literal_eval``), or else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text


def run(args: argparse.Namespace) -> int:
    """Publish ``VALUE`` on a new channel, ``-n`` times at ``--rate`` Hz (default: forever)."""
    name = valid_name(args.name)
    value = parse_value(args.value)
    if args.serialization == "raw":
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, (bytes, bytearray)):
            raise CLIError(f"--serialization raw publishes bytes; got a {type(value).__name__} "
                           "(write b'...' or a plain string)", EXIT_USAGE)
    if args.rate < 0:
        raise CLIError("--rate must be >= 0 (0: as fast as possible)", EXIT_USAGE)
    count = 1 if args.once else args.count
    try:
        serializer = get_serializer(args.serialization)
        payload = bytes(value) if args.serialization == "raw" else serializer.encode(value)
    except (ValueError, SHMSerializationError) as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    slot_size = args.slot_size or max(4096, len(payload))
    try:
        pub = Publisher(name, num_slots=args.slots, slot_size=slot_size,
                        serialization=args.serialization)
    except (SHMError, ValueError) as exc:
        raise CLIError(f"cannot publish on {name!r}: {exc}") from None
    with pub:
        rate = f"{args.rate:g} Hz" if args.rate else "full speed"
        write_line(f"publisher ready: {name!r} ({args.serialization}, {len(payload)} B per "
                         f"message, {rate}; Ctrl-C stops)")
        if args.wait_subscribers:
            write_line(f"waiting for {args.wait_subscribers} subscriber(s)")
            while pub.stats()["subscribers"] < args.wait_subscribers:
                sleep(CHANNEL_POLL)
        shown = repr(value)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        start = time.monotonic()
        sent = 0
        while count <= 0 or sent < count:
            if args.serialization == "raw":
                pub.send_bytes(payload)
            else:
                pub.send(value)
            sent += 1
            if not args.quiet:
                write_line(f"publishing #{sent}: {shown}")
            if args.rate and (count <= 0 or sent < count):
                sleep(max(0.0, start + sent / args.rate - time.monotonic()))
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``pub`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "pub", run, "publish a value",
        "Create a publisher on NAME and send VALUE (a Python literal such as "
        "\"{'cmd': 'stop', 'speed': 0.5}\" or [1, 2, 3]; anything else is sent as a "
        "string) at --rate Hz until Ctrl-C or -n messages. The channel disappears "
        "when pub exits; subscribers already attached still get every message.")
    sub.add_argument("name", help="channel name")
    sub.add_argument("value", help="Python literal (ast.literal_eval), else sent as a string")
    sub.add_argument("-r", "--rate", type=float, default=1.0, metavar="HZ",
                     help="messages per second (default 1; 0: as fast as possible)")
    sub.add_argument("-n", "--count", type=int, default=0, metavar="N",
                     help="stop after N messages (default: until Ctrl-C)")
    sub.add_argument("-1", "--once", action="store_true", help="publish one message (-n 1)")
    sub.add_argument("--serialization", choices=("pickle", "msgpack", "raw"), default="pickle",
                     help="how VALUE is encoded (default pickle; raw sends bytes or the "
                          "string's UTF-8)")
    sub.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                     help="wait for N subscribers before the first message")
    sub.add_argument("--slots", type=int, default=64, metavar="N", help="ring depth (default 64)")
    sub.add_argument("--slot-size", type=int, default=0, metavar="BYTES",
                     help="slot payload capacity (default: max(4096, message size))")
    sub.add_argument("-q", "--quiet", action="store_true", help="do not print each message")
