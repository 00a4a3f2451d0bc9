"""Helpers for tests that start real processes (import as ``from helpers import ...``).

Kept out of conftest.py: test modules cannot import a conftest by name reliably when several
folders have one.
"""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

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


class Proc:
    """A ``python -c`` child whose output lines are read by threads.

    ``wait_for_line`` selects on the pipe's file descriptor and then reads through
    the buffered text wrapper, so a second line that arrived in the same read is missed until
    more output comes; reading in threads has no such gap.
    """

    def __init__(self, code: str, *args: str, stdin: bool = False) -> None:
        extra: dict[str, object] = {"stdin": subprocess.PIPE} if stdin else {}
        # Its own process group, so that finish() also ends any children it forked.
        self.popen = spawn_python(code, *args, start_new_session=True, **extra)
        self.pid = self.popen.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self._lines.put),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self._err.append),
                             daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: TextIO | None, put: Callable[[str | None], None]) -> None:
        assert stream is not None
        try:
            for line in stream:
                put(line)
        except (ValueError, OSError):  # closed under us by finish()
            pass
        put(None)

    def stderr(self) -> str:
        self._threads[1].join(timeout=5)
        return "".join(x for x in self._err if x)

    def wait_for(self, prefix: str, timeout: float = 20.0) -> str:
        """The next line starting with ``prefix`` (earlier other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(f"no line starting with {prefix!r} within {timeout} s"
                                     ) from None
            if line is None:
                self._lines.put(None)
                self.popen.wait(timeout=10)
                raise AssertionError(f"process exited ({self.popen.returncode}) before "
                                     f"printing {prefix!r}: {self.stderr()}")
            if line.startswith(prefix):
                return line.strip()

    def tell(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def close_stdin(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.close()

    def kill(self) -> None:
        self.popen.kill()

    def wait(self, timeout: float = 20.0) -> int:
        return self.popen.wait(timeout=timeout)

    def exit_ok(self, timeout: float = 20.0) -> None:
        code = self.popen.wait(timeout=timeout)
        assert code == 0, f"process exited with {code}: {self.stderr()}"

    def finish(self) -> None:
        """Stop if still running (EOF on stdin first, then SIGKILL), reap, close every pipe."""
        if self.popen.poll() is None and self.popen.stdin is not None:
            try:
                self.popen.stdin.close()  # the scripts here exit cleanly on EOF
                self.popen.wait(timeout=2)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(timeout=10)
        finally:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)  # forked children, if any
            except (ProcessLookupError, PermissionError):
                pass
            for t in self._threads:
                t.join(timeout=5)
            for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except BrokenPipeError:
                        pass


Spawn = Callable[..., Proc]
"""What the ``spawn`` fixture (conftest.py) yields: ``spawn(code, *args, stdin=False)``."""
