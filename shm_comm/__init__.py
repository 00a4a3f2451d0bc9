"""shm_comm: shared-memory pub/sub for sensor streams between processes on one machine."""

from __future__ import annotations

# First, so that on a platform shm_comm does not support (Windows) the ImportError says so,
# before a missing fcntl or compiled module fails less helpfully.
from . import _backend  # noqa: F401
from .arrays import ArrayPublisher, ArraySubscriber, decode_array
from .channels import channel_info, force_unlink, list_channels, list_segments, remove_stale
from .errors import (
    SHMBufferFullError,
    SHMClosedError,
    SHMConnectionError,
    SHMError,
    SHMFormatError,
    SHMPeerGoneError,
    SHMSerializationError,
    SHMTimeoutError,
    SHMUntrustedSegmentError,
)
from .pipeline import Puller, Pusher
from .pubsub import Publisher, Subscriber
from .reqrep import Replier, Requester

__all__ = [
    "ArrayPublisher",
    "ArraySubscriber",
    "Publisher",
    "Puller",
    "Pusher",
    "Replier",
    "Requester",
    "SHMBufferFullError",
    "SHMClosedError",
    "SHMConnectionError",
    "SHMError",
    "SHMFormatError",
    "SHMPeerGoneError",
    "SHMSerializationError",
    "SHMTimeoutError",
    "SHMUntrustedSegmentError",
    "Subscriber",
    "__author__",
    "__version__",
    "channel_info",
    "decode_array",
    "force_unlink",
    "list_channels",
    "list_segments",
    "remove_stale",
]

__version__ = "0.1.0"
__author__ = "the shm_comm developers"
