"""Live Jupyter widgets for shm_comm channels: :class:`LivePlot`, :class:`ImageView` and
:class:`StatsMonitor`.

    from shm_comm.widgets import LivePlot, StatsMonitor
    plot = LivePlot("imu", fields=["ax", "ay", "az"], window=10.0)
    plot                                  # displays; updates while the channel has data
    ImageView("camera")                   # a camera channel, live
    StatsMonitor(["imu", "joints", "camera"])
    plot.stop(); plot.close()

This package is the outer ring of shm_comm: it imports the core, the core never imports
it, and it needs the ``jupyter`` extra (anywidget, ipywidgets). One module per job:

* ``liveplot``, ``imageview``, ``statsmonitor``: the widgets. Their front ends are ES
  modules in the repository's ``widgets/`` folder, shipped as the package
  ``shm_comm._frontend``.
* ``_channel``: reading one channel on a widget's thread (observer, waiting, restarts).
* ``_pacing``: how frames reach the browser (acknowledgements between cells; time and one
  budget for all widgets while a cell runs).
* ``_base``: the background thread every widget has, and loading the front-end files.

Status shown by a LivePlot or an ImageView: ``waiting`` (no such channel yet; retried every
``RETRY_INTERVAL`` s), ``live``, ``stale`` (publisher alive, nothing new for a while),
``gone`` (publisher exited; a restarted publisher is picked up automatically),
``error`` (e.g. fields that do not exist; retried), ``stopped``.
"""

from __future__ import annotations

from shm_comm._optional import missing

try:
    import anywidget  # noqa: F401
    import traitlets  # noqa: F401
except ImportError as _exc:
    raise missing("shm_comm.widgets", "jupyter", "anywidget ipywidgets jupyterlab pillow",
                  _exc) from _exc

# The tuning constants stay importable from here (``X as X``: re-exported on purpose), as they
# were when the widgets were one module.
from ._channel import RETRY_INTERVAL as RETRY_INTERVAL
from ._channel import STALE_AFTER as STALE_AFTER
from ._pacing import BLIND_BYTES_PER_S as BLIND_BYTES_PER_S
from ._pacing import BLIND_FRAMES_PER_S as BLIND_FRAMES_PER_S
from ._pacing import FRAME_RATE as FRAME_RATE
from ._pacing import MAX_UNACKED as MAX_UNACKED
from ._pacing import STALL_TIMEOUT as STALL_TIMEOUT
from ._pacing import VIEWED_WITHIN as VIEWED_WITHIN
from .imageview import ImageView
from .liveplot import BATCH as BATCH
from .liveplot import MAX_FRAME_SAMPLES as MAX_FRAME_SAMPLES
from .liveplot import MAX_SERIES as MAX_SERIES
from .liveplot import MAX_WINDOW_SAMPLES as MAX_WINDOW_SAMPLES
from .liveplot import LivePlot
from .statsmonitor import StatsMonitor

__all__ = ["ImageView", "LivePlot", "StatsMonitor"]
