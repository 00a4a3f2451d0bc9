"""Shared fixtures: unique channel names and a check that no test leaks a segment."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHM_DIR = Path("/dev/shm")
OUR_SEGMENT = re.compile(r"\.?shmc[prq]_")  # channels, and half-built ones (.name.pid.x.tmp)


def _our_segments() -> set[str]:
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if OUR_SEGMENT.match(p.name)}


# Channel names of this test session carry SESSION, so the leak check below only judges
# segments this run made (another run may be working on the same machine).
SESSION = secrets.token_hex(3)


def _mine(name: str, before: set[str]) -> bool:
    if SESSION in name:
        return True
    if name in before:
        return False
    try:
        from shm_comm.channels import _describe

        return _describe(name.lstrip(".")).get("publisher_pid") == os.getpid()
    except Exception:
        return False


@pytest.fixture(scope="session", autouse=True)
def no_leftover_segments() -> Iterator[None]:
    """Fail the run if it leaves shm_comm segments in /dev/shm (also from failed tests)."""
    before = _our_segments()
    yield
    left = {name for name in _our_segments() - before if _mine(name, before)}
    for name in left:  # clean up so one failure does not poison later runs
        (SHM_DIR / name).unlink(missing_ok=True)
    assert not left, f"tests left segments in /dev/shm: {sorted(left)}"


@pytest.fixture
def channel() -> str:
    """A fresh channel name, unique to this test (and marked as this session's)."""
    return f"t{SESSION}_{secrets.token_hex(4)}"


def spawn_python(code: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    """Start ``python -c code args...`` as a real separate process (text mode pipes)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, cwd=str(ROOT), **kwargs)


def stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """Kill ``proc`` if it still runs, reap it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.communicate(timeout=timeout)
    except ValueError:  # pipes already closed
        proc.wait(timeout)


def wait_for_line(proc: subprocess.Popen[str], expected: str, timeout: float = 20.0) -> str:
    """Read ``proc``'s stdout until a line starting with ``expected``; fail after ``timeout``."""
    import selectors
    import time

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr else ""
                raise AssertionError(f"process exited before printing {expected!r}: {err}")
            if line.startswith(expected):
                return line.strip()
    finally:
        sel.unregister(proc.stdout)
    raise AssertionError(f"no line starting with {expected!r} within {timeout} s")
