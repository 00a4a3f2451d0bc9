"""``shm-comm clean``: remove segments whose publisher process is gone."""

from __future__ import annotations

import argparse
import os

from ..channels import list_channels, remove_stale
from ._common import Commands, add_command, add_pattern_argument, matches
from ._format import format_bytes, write_line

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Remove segments whose publisher process is gone; never one whose publisher lives."""
    segments = list_channels()
    if args.pattern:
        segments = [s for s in segments if matches(s, args.pattern)]
    verb = "would remove" if args.dry_run else "removed"
    removed = remove_stale(args.dry_run, args.pattern)
    described = {info["segment"]: info for info in segments}
    for segment in removed:
        info = described.get(segment)
        if segment.startswith("."):
            write_line(f"{verb} {segment} (left half-built by a process that died)")
            continue
        if info is None or "error" in info:  # went stale since it was listed
            write_line(f"{verb} {segment} (publisher gone)")
            continue
        write_line(f"{verb} {segment} (channel {info['name']!r}, publisher pid "
                   f"{info['publisher_pid']} gone, {format_bytes(info['size'])})")
    if not removed:
        write_line("no stale segments" + (f" matching {args.pattern!r}" if args.pattern else ""))
    unreadable = [s["segment"] for s in segments if "error" in s]
    if unreadable:
        write_line(f"left alone: {len(unreadable)} segment(s) that are not readable shm_comm "
                   "channels (see `shm-comm list`): " + ", ".join(unreadable))
    others = [s["segment"] for s in segments
              if "error" not in s and s.get("owner_uid", os.geteuid()) != os.geteuid()]
    if others:
        write_line(f"left alone: {len(others)} segment(s) of other users (only their owner "
                   "cleans them): " + ", ".join(others))
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``clean`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "clean", run, "remove stale segments",
        "Remove the segments whose publisher process is gone (crashed or killed "
        "before cleaning up), and those left half-built by a publisher that died while "
        "creating them. A segment whose publisher lives is never removed, nor "
        "one that is not a readable shm_comm channel, nor another user's.")
    add_pattern_argument(sub, "robot1_*")
    sub.add_argument("--dry-run", action="store_true", help="only show what would be removed")
