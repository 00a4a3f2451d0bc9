"""``shm-comm bridge``: carry channels to and from other machines over Zenoh."""

from __future__ import annotations

import argparse

from ._common import (
    EXIT_USAGE,
    CLIError,
    Commands,
    add_command,
    add_json_option,
    add_report_options,
    report_every,
)
from ._format import note

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Run a Zenoh bridge until Ctrl-C/SIGTERM, with a status line every ``--interval``."""
    from ..bridge import Bridge, format_status, split_list

    export, import_ = split_list(args.export), split_list(args.import_)
    if not export and not import_:
        raise CLIError("nothing to do: give --export and/or --import", EXIT_USAGE)
    try:
        bridge = Bridge(export=export, import_=import_, connect=split_list(args.connect),
                        listen=split_list(args.listen), host=args.host, prefix=args.prefix)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    with bridge:  # start(); SHMConnectionError (e.g. port taken) -> main: exit 1
        note(f"bridge: host {bridge.host!r}, prefix {bridge.prefix!r}; Ctrl-C stops")
        report_every(args, bridge.stats, lambda stats: stats, format_status)
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``bridge`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "bridge", run, "carry channels to and from other machines (Zenoh)",
        "Export local pub/sub channels as Zenoh keys <prefix>/<host>/<channel> and "
        "import other bridges' channels as local channels <host>.<channel>, with "
        "their encoding and dtype/shape (docs/bridge.md). Exported channels are read "
        "as an observer, so local publishers never wait for the network; every drop "
        "is counted. Needs the bridge extra: pip install -e '.[bridge]' in the checkout "
        "(or pip install eclipse-zenoh). Runs until Ctrl-C, printing a status line per "
        "channel every --interval.")
    sub.add_argument("--export", action="append", default=[], metavar="PATTERNS",
                     help="local channels to export: comma-separated globs, e.g. "
                          "'imu,joints,camera*' (repeatable)")
    sub.add_argument("--import", dest="import_", action="append", default=[],
                     metavar="PATTERNS",
                     help="remote channels to import: comma-separated HOST/CHANNEL patterns, "
                          "e.g. 'lab-pc/*' (repeatable); they appear here as HOST.CHANNEL")
    sub.add_argument("--connect", action="append", default=[], metavar="ENDPOINT",
                     help="Zenoh endpoint to connect to, e.g. tcp/192.168.1.10:7447 "
                          "(repeatable; retried until it answers)")
    sub.add_argument("--listen", action="append", default=[], metavar="ENDPOINT",
                     help="Zenoh endpoint to listen on, e.g. tcp/0.0.0.0:7447 (repeatable)")
    sub.add_argument("--prefix", default="shm_comm",
                     help="first key levels, shared by bridges that should see each other "
                          "(default shm_comm)")
    sub.add_argument("--host", default=None, metavar="NAME",
                     help="this side's name in keys (default: the short host name)")
    add_report_options(sub, 5.0, "status reports")
    add_json_option(sub, streaming=True)
