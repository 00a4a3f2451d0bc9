"""Record locks: how subscribers, requesters and pullers show they live (docs/design.md).

Each holder keeps an open-file-description lock on its row of the segment file. These tests
pin down what that lock must survive and what must end it: it is independent of the
publisher's flock and of the holder's other descriptors of the same file (where POSIX record
locks would vanish), it outlives a fork child's exit and dies with the holder even while a
fork child lives on. The pid fallback (macOS) is exercised too. Namespaces and a missing
/proc are in test_containers.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import spawn_python, stop, wait_for_line

from shm_comm import Publisher, Subscriber, ring
from shm_comm import layout as L
from shm_comm._backend import backend
from shm_comm.segment import RecordLocks
from shm_comm.utils import poll_until, pub_segment_name

needs_locks = pytest.mark.skipif(not backend.RECORD_LOCKS,
                                 reason="OFD record locks need Linux >= 3.15")

CRASHING_SUBSCRIBER = """
import os, sys
from shm_comm import Subscriber
sub = Subscriber(sys.argv[1], timeout_connect=10)
print("ready", flush=True)
sys.stdin.readline()
os._exit(1)   # no clean-up: the row stays behind, as after a crash
"""


def crashed_subscriber(channel: str) -> None:
    proc = spawn_python(CRASHING_SUBSCRIBER, channel, stdin=subprocess.PIPE)
    try:
        wait_for_line(proc, "ready")
        assert proc.stdin is not None
        proc.stdin.write("die\n")
        proc.stdin.flush()
        assert proc.wait(10) == 1
    finally:
        stop(proc)


@needs_locks
def test_holders_lock_their_rows_and_reapers_free_only_dead_ones(channel: str) -> None:
    """The flock of the publisher and the record locks do not interact: a reap takes a dead
    row's lock through the publisher's own (flocked) descriptor, and the publisher still
    counts as alive."""
    with Publisher(channel) as pub, Subscriber(channel) as sub:
        segment = pub._segment
        assert isinstance(segment.liveness, RecordLocks)
        row = sub._reader.row
        assert row is not None
        record = segment.layout.record(row)
        assert backend.range_locked(segment._fd, record, L.RECORD_SIZE)
        crashed_subscriber(channel)
        dead = [r for r in ring.read_records(segment.atom, segment.layout) if r.row != row]
        assert len(dead) == 1
        assert not segment.liveness.alive(dead[0].row, dead[0].pid, dead[0].token)
        assert pub.stats()["subscribers"] == 1
        assert sub.publisher_alive  # its flock is untouched by the row locks taken and freed
        assert backend.is_owner_alive(sub._segment._fd)
        assert segment.liveness.alive(row, os.getpid(), 0)
        assert not backend.range_locked(segment._fd, segment.layout.record(dead[0].row),
                                        L.RECORD_SIZE)
        pub.send("still served")
        assert sub.recv(timeout=5) == "still served"


@needs_locks
def test_closing_one_end_leaves_the_other_ends_of_the_process_alive(channel: str) -> None:
    """POSIX record locks would all go when a process closes any descriptor of the file;
    open-file-description locks belong to each end's own open."""
    with Publisher(channel) as pub:
        first, second = Subscriber(channel), Subscriber(channel)
        first.close()
        assert pub.stats()["subscribers"] == 1
        pub.send("for the second")
        assert second.recv(timeout=5) == "for the second"
        second.close()
        assert pub.stats()["subscribers"] == 0


FORKING_SUBSCRIBER = """
import os, sys, time
from shm_comm import Subscriber
sub = Subscriber(sys.argv[1], timeout_connect=10)
brief = os.fork()
if brief == 0:
    os._exit(0)          # a fork child that exits at once
os.waitpid(brief, 0)
r, w = os.pipe()
lasting = os.fork()
if lasting == 0:
    os.write(w, b"closed" if sub.closed else b"open")
    time.sleep(60)       # outlives its parent, holding the parent's mapping
    os._exit(0)
print("ready", lasting, os.read(r, 16).decode(), flush=True)
sys.stdin.readline()
os._exit(1)              # the subscriber crashes; its fork child lives on
"""


@needs_locks
def test_a_row_lock_outlives_fork_children_and_dies_with_its_holder(channel: str) -> None:
    with Publisher(channel) as pub:
        proc = spawn_python(FORKING_SUBSCRIBER, channel, stdin=subprocess.PIPE)
        child = 0
        try:
            _, pid, state = wait_for_line(proc, "ready").split()
            child = int(pid)
            assert state == "closed"  # the fork child let go of the subscriber
            assert pub.stats()["subscribers"] == 1  # a child's exit did not drop the lock
            assert proc.stdin is not None
            proc.stdin.write("die\n")
            proc.stdin.flush()
            assert proc.wait(10) == 1
            os.kill(child, 0)  # still alive, still mapping the segment
            assert pub.stats()["subscribers"] == 0
        finally:
            if child:
                os.kill(child, signal.SIGKILL)
            stop(proc)


def test_the_pid_fallback_where_there_are_no_record_locks(
        channel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS has no OFD locks: rows are judged by pid (and start time where /proc has it)."""
    monkeypatch.setattr(backend, "RECORD_LOCKS", False)
    with Publisher(channel) as pub, Subscriber(channel) as sub:
        assert isinstance(pub._segment.liveness, ring.PidLiveness)
        crashed_subscriber(channel)
        assert poll_until(lambda: pub.stats()["subscribers"] == 1, timeout=5)
        pub.send("pid fallback")
        assert sub.recv(timeout=5) == "pid fallback"


TEMP_CREATOR = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # as create_exclusive does, first thing
print("ready", flush=True)
sys.stdin.readline()
"""


def test_half_built_segments_are_judged_by_their_creators_lock(channel: str) -> None:
    """A publisher building its segment under a temporary name may run in another pid
    namespace, where the pid in the name means nothing: its flock says it is alive."""
    prefix = pub_segment_name(channel)
    temp = Path(backend.display_path(f".{prefix}.4194302.0badc0de.tmp"))
    proc = spawn_python(TEMP_CREATOR, str(temp), stdin=subprocess.PIPE)
    try:
        wait_for_line(proc, "ready")
        assert not backend.pid_alive(4194302)
        assert backend.remove_dead_temporaries(prefix) == []
        assert temp.exists()
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(10) == 0
        assert backend.remove_dead_temporaries(prefix) == [temp.name]
        assert not temp.exists()
    finally:
        stop(proc)
        temp.unlink(missing_ok=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's file")
def test_another_users_half_built_segment_is_left_alone(channel: str) -> None:
    temp = Path(backend.display_path(f".{pub_segment_name(channel)}.4194302.0badc0de.tmp"))
    temp.write_bytes(b"")
    os.chown(temp, 65534, 65534)
    try:
        assert backend.remove_dead_temporaries(pub_segment_name(channel)) == []
        assert temp.exists()
    finally:
        temp.unlink()
