"""``shm-comm foxglove [PATTERN...]``: serve channels live to Foxglove over WebSocket."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from typing import Any

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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _as_json(stats: dict[str, Any]) -> dict[str, Any]:
    """``FoxgloveBridge.stats()`` with each channel's ChannelStats as a plain dict."""
    return {
        "channels": {n: dataclasses.asdict(c) for n, c in stats["channels"].items()},
        "failed": stats["failed"], "clients": stats["clients"],
        "outbox_full": stats["outbox_full"],
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run a Foxglove WebSocket server until Ctrl-C/SIGTERM, reporting every --interval."""
    from ..foxglove import FoxgloveBridge, format_status

    try:
        bridge = FoxgloveBridge(args.patterns or None, host=args.host, port=args.port,
                                compressed_images=args.compressed_images)  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    try:
        bridge.start()
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except RuntimeError as exc:  # the SDK's error for a port in use, for one
        raise CLIError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    try:
        what = ", ".join(args.patterns) if args.patterns else "every channel"
        note(f"foxglove: serving {what} on {bridge.url}; in Foxglove: Open connection -> "
             f"Foxglove WebSocket -> {bridge.url}. Ctrl-C stops")
        if not _is_loopback(args.host):
            note("foxglove: listening beyond this machine: anyone who reaches this port sees "
                 "the channels (there is no authentication)")
        report_every(args, bridge.stats, _as_json, format_status)
    finally:
        bridge.stop()
    return 0


def add_parser(commands: Commands) -> None:
    """Add ``foxglove`` and its options to the ``shm-comm`` parser."""
    sub = add_command(
        commands, "foxglove", run, "serve channels live to Foxglove (WebSocket)",
        "Serve pub/sub channels on a Foxglove WebSocket server (docs/foxglove.md). "
        "Images and point clouds use Foxglove's well-known schemas (foxglove.RawImage, "
        "foxglove.PointCloud), records and dict messages JSON with a JSON schema, "
        "anything else bytes. Channels that appear later are advertised at once; a "
        "publisher that exits shows as a warning in Foxglove. Channels are read as an "
        "observer: publishers never wait for Foxglove and their counters do not change. "
        "Needs the foxglove extra (pip install -e '.[foxglove]' in the checkout). Runs until "
        "Ctrl-C, printing a status line per channel every --interval.")
    sub.add_argument("patterns", nargs="*", metavar="PATTERN",
                     help="channel names or globs, e.g. imu 'camera*' (default: every channel)")
    sub.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; "
                          "0.0.0.0 for every interface)")
    sub.add_argument("--port", type=int, default=8765,
                     help="port to listen on (default 8765, Foxglove's; 0 picks a free one)")
    sub.add_argument("--compressed-images", action="store_true",
                     help="send images as foxglove.CompressedImage (JPEG; PNG for 16-bit "
                          "depth) instead of RawImage: far fewer bytes for remote viewers")
    add_report_options(sub, 5.0, "status reports")
    add_json_option(sub, streaming=True)
