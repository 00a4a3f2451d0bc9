"""Segments are owner-only: another uid can neither attach nor read; group sharing is opt-in."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from shm_comm import Publisher, SHMConnectionError, Subscriber
from shm_comm.utils import poll_until, pub_segment_name

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to run a child process under another uid (CI runs as root)",
)

NOBODY = 65534

# Runs as another user: tries to read the segment directly, and to attach with the library.
PROBE = r"""
import json, mmap, os, sys
from shm_comm import Subscriber, SHMConnectionError   # import first: the venv is root's
path, channel, uid, gid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)                                        # drop privileges for good
out = {"uid": os.getuid()}
try:
    fd = os.open(path, os.O_RDONLY)
    out["read"] = bytes(mmap.mmap(fd, 4096, access=mmap.ACCESS_READ)[:8]).hex()
except PermissionError as exc:
    out["read"] = "denied"
try:
    sub = Subscriber(channel, timeout_connect=1.0)
    out["attach"] = "ok"
    out["recv"] = sub.recv(timeout=5.0)
    sub.close()
except SHMConnectionError as exc:
    out["attach"] = "refused: " + str(exc)
print(json.dumps(out))
"""


def probe_command(channel: str, uid: int, gid: int) -> list[str]:
    return [sys.executable, "-c", PROBE, f"/dev/shm/{pub_segment_name(channel)}", channel,
            str(uid), str(gid)]


def run_as(uid: int, gid: int, channel: str) -> dict[str, object]:
    proc = subprocess.run(probe_command(channel, uid, gid), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_other_user_can_neither_read_nor_attach(channel: str) -> None:
    with Publisher(channel) as pub:
        mode = stat.S_IMODE(os.stat(f"/dev/shm/{pub.segment_name}").st_mode)
        assert mode == 0o600
        pub.send("secret")
        result = run_as(NOBODY, NOBODY, channel)
    assert result["uid"] == NOBODY
    assert result["read"] == "denied"
    attach = str(result["attach"])
    assert attach.startswith("refused"), attach
    assert "permission" in attach, attach


def test_group_sharing_is_explicit(channel: str) -> None:
    """permissions=0o660 lets a process of the owner's group subscribe; the default does not."""
    gid = os.getegid()
    with Publisher(channel, permissions=0o660) as pub:
        assert stat.S_IMODE(os.stat(f"/dev/shm/{pub.segment_name}").st_mode) == 0o660
        child = subprocess.Popen(probe_command(channel, NOBODY, gid), stdout=subprocess.PIPE,
                                 text=True)
        try:
            # The child attaches, then waits for one message; send once it is there.
            attached = poll_until(
                lambda: pub.stats()["subscribers"] or child.poll() is not None,
                timeout=30, interval=0.002)
            assert attached, "child never attached"
            assert child.poll() is None, "child exited before receiving"
            pub.send("for the group")
            out, _ = child.communicate(timeout=30)
        finally:
            child.kill()
            child.wait()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["attach"] == "ok"
    assert result["recv"] == "for the group"
    assert result["read"] != "denied"


def test_default_refuses_the_group_too(channel: str) -> None:
    with Publisher(channel):
        result = run_as(NOBODY, os.getegid(), channel)
    assert result["read"] == "denied"
    assert str(result["attach"]).startswith("refused")


def test_wider_permissions_are_refused(channel: str) -> None:
    with pytest.raises(ValueError, match="permissions"):
        Publisher(channel, permissions=0o666)
    # Nothing was created.
    assert not os.path.exists(f"/dev/shm/{pub_segment_name(channel)}")
    with pytest.raises(SHMConnectionError, match="no publisher"):
        Subscriber(channel, timeout_connect=0.0)
