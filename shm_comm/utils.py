"""Small helpers the tuning guide names: polling and segment names."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .naming import segment_name, validate_channel_name
from .wait import sleep

__all__ = ["poll_until", "pub_segment_name", "pull_segment_name", "rep_segment_name",
           "validate_channel_name"]

T = TypeVar("T")


def poll_until(predicate: Callable[[], T], timeout: float | None = 1.0,
               interval: float = 100e-6) -> T | None:
    """Call ``predicate`` until it returns something truthy; return that, or None on timeout.

    ``interval`` is the sleep between calls in seconds (the guide's 100 µs); ``0`` busy-waits.
    ``timeout=None`` waits without limit. Receivers do not need this: ``recv`` already waits
    efficiently; it is for conditions of your own.
    """
    if interval < 0:
        raise ValueError(f"interval must be >= 0, got {interval}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if deadline is not None and time.monotonic() >= deadline:
            return None
        if interval:
            sleep(interval)


def pub_segment_name(channel: str) -> str:
    """Name of the shared-memory segment of pub/sub channel ``channel``."""
    return segment_name("pubsub", channel)


def rep_segment_name(channel: str) -> str:
    """Name of the shared-memory segment of request/reply channel ``channel``."""
    return segment_name("reqrep", channel)


def pull_segment_name(channel: str) -> str:
    """Name of the shared-memory segment of push/pull queue ``channel``."""
    return segment_name("pipeline", channel)
