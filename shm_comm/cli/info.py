"""``shm-comm info NAME``: one channel's layout, counters and subscribers."""

from __future__ import annotations

import argparse
import ast
import json
import time
from datetime import datetime
from typing import Any

import numpy as np

from .. import layout as L
from .. import ring
from ..errors import SHMError
from ..segment import Segment
from ._common import (
    KIND_IDS,
    KINDS,
    CLIError,
    Commands,
    add_command,
    add_json_option,
    add_wait_option,
    age_of,
    lookup,
    wait_for_channel,
)
from ._format import format_age, format_bytes, format_slots, render_table, to_json, write_line

__all__ = ["add_parser", "inspect_channel", "run"]


def inspect_channel(name: str, kind: str) -> dict[str, Any] | None:
    """Everything ``info`` shows: ``channel_info`` plus per-subscriber rows and metadata.

    Maps the segment read-only, like every watching command.
    """
    info = lookup(name, kind)
    if info is None:
        return None
    try:
        segment = Segment.attach(info["segment"], name, KIND_IDS[info["kind"]], readonly=True,
                                 populate=False)
    except FileNotFoundError:
        return None
    except (SHMError, OSError) as exc:
        raise CLIError(f"channel {name!r} cannot be read: {exc}") from None
    try:
        head = segment.atom.load(L.HEAD)
        records = ring.read_records(segment.atom, segment.layout)
        info["max_subscribers"] = segment.layout.max_subscribers
        info["subscriber_records"] = [
            {"pid": r.pid, "alive": segment.liveness.alive(r.row, r.pid, r.token),
             "received": r.received,
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


def format_memory(info: dict[str, Any]) -> str:
    """``"41.5 MiB of shared memory (7 buffers of 5.93 MiB: 4 slots, 2 for zero-copy holders
    (1 taken), 1 for a loan); 22.5 MiB free of 64 MiB"``."""
    text = f"{format_bytes(info['shm_bytes'])} of shared memory"
    if info.get("num_buffers"):
        text += f" ({info['num_buffers']} buffers of {format_bytes(info['buffer_stride'])}"
        if info["kind"] == "pubsub":
            text += (f": {info['num_slots']} slots, {info['max_holders']} for zero-copy "
                     f"holders ({info['holders']} taken), 1 for a loan")
        text += ")"
    if info.get("shm_total") is not None:
        text += (f"; {format_bytes(info['shm_free'])} free of "
                 f"{format_bytes(info['shm_total'])}")
    return text


def run(args: argparse.Namespace) -> int:
    """Print one channel's layout, counters and subscribers."""
    name = args.name
    found = wait_for_channel(name, args.timeout, args.kind)
    info = inspect_channel(name, found["kind"])
    if info is None:
        raise CLIError(f"channel {name!r} disappeared while being read")
    if args.json:
        write_line(to_json(info))
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
        ("memory", format_memory(info)),
        ("messages", f"{info['msg_count']} ({format_bytes(info['bytes_total'])})"),
        ("drops", str(info["drop_count"])),
        ("last message", format_age(age_of(info["last_timestamp"], now))
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
        fields.append(("metadata", to_json(meta)))
    fields.append(("subscribers", f"{info['subscribers']} of {info['max_subscribers']}"))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        write_line(f"{key.ljust(width)}  {value}")
    records = info["subscriber_records"]
    if records:
        rows = [[str(r["pid"]), "yes" if r["alive"] else "no", str(r["received"]),
                 str(r["dropped"]), str(r["lag"]), "yes" if r["waiting"] else "no",
                 "yes" if r["holding"] else "no"] for r in records]
        header = ["PID", "ALIVE", "RECEIVED", "DROPPED", "LAG", "WAITING", "HOLDS-VIEW"]
        for line in render_table(header, rows, right=frozenset({0, 2, 3, 4})):
            write_line("  " + line)
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``info`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "info", run, "show one channel in detail",
        "Layout, counters and metadata of one channel, and one row per subscriber "
        "(pid, received, dropped, lag behind the newest message).")
    sub.add_argument("name", help="channel name")
    sub.add_argument("--kind", choices=KINDS, help="channel kind (default: the first found, "
                     "pubsub first)")
    add_wait_option(sub, 0.0)
    add_json_option(sub, streaming=False)
