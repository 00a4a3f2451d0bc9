"""What every widget has: one background thread, started and stopped explicitly and stopped
before the interpreter exits, and the front-end files (ES modules, CSS) it is drawn with."""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import threading
import weakref
from pathlib import Path
from typing import Any

import anywidget


def _asset(name: str) -> str:
    """Text of a packaged front-end file (``widgets/`` is the package shm_comm._frontend)."""
    try:
        return importlib.resources.files("shm_comm._frontend").joinpath(name).read_text("utf-8")
    except ModuleNotFoundError:
        # Running from a source checkout that is not installed (PYTHONPATH=repo).
        return (Path(__file__).resolve().parents[2] / "widgets" / name).read_text("utf-8")


_CSS = _asset("widgets.css")
_LIVE_WIDGETS: weakref.WeakSet[_ThreadedWidget] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    # Stop the reader threads before the interpreter tears down the modules they use.
    for widget in list(_LIVE_WIDGETS):
        with contextlib.suppress(Exception):
            widget.stop(timeout=1.0)


class _ThreadedWidget(anywidget.AnyWidget):
    """An AnyWidget with one background worker thread, started and stopped explicitly."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stop_event = threading.Event()
        self._wake = threading.Event()  # set by stop() and by anything the thread awaits
        self._thread: threading.Thread | None = None

    def _run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> None:
        """Start (or restart after :meth:`stop`) the background reader thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop_event.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"shm_comm {type(self).__name__}", daemon=True
        )
        _LIVE_WIDGETS.add(self)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader thread and close its subscriber; idempotent.

        Waits up to ``timeout`` seconds for the thread to finish. The widget stays displayed
        with its last data; :meth:`start` resumes reading.
        """
        self._stop_event.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        _LIVE_WIDGETS.discard(self)

    @property
    def running(self) -> bool:
        """True while the background thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the thread, then close the widget (its views disappear); idempotent."""
        self.stop()
        super().close()
