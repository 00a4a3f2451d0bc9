"""The one place that picks the operating-system backend for segments.

POSIX (Linux, tested) lives in ``posix.py``; on macOS it refuses channels with a clear error.
Windows named mappings are not implemented yet: importing shm_comm there raises a clear error
rather than half-working (see docs/design.md, "Portability").
"""

from __future__ import annotations

import sys

if sys.platform == "win32":  # pragma: no cover - not tested on this project's CI
    raise ImportError(
        "shm_comm does not support Windows yet: its segments need named file mappings "
        "(CreateFileMappingW) and a lock that dies with the owner; see docs/design.md"
    )

from . import posix as backend

__all__ = ["backend"]
