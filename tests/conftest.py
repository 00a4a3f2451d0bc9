"""Shared fixtures: unique channel names and a check that no test leaks a segment."""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import SESSION, Proc, Spawn

SHM_DIR = Path("/dev/shm")

# Under CPU emulation (packaging/test-wheels runs the aarch64 wheel in qemu-user and sets
# SHM_COMM_EMULATED) there is no browser or JupyterLab to drive: leave those tests out
# rather than fail collecting them.
EMULATED = os.environ.get("SHM_COMM_EMULATED", "")
collect_ignore = ["browser", "test_notebooks.py"] if EMULATED else []


def pytest_report_header() -> str | None:
    if EMULATED:
        return (f"emulated CPU ({EMULATED}): not collected: tests/browser/, "
                "tests/test_notebooks.py (they need Chromium and JupyterLab)")
    return None
OUR_SEGMENT = re.compile(r"\.?shmc[prq]_")  # channels, and half-built ones (.name.pid.x.tmp)


def _our_segments() -> set[str]:
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if OUR_SEGMENT.match(p.name)}


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


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``Proc`` children; every one is killed (if running) and reaped afterwards."""
    started: list[Proc] = []

    def start(code: str, *args: str, stdin: bool = False) -> Proc:
        proc = Proc(code, *args, stdin=stdin)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.finish()
