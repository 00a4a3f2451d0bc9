"""Whose segments a channel end accepts (shm_comm/trust.py, docs/security.md).

The rule in one process first; then two real users on this machine (CI runs as root: a child
imports shm_comm, then drops to ``nobody`` or ``daemon`` with setgid/setuid): a squatter that
creates a channel's segment first, explicit sharing between two users, a squatter taking the
name while a subscriber waits for its restarted publisher, and a symbolic link or a FIFO at a
channel's name.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from helpers import spawn_python, stop, wait_for_line

from shm_comm import (
    Publisher,
    Puller,
    Pusher,
    Replier,
    Requester,
    SHMConnectionError,
    SHMUntrustedSegmentError,
    Subscriber,
    channel_info,
    list_channels,
    remove_stale,
)
from shm_comm.trust import ENV_TRUSTED_USERS, check_owner, trusted_uids
from shm_comm.utils import pub_segment_name, pull_segment_name, rep_segment_name

SHM = Path("/dev/shm")
NOBODY = 65534  # the squatter, or the sharing publisher
DAEMON = 1  # the victim, or the subscriber it shares with
NOGROUP = 65534

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to run child processes under other uids (CI runs as root)")


# --- the rule, in one process ----------------------------------------------------------------

def fake_stat(uid: int, mode: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, 0, 4096, 0, 0, 0))


@pytest.mark.parametrize(("uid", "mode", "accepted"), [
    (os.geteuid(), stat.S_IFREG | 0o600, True),
    (os.geteuid(), stat.S_IFREG | 0o660, True),     # the owner shares with its group
    (0, stat.S_IFREG | 0o640, True),                # root can change this process anyway
    (os.geteuid(), stat.S_IFREG | 0o666, False),    # anyone may write it
    (os.geteuid(), stat.S_IFREG | 0o602, False),
    (NOBODY + 7, stat.S_IFREG | 0o600, False),      # another user
    (os.geteuid(), stat.S_IFIFO | 0o600, False),
    (os.geteuid(), stat.S_IFDIR | 0o700, False),
])
def test_the_ownership_rule(uid: int, mode: int, accepted: bool) -> None:
    st = fake_stat(uid, mode)
    if accepted:
        check_owner("shmcp_x", "x", st, trusted_uids())
    else:
        with pytest.raises(SHMUntrustedSegmentError, match="refused"):
            check_owner("shmcp_x", "x", st, trusted_uids())


def test_trusted_users_by_name_uid_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TRUSTED_USERS, raising=False)
    assert trusted_uids() == {os.geteuid(), 0}
    assert trusted_uids(["nobody", 4242, "4343"]) == {os.geteuid(), 0, NOBODY, 4242, 4343}
    monkeypatch.setenv(ENV_TRUSTED_USERS, "daemon, 777")
    assert trusted_uids() == {os.geteuid(), 0, DAEMON, 777}
    with pytest.raises(ValueError, match="no user named 'no-such-user-here'"):
        trusted_uids(["no-such-user-here"])
    with pytest.raises(TypeError, match="list of user names"):
        trusted_uids("nobody")  # type: ignore[arg-type]
    monkeypatch.setenv(ENV_TRUSTED_USERS, "no-such-user-here")
    with pytest.raises(ValueError, match=ENV_TRUSTED_USERS):
        trusted_uids()


def test_refused_message_names_the_owner_and_the_way_out() -> None:
    with pytest.raises(SHMUntrustedSegmentError) as info:
        check_owner("shmcp_x", "x", fake_stat(NOBODY, stat.S_IFREG | 0o666), trusted_uids())
    message = str(info.value)
    assert "nobody (uid 65534)" in message
    assert "trusted_users=['nobody']" in message
    assert f"{ENV_TRUSTED_USERS}=nobody" in message
    assert "/dev/shm/shmcp_x" in message
    assert isinstance(info.value, SHMConnectionError)


def test_a_world_writable_segment_of_our_own_is_refused(channel: str) -> None:
    with Publisher(channel) as pub:
        path = SHM / pub.segment_name
        path.chmod(0o666)
        with pytest.raises(SHMUntrustedSegmentError, match="writable by every user"):
            Subscriber(channel, timeout_connect=1)
        path.chmod(0o600)
        with Subscriber(channel, timeout_connect=1) as sub:
            pub.send("after")
            assert sub.recv(timeout=5) == "after"


def test_a_symbolic_link_at_the_name_is_never_followed(channel: str) -> None:
    """A link at a channel's name, even to one of our own segments, is refused by everyone
    who opens it (O_NOFOLLOW), publisher included."""
    target = f"{channel}_target"
    link = SHM / pub_segment_name(channel)
    with Publisher(target) as pub:
        link.symlink_to(SHM / pub.segment_name)
        try:
            with pytest.raises(SHMUntrustedSegmentError, match="is a symbolic link"):
                Subscriber(channel, timeout_connect=1)
            with pytest.raises(SHMUntrustedSegmentError, match="is a symbolic link"):
                Subscriber(channel, timeout_connect=1, observer=True)
            with pytest.raises(SHMUntrustedSegmentError, match="is a symbolic link"):
                Publisher(channel)
            assert link.is_symlink()
        finally:
            link.unlink()


def test_a_fifo_at_the_name_neither_blocks_nor_is_read(channel: str) -> None:
    """Opening a FIFO read-only would block until a writer came: an observer must not hang."""
    fifo = SHM / pub_segment_name(channel)
    os.mkfifo(fifo, 0o600)
    try:
        with pytest.raises(SHMUntrustedSegmentError, match="is a FIFO"):
            Subscriber(channel, timeout_connect=1, observer=True)
        with pytest.raises(SHMUntrustedSegmentError, match="is a FIFO"):
            Subscriber(channel, timeout_connect=1)
        with pytest.raises(SHMUntrustedSegmentError, match="is a FIFO"):
            Publisher(channel)
    finally:
        fifo.unlink()


# --- two real users ----------------------------------------------------------------------------

PRELUDE = """\
import json, os, pickle, select, sys, time
import shm_comm
from shm_comm import *
os.setgroups({groups}); os.setgid({gid}); os.setuid({uid})   # imported first, now drop
"""


def as_user(uid: int, gid: int, code: str, *args: str, groups: Sequence[int] = ()
            ) -> subprocess.Popen[str]:
    """``python -c code args`` under ``uid``/``gid`` (stdin is a pipe: closing it says stop)."""
    prelude = PRELUDE.format(uid=uid, gid=gid, groups=list(groups))
    return spawn_python(prelude + textwrap.dedent(code), *args, stdin=subprocess.PIPE)


def finish(proc: subprocess.Popen[str]) -> None:
    """Tell a process started by :func:`as_user` to stop (close its stdin); wait for it."""
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(15)
    finally:
        stop(proc)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every uid may write to (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="shm_comm_trust_"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def cleanup_as_root() -> Iterator[list[str]]:
    """Segment names to remove at the end (another uid's file in /dev/shm: root only)."""
    names: list[str] = []
    yield names
    for name in names:
        (SHM / name).unlink(missing_ok=True)


# Creates the channel's segments before their owner does, mode 0666, with messages whose
# unpickling would create a marker file. Keeps publishing until stdin closes.
SQUATTER = """
channel, marker = sys.argv[1], sys.argv[2]

class Payload:
    def __reduce__(self):
        return (open, (marker, "w"))   # unpickling this creates the marker file

pub = Publisher(channel)
rep = Replier(channel)
push = Pusher(channel, num_slots=4)
for end in (pub, rep, push):
    os.chmod("/dev/shm/" + end.segment_name, 0o666)
for _ in range(4):
    push.send(Payload())
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0.005)[0]:
    pub.send(Payload())
pub.close(); rep.close(); push.close()
print("stopped", flush=True)
"""

VICTIM = """
channel, mode = sys.argv[1], sys.argv[2]
trust = {"trusted_users": ["nobody"]} if mode == "trust" else {}
try:
    sub = Subscriber(channel, timeout_connect=5, **trust)
except SHMUntrustedSegmentError as exc:
    print("refused", exc, flush=True)
else:
    print("attached", flush=True)
    print("received", repr(sub.recv(timeout=5)), flush=True)
"""


@needs_root
def test_a_squatter_is_refused_unread_by_every_end(channel: str, shared_dir: Path,
                                                   cleanup_as_root: list[str]) -> None:
    marker = shared_dir / "unpickled"
    cleanup_as_root += [pub_segment_name(channel), rep_segment_name(channel),
                        pull_segment_name(channel)]
    squatter = as_user(NOBODY, NOGROUP, SQUATTER, channel, str(marker))
    try:
        wait_for_line(squatter, "ready")
        # Another unprivileged user, as in the issue: refused, nothing unpickled.
        victim = as_user(DAEMON, DAEMON, VICTIM, channel, "default")
        line = wait_for_line(victim, "refused")
        stop(victim)
        assert "belongs to user nobody (uid 65534)" in line
        assert "trusted_users=['nobody']" in line
        # Root, which could open even a 0600 file, refuses too; so does every other end.
        for make in (lambda: Subscriber(channel, timeout_connect=1),
                     lambda: Subscriber(channel, timeout_connect=1, observer=True),
                     lambda: Requester(channel, timeout_connect=1),
                     lambda: Puller(channel, timeout_connect=1),
                     lambda: channel_info(channel)):
            with pytest.raises(SHMUntrustedSegmentError, match=r"nobody \(uid 65534\)"):
                make()
        # The real owner is told who holds the name, not that it has a live publisher.
        for create in (lambda: Publisher(channel), lambda: Replier(channel),
                       lambda: Pusher(channel)):
            with pytest.raises(SHMUntrustedSegmentError) as refused:
                create()
            assert "is taken by a segment of user nobody (uid 65534), not by you" in str(
                refused.value)
            assert "live publisher" not in str(refused.value)
        assert not marker.exists(), "a refused segment's message was unpickled"
        # The control: a user who trusts the squatter does run its code (pickle is code
        # execution for whoever can write the segment), so the payload above is real.
        # (Trusted or not, a segment writable by all is refused: share it with a group.)
        victim = as_user(DAEMON, DAEMON, VICTIM, channel, "trust")
        assert "writable by every user" in wait_for_line(victim, "refused")
        stop(victim)
        (SHM / pub_segment_name(channel)).chmod(0o660)
        victim = as_user(DAEMON, DAEMON, VICTIM, channel, "trust", groups=[NOGROUP])
        wait_for_line(victim, "attached")
        assert "received <_io.TextIOWrapper" in wait_for_line(victim, "received")
        stop(victim)
        assert marker.exists()
        assert os.stat(marker).st_uid == DAEMON
    finally:
        finish(squatter)


SHARING_PUBLISHER = """
pub = Publisher(sys.argv[1], permissions=0o660, serialization="msgpack")
print("ready", flush=True)
n = 0
while not select.select([sys.stdin], [], [], 0.005)[0]:
    pub.send({"n": n, "uid": os.getuid()}); n += 1
pub.close()
"""

SHARING_SUBSCRIBER = """
channel, mode = sys.argv[1], sys.argv[2]
trust = {"trusted_users": ["nobody"]} if mode == "trust" else {}
try:
    sub = Subscriber(channel, timeout_connect=5, serialization="msgpack", **trust)
except SHMUntrustedSegmentError as exc:
    print("refused", exc, flush=True)
else:
    got = sub.recv(timeout=5)
    print("received", json.dumps(got), flush=True)
    sub.close()
"""


@needs_root
def test_two_users_share_a_channel_explicitly(channel: str,
                                              cleanup_as_root: list[str]) -> None:
    """nobody publishes with permissions=0o660 for its group; daemon, in that group, receives
    once it names nobody in trusted_users, and is refused without it."""
    cleanup_as_root.append(pub_segment_name(channel))
    publisher = as_user(NOBODY, NOGROUP, SHARING_PUBLISHER, channel)
    try:
        wait_for_line(publisher, "ready")
        mode = (SHM / pub_segment_name(channel)).stat()
        assert (mode.st_uid, mode.st_gid, stat.S_IMODE(mode.st_mode)) == (NOBODY, NOGROUP,
                                                                          0o660)
        shy = as_user(DAEMON, DAEMON, SHARING_SUBSCRIBER, channel, "default", groups=[NOGROUP])
        assert "belongs to user nobody (uid 65534)" in wait_for_line(shy, "refused")
        stop(shy)
        sharing = as_user(DAEMON, DAEMON, SHARING_SUBSCRIBER, channel, "trust",
                          groups=[NOGROUP])
        line = wait_for_line(sharing, "received")
        stop(sharing)
        assert f'"uid": {NOBODY}' in line
    finally:
        finish(publisher)
    assert not (SHM / pub_segment_name(channel)).exists()


ROOT_PUBLISHER = """
import sys, select
from shm_comm import Publisher, Replier
pub = Publisher(sys.argv[1])
rep = Replier(sys.argv[1])
print("ready", flush=True)
while True:
    pub.send(sys.argv[2])
    select.select([], [], [], 0.005)
"""


@needs_root
def test_reconnect_refuses_a_squatter_that_took_the_name(channel: str, shared_dir: Path,
                                                         cleanup_as_root: list[str]) -> None:
    """The publisher (and a replier) die and their stale segments are cleaned up; before
    they restart, another user creates the channels. The waiting subscriber refuses the
    squatter's segment (an error from recv, nothing unpickled) and moves on to the real
    publisher when it comes back; a requester refuses the squatter's replier."""
    marker = shared_dir / "unpickled"
    cleanup_as_root += [pub_segment_name(channel), rep_segment_name(channel),
                        pull_segment_name(channel)]
    first = spawn_python(ROOT_PUBLISHER, channel, "first")
    try:
        wait_for_line(first, "ready")
        sub = Subscriber(channel, timeout_connect=5)
        req = Requester(channel, timeout_connect=5)
        assert sub.recv(timeout=5) == "first"
    finally:
        first.send_signal(signal.SIGKILL)
        stop(first)
    with sub, req:
        assert sorted(remove_stale(pattern=channel)) == [pub_segment_name(channel),
                                                         rep_segment_name(channel)]
        squatter = as_user(NOBODY, NOGROUP, SQUATTER, channel, str(marker))
        try:
            wait_for_line(squatter, "ready")
            left = []  # what the first publisher left in its ring comes first

            def drain() -> None:
                for _ in range(1000):
                    left.append(sub.recv(timeout=5))

            with pytest.raises(SHMUntrustedSegmentError, match=r"nobody \(uid 65534\)"):
                drain()
            assert set(left) <= {"first"}
            assert sub.stats()["publisher_alive"] is False
            assert req.stats()["replier_alive"] is False
            with pytest.raises(SHMUntrustedSegmentError, match=r"nobody \(uid 65534\)"):
                req.send("to the real replier only")
            assert not marker.exists()
        finally:
            finish(squatter)
        with Publisher(channel) as again:
            again.send("second")
            assert sub.recv(timeout=5) == "second"
            assert sub.stats()["reconnects"] == 1
    assert not marker.exists()


@needs_root
def test_tools_list_but_never_clean_another_users_segment(channel: str,
                                                          cleanup_as_root: list[str]) -> None:
    """A stale segment of another user is listed with its owner, and left alone by
    remove_stale even though root could remove it."""
    cleanup_as_root.append(pub_segment_name(channel))
    leaver = as_user(NOBODY, NOGROUP, "p = Publisher(sys.argv[1]); p.send(1); os._exit(0)",
                     channel)
    leaver.wait(30)
    stop(leaver)
    assert (SHM / pub_segment_name(channel)).exists()
    [info] = [s for s in list_channels() if s.get("name") == channel]
    assert (info["owner"], info["owner_uid"], info["trusted"]) == ("nobody", NOBODY, False)
    assert info["stale"]
    assert remove_stale(pattern=channel) == []
    assert (SHM / pub_segment_name(channel)).exists()
