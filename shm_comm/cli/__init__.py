"""The ``shm-comm`` command line: find, inspect, watch and feed channels.

    shm-comm list                      every channel on this machine, stale ones marked
    shm-comm info NAME                 one channel: counters, layout, each subscriber
    shm-comm echo NAME [-n N] [--raw]  print messages (pickle, msgpack, typed arrays, bytes)
    shm-comm hz NAME                   publishing rate from the publisher's timestamps
    shm-comm bw NAME                   bytes per second from the channel's byte counter
    shm-comm pub NAME VALUE            publish a Python literal (or a string)
    shm-comm top                       live table of all channels
    shm-comm clean [--dry-run]         remove segments whose publisher is gone
    shm-comm record CHANNEL... -o run.mcap [--duration S]   record channels to an MCAP file
    shm-comm play run.mcap [--rate X] [--loop] [--remap old:new]   replay a recording
    shm-comm bridge --export P --import P   carry channels to/from other machines (Zenoh)
    shm-comm foxglove [PATTERN...]     serve channels live to Foxglove (WebSocket, loopback)

This package is the outer ring of shm_comm: it may import anything, nothing imports it. As in
ros2cli, each verb is one module (``list.py``, ``echo.py``, ...) with ``add_parser(commands)``
and ``run(args)``; ``_common.py`` holds what several verbs share (finding and watching
channels, exit codes, options) and ``_format.py`` how things are printed.

Design (the why):

* **Watching never perturbs.** ``echo`` and ``hz`` attach as observers
  (``Subscriber(observer=True)``): the segment is mapped read-only, no subscriber row is
  taken, the publisher never waits for them and no drop is ever counted against them, so a
  slow or stalled watcher (a paused terminal, a full pipe) changes nothing for the real
  subscribers. ``list``, ``info``, ``bw``, ``top`` and ``clean`` only read the channel's
  counters (``channel_info``/``list_channels``), which is cheaper still.
* **Rates from the publisher's clock.** ``hz`` uses the timestamp the publisher wrote into
  each slot and the sequence numbers, not the time messages reach us: a watcher that falls
  behind on large messages, or skips some, still reports the rate that was published
  (``ros2 topic hz`` times arrivals, so it under-reports when deserializing is slow).
  ``bw`` divides byte-counter deltas by the publisher timestamps of the newest messages.
* **Scriptable.** ``--json`` gives one JSON document (``list``, ``info``) or one JSON object
  per line (``echo``, ``hz``, ``bw``); the streaming commands stop after ``-n`` items.

Exit status: 0 success, 1 an error (such as an unknown channel), 2 bad usage, 130 Ctrl-C,
141 output pipe closed, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from .. import __version__
from ..errors import SHMError
from . import bridge, bw, clean, echo, foxglove, hz, info, pub, record, top
from . import list as list_verb
from . import play as play_verb
from ._common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PIPE, EXIT_TERMINATED, CLIError
from ._format import note

__all__ = ["build_parser", "main"]

# The verbs in the order `shm-comm --help` lists them. Each module adds its own subparser
# (``add_parser``) and runs it (``run``): a new verb is a new module and one entry here.
VERBS = (list_verb, info, echo, hz, bw, pub, top, record, play_verb, bridge, foxglove, clean)


class _Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so publishers remove their segments."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``shm-comm`` and all its commands."""
    parser = argparse.ArgumentParser(
        prog="shm-comm",
        description="Find, inspect, watch and publish shm_comm channels. Watching commands "
                    "(echo, hz, bw, top, list, info) never change a channel's delivery or "
                    "drop count.",
        epilog="`shm-comm COMMAND --help` describes each command. Exit status: 0 ok, 1 error "
               "(e.g. unknown channel), 2 bad usage, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"shm-comm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for verb in VERBS:
        verb.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``shm-comm`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: leave SIGTERM alone
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        status: int = args.func(args)
        return status
    except CLIError as exc:
        note(f"{args.command}: {exc}")
        return exc.status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except _Terminated:
        return EXIT_TERMINATED
    except BrokenPipeError:
        # The reader went away (`| head`): silence the final flush and exit like SIGPIPE.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except SHMError as exc:
        note(f"{args.command}: {exc}")
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover - `python -m shm_comm` uses __main__.py
    raise SystemExit(main())
