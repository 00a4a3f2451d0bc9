"""Helpers for tests that start real processes (import as ``from helpers import ...``).

Kept out of conftest.py: test modules cannot import a conftest by name reliably when several
folders have one.
"""

from __future__ import annotations

import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Channel names of this test session carry SESSION, so the leak check only judges
# segments this run made (another run may be working on the same machine).
SESSION = secrets.token_hex(3)


def spawn_python(code: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    """Start ``python -c code args...`` as a real separate process (text mode pipes)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, cwd=str(ROOT), **kwargs)


def stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """Kill ``proc`` if it still runs, reap it and close all its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass  # a broken stdin pipe of a killed child


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """A queue fed with ``proc``'s stdout lines by a reader thread (None at end of file)."""
    lines: queue.Queue[str | None] | None = getattr(proc, "_test_lines", None)
    if lines is None:
        lines = queue.Queue()
        stdout = proc.stdout
        assert stdout is not None

        def pump() -> None:
            try:
                for line in stdout:
                    lines.put(line)
            except ValueError:  # closed by stop()
                pass
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        proc._test_lines = lines  # type: ignore[attr-defined]
    return lines


def remaining_lines(proc: subprocess.Popen[str], timeout: float = 20.0) -> list[str]:
    """The stdout lines of a finished ``proc`` not yet taken by :func:`wait_for_line`."""
    lines = _lines(proc)
    out = []
    while (line := lines.get(timeout=timeout)) is not None:
        out.append(line)
    lines.put(None)
    return out


def wait_for_line(proc: subprocess.Popen[str], expected: str, timeout: float = 20.0) -> str:
    """Read ``proc``'s stdout until a line starting with ``expected``; fail after ``timeout``.

    Lines are read by a thread, so several lines arriving at once are all seen.
    """
    lines = _lines(proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no line starting with {expected!r} within {timeout} s") from None
        if line is None:
            lines.put(None)
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"process exited before printing {expected!r}: {err}")
        if line.startswith(expected):
            return line.strip()


def rest_of_output(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """Wait for ``proc`` to exit and return the stdout lines not consumed by wait_for_line."""
    proc.wait(timeout)
    lines = _lines(proc)
    out = []
    while True:
        line = lines.get(timeout=timeout)
        if line is None:
            lines.put(None)
            return "".join(out)
        out.append(line)
