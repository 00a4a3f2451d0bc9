"""``shm_comm.patterns.reqrep``: shm-comm 1.0's import path for :mod:`shm_comm.reqrep`."""

from __future__ import annotations

from ..reqrep import Replier, Requester

__all__ = ["Replier", "Requester"]
