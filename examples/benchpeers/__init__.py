"""Peer implementations and measurement machinery for ``examples/benchmark.py``.

One module per peer (``peer_*.py``) implements :class:`benchpeers.base.Peer`; the workloads
in :mod:`benchpeers.workloads` are shared by all peers; :mod:`benchpeers.runner` runs each
workload in separate ``spawn``-ed processes with a timeout; :mod:`benchpeers.report` turns the
raw results into the Markdown table, JSON and plot.
"""

from __future__ import annotations

from .base import Peer
from .peer_fasterfifo import FasterFifoPeer
from .peer_iceoryx2 import Iceoryx2Peer
from .peer_mppipe import MPPipePeer
from .peer_mpqueue import MPQueuePeer
from .peer_shmcomm import ShmCommPeer, ShmCommTypedPeer
from .peer_zenoh import ZenohPeer
from .peer_zmq import ZmqPeer

#: The library under test (first column of the table).
SUBJECT = ShmCommPeer.name

#: Peers compared against it, in table order.
PEER_CLASSES: list[type[Peer]] = [
    MPQueuePeer,
    MPPipePeer,
    ZmqPeer,
    FasterFifoPeer,
    Iceoryx2Peer,
    ZenohPeer,
]

ALL_CLASSES: list[type[Peer]] = [ShmCommPeer, ShmCommTypedPeer, *PEER_CLASSES]

__all__ = ["ALL_CLASSES", "PEER_CLASSES", "SUBJECT", "Peer"]
