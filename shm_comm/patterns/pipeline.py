"""``shm_comm.patterns.pipeline``: shm-comm 1.0's import path for :mod:`shm_comm.pipeline`."""

from __future__ import annotations

from ..pipeline import Puller, Pusher

__all__ = ["Puller", "Pusher"]
