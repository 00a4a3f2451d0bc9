"""Small helpers the tuning guide and shm-comm 1.0 name: polling, platform, segment names.

Segment names: each helper returns the name of the segment that *this* library really uses
for the channel, so that what it returns can be handed to :func:`force_unlink`, found in
:func:`list_segments` and in ``/dev/shm``. shm-comm 1.0 named segments ``shmcomm_pub_<ch>``,
``shmcomm_req_<ch>``, ``shmcomm_rep_<ch>`` and ``shmcomm_push_<ch>``; here they are
``shmcp_<ch>`` (pub/sub), ``shmcr_<ch>`` (request/reply: requests and replies share one
segment, so :func:`req_segment_name` and :func:`rep_segment_name` return the same name) and
``shmcq_<ch>`` (push/pull). Channel names too long for macOS's limit get a hash (see
:func:`shm_comm.naming.segment_name`). :func:`force_unlink` also accepts 1.0's names.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

from .channels import force_unlink, list_segments
from .naming import segment_name, validate_channel_name
from .wait import sleep

__all__ = [
    "force_unlink",
    "is_linux",
    "is_windows",
    "list_segments",
    "platform_name",
    "poll_until",
    "pub_segment_name",
    "pull_segment_name",
    "push_segment_name",
    "rep_segment_name",
    "req_segment_name",
    "validate_channel_name",
]

T = TypeVar("T")


def poll_until(check_fn: Callable[[], T], timeout: float | None = 1.0,
               poll_interval: float = 100e-6, *, interval: float | None = None) -> T | None:
    """Call ``check_fn`` until it returns something truthy; return that, or None on timeout.

    ``timeout`` is in seconds (``None``: no limit). ``poll_interval`` is the sleep between
    calls in seconds (the guide's 100 µs); ``0`` busy-waits. ``interval`` is another name for
    it. Receivers do not need this: ``recv`` already waits without polling; it is for
    conditions of your own.
    """
    if interval is not None:
        poll_interval = interval
    if poll_interval < 0:
        raise ValueError(f"poll_interval must be >= 0, got {poll_interval}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        result = check_fn()
        if result:
            return result
        if deadline is not None and time.monotonic() >= deadline:
            return None
        if poll_interval:
            sleep(poll_interval)


def platform_name() -> str:
    """``"linux"``, ``"macos"``, ``"windows"``, or ``sys.platform`` for anything else."""
    return {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform,
                                                                       sys.platform)


def is_linux() -> bool:
    """Whether this is Linux (the tested platform: segments live in ``/dev/shm``)."""
    return sys.platform == "linux"


def is_windows() -> bool:
    """Whether this is Windows."""
    return sys.platform == "win32"


def pub_segment_name(channel: str) -> str:
    """Name of the segment of pub/sub channel ``channel``: ``shmcp_<channel>``.

    Raises ``ValueError`` for an invalid channel name.
    """
    return segment_name("pubsub", channel)


def req_segment_name(channel: str) -> str:
    """Name of the segment of request/reply channel ``channel``: ``shmcr_<channel>``.

    Requests and replies share this one segment: ``rep_segment_name`` is the same function.
    """
    return segment_name("reqrep", channel)


def push_segment_name(channel: str) -> str:
    """Name of the segment of push/pull queue ``channel``: ``shmcq_<channel>``.

    ``pull_segment_name`` is the same function.
    """
    return segment_name("pipeline", channel)


rep_segment_name = req_segment_name
pull_segment_name = push_segment_name
