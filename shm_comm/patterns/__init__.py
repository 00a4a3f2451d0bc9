"""The channel classes under the module paths shm-comm 1.0 used.

``shm_comm.patterns.pubsub``, ``.reqrep`` and ``.pipeline`` hold the same classes as
``shm_comm.pubsub``, ``shm_comm.reqrep`` and ``shm_comm.pipeline`` (and as the top-level
``shm_comm`` names): one implementation, three import paths.
"""

from __future__ import annotations

from ..pipeline import Puller, Pusher
from ..pubsub import Publisher, Subscriber
from ..reqrep import Replier, Requester

__all__ = ["Publisher", "Puller", "Pusher", "Replier", "Requester", "Subscriber"]
