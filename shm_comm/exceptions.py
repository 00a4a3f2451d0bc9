"""The exception classes under the module name shm-comm 1.0 used (``shm_comm.exceptions``).

These are the very classes of :mod:`shm_comm.errors`, not copies: ``except`` clauses written
against either module catch the same errors.
"""

from __future__ import annotations

from .errors import (
    SHMBufferFullError,
    SHMConnectionError,
    SHMError,
    SHMFormatError,
    SHMPeerGoneError,
    SHMSerializationError,
    SHMTimeoutError,
)

__all__ = [
    "SHMBufferFullError",
    "SHMConnectionError",
    "SHMError",
    "SHMFormatError",
    "SHMPeerGoneError",
    "SHMSerializationError",
    "SHMTimeoutError",
]
