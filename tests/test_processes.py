"""Real separate processes: publishers and subscribers in other interpreters.

Processes are synchronised on printed lines or on conditions polled with a deadline, never on
sleeps. Every process started here is killed (if still running) and reaped in a finally block.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import Spawn

from shm_comm import (
    ArrayPublisher,
    ArraySubscriber,
    Publisher,
    Subscriber,
    channel_info,
    force_unlink,
    remove_stale,
    wait,
)
from shm_comm._backend import backend
from shm_comm.naming import segment_name
from shm_comm.utils import poll_until, pub_segment_name

SHM = Path("/dev/shm")

# A publisher driven over stdin: "send N", "stats", "quit".
CONTROLLED_PUBLISHER = r"""
import json, sys
from shm_comm import Publisher
pub = Publisher(sys.argv[1], **json.loads(sys.argv[2]))
print("READY", pub.segment_name, flush=True)
n = 0
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "send":
        for _ in range(int(cmd[1])):
            pub.send(n)
            n += 1
        print("SENT", n, flush=True)
    elif cmd[0] == "stats":
        print("STATS", json.dumps(pub.stats()), flush=True)
    elif cmd[0] == "quit":
        break
pub.close()
print("CLOSED", flush=True)
"""

# Receives `count` pickled {"i": i, ...} messages in order, then reports.
ORDERED_SUBSCRIBER = r"""
import sys
from shm_comm import Subscriber
channel, count = sys.argv[1], int(sys.argv[2])
with Subscriber(channel, timeout_connect=30) as sub:
    print("ATTACHED", flush=True)
    for expect in range(count):
        msg = sub.recv(timeout=30)
        if msg is None or msg["i"] != expect or msg["pad"] != "x" * (expect % 50):
            print("BAD", expect, repr(msg)[:200], flush=True)
            sys.exit(1)
    st = sub.stats()
    print("DONE", st["received"], st["dropped"], flush=True)
"""


def seg_path(channel: str) -> Path:
    return SHM / segment_name("pubsub", channel)


# --------------------------------------------------------------------------- delivery


def test_publisher_process_and_several_subscriber_processes(channel: str, spawn: Spawn) -> None:
    count, nsubs = 500, 3
    publisher = (
        "import sys\n"
        "from shm_comm import Publisher\n"
        "from shm_comm.utils import poll_until\n"
        "channel, nsubs, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
        "with Publisher(channel, num_slots=16, slot_size=256) as pub:\n"
        "    print('READY', flush=True)\n"
        "    if not poll_until(lambda: pub.stats()['subscribers'] >= nsubs, timeout=30):\n"
        "        sys.exit('subscribers did not come')\n"
        "    for i in range(count):\n"
        "        if not pub.send({'i': i, 'pad': 'x' * (i % 50)}, block=True, timeout=30):\n"
        "            sys.exit(f'blocked at {i}')\n"
        "    print('SENT', pub.stats()['msg_count'], pub.stats()['drop_count'], flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    pub = spawn(publisher, channel, str(nsubs), str(count), stdin=True)
    pub.wait_for("READY")
    subs = [spawn(ORDERED_SUBSCRIBER, channel, str(count)) for _ in range(nsubs)]
    for sub in subs:
        sub.wait_for("ATTACHED")
    assert pub.wait_for("SENT", timeout=60) == f"SENT {count} 0"
    for sub in subs:
        assert sub.wait_for("DONE", timeout=60) == f"DONE {count} 0"
        sub.exit_ok()
    pub.tell("quit")
    pub.exit_ok()
    assert not seg_path(channel).exists()


def test_late_join_starts_at_head(channel: str, spawn: Spawn) -> None:
    pub = spawn(CONTROLLED_PUBLISHER, channel, "{}", stdin=True)
    pub.wait_for("READY")
    pub.tell("send 10")
    assert pub.wait_for("SENT") == "SENT 10"
    sub = spawn(
        "import sys\n"
        "from shm_comm import Subscriber\n"
        "with Subscriber(sys.argv[1]) as sub:\n"
        "    print('ATTACHED', sub.stats()['cursor'], flush=True)\n"
        "    print('GOT', sub.recv(timeout=30), sub.recv(timeout=30), flush=True)\n"
        "    print('DROPPED', sub.stats()['dropped'], flush=True)\n",
        channel)
    assert sub.wait_for("ATTACHED") == "ATTACHED 10"
    pub.tell("send 2")
    assert sub.wait_for("GOT") == "GOT 10 11"
    assert sub.wait_for("DROPPED") == "DROPPED 0"
    sub.exit_ok()
    pub.tell("quit")
    pub.exit_ok()


# One interpreter imports shm_comm once and forks `n` subscriber processes (much faster to
# start on a small machine than `n` interpreters; each child attaches after the fork).
FORKED_SUBSCRIBERS = r"""
import os, sys
import shm_comm
channel, count, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
children = []
for k in range(n):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with shm_comm.Subscriber(channel, timeout_connect=30) as sub:
                os.write(1, f"ATTACHED {k} {os.getpid()}\n".encode())  # one write per line
                for expect in range(count):
                    msg = sub.recv(timeout=30)
                    if msg is None or msg["i"] != expect or msg["pad"] != "x" * (expect % 50):
                        os.write(1, f"BAD {k} {expect} {repr(msg)[:100]}\n".encode())
                        break
                else:
                    st = sub.stats()
                    os.write(1, f"DONE {k} {st['received']} {st['dropped']}\n".encode())
                    code = 0
        except BaseException as exc:
            os.write(1, f"ERROR {k} {exc!r}\n".encode())
        os._exit(code)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
print("EXIT", *codes, flush=True)
"""


def test_sixteen_subscriber_processes_each_receive_everything_in_order(
        channel: str, spawn: Spawn) -> None:
    count, nsubs = 300, 16
    with Publisher(channel, num_slots=32, slot_size=256, max_subscribers=nsubs) as pub:
        launcher = spawn(FORKED_SUBSCRIBERS, channel, str(count), str(nsubs))
        pids = set()
        for _ in range(nsubs):
            line = launcher.wait_for("", timeout=60)
            assert line.startswith("ATTACHED"), line
            pids.add(int(line.split()[2]))
        assert len(pids) == nsubs
        assert launcher.pid not in pids
        assert pub.stats()["subscribers"] == nsubs
        for i in range(count):
            assert pub.send({"i": i, "pad": "x" * (i % 50)}, block=True, timeout=30), i
        done = sorted(launcher.wait_for("", timeout=60) for _ in range(nsubs))
        assert done == sorted(f"DONE {k} {count} 0" for k in range(nsubs))
        assert launcher.wait_for("EXIT", timeout=30) == "EXIT" + " 0" * nsubs
        launcher.exit_ok()
        stats = pub.stats()
        assert (stats["msg_count"], stats["drop_count"], stats["subscribers"]) == (count, 0, 0)


@pytest.mark.slow
def test_sixteen_subscriber_interpreters_each_receive_everything_in_order(
        channel: str, spawn: Spawn) -> None:
    count, nsubs = 300, 16
    with Publisher(channel, num_slots=32, slot_size=256, max_subscribers=nsubs) as pub:
        subs = [spawn(ORDERED_SUBSCRIBER, channel, str(count)) for _ in range(nsubs)]
        for sub in subs:
            sub.wait_for("ATTACHED", timeout=60)
        assert pub.stats()["subscribers"] == nsubs
        for i in range(count):
            assert pub.send({"i": i, "pad": "x" * (i % 50)}, block=True, timeout=30), i
        for sub in subs:
            assert sub.wait_for("DONE", timeout=60) == f"DONE {count} 0"
        for sub in subs:
            sub.exit_ok()
        stats = pub.stats()
        assert (stats["msg_count"], stats["drop_count"], stats["subscribers"]) == (count, 0, 0)


SLOW_RAW_SUBSCRIBER = r"""
import struct, sys, time
from shm_comm import Subscriber
channel, last, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with Subscriber(channel, timeout_connect=30) as sub:
    print("ATTACHED", flush=True)
    seqs = []
    while True:
        data = sub.recv_bytes(timeout=30)
        if data is None:
            sys.exit("timed out")
        words = struct.unpack(f"<{len(data) // 8}Q", data)
        if len(set(words)) != 1 or len(words) != 4 + words[0] % 13:
            sys.exit(f"torn or wrong message: {words}")
        seqs.append(words[0])
        if words[0] == last:
            break
        if delay:
            time.sleep(delay)  # being slow on purpose, not synchronising
    st = sub.stats()
    print("DONE", st["received"], st["dropped"], flush=True)
    print("SEQS", ",".join(map(str, seqs)), flush=True)
    sys.stdin.readline()
"""


def raw_message(i: int) -> bytes:
    return struct.pack("<Q", i) * (4 + i % 13)


def run_wraparound(channel: str, spawn: Spawn, count: int, num_slots: int, delay: str) -> None:
    with Publisher(channel, num_slots=num_slots, slot_size=256) as pub:
        sub = spawn(SLOW_RAW_SUBSCRIBER, channel, str(count - 1), delay,
                           stdin=True)
        sub.wait_for("ATTACHED")
        for i in range(count):
            assert pub.send_bytes(raw_message(i)) is True
        done = sub.wait_for("DONE", timeout=60).split()
        received, dropped = int(done[1]), int(done[2])
        seqs = [int(s) for s in sub.wait_for("SEQS").split()[1].split(",")]
        stats = pub.stats()
        assert stats["msg_count"] == count
        assert count >= 20 * num_slots
        assert received + stats["drop_count"] == count
        assert dropped == stats["drop_count"]
        assert received == len(seqs)
        assert seqs == sorted(set(seqs)), "out of order or duplicated"
        assert seqs[-1] == count - 1
        assert stats["drop_count"] > 0, "the subscriber was meant to be too slow"
        print(f"\nwrap-around: {count} sent over {num_slots} slots, {received} received, "
              f"{stats['drop_count']} dropped (subscriber delay {delay} s)")
        sub.tell("bye")
        sub.exit_ok()
        # After it left, its losses are still counted.
        assert pub.stats()["drop_count"] == dropped
        assert pub.stats()["subscribers"] == 0


@pytest.mark.parametrize("delay", ["0", "0.0002"])
def test_wraparound_with_slow_subscriber_exact_accounting(channel: str, spawn: Spawn,
                                                          delay: str) -> None:
    run_wraparound(channel, spawn, count=20_000, num_slots=8, delay=delay)


@pytest.mark.slow
def test_wraparound_with_slow_subscriber_long(channel: str, spawn: Spawn) -> None:
    run_wraparound(channel, spawn, count=1_000_000, num_slots=16, delay="0")


BURST_SUBSCRIBER = r"""
import sys
from shm_comm import Subscriber
channel, count, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Subscriber(channel, timeout_connect=30) as sub:
    print("ATTACHED", flush=True)
    for expect in range(count):
        got = sub.recv(timeout=30)
        if got != expect:
            sys.exit(f"expected {expect}, got {got}")
        if (expect + 1) % every == 0:
            print("GOT", expect + 1, flush=True)
    st = sub.stats()
    print("DONE", st["received"], st["dropped"], flush=True)
"""

STALLED_SUBSCRIBER = r"""
import sys
from shm_comm import Subscriber
with Subscriber(sys.argv[1], timeout_connect=30) as sub:
    print("ATTACHED", flush=True)
    sys.stdin.readline()  # stalled until told
    got = []
    while (m := sub.recv(timeout=0)) is not None:
        got.append(m)
    st = sub.stats()
    print("DONE", st["received"], st["dropped"], got[0], got[-1], flush=True)
"""


def test_stalled_subscriber_costs_a_fast_one_nothing(channel: str, spawn: Spawn) -> None:
    num_slots, burst, bursts = 32, 16, 80
    count = burst * bursts
    with Publisher(channel, num_slots=num_slots) as pub:
        stalled = spawn(STALLED_SUBSCRIBER, channel, stdin=True)
        fast = spawn(BURST_SUBSCRIBER, channel, str(count), str(burst))
        stalled.wait_for("ATTACHED")
        fast.wait_for("ATTACHED")
        assert pub.stats()["subscribers"] == 2
        sent = 0
        for _ in range(bursts):
            for _ in range(burst):
                assert pub.send(sent) is True  # never blocks, whoever is stalled
                sent += 1
            assert fast.wait_for("GOT", timeout=30) == f"GOT {sent}"
        assert fast.wait_for("DONE") == f"DONE {count} 0"
        fast.exit_ok()
        # Only the stalled subscriber lost messages, and drop_count already knows.
        assert pub.stats()["drop_count"] == count - num_slots
        stalled.tell("go")
        assert stalled.wait_for("DONE") == (
            f"DONE {num_slots} {count - num_slots} {count - num_slots} {count - 1}")
        stalled.exit_ok()
        assert pub.stats()["drop_count"] == count - num_slots


# --------------------------------------------------------------------------- lifetimes


@pytest.mark.parametrize("how", ["close", "no close", "os._exit", "resource tracker"])
def test_subscriber_exit_does_not_unlink_the_segment(channel: str, spawn: Spawn,
                                                     how: str) -> None:
    code = (
        "import os, sys\n"
        "from shm_comm import Subscriber\n"
        "how = sys.argv[2]\n"
        "if how == 'resource tracker':\n"
        "    from multiprocessing import resource_tracker\n"
        "    resource_tracker.ensure_running()\n"
        "sub = Subscriber(sys.argv[1], timeout_connect=30)\n"
        "print('ATTACHED', flush=True)\n"
        "print('GOT', sub.recv(timeout=30), flush=True)\n"
        "if how == 'close':\n"
        "    sub.close()\n"
        "if how == 'os._exit':\n"
        "    os._exit(0)\n"
    )
    with Publisher(channel) as pub:
        inode = seg_path(channel).stat().st_ino
        sub = spawn(code, channel, how)
        sub.wait_for("ATTACHED")
        pub.send("hi")
        assert sub.wait_for("GOT") == "GOT hi"
        sub.exit_ok()
        err = sub.stderr()
        assert "leaked" not in err
        assert "resource_tracker" not in err
        assert err.strip() == ""
        assert seg_path(channel).exists()
        assert seg_path(channel).stat().st_ino == inode
        assert poll_until(lambda: pub.stats()["subscribers"] == 0, timeout=5)
        with Subscriber(channel) as again:
            pub.send("still here")
            assert again.recv(timeout=2) == "still here"


def test_publisher_kill9_then_restart(channel: str, spawn: Spawn) -> None:
    pub = spawn(CONTROLLED_PUBLISHER, channel, '{"num_slots": 8}', stdin=True)
    pub.wait_for("READY")
    new_pub = None
    try:
        with Subscriber(channel, timeout_connect=10) as sub:
            pub.tell("send 3")
            pub.wait_for("SENT")
            assert [sub.recv(timeout=5) for _ in range(3)] == [0, 1, 2]
            assert sub.publisher_alive
            old_inode = seg_path(channel).stat().st_ino
            pub.kill()  # SIGKILL
            pub.wait(timeout=10)
            assert poll_until(lambda: not sub.publisher_alive, timeout=5)
            t0 = time.monotonic()
            assert sub.recv(timeout=0.5) is None
            assert time.monotonic() - t0 < 3, "recv must not hang on a dead publisher"
            info = channel_info(channel)
            assert info is not None
            assert (info["publisher_alive"], info["stale"]) == (False, True)
            assert seg_path(channel).name in remove_stale(dry_run=True, pattern=channel)
            assert seg_path(channel).exists()  # dry run removed nothing
            # A new publisher reclaims the name; the subscriber follows it.
            new_pub = Publisher(channel, num_slots=8)
            assert seg_path(channel).stat().st_ino != old_inode
            new_pub.send("again")
            assert sub.recv(timeout=10) == "again"
            stats = sub.stats()
            assert stats["reconnects"] == 1
            assert stats["publisher_alive"] is True
            assert (stats["received"], stats["dropped"]) == (4, 0)
            assert new_pub.stats()["subscribers"] == 1
            new_pub.send("more")
            assert sub.recv(timeout=5) == "more"
    finally:
        if new_pub is not None:
            new_pub.close()
        else:
            force_unlink(channel)


FORKING_PUBLISHER = r"""
import os, sys, time
from shm_comm import Publisher
pub = Publisher(sys.argv[1])
child = os.fork()  # e.g. a multiprocessing worker started with the default "fork" method
if child == 0:
    time.sleep(60)
    os._exit(0)
print("READY", child, flush=True)
time.sleep(60)
"""


FORK_EXITING_PUBLISHER = r"""
import os, sys
from shm_comm import Publisher, Subscriber
pub = Publisher(sys.argv[1])
watcher = Subscriber(sys.argv[1])
print("READY", flush=True)
sys.stdin.readline()
child = os.fork()
if child == 0:
    sys.exit(0)  # a normal exit: atexit handlers and finalizers run in the child
_, status = os.waitpid(child, 0)
print("CHILD_EXITED", status, flush=True)
for line in sys.stdin:
    pub.send(line.strip())
    print("SENT", flush=True)
pub.close()
"""


def test_forked_child_exit_leaves_the_parents_channel_alone(channel: str, spawn: Spawn) -> None:
    pub = spawn(FORK_EXITING_PUBLISHER, channel, stdin=True)
    pub.wait_for("READY")
    with Subscriber(channel, timeout_connect=20) as sub:
        pub.tell("fork")
        assert pub.wait_for("CHILD_EXITED") == "CHILD_EXITED 0"
        assert seg_path(channel).exists()
        assert sub.publisher_alive
        info = channel_info(channel)
        assert info is not None
        assert info["subscribers"] == 2  # the parent's own watcher still has its row
        pub.tell("hello")
        pub.wait_for("SENT")
        assert sub.recv(timeout=5) == "hello"
        pub.close_stdin()
        pub.exit_ok()


def test_publisher_death_is_seen_despite_a_forked_child(channel: str, spawn: Spawn) -> None:
    pub = spawn(FORKING_PUBLISHER, channel)
    child = int(pub.wait_for("READY").split()[1])
    try:
        with Subscriber(channel, timeout_connect=10) as sub:
            assert sub.publisher_alive
            pub.kill()
            pub.wait()
            assert poll_until(lambda: not sub.publisher_alive, timeout=3)
            with Publisher(channel) as again:  # reclaims the stale segment
                again.send("back")
                assert sub.recv(timeout=5) == "back"
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert poll_until(lambda: not backend.pid_alive(child), timeout=10)
        if seg_path(channel).exists():
            force_unlink(channel)


@pytest.mark.parametrize("clean_first", [False, True])
def test_subscriber_waiting_forever_survives_publisher_kill(channel: str, spawn: Spawn,
                                                            clean_first: bool) -> None:
    """A subscriber blocked in recv(timeout=None) in another process gets the new publisher's
    message promptly after the old publisher was killed (and its segment reclaimed by the new
    one, or removed by ``remove_stale`` first)."""
    pub = spawn(CONTROLLED_PUBLISHER, channel, "{}", stdin=True)
    pub.wait_for("READY")
    sub = spawn(
        "import sys\n"
        "from shm_comm import Subscriber\n"
        "with Subscriber(sys.argv[1]) as sub:\n"
        "    print('ATTACHED', flush=True)\n"
        "    print('GOT', sub.recv(), flush=True)\n"
        "    print('GOT', sub.recv(), sub.stats()['reconnects'], flush=True)\n",
        channel)
    sub.wait_for("ATTACHED")
    pub.tell("send 1")
    assert sub.wait_for("GOT") == "GOT 0"
    pub.kill()
    pub.wait(timeout=10)
    try:
        if clean_first:
            assert pub_segment_name(channel) in remove_stale(pattern=channel)
        with Publisher(channel) as again:
            # The subscriber may attach before or after this send: it starts from the oldest.
            again.send("after restart")
            # Well within the sleeper's 10 s safety slice: whoever retired the old segment
            # (the reclaiming publisher, or remove_stale) woke it.
            assert wait.SUBSCRIBER_SLICE >= 10
            assert sub.wait_for("GOT", timeout=5) == "GOT after restart 1"
            sub.exit_ok()
    finally:
        if seg_path(channel).exists():
            force_unlink(channel)


@pytest.mark.parametrize("reap_zombie_first", [False, True])
def test_dead_subscriber_is_forgotten(channel: str, spawn: Spawn,
                                      reap_zombie_first: bool) -> None:
    with Publisher(channel, num_slots=4) as pub:
        sub = spawn(
            "import sys\n"
            "from shm_comm import Subscriber\n"
            "sub = Subscriber(sys.argv[1])\n"
            "print('ATTACHED', flush=True)\n"
            "sys.stdin.readline()\n", channel, stdin=True)
        sub.wait_for("ATTACHED")
        assert pub.stats()["subscribers"] == 1
        for i in range(4):
            pub.send(i, block=True, timeout=5)
        assert pub.send("full", block=True, timeout=0.1) is False
        sub.kill()
        if reap_zombie_first:
            sub.wait(timeout=10)
        # Even as an unreaped zombie, a dead subscriber no longer counts.
        assert poll_until(lambda: pub.stats()["subscribers"] == 0, timeout=10)
        for i in range(20):  # and blocking sends no longer wait for it
            assert pub.send(i, block=True, timeout=5) is True
        sub.wait(timeout=10)


# --------------------------------------------------------------------------- typed arrays

ARRAY_PUBLISHER = r"""
import sys, threading
import numpy as np
from shm_comm import ArrayPublisher
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
with ArrayPublisher(sys.argv[1], dtype=np.float64, shape=(512,), num_slots=4) as pub:
    print("READY", flush=True)
    n = 0
    while not stop.is_set():
        with pub.loan() as out:
            out[:] = n
        n += 1
    print("STOPPED", n, flush=True)
"""


def published(channel: str) -> int:
    info = channel_info(channel)
    assert info is not None
    return int(info["msg_count"])


def test_zero_copy_view_never_changes_while_held(channel: str, spawn: Spawn) -> None:
    pub = spawn(ARRAY_PUBLISHER, channel, stdin=True)
    pub.wait_for("READY")
    with ArraySubscriber(channel, timeout_connect=10) as sub:
        assert (sub.dtype, sub.shape) == (np.dtype(np.float64), (512,))
        last = -1.0
        for _round in range(5):
            view = sub.recv(timeout=10)
            assert view is not None
            assert not view.flags.writeable
            value = float(view[0])
            assert value > last
            last = value
            assert (view == value).all(), "torn array"
            target = published(channel) + 2000  # 500 times around the ring

            def moved_on(view: np.ndarray = view, value: float = value,
                         target: int = target) -> bool:
                assert (view == value).all(), "a held view changed"
                return published(channel) >= target

            # Checked while the publisher laps the ring (as often as the machine allows:
            # on a fast one all 2000 sends may fit in one look) and once it has lapped it.
            assert poll_until(moved_on, timeout=20, interval=0)
            assert (view == value).all(), "a held view changed"
        # Copies: every one internally consistent, in increasing order.
        prev = -1.0
        for _ in range(200):
            arr = sub.recv(timeout=10, copy=True)
            assert arr is not None
            assert arr.flags.writeable
            assert (arr == arr[0]).all(), "torn copy"
            assert arr[0] > prev
            prev = float(arr[0])
        batch = sub.recv_batch(max_n=8, timeout=5)
        assert 1 <= len(batch) <= 8
        assert all((row == row[0]).all() for row in batch)
        assert list(batch[:, 0]) == sorted(set(batch[:, 0]))
    pub.close_stdin()
    assert pub.wait_for("STOPPED")
    pub.exit_ok()


def test_closing_subscriber_with_live_views_does_not_crash(channel: str, spawn: Spawn) -> None:
    pub = spawn(ARRAY_PUBLISHER, channel, stdin=True)
    pub.wait_for("READY")
    sub = ArraySubscriber(channel, timeout_connect=10)
    view = sub.recv(timeout=10)
    copy_ = sub.recv(timeout=10, copy=True)
    assert view is not None
    assert copy_ is not None
    sub.close()
    sub.close()
    assert sub.closed
    # The view stays memory-safe while the publisher keeps writing...
    target = published(channel) + 100
    assert poll_until(lambda: view.sum() is not None and published(channel) >= target,
                      timeout=20, interval=0)
    assert view.shape == (512,)
    # ...and after the publisher has gone and its segment was removed.
    pub.close_stdin()
    pub.wait_for("STOPPED")
    pub.exit_ok()
    assert not seg_path(channel).exists()
    assert np.isfinite(view).all()
    float(view.sum())
    with pytest.raises(ValueError, match="closed"):
        sub.recv(timeout=0)



def test_killed_holder_does_not_leak_buffers(channel: str, spawn: Spawn) -> None:
    with ArrayPublisher(channel, dtype=np.int32, shape=(16,), num_slots=4,
                        max_subscribers=2) as pub:
        holder = spawn(
            "import sys\n"
            "from shm_comm import ArraySubscriber\n"
            "sub = ArraySubscriber(sys.argv[1])\n"
            "print('ATTACHED', flush=True)\n"
            "view = sub.recv(timeout=30)\n"
            "print('HOLDING', int(view[0]), flush=True)\n"
            "sys.stdin.readline()\n", channel, stdin=True)
        holder.wait_for("ATTACHED")
        pub.send(np.full(16, 7, dtype=np.int32))
        assert holder.wait_for("HOLDING") == "HOLDING 7"
        for i in range(50):
            pub.send(np.full(16, i, dtype=np.int32))
        full = pub._layout.num_buffers - pub.num_slots
        assert pub._writer.free_buffers == full - 1  # the held one is kept aside
        holder.kill()
        holder.wait(timeout=10)
        assert poll_until(lambda: pub.stats()["subscribers"] == 0, timeout=10)
        for i in range(10):
            pub.send(np.full(16, i, dtype=np.int32))
        assert pub._writer.free_buffers == full


def test_array_channel_readable_as_bytes_in_another_process(channel: str, spawn: Spawn) -> None:
    with ArrayPublisher(channel, dtype="<i2", max_shape=(3, 4)) as pub:
        sub = spawn(
            "import sys\n"
            "from shm_comm import Subscriber, decode_array\n"
            "with Subscriber(sys.argv[1], serialization='raw') as sub:\n"
            "    print('ATTACHED', flush=True)\n"
            "    arr, header = decode_array(sub.recv_bytes(timeout=30))\n"
            "    print('GOT', arr.dtype.str, arr.shape, arr.ravel().tolist(), flush=True)\n",
            channel)
        sub.wait_for("ATTACHED")
        pub.send(np.arange(6, dtype="<i2").reshape(2, 3))
        assert sub.wait_for("GOT") == "GOT <i2 (2, 3) [0, 1, 2, 3, 4, 5]"
        sub.exit_ok()


def test_stats_from_another_process(channel: str, spawn: Spawn) -> None:
    pub = spawn(CONTROLLED_PUBLISHER, channel, '{"num_slots": 4}', stdin=True)
    pub.wait_for("READY")
    with Subscriber(channel) as sub:
        pub.tell("send 10")
        pub.wait_for("SENT")
        pub.tell("stats")
        stats = json.loads(pub.wait_for("STATS").split(" ", 1)[1])
        assert (stats["msg_count"], stats["drop_count"], stats["subscribers"]) == (10, 6, 1)
        assert stats["pid"] == pub.pid != os.getpid()
        assert [sub.recv(timeout=5) for _ in range(4)] == [6, 7, 8, 9]
        pub.tell("quit")
        pub.wait_for("CLOSED")
        pub.exit_ok()
        assert poll_until(lambda: not sub.publisher_alive, timeout=5)
        assert sub.recv(timeout=0.1) is None
