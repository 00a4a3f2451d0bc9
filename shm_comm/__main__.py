"""``python -m shm_comm``: the ``shm-comm`` command line (see :mod:`shm_comm.cli`)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
