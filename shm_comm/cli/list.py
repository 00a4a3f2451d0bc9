"""``shm-comm list``: every shm_comm segment on this machine, stale ones marked."""

from __future__ import annotations

import argparse
import time

from .._backend import backend
from ..channels import list_channels
from ..trust import ENV_TRUSTED_USERS
from ._common import (
    Commands,
    add_command,
    add_json_option,
    add_pattern_argument,
    age_of,
    matches,
    segment_state,
)
from ._format import format_age, format_bytes, format_slots, render_table, to_json, write_line

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Print every shm_comm segment on this machine, readable or not."""
    segments = list_channels()
    if args.pattern:
        segments = [s for s in segments if matches(s, args.pattern)]
    for info in segments:
        info["state"] = segment_state(info)
    if args.json:
        write_line(to_json(segments))
        return 0
    if not segments:
        write_line("no channels" + (f" matching {args.pattern!r}" if args.pattern else ""))
        space = backend.space()
        if space is not None:
            write_line(f"{backend.SHM_DIR}: {format_bytes(space[1])} free of "
                       f"{format_bytes(space[0])}")
        return 0
    now = time.time()
    rows = []
    for info in segments:
        memory = format_bytes(info["shm_bytes"]) if "shm_bytes" in info else "-"
        if "error" in info:
            rows.append([f"? {info['segment']}", "-", "-", "-", "-", memory, "-", "-", "-",
                         "-", info.get("owner", "?"), info["state"]])
            continue
        alive = "alive" if info["publisher_alive"] else "dead"
        rows.append([info["name"], info["kind"], info["encoding"],
                     f"{info['publisher_pid']} {alive}", format_slots(info), memory,
                     str(info["subscribers"]), str(info["msg_count"]), str(info["drop_count"]),
                     format_age(age_of(info["last_timestamp"], now)), info.get("owner", "?"),
                     info["state"]])
    header = ["CHANNEL", "KIND", "ENCODING", "PUBLISHER", "SLOTS", "SHM", "SUBS", "MSGS",
              "DROPS", "LAST", "OWNER", "STATE"]
    for line in render_table(header, rows, right=frozenset({5, 6, 7, 8, 9})):
        write_line(line)
    notes = []
    total, free = segments[0].get("shm_total"), segments[0].get("shm_free")
    if total is not None and free is not None:
        used = sum(info.get("shm_bytes", 0) for info in segments)
        notes.append(f"{backend.SHM_DIR}: {format_bytes(free)} free of "
                     f"{format_bytes(total)}; "
                     + (f"these {len(segments)} channels take" if len(segments) > 1
                        else "this channel takes") + f" {format_bytes(used)}")
    notes += [f"? {info['segment']}: {info['error']}" for info in segments if "error" in info]
    notes += [f"{info['segment']} belongs to user {info['owner']} (uid {info['owner_uid']}): "
              "this user's channel ends refuse it unless told to trust that user "
              f"(trusted_users=, or {ENV_TRUSTED_USERS}; docs/security.md)"
              for info in segments if "error" not in info and not info.get("trusted", True)]
    stale = sum(1 for s in segments if s["state"] == "stale")
    if stale:
        notes.append(f"{stale} stale segment{'s' if stale > 1 else ''} (publisher gone): "
                     "`shm-comm clean` removes them")
    if notes:
        write_line()
        for note in notes:
            write_line(note)
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``list`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "list", run, "list every channel on this machine",
        "Every shm_comm segment on this machine (Linux): kind, encoding, publisher "
        "pid and whether it lives, slots x slot size, the shared memory it takes, "
        "subscribers, messages, drops, "
        "age of the last message, the segment's owner, and a state: live, stale (publisher died: "
        "`shm-comm clean` removes it), closed, no-access (another user's), "
        "incompatible (other format version) or unreadable.")
    add_pattern_argument(sub, "cam*")
    add_json_option(sub, streaming=False)
