"""What several commands share: errors and exit codes, finding and watching channels, options.

Every rule lives here once: how a channel name is checked, how a channel is looked up and
waited for, how a watcher attaches, what state a segment is in, how rates come from counters.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias, TypeVar

from .. import layout as L
from ..channels import channel_info, list_channels
from ..errors import SHMConnectionError, SHMError
from ..naming import validate_channel_name
from ..pubsub import Subscriber
from ..wait import sleep
from ._format import note, to_json, write_line

__all__ = ["CHANNEL_POLL", "DEFAULT_TIMEOUT", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_PIPE",
           "EXIT_TERMINATED", "EXIT_USAGE", "KINDS", "KIND_IDS", "CLIError", "Commands",
           "add_command", "add_json_option", "add_pattern_argument", "add_report_options",
           "add_wait_option", "age_of", "attach_observer", "close_matches", "counter_rate",
           "lookup", "matches", "non_negative", "positive", "receive", "report_every",
           "segment_state", "valid_name", "wait_for_channel"]

KINDS = ("pubsub", "reqrep", "pipeline")
KIND_IDS = {"pubsub": L.KIND_PUBSUB, "reqrep": L.KIND_REQREP, "pipeline": L.KIND_PIPELINE}
DEFAULT_TIMEOUT = 2.0
CHANNEL_POLL = 0.01
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE, EXIT_TERMINATED = 1, 2, 130, 141, 143

# The subparsers object each verb adds itself to.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CLIError(Exception):
    """A failure to report as one line on stderr, with an exit status (not a traceback)."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# Finding channels
# --------------------------------------------------------------------------------------------

def valid_name(name: str) -> str:
    """``name`` if it is a valid channel name, else :class:`CLIError` (exit status 2)."""
    try:
        return validate_channel_name(name)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


def lookup(name: str, kind: str | None = None) -> dict[str, Any] | None:
    """``channel_info`` of channel ``name``, trying each kind (pub/sub first) unless given.

    Raises :class:`CLIError` for a segment that exists but cannot be read.
    """
    for each in (kind,) if kind else KINDS:
        try:
            info = channel_info(name, each)
        except (SHMError, OSError) as exc:
            raise CLIError(f"channel {name!r} ({each}) cannot be read: {exc}") from None
        if info is not None:
            return info
    return None


def wait_for_channel(name: str, timeout: float, kind: str | None = None) -> dict[str, Any]:
    """Wait up to ``timeout`` seconds for channel ``name`` to exist; its ``channel_info``.

    Raises :class:`CLIError` (exit status 1) if it does not appear in time.
    """
    valid_name(name)
    deadline = time.monotonic() + timeout
    noted = False
    while True:
        info = lookup(name, kind)
        if info is not None:
            return info
        if not noted and timeout > DEFAULT_TIMEOUT:
            # Long waits say so (ros2 echo does too); short ones stay a one-line error.
            note(f"waiting up to {timeout:g} s for channel {name!r}")
            noted = True
        if time.monotonic() >= deadline:
            what = f"{kind} channel" if kind else "channel"
            matches = close_matches(name, kind)
            guess = f"did you mean {' or '.join(map(repr, matches))}? " if matches else ""
            raise CLIError(f"no {what} {name!r} (waited {timeout:g} s); {guess}`shm-comm list` "
                           "shows the channels there are")
        sleep(CHANNEL_POLL)


def close_matches(name: str, kind: str | None = None) -> list[str]:
    """Names of existing channels (of ``kind``, if given) that look like a typo of ``name``,
    best first: ``imuu`` -> ``["imu"]``."""
    names = {info["name"] for info in list_channels()
             if "name" in info and (kind is None or info["kind"] == kind)}
    names.discard(name)
    return difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.6)


def attach_observer(name: str, timeout: float, command: str, latest: bool = False
                    ) -> Subscriber:
    """A read-only observer of pub/sub channel ``name``, waiting up to ``timeout`` seconds.

    ``latest``: begin with the newest message already published. The observer never takes a
    subscriber row, so the channel's publisher, subscribers and drop count cannot tell it is
    there.
    """
    deadline = time.monotonic() + timeout
    info = wait_for_channel(name, timeout)
    if info["kind"] != "pubsub":
        raise CLIError(f"channel {name!r} is a {info['kind']} channel; {command} watches pub/sub "
                       "channels (info, bw and top work with every kind)")
    try:
        sub = Subscriber(name, serialization="raw", observer=True, latest=latest,
                         timeout_connect=max(0.0, deadline - time.monotonic()))
    except SHMConnectionError as exc:
        raise CLIError(f"cannot watch channel {name!r}: {exc}") from None
    if not info["publisher_alive"]:
        note(f"the publisher of {name!r} (pid {info['publisher_pid']}) is not running; "
             "waiting for it to restart")
    return sub


def receive(sub: Subscriber, timeout: float | None) -> tuple[bytes, int] | None:
    """The next message's payload and its encoding id; None after ``timeout`` seconds.

    The public ``recv_bytes`` drops the encoding, which echo needs to decode a channel that
    mixes ``send`` and ``send_bytes`` messages, so this uses the subscriber's internal
    ``_next``; seq and timestamp come from the public ``last_seq``/``last_timestamp_ns``.
    """
    return sub._next(timeout)


def segment_state(info: dict[str, Any]) -> str:
    """One word for a segment from :func:`~shm_comm.channels.list_channels`.

    ``live``, ``stale`` (publisher died without cleaning up), ``closed``, ``no-access``
    (another user's), ``incompatible`` (another shm_comm format version), ``unreadable``.
    """
    error = info.get("error")
    if error is not None:
        if "ermission" in error:
            return "no-access"
        if "format version" in error:
            return "incompatible"
        return "unreadable"
    if info["publisher_alive"]:
        return "live"
    return "stale" if info["stale"] else "closed"


def matches(info: dict[str, Any], pattern: str) -> bool:
    """Whether a :func:`~shm_comm.channels.list_channels` entry's channel or segment name fits
    a glob."""
    return any(fnmatch.fnmatchcase(text, pattern) for text in
               (info.get("name", ""), info["segment"]) if text)


def age_of(timestamp: float | None, now: float) -> float | None:
    """Seconds from ``timestamp`` to ``now`` (the same clock), None without a timestamp."""
    return None if timestamp is None else now - timestamp


def counter_rate(old: dict[str, Any], new: dict[str, Any], elapsed: float
                  ) -> tuple[float, float, int] | None:
    """``(messages/s, bytes/s, messages)`` between two ``channel_info`` snapshots.

    Divides by the publisher timestamps of the newest message in each snapshot when both
    exist (exact however late we sampled), else by ``elapsed`` seconds of our own clock.
    None if the channel was restarted in between (its counters began again).
    """
    if old["created"] != new["created"] or new["msg_count"] < old["msg_count"]:
        return None
    messages = new["msg_count"] - old["msg_count"]
    data = new["bytes_total"] - old["bytes_total"]
    span = elapsed
    if messages and old["last_timestamp"] is not None and new["last_timestamp"] is not None:
        stamped = new["last_timestamp"] - old["last_timestamp"]
        if stamped > 0:
            span = stamped
    if span <= 0:
        return None
    return messages / span, data / span, messages


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

def positive(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative(text: str) -> float:
    """An argparse type: a number >= 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_command(commands: Commands, name: str, run: Callable[[argparse.Namespace], int],
                text: str, description: str) -> argparse.ArgumentParser:
    """Add verb ``name`` (one line of ``text`` for the overview, a ``description`` for its
    ``--help``) whose ``run(args)`` returns the exit status."""
    sub: argparse.ArgumentParser = commands.add_parser(name, help=text, description=description)
    sub.set_defaults(func=run)
    return sub


def add_wait_option(sub: argparse.ArgumentParser, default: float = DEFAULT_TIMEOUT) -> None:
    """``--timeout SECONDS``: how long the command waits for its channel to appear."""
    sub.add_argument("--timeout", type=non_negative, default=default, metavar="SECONDS",
                     help=f"wait this long for the channel to appear (default {default:g})")


def add_json_option(sub: argparse.ArgumentParser, streaming: bool) -> None:
    """``--json``: one JSON document, or one JSON object per line for streaming commands."""
    sub.add_argument("--json", action="store_true",
                     help="one JSON object per line" if streaming else "print JSON")


def add_report_options(sub: argparse.ArgumentParser, interval: float = 1.0,
                       what: str = "reports") -> None:
    """``-i/--interval SECONDS`` between ``what`` (default ``interval``) and ``-n/--count N``:
    exit after N reports (default 0: until Ctrl-C)."""
    sub.add_argument("-i", "--interval", type=positive, default=interval, metavar="SECONDS",
                     help=f"seconds between {what} (default {interval:g})")
    sub.add_argument("-n", "--count", type=int, default=0, metavar="N",
                     help="exit after N reports (default: run until Ctrl-C)")


def add_pattern_argument(sub: argparse.ArgumentParser, example: str) -> None:
    """An optional ``pattern``: a glob of channel or segment names, as :func:`matches` applies
    it; ``example`` shows one in the help."""
    sub.add_argument("pattern", nargs="?",
                     help=f"only channels (or segments) matching this glob, e.g. {example!r}")


_Status = TypeVar("_Status")


def report_every(args: argparse.Namespace, status: Callable[[], _Status],
                 as_json: Callable[[_Status], dict[str, Any]],
                 as_lines: Callable[[_Status], Iterable[str]]) -> None:
    """Every ``args.interval`` seconds print ``status()``, ``args.count`` times (0: until
    Ctrl-C): with ``args.json`` one JSON object per line, the time first, else ``as_lines``."""
    reports = 0
    while args.count <= 0 or reports < args.count:
        sleep(args.interval)
        current = status()
        if args.json:
            write_line(to_json({"time": time.time(), **as_json(current)}))
        else:
            for line in as_lines(current):
                write_line(line)
        reports += 1
