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

This module is the outer ring of the package: it may import anything, nothing imports it.

Design (the why):

* **Watching never perturbs.** ``echo`` and ``hz`` attach as observers
  (``Subscriber(observer=True)``): the segment is mapped read-only, no subscriber row is
  taken, the publisher never waits for them and no drop is ever counted against them, so a
  slow or stalled watcher (a paused terminal, a full pipe) changes nothing for the real
  subscribers. ``list``, ``info``, ``bw``, ``top`` and ``clean`` only read the channel's
  counters (``channel_info``/``list_segments``), which is cheaper still.
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
import ast
import contextlib
import fnmatch
import json
import math
import os
import pprint
import shutil
import signal
import statistics
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any, TextIO

import numpy as np

from . import __version__, ring
from . import layout as L
from ._backend import backend
from .arrays import decode_array
from .channels import channel_info, list_segments, remove_if_stale
from .errors import SHMConnectionError, SHMError, SHMFormatError, SHMSerializationError
from .naming import validate_channel_name
from .pubsub import Publisher, Subscriber
from .segment import Segment
from .serialization import get_serializer
from .wait import sleep

__all__ = ["main"]

KINDS = ("pubsub", "reqrep", "pipeline")
KIND_IDS = {"pubsub": L.KIND_PUBSUB, "reqrep": L.KIND_REQREP, "pipeline": L.KIND_PIPELINE}
DEFAULT_TIMEOUT = 2.0
CHANNEL_POLL = 0.01
ARRAY_VALUES_SHOWN = 8  # arrays up to this many elements are printed in full
TEXT_LIMIT = 2000  # characters of one echoed value before it is cut (--full: no cut)
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE, EXIT_TERMINATED = 1, 2, 130, 141, 143

# ANSI: the alternate screen keeps the user's scrollback intact, as htop does.
ALT_SCREEN_ON, ALT_SCREEN_OFF = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l"
HOME, CLEAR_LINE, CLEAR_BELOW, CLEAR_SCREEN = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"
BOLD, RED, RESET = "\x1b[1m", "\x1b[31m", "\x1b[0m"


class CLIError(Exception):
    """A failure to report as one line on stderr, with an exit status (not a traceback)."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


class _Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so publishers remove their segments."""


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: binary units, three significant digits."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            if unit == "B":
                return f"{value:.0f} B"
            return f"{value:.3g} {unit}" if abs(value) >= 1 else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_age(seconds: float | None) -> str:
    """How long ago, compactly: ``"0.4 ms"``, ``"12 s"``, ``"3 h"``; ``"-"`` for never."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def format_rate(hertz: float | None) -> str:
    """``999.98`` -> ``"1000 Hz"``; ``"-"`` when unknown."""
    if hertz is None:
        return "-"
    return f"{hertz:.4g} Hz" if hertz >= 0.01 else "0 Hz"


def format_slots(info: dict[str, Any]) -> str:
    """``"64 x 4 KiB"``: ring depth times slot payload capacity."""
    return f"{info['num_slots']} x {format_bytes(info['slot_size'])}"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: frozenset[int] = frozenset()) -> list[str]:
    """Columns padded to their widest cell; column indexes in ``right`` are right-aligned."""
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _scalar(value: Any) -> Any:
    """A NumPy scalar as a plain Python value, non-finite floats as strings (valid JSON)."""
    item = value.item() if isinstance(value, np.generic) else value
    if isinstance(item, float):
        return _finite(item)
    if isinstance(item, complex):
        return str(item)
    if isinstance(item, bytes):
        return item.hex()
    if isinstance(item, (int, str, bool)) or item is None:
        return item
    return str(item)


def _short(value: float, dtype: np.dtype[Any]) -> str:
    # Seven significant digits (all a float32 holds); float64 keeps six decimals of large
    # values too, so epoch timestamps show their microseconds.
    digits = 7
    if dtype.kind == "f" and dtype.itemsize >= 8 and value and math.isfinite(value):
        digits = min(16, max(7, int(math.log10(abs(value))) + 7))
    return f"{value:.{digits}g}"


def summarize_array(arr: np.ndarray[Any, Any], full: bool = False) -> dict[str, Any]:
    """A small description of ``arr``: dtype, shape and either its values or statistics.

    Numbers get min/max/mean (NaNs ignored and counted), booleans a count of True, other
    dtypes their first values; structured dtypes one summary per field. ``full`` includes
    every value. Works on arrays of any size in one pass per statistic, without warnings.
    """
    out: dict[str, Any] = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
    if arr.dtype.names:
        out["fields"] = {name: summarize_array(arr[name], full) for name in arr.dtype.names}
        return out
    if full or arr.size <= ARRAY_VALUES_SHOWN:
        out["values"] = _jsonable(arr.tolist())
        return out
    kind = arr.dtype.kind
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if kind == "b":
            out["true"] = int(np.count_nonzero(arr))
        elif kind in "iu":
            out.update(min=int(arr.min()), max=int(arr.max()), mean=_finite(float(arr.mean())))
        elif kind == "f":
            nans = int(np.count_nonzero(np.isnan(arr)))
            if nans < arr.size:
                out.update(min=_finite(float(np.nanmin(arr))), max=_finite(float(np.nanmax(arr))),
                           mean=_finite(float(np.nanmean(arr))))
            if nans:
                out["nan"] = nans
        else:
            out["head"] = [_scalar(v) for v in arr.reshape(-1)[:ARRAY_VALUES_SHOWN // 2]]
    return out


def describe_array(arr: np.ndarray[Any, Any], full: bool = False) -> list[str]:
    """Human lines for :func:`summarize_array`: ``uint8 (480, 640, 3)  min 0  max 255...``."""
    return _describe_summary(summarize_array(arr, full), arr.dtype, "", "")


def _describe_summary(summary: dict[str, Any], dtype: np.dtype[Any], label: str,
                      indent: str) -> list[str]:
    shape = "(" + ", ".join(str(d) for d in summary["shape"]) + ("," if len(
        summary["shape"]) == 1 else "") + ")"
    if "fields" in summary:
        lines = [f"{label}struct {shape}  fields: {', '.join(summary['fields'])}"]
        assert dtype.fields is not None
        for name, sub in summary["fields"].items():
            lines.extend(_describe_summary(sub, dtype.fields[name][0], f"{indent}  {name}: ",
                                           indent + "  "))
        return lines
    head = f"{label}{summary['dtype']} {shape}"
    if "values" in summary:
        return [f"{head}  {json.dumps(summary['values'])}"]
    parts = [head]
    for key in ("min", "max", "mean"):
        if key in summary:
            value = summary[key]
            shown = _short(value, dtype.base) if isinstance(value, float) else value
            parts.append(f"{key} {shown}")
    if "nan" in summary:
        parts.append(f"nan {summary['nan']}")
    if "true" in summary:
        parts.append(f"true {summary['true']}")
    if "head" in summary:
        parts.append("first " + ", ".join(str(v) for v in summary["head"]) + ", ...")
    return ["  ".join(parts)]


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-compatible data: arrays summarized, bytes as hex, others as repr."""
    if depth > 50:
        return repr(value)
    if isinstance(value, np.ndarray):
        return {"ndarray": summarize_array(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return {"bytes": len(data), "hex": data[:64].hex()}
    if isinstance(value, (np.generic, int, float, complex, str, bool)) or value is None:
        return _scalar(value)
    return repr(value)


def format_hex(data: bytes, limit: int) -> str:
    """Bytes as spaced hex, at most ``limit`` of them (0: all), noting how many were left."""
    shown = data if limit <= 0 else data[:limit]
    text = shown.hex(" ")
    if len(shown) < len(data):
        text += f" ... (+{len(data) - len(shown)} bytes)"
    return text


def _dump(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# Output and signals
# --------------------------------------------------------------------------------------------

def _out(text: str = "") -> None:
    """Print a line and flush, so pipes and ``| grep`` see streaming output at once."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _note(text: str) -> None:
    sys.stderr.write(f"shm-comm: {text}\n")
    sys.stderr.flush()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


# --------------------------------------------------------------------------------------------
# Finding channels
# --------------------------------------------------------------------------------------------

def _valid_name(name: str) -> str:
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
    _valid_name(name)
    deadline = time.monotonic() + timeout
    noted = False
    while True:
        info = lookup(name, kind)
        if info is not None:
            return info
        if not noted and timeout > DEFAULT_TIMEOUT:
            # Long waits say so (ros2 echo does too); short ones stay a one-line error.
            _note(f"waiting up to {timeout:g} s for channel {name!r}")
            noted = True
        if time.monotonic() >= deadline:
            what = f"{kind} channel" if kind else "channel"
            raise CLIError(f"no {what} {name!r} (waited {timeout:g} s); `shm-comm list` shows "
                           "the channels there are")
        sleep(CHANNEL_POLL)


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
        _note(f"the publisher of {name!r} (pid {info['publisher_pid']}) is not running; "
              "waiting for it to restart")
    return sub


def receive(sub: Subscriber, timeout: float | None) -> tuple[bytes, int] | None:
    """The next message's payload and its encoding id; None after ``timeout`` seconds.

    The public ``recv_bytes`` drops the encoding, which echo needs to decode a channel that
    mixes ``send`` and ``send_bytes`` messages, so this uses the subscriber's internal
    ``_next``; seq and timestamp come from the public ``last_seq``/``last_timestamp_ns``.
    """
    return sub._next(timeout)


# --------------------------------------------------------------------------------------------
# list / info / clean
# --------------------------------------------------------------------------------------------

def segment_state(info: dict[str, Any]) -> str:
    """One word for a segment from :func:`list_segments`.

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
    """Whether a :func:`list_segments` entry's channel name or segment name fits a glob."""
    return any(fnmatch.fnmatchcase(text, pattern) for text in
               (info.get("name", ""), info["segment"]) if text)


def _age(timestamp: float | None, now: float) -> float | None:
    return None if timestamp is None else now - timestamp


def cmd_list(args: argparse.Namespace) -> int:
    """Print every shm_comm segment on this machine, readable or not."""
    segments = list_segments()
    if args.pattern:
        segments = [s for s in segments if matches(s, args.pattern)]
    for info in segments:
        info["state"] = segment_state(info)
    if args.json:
        _out(_dump(segments))
        return 0
    if not segments:
        _out("no channels" + (f" matching {args.pattern!r}" if args.pattern else ""))
        return 0
    now = time.time()
    rows = []
    for info in segments:
        if "error" in info:
            rows.append([f"? {info['segment']}", "-", "-", "-", "-", "-", "-", "-", "-",
                         info["state"]])
            continue
        alive = "alive" if info["publisher_alive"] else "dead"
        rows.append([info["name"], info["kind"], info["encoding"],
                     f"{info['publisher_pid']} {alive}", format_slots(info),
                     str(info["subscribers"]), str(info["msg_count"]), str(info["drop_count"]),
                     format_age(_age(info["last_timestamp"], now)), info["state"]])
    header = ["CHANNEL", "KIND", "ENCODING", "PUBLISHER", "SLOTS", "SUBS", "MSGS", "DROPS",
              "LAST", "STATE"]
    for line in render_table(header, rows, right=frozenset({5, 6, 7, 8})):
        _out(line)
    notes = [f"? {info['segment']}: {info['error']}" for info in segments if "error" in info]
    stale = sum(1 for s in segments if s["state"] == "stale")
    if stale:
        notes.append(f"{stale} stale segment{'s' if stale > 1 else ''} (publisher gone): "
                     "`shm-comm clean` removes them")
    if notes:
        _out()
        for note in notes:
            _out(note)
    return 0


def inspect_channel(name: str, kind: str) -> dict[str, Any] | None:
    """Everything ``info`` shows: ``channel_info`` plus per-subscriber rows and metadata.

    Maps the segment read-only, like every watching command.
    """
    info = lookup(name, kind)
    if info is None:
        return None
    try:
        segment = Segment.attach(info["segment"], name, KIND_IDS[info["kind"]], readonly=True)
    except FileNotFoundError:
        return None
    except (SHMError, OSError) as exc:
        raise CLIError(f"channel {name!r} cannot be read: {exc}") from None
    try:
        head = segment.atom.load(L.HEAD)
        records = ring.read_records(segment.atom, segment.layout)
        info["max_subscribers"] = segment.layout.max_subscribers
        info["subscriber_records"] = [
            {"pid": r.pid, "alive": backend.pid_alive(r.pid), "received": r.received,
             "dropped": r.dropped, "lag": max(0, head - r.cursor), "cursor": r.cursor,
             "waiting": r.waiting, "holding": r.holding} for r in records]
        raw = segment.header.metadata
    finally:
        segment.close()
    try:
        info["metadata"] = json.loads(raw.decode()) if raw else None
    except (UnicodeDecodeError, ValueError):
        info["metadata"] = {"bytes": len(raw), "hex": raw[:64].hex()}
    return info


def cmd_info(args: argparse.Namespace) -> int:
    """Print one channel's layout, counters and subscribers."""
    name = args.name
    found = wait_for_channel(name, args.timeout, args.kind)
    info = inspect_channel(name, found["kind"])
    if info is None:
        raise CLIError(f"channel {name!r} disappeared while being read")
    if args.json:
        _out(_dump(info))
        return 0
    now = time.time()
    alive = "alive" if info["publisher_alive"] else (
        "gone: stale, `shm-comm clean` removes it" if info["stale"] else "closed")
    created = datetime.fromtimestamp(info["created"]).strftime("%Y-%m-%d %H:%M:%S")
    fields = [
        ("channel", info["name"]),
        ("kind", info["kind"]),
        ("segment", f"{info['segment']} ({format_bytes(info['size'])}, format "
                    f"{info['format_version']})"),
        ("publisher", f"pid {info['publisher_pid']} ({alive})"),
        ("created", f"{created} ({format_age(now - info['created'])} ago)"),
        ("encoding", info["encoding"]),
        ("slots", format_slots(info)),
        ("messages", f"{info['msg_count']} ({format_bytes(info['bytes_total'])})"),
        ("drops", str(info["drop_count"])),
        ("last message", format_age(_age(info["last_timestamp"], now))
         + (" ago" if info["last_timestamp"] is not None else "")),
    ]
    meta = info["metadata"]
    if isinstance(meta, dict) and meta.get("type") == "ndarray":
        try:
            dtype = str(np.lib.format.descr_to_dtype(ast.literal_eval(meta["dtype"])))
        except (ValueError, TypeError, SyntaxError, KeyError):
            dtype = str(meta.get("dtype"))
        shape = tuple(meta.get("shape", ()))
        fields.append(("array", f"{dtype} {shape} "
                                f"{'fixed shape' if meta.get('fixed') else 'up to this shape'}"))
    elif meta is not None:
        fields.append(("metadata", _dump(meta)))
    fields.append(("subscribers", f"{info['subscribers']} of {info['max_subscribers']}"))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        _out(f"{key.ljust(width)}  {value}")
    records = info["subscriber_records"]
    if records:
        rows = [[str(r["pid"]), "yes" if r["alive"] else "no", str(r["received"]),
                 str(r["dropped"]), str(r["lag"]), "yes" if r["waiting"] else "no",
                 "yes" if r["holding"] else "no"] for r in records]
        header = ["PID", "ALIVE", "RECEIVED", "DROPPED", "LAG", "WAITING", "HOLDS-VIEW"]
        for line in render_table(header, rows, right=frozenset({0, 2, 3, 4})):
            _out("  " + line)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove segments whose publisher process is gone; never one whose publisher lives."""
    segments = list_segments()
    if args.pattern:
        segments = [s for s in segments if matches(s, args.pattern)]
    verb = "would remove" if args.dry_run else "removed"
    removed = 0
    for info in segments:
        if "error" in info or info["publisher_alive"]:
            continue
        if remove_if_stale(info["segment"], args.dry_run):
            removed += 1
            _out(f"{verb} {info['segment']} (channel {info['name']!r}, publisher pid "
                 f"{info['publisher_pid']} gone, {format_bytes(info['size'])})")
    if not removed:
        _out("no stale segments" + (f" matching {args.pattern!r}" if args.pattern else ""))
    unreadable = [s["segment"] for s in segments if "error" in s]
    if unreadable:
        _out(f"left alone: {len(unreadable)} segment(s) that are not readable shm_comm "
             "channels (see `shm-comm list`): " + ", ".join(unreadable))
    return 0


# --------------------------------------------------------------------------------------------
# echo
# --------------------------------------------------------------------------------------------

@dataclass
class Decoded:
    """One message as echo shows it: ``text`` lines for people, ``value`` for JSON."""

    text: list[str]
    value: Any


def decode_message(data: bytes, encoding: int, raw: bool, full: bool,
                   max_bytes: int) -> Decoded:
    """Decode ``data`` by its encoding (pickle, msgpack, typed array, raw bytes).

    ``raw`` skips decoding and shows the bytes. A message that cannot be decoded is shown
    as bytes with the reason, never raised: echo keeps going.
    """
    if raw or encoding == L.ENCODING_RAW:
        return Decoded([format_hex(data, max_bytes)],
                       {"bytes": len(data), "hex": (data if max_bytes <= 0 else
                                                    data[:max_bytes]).hex()})
    try:
        if encoding == L.ENCODING_ARRAY:
            arr, _header = decode_array(data)
            return Decoded(describe_array(arr, full), {"ndarray": summarize_array(arr, full)})
        name = L.ENCODING_NAMES.get(encoding)
        if name is None:
            raise SHMSerializationError(f"unknown encoding {encoding}")
        try:
            serializer = get_serializer(name)
        except ValueError as exc:  # msgpack not installed
            raise SHMSerializationError(str(exc)) from None
        obj = serializer.decode(data, encoding)
    except (SHMSerializationError, SHMFormatError) as exc:
        return Decoded([f"<cannot decode: {exc}>", format_hex(data, max_bytes)],
                       {"error": str(exc), "bytes": len(data), "hex": data[:64].hex()})
    if isinstance(obj, np.ndarray):
        return Decoded(describe_array(obj, full), {"ndarray": summarize_array(obj, full)})
    return Decoded(format_value(obj, full).splitlines(), _jsonable(obj))


def format_value(obj: Any, full: bool = False) -> str:
    """``pprint`` of a decoded message, arrays inside it summarized by NumPy's printoptions.

    Cut to ``TEXT_LIMIT`` characters unless ``full``.
    """
    width = max(40, shutil.get_terminal_size((100, 24)).columns)
    options: dict[str, Any] = ({"threshold": sys.maxsize} if full else
                               {"threshold": 20, "edgeitems": 3, "precision": 6})
    with np.printoptions(**options):
        text = pprint.pformat(obj, width=width, compact=True, sort_dicts=False)
    if not full and len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT] + f" ... (+{len(text) - TEXT_LIMIT} characters; --full shows all)"
    return text


def cmd_echo(args: argparse.Namespace) -> int:
    """Print each message of a channel as it arrives, without perturbing the channel."""
    sub = attach_observer(args.name, args.timeout, "echo", latest=args.latest)
    with sub:
        shown = 0
        last_seq = None
        while args.count <= 0 or shown < args.count:
            got = receive(sub, None)
            if got is None:
                continue
            data, encoding = got
            now_ns = time.time_ns()
            seq, stamp_ns = sub.last_seq, sub.last_timestamp_ns
            skipped = 0 if last_seq is None or seq <= last_seq else seq - last_seq - 1
            last_seq = seq
            decoded = decode_message(data, encoding, args.raw, args.full, args.max_bytes)
            enc_name = L.ENCODING_NAMES.get(encoding, str(encoding))
            if args.json:
                _out(_dump({"channel": args.name, "seq": seq, "timestamp": stamp_ns / 1e9,
                            "age": (now_ns - stamp_ns) / 1e9, "encoding": enc_name,
                            "size": len(data), "skipped": skipped, "value": decoded.value}))
            else:
                if skipped:
                    _out(f"... {skipped} message(s) skipped (this watcher fell behind; the "
                         "channel's subscribers are unaffected)")
                _out(f"#{seq}  stamp {stamp_ns / 1e9:.6f}  age "
                     f"{format_age((now_ns - stamp_ns) / 1e9)}  {enc_name}  "
                     f"{format_bytes(len(data))}")
                for line in decoded.text:
                    _out(line)
                _out("---")
            shown += 1
    return 0


# --------------------------------------------------------------------------------------------
# hz / bw
# --------------------------------------------------------------------------------------------

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


def cmd_hz(args: argparse.Namespace) -> int:
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
        _out(_dump({"channel": args.name, "time": time.time(),
                    **(result or {"rate": None, "window": 0})}))
    elif result is None or result["rate"] is None:
        _out("no new messages")
    else:
        _out(f"average rate: {result['rate']:.3f}")
        if result["min"] is not None:
            _out(f"\tmin: {result['min']:.6f}s max: {result['max']:.6f}s "
                 f"std dev: {result['std']:.6f}s window: {result['window']}")
        if result["skipped"]:
            _out(f"\t(this watcher skipped {result['skipped']} messages; the rate counts them)")


def _counter_rate(old: dict[str, Any], new: dict[str, Any], elapsed: float
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


def cmd_bw(args: argparse.Namespace) -> int:
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
                _out(_dump({"channel": name, "time": time.time(), "bytes_per_s": None,
                            "gone": True}))
            else:
                _out("channel is gone; waiting for it to come back")
            continue
        history.append((now, current))
        while len(history) > keep + 1:
            history.popleft()
        then, old = history[0]
        rate = _counter_rate(old, current, now - then)
        if rate is None:  # restarted: start over from this snapshot
            history.clear()
            history.append((now, current))
            rate = (0.0, 0.0, 0)
        msg_rate, byte_rate, messages = rate
        data = current["bytes_total"] - old["bytes_total"] if messages else 0
        mean = data / messages if messages else None
        if args.json:
            _out(_dump({"channel": name, "time": time.time(), "bytes_per_s": byte_rate,
                        "messages_per_s": msg_rate, "mean_size": mean, "messages": messages,
                        "window": now - then}))
        elif not messages:
            _out("no new messages")
        else:
            assert mean is not None
            _out(f"{format_bytes(byte_rate)}/s from {messages} messages "
                 f"({msg_rate:.4g} msg/s)")
            _out(f"\tmessage size mean: {format_bytes(mean)} window: {now - then:.3g} s")
    return 0


# --------------------------------------------------------------------------------------------
# pub
# --------------------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """``VALUE`` as a Python literal (``ast.literal_eval``), or else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text


def cmd_pub(args: argparse.Namespace) -> int:
    """Publish ``VALUE`` on a new channel, ``-n`` times at ``--rate`` Hz (default: forever)."""
    name = _valid_name(args.name)
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
        _out(f"publisher ready: {name!r} ({args.serialization}, {len(payload)} B per message, "
             f"{rate}; Ctrl-C stops)")
        if args.wait_subscribers:
            _out(f"waiting for {args.wait_subscribers} subscriber(s)")
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
                _out(f"publishing #{sent}: {shown}")
            if args.rate and (count <= 0 or sent < count):
                sleep(max(0.0, start + sent / args.rate - time.monotonic()))
    return 0


# --------------------------------------------------------------------------------------------
# top
# --------------------------------------------------------------------------------------------

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
            counted = _counter_rate(previous, info, when - then)
            if counted is not None:
                rate, bandwidth, _ = counted
                new_drops = max(0, info["drop_count"] - previous["drop_count"])
        rows.append({**info, "rate": rate, "bandwidth": bandwidth, "new_drops": new_drops,
                     "age": _age(info["last_timestamp"], now), "state": segment_state(info)})
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
    return {info["segment"]: (now, info) for info in list_segments()
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


def cmd_top(args: argparse.Namespace) -> int:
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


# --------------------------------------------------------------------------------------------
# Argument parsing and main
# --------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------
# record / play (shm_comm.recording; needs the optional mcap package, imported on use)
# --------------------------------------------------------------------------------------------

def cmd_record(args: argparse.Namespace) -> int:
    """Record pub/sub channels into an MCAP file until --duration, Ctrl-C or SIGTERM."""
    from .recording import Recorder

    names = [_valid_name(name) for name in args.channels]
    try:
        recorder = Recorder(names, args.output, json_compatible=args.json_messages,
                            timeout_connect=args.timeout)
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    until = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
    _out(f"recording {', '.join(names)} to {args.output} {until}")
    try:
        # On Ctrl-C / SIGTERM, run() finishes the file (a valid MCAP) before re-raising.
        recorder.run(args.duration or None)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    finally:
        stats = recorder.stats
        if stats.channels:  # it did record: say what the file holds
            _out(stats.summary())
            if stats.missed:
                _note(f"the recorder missed {stats.missed} message(s): it fell a whole ring "
                      "behind (the channels' subscribers were not affected)")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    """Publish an MCAP recording again with its recorded timing."""
    from .recording import parse_remap, play

    try:
        remap = parse_remap(args.remap)
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    looping = ", looping" if args.loop else ""
    _out(f"playing {args.file} at {args.rate:g}x speed{looping} (Ctrl-C stops)")
    try:
        stats = play(args.file, rate=args.rate, loop=args.loop, remap=remap,
                     wait_subscribers=args.wait_subscribers, timeout_connect=args.timeout)
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except KeyError as exc:  # a --remap of a channel the file does not have
        raise CLIError(str(exc.args[0]), EXIT_USAGE) from None
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot play {args.file}: {exc}") from None
    _out(f"published {stats.messages} message(s) in {stats.duration:.2f} s "
         f"({stats.passes} pass(es)); {stats.late} more than 1 ms late "
         f"(max {stats.max_lateness * 1e3:.1f} ms)")
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    """Run a Zenoh bridge until Ctrl-C/SIGTERM, with a status line every ``--interval``."""
    from .bridge import Bridge, format_status, split_list

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
        _note(f"bridge: host {bridge.host!r}, prefix {bridge.prefix!r}; Ctrl-C stops")
        reports = 0
        while args.count <= 0 or reports < args.count:
            sleep(args.interval)
            stats = bridge.stats()
            if args.json:
                _out(_dump({"time": time.time(), **stats}))
            else:
                for line in format_status(stats):
                    _out(line)
            reports += 1
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


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

    def command(name: str, func: Callable[[argparse.Namespace], int], text: str,
                description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=description)
        sub.set_defaults(func=func)
        return sub

    def wait_option(sub: argparse.ArgumentParser, default: float = DEFAULT_TIMEOUT) -> None:
        sub.add_argument("--timeout", type=_non_negative, default=default, metavar="SECONDS",
                         help=f"wait this long for the channel to appear (default {default:g})")

    def json_option(sub: argparse.ArgumentParser, streaming: bool) -> None:
        sub.add_argument("--json", action="store_true",
                         help="one JSON object per line" if streaming else "print JSON")

    sub = command("list", cmd_list, "list every channel on this machine",
                  "Every shm_comm segment on this machine (Linux): kind, encoding, publisher "
                  "pid and whether it lives, slots x slot size, subscribers, messages, drops, "
                  "age of the last message, and a state: live, stale (publisher died: "
                  "`shm-comm clean` removes it), closed, no-access (another user's), "
                  "incompatible (other format version) or unreadable.")
    sub.add_argument("pattern", nargs="?",
                     help="only channels (or segments) matching this glob, e.g. 'cam*'")
    json_option(sub, streaming=False)

    sub = command("info", cmd_info, "show one channel in detail",
                  "Layout, counters and metadata of one channel, and one row per subscriber "
                  "(pid, received, dropped, lag behind the newest message).")
    sub.add_argument("name", help="channel name")
    sub.add_argument("--kind", choices=KINDS, help="channel kind (default: the first found, "
                     "pubsub first)")
    wait_option(sub, 0.0)
    json_option(sub, streaming=False)

    sub = command("echo", cmd_echo, "print messages as they arrive",
                  "Print each new message of a pub/sub channel: pickle and msgpack values, "
                  "typed arrays as dtype, shape and a summary (all values when small; "
                  "per-field for structured dtypes), raw bytes as hex. Attaches as a "
                  "read-only observer: the channel's subscribers and drop count are "
                  "unaffected. Note that decoding pickle runs code chosen by whoever can "
                  "write the channel; use --raw for channels you do not trust.")
    sub.add_argument("name", help="channel name")
    sub.add_argument("-n", "--count", type=int, default=0, metavar="N",
                     help="exit after N messages (default: run until Ctrl-C)")
    sub.add_argument("--latest", action="store_true",
                     help="start with the newest message already published")
    sub.add_argument("--raw", action="store_true", help="do not decode: show bytes as hex")
    sub.add_argument("--full", action="store_true",
                     help="print whole arrays and long values instead of summaries")
    sub.add_argument("--max-bytes", type=int, default=64, metavar="N",
                     help="hex bytes shown per message (default 64; 0: all)")
    wait_option(sub)
    json_option(sub, streaming=True)

    sub = command("hz", cmd_hz, "measure the publishing rate",
                  "Publishing rate of a pub/sub channel, from the timestamps the publisher "
                  "wrote into each message (not arrival times, so it stays right for large "
                  "messages and for a watcher that falls behind), with min/max/std dev of the "
                  "periods over a window, reported every interval.")
    sub.add_argument("name", help="channel name")
    sub.add_argument("-w", "--window", type=int, default=10000, metavar="N",
                     help="messages in the statistics window (default 10000)")
    sub.add_argument("-i", "--interval", type=_positive, default=1.0, metavar="SECONDS",
                     help="seconds between reports (default 1)")
    sub.add_argument("-n", "--count", type=int, default=0, metavar="N",
                     help="exit after N reports (default: run until Ctrl-C)")
    wait_option(sub)
    json_option(sub, streaming=True)

    sub = command("bw", cmd_bw, "measure the bandwidth",
                  "Bytes per second and mean message size of a channel (any kind), from "
                  "deltas of its byte and message counters over a window.")
    sub.add_argument("name", help="channel name")
    sub.add_argument("-w", "--window", type=_positive, default=5.0, metavar="SECONDS",
                     help="average over this many seconds (default 5)")
    sub.add_argument("-i", "--interval", type=_positive, default=1.0, metavar="SECONDS",
                     help="seconds between reports (default 1)")
    sub.add_argument("-n", "--count", type=int, default=0, metavar="N",
                     help="exit after N reports (default: run until Ctrl-C)")
    wait_option(sub)
    json_option(sub, streaming=True)

    sub = command("pub", cmd_pub, "publish a value",
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

    sub = command("top", cmd_top, "live table of all channels",
                  "Every channel with its rate, bandwidth, messages, drops (and new drops), "
                  "subscribers and age of the last message, refreshed in place. Reads "
                  "counters only. On a terminal, q or Ctrl-C quits.")
    sub.add_argument("pattern", nargs="?",
                     help="only channels (or segments) matching this glob, e.g. 'arm.*'")
    sub.add_argument("-d", "--interval", type=_positive, default=1.0, metavar="SECONDS",
                     help="seconds between refreshes (default 1)")
    sub.add_argument("-n", "--iterations", type=int, default=0, metavar="ITER",
                     help="exit after ITER refreshes (default: until q or Ctrl-C)")
    sub.add_argument("--once", action="store_true",
                     help="print one table (after one interval) and exit")
    sub.add_argument("--sort", choices=sorted(SORT_KEYS), default="name",
                     help="sort by channel name (default), rate, bandwidth or drops")
    sub.add_argument("--plain", action="store_true",
                     help="no ANSI codes: print each refresh below the last")

    sub = command("record", cmd_record, "record channels to an MCAP file",
                  "Record pub/sub channels (plain and typed) into an MCAP file until "
                  "--duration seconds pass or Ctrl-C. The recorder attaches as a read-only "
                  "observer: the channels' subscribers and drop counts are unaffected; "
                  "messages the recorder itself missed are counted and reported. Needs the "
                  "mcap package (pip install 'shm-comm-streams[record]'); docs/recording.md "
                  "describes the file.")
    sub.add_argument("channels", nargs="+", metavar="CHANNEL", help="channel names")
    sub.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="the MCAP file to write (replaced if it exists)")
    sub.add_argument("--duration", type=_non_negative, default=0.0, metavar="SECONDS",
                     help="stop after this many seconds (default 0: until Ctrl-C)")
    sub.add_argument("--json-messages", action="store_true",
                     help="store pickle/msgpack messages that are dicts of JSON values as JSON, "
                          "which Foxglove displays (their replay is then re-encoded, not byte "
                          "for byte)")
    wait_option(sub)

    sub = command("play", cmd_play, "replay an MCAP recording",
                  "Publish a recording made by `shm-comm record` again, with the recorded "
                  "timing (publisher timestamps, deadline-scheduled, scaled by --rate) and the "
                  "recorded payload bytes. A channel whose publisher runs cannot be published "
                  "twice: --remap it to another name.")
    sub.add_argument("file", metavar="FILE", help="the MCAP file")
    sub.add_argument("-r", "--rate", type=_positive, default=1.0, metavar="X",
                     help="speed factor (default 1; 2: twice as fast; inf: as fast as possible)")
    sub.add_argument("--loop", action="store_true",
                     help="start over after the last message, until Ctrl-C")
    sub.add_argument("--remap", action="append", default=[], metavar="OLD:NEW",
                     help="publish recorded channel OLD as NEW (repeatable)")
    sub.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                     help="wait for N subscribers on every channel before the first message")
    sub.add_argument("--timeout", type=_non_negative, default=10.0, metavar="SECONDS",
                     help="how long --wait-subscribers waits (default 10)")

    sub = command("bridge", cmd_bridge, "carry channels to and from other machines (Zenoh)",
                  "Export local pub/sub channels as Zenoh keys <prefix>/<host>/<channel> and "
                  "import other bridges' channels as local channels <host>.<channel>, with "
                  "their encoding and dtype/shape (docs/bridge.md). Exported channels are read "
                  "as an observer, so local publishers never wait for the network; every drop "
                  "is counted. Needs the bridge extra: pip install "
                  "'shm-comm-streams[bridge]'. Runs until Ctrl-C, printing a status line per "
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
    sub.add_argument("-i", "--interval", type=_positive, default=5.0, metavar="SECONDS",
                     help="seconds between status reports (default 5)")
    sub.add_argument("-n", "--count", type=int, default=0, metavar="N",
                     help="exit after N reports (default: run until Ctrl-C)")
    json_option(sub, streaming=True)

    sub = command("clean", cmd_clean, "remove stale segments",
                  "Remove the segments whose publisher process is gone (crashed or killed "
                  "before cleaning up). A segment whose publisher lives is never removed, nor "
                  "one that is not a readable shm_comm channel.")
    sub.add_argument("pattern", nargs="?",
                     help="only channels (or segments) matching this glob, e.g. 'robot1_*'")
    sub.add_argument("--dry-run", action="store_true", help="only show what would be removed")
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
        _note(f"{args.command}: {exc}")
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
        _note(f"{args.command}: {exc}")
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover - `python -m shm_comm` uses __main__.py
    raise SystemExit(main())
