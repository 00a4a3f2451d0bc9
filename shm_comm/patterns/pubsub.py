"""``shm_comm.patterns.pubsub``: shm-comm 1.0's import path for :mod:`shm_comm.pubsub`."""

from __future__ import annotations

from ..pubsub import Publisher, Subscriber

__all__ = ["Publisher", "Subscriber"]
