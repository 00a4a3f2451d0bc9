"""Closing a channel end while other threads are inside calls on it (issue 12, part 1).

Whatever a thread is doing on an end (asleep in the kernel, polling, copying) when another
thread closes it, garbage collection frees it or the interpreter exits: no crash, the call
returns within a bounded time with :class:`SHMClosedError`, and at interpreter exit daemon
threads are left alone without a traceback (docs/design.md, "Closing while calls are in
flight"). The peers of each end live in a real separate process.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ROOT, SESSION, spawn_python, stop, wait_for_line

from shm_comm import (
    ArrayPublisher,
    ArraySubscriber,
    Publisher,
    Puller,
    Pusher,
    Replier,
    Requester,
    SHMClosedError,
    Subscriber,
)
from shm_comm._atomic import _use_futex_waitv, has_futex
from shm_comm.utils import poll_until

pytestmark = pytest.mark.skipif(not has_futex, reason="the sleeping calls under test use futexes")

WAKE_BOUND = 2.0  # a woken call returns in microseconds; generous for a loaded CI machine

# The other side of every end under test, in its own process: publishers that send nothing,
# a replier that never answers, a pusher that pushes nothing, and a subscriber that never
# reads (so that a blocking send in the test process stays blocked).
PEERS = """
import sys
import numpy as np
from shm_comm import ArrayPublisher, Publisher, Pusher, Replier, Subscriber
base = sys.argv[1]
ends = [Publisher(base + "p"), ArrayPublisher(base + "a", shape=(4,), dtype=np.float64),
        Replier(base + "r"), Pusher(base + "q")]
stalled = Subscriber(base + "b", timeout_connect=10)  # a publisher in the test process
print("ready", flush=True)
sys.stdin.read()
for end in ends + [stalled]:
    end.close()
"""


class Peers:
    """The other side of every end under test, hosted by a separate process."""

    def __init__(self, base: str, stalled: Publisher) -> None:
        self.base = base
        self.stalled = stalled  # its only subscriber (in the peer process) never reads


@pytest.fixture
def peers(channel: str) -> Iterator[Peers]:
    stalled = Publisher(channel + "b", num_slots=2)
    proc = spawn_python(PEERS, channel, stdin=subprocess.PIPE)
    try:
        wait_for_line(proc, "ready")
        poll_until(lambda: stalled.stats()["subscribers"] == 1, timeout=10)
        yield Peers(channel, stalled)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        stop(proc)
        stalled.close()


def _full_pusher(peers: Peers) -> Pusher:
    pusher = Pusher(peers.base + "f", num_slots=2)
    for i in range(2):
        pusher.send(i)
    return pusher


def _blocking_sends(pub: Publisher) -> object:
    while pub.send("x", block=True, timeout=30):
        pass
    return "timed out"


# (name, make the end, the blocking call, whether the call sleeps pinned in C)
Case = tuple[str, Callable[[Peers], Any], Callable[[Any], object], bool]

CASES: list[Case] = [
    ("Subscriber.recv(None)", lambda p: Subscriber(p.base + "p"), lambda e: e.recv(), True),
    ("Subscriber.recv(30)", lambda p: Subscriber(p.base + "p"), lambda e: e.recv(timeout=30),
     True),
    ("Subscriber.recv_bytes(None)", lambda p: Subscriber(p.base + "p"),
     lambda e: e.recv_bytes(), True),
    ("Subscriber.recv_batch(30)", lambda p: Subscriber(p.base + "p"),
     lambda e: e.recv_batch(timeout=30), True),
    ("Subscriber.recv_bytes_batch(30)", lambda p: Subscriber(p.base + "p"),
     lambda e: e.recv_bytes_batch(timeout=30), True),
    ("Subscriber.recv_latest(30)", lambda p: Subscriber(p.base + "p"),
     lambda e: e.recv_latest(timeout=30), True),
    ("observer recv(30)", lambda p: Subscriber(p.base + "p", observer=True),
     lambda e: e.recv(timeout=30), True),
    ("Subscriber.recv polling", lambda p: Subscriber(p.base + "p", poll_interval=0.001),
     lambda e: e.recv(timeout=30), False),
    ("Subscriber.recv busy-wait", lambda p: Subscriber(p.base + "p", poll_interval=0),
     lambda e: e.recv(timeout=30), False),
    ("ArraySubscriber.recv view", lambda p: ArraySubscriber(p.base + "a"),
     lambda e: e.recv(timeout=30), True),
    ("ArraySubscriber.recv copy", lambda p: ArraySubscriber(p.base + "a"),
     lambda e: e.recv(timeout=30, copy=True), True),
    ("ArraySubscriber.recv_batch", lambda p: ArraySubscriber(p.base + "a"),
     lambda e: e.recv_batch(timeout=30), True),
    ("ArraySubscriber.recv_latest", lambda p: ArraySubscriber(p.base + "a"),
     lambda e: e.recv_latest(timeout=30), True),
    ("Requester.recv", lambda p: Requester(p.base + "r"),
     lambda e: (e.send("ping"), e.recv(timeout=30)), True),
    ("Requester.request", lambda p: Requester(p.base + "r"),
     lambda e: e.request("ping", timeout=30), True),
    ("Puller.recv", lambda p: Puller(p.base + "q"), lambda e: e.recv(timeout=30), True),
    ("Replier.recv", lambda p: Replier(p.base + "s"), lambda e: e.recv(timeout=30), True),
    ("Pusher.send(block=True)", _full_pusher, lambda e: e.send(3, timeout=30), True),
    ("Pusher.join", _full_pusher, lambda e: e.join(timeout=30), True),
    ("Publisher.send(block=True)", lambda p: p.stalled, _blocking_sends, False),
]


# Calls that sleep on a word they must not change (queue words, an observer's read-only
# doorbell) are woken through futex_waitv; without it (old kernels), by their sleep slices.
WITHOUT_WAITV = [c for c in CASES if c[0] in (
    "observer recv(30)", "Requester.recv", "Puller.recv", "Replier.recv", "Pusher.join")]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_close_from_another_thread_wakes_the_call(peers: Peers, case: Case) -> None:
    _close_while_inside(peers, case)


@pytest.mark.parametrize("case", WITHOUT_WAITV, ids=[c[0] for c in WITHOUT_WAITV])
def test_close_wakes_the_call_without_futex_waitv(peers: Peers, case: Case) -> None:
    was = _use_futex_waitv(False)
    try:
        _close_while_inside(peers, case)
    finally:
        _use_futex_waitv(was)


def _close_while_inside(peers: Peers, case: Case) -> None:
    name, make, call, pinned = case
    end = make(peers)
    outcome: list[object] = []
    entered = threading.Event()

    def run() -> None:
        entered.set()
        try:
            outcome.append(call(end))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    entered.wait(10)
    if pinned:  # the case that crashed: asleep in the kernel on the mapping
        poll_until(lambda: end._segment.atom.in_flight or not thread.is_alive(), timeout=10)
        assert thread.is_alive(), f"{name} returned without waiting: {outcome}"
    closed_at = time.monotonic()
    end.close()
    thread.join(WAKE_BOUND + 10)
    woke_after = time.monotonic() - closed_at
    assert not thread.is_alive(), f"{name} still running after close()"
    assert [type(o) for o in outcome] == [SHMClosedError], (name, outcome)
    assert woke_after < WAKE_BOUND, f"{name} took {woke_after:.3f} s to notice the close"
    # The last call out released the mapping; every later call is refused the same way.
    atom = end._segment.atom
    assert atom.closed
    assert atom.in_flight == 0
    assert atom.size == 0
    with pytest.raises(SHMClosedError, match="closed"):
        call(end)
    end.close()  # idempotent


def test_close_wakes_every_thread_asleep_on_one_end(peers: Peers) -> None:
    """Misuse (one end shared by threads), but still no crash: all wake, all raise."""
    sub = Subscriber(peers.base + "p")
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(sub.recv(timeout=30))
        except SHMClosedError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    poll_until(lambda: sub._segment.atom.in_flight == 4, timeout=10)
    sub.close()
    for t in threads:
        t.join(WAKE_BOUND + 10)
    assert len(outcomes) == 4
    assert all(isinstance(o, SHMClosedError) for o in outcomes)
    assert sub._segment.atom.in_flight == 0


def test_a_signal_handler_that_closes_the_end_inside_the_call(peers: Peers) -> None:
    """Python code that runs inside the C call (a signal handler) closes the end: the call
    leaves without touching the mapping again, and raises."""
    sub = Subscriber(peers.base + "p")
    previous = signal.signal(signal.SIGALRM, lambda *_: sub.close())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        started = time.monotonic()
        with pytest.raises(SHMClosedError):
            sub.recv_bytes()  # asleep in the kernel when the alarm interrupts it
        assert time.monotonic() - started < WAKE_BOUND + 0.2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert sub.closed
    assert sub._segment.atom.in_flight == 0


def test_garbage_collection_while_another_thread_is_in_recv(channel: str) -> None:
    """Dropping every other reference while a thread receives frees nothing under it; the
    end is freed (its row too) when that thread lets go."""
    pub = Publisher(channel)
    sub = Subscriber(channel)
    got: list[object] = []

    def run(sub: Subscriber) -> None:
        got.append(sub.recv(timeout=30))

    thread = threading.Thread(target=run, args=(sub,))
    thread.start()
    segment = sub._segment
    poll_until(lambda: segment.atom.in_flight == 1, timeout=10)
    del sub
    gc.collect()
    assert not segment.closed  # the receiving thread still holds it
    assert pub.stats()["subscribers"] == 1
    pub.send("wake up")
    thread.join(10)
    assert got == ["wake up"]
    gc.collect()
    assert segment.closed  # freed (row released) once the thread let go
    assert pub.stats()["subscribers"] == 0
    pub.close()


def test_close_while_another_thread_fills_a_loan_or_reads_a_view(channel: str) -> None:
    """Arrays into shared memory (a loan being filled, a received view) keep the mapping
    alive: writing or reading them after another thread closed the end is memory-safe, and
    the loan's publish says the end is closed."""
    pub = ArrayPublisher(channel, shape=(1024,), dtype=np.float64)
    sub = ArraySubscriber(channel)
    pub.send(np.full(1024, 7.0))
    view = sub.recv(timeout=10)
    assert view is not None
    inside, closed = threading.Event(), threading.Event()
    outcome: list[object] = []

    def fill() -> None:
        try:
            with pub.loan() as out:
                inside.set()
                closed.wait(10)
                out[:] = 1.0  # the buffer is still mapped
            outcome.append("published")
        except SHMClosedError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=fill)
    thread.start()
    inside.wait(10)
    pub.close()
    sub.close()
    closed.set()
    thread.join(10)
    assert [type(o) for o in outcome] == [SHMClosedError]
    assert float(view.sum()) == 7.0 * 1024  # still readable after both ends closed


# ---- interpreter exit with daemon threads inside calls ---------------------------------------

EXIT_SCRIPT = """
import sys, threading
import numpy as np
from shm_comm import (ArrayPublisher, ArraySubscriber, Publisher, Puller, Pusher, Replier,
                      Requester, Subscriber)
base = sys.argv[1]
pub = Publisher(base + "p")
apub = ArrayPublisher(base + "a", shape=(3,), dtype=np.float32)
rep = Replier(base + "r")
push = Pusher(base + "q")
ends = [Subscriber(base + "p"), Subscriber(base + "p"), Subscriber(base + "p", observer=True),
        ArraySubscriber(base + "a"), Requester(base + "r"), Puller(base + "q")]
sub, sub2, obs, asub, req, pull = ends
loops = [
    lambda: sub.recv(timeout=1),  # the loop of issue 12
    lambda: sub2.recv_bytes(),
    lambda: obs.recv(timeout=1),
    lambda: asub.recv(timeout=1),
    lambda: rep.recv(timeout=1),
    lambda: req.request("ping", timeout=1),
    lambda: pull.recv(timeout=1),
    lambda: pub.send(1),
]
started = threading.Barrier(len(loops) + 1)

def forever(step):
    started.wait()
    while True:
        step()

for step in loops:
    threading.Thread(target=forever, args=(step,), daemon=True).start()
started.wait()
pub.send(0)
apub.send(np.zeros(3, np.float32))
push.send(0)
print("exiting", flush=True)
"""


def _exit_runs(base: str, runs: int) -> list[tuple[int, str, str, list[str]]]:
    results = []
    for i in range(runs):
        name = f"{base}{i}"
        proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, name], capture_output=True,
                              text=True, timeout=60, cwd=str(ROOT))
        left = [p.name for p in Path("/dev/shm").iterdir() if name in p.name]
        for leftover in left:  # ours (the name is unique): do not poison later runs
            (Path("/dev/shm") / leftover).unlink(missing_ok=True)
        results.append((proc.returncode, proc.stdout, proc.stderr, left))
    return results


def test_exit_with_daemon_threads_inside_calls(channel: str) -> None:
    """Issue 12's script, 20 times: daemon threads inside every kind of call at exit.
    Exit status 0, no segment left, nothing on stderr (no crash, no traceback)."""
    for rc, out, err, left in _exit_runs(channel, 20):
        assert rc == 0, f"exit status {rc}: {err[-2000:]}"
        assert out == "exiting\n"
        assert err == ""
        assert left == []


@pytest.mark.slow
def test_exit_with_daemon_threads_inside_calls_many_times(channel: str) -> None:
    results = _exit_runs(channel, 300)
    assert [r for r in results if r[0] != 0 or r[2] or r[3]] == []


def test_exit_script_of_the_issue_with_the_publisher_elsewhere(channel: str) -> None:
    """The usual deployment: the publisher is another process that keeps running."""
    proc = spawn_python("import sys\nfrom shm_comm import Publisher\n"
                        "pub = Publisher(sys.argv[1])\nprint('ready', flush=True)\n"
                        "sys.stdin.read()\npub.close()\n", channel, stdin=subprocess.PIPE)
    try:
        wait_for_line(proc, "ready")
        script = ("import sys, threading\nfrom shm_comm import Subscriber\n"
                  "sub = Subscriber(sys.argv[1])\n"
                  "t = threading.Thread(target=lambda: [sub.recv(timeout=1) for _ in iter(int, 1)],"
                  " daemon=True)\nt.start()\n"
                  "from shm_comm.utils import poll_until\n"
                  "poll_until(lambda: sub._segment.atom.in_flight, timeout=10)\n")
        for _ in range(5):
            done = subprocess.run([sys.executable, "-c", script, channel], capture_output=True,
                                  text=True, timeout=60, cwd=str(ROOT))
            assert (done.returncode, done.stderr) == (0, "")
        # Every one of them left: its row is free again.
        pub_stats = subprocess.run(
            [sys.executable, "-c", "import sys\nfrom shm_comm import channel_info\n"
             "print(channel_info(sys.argv[1])['subscribers'])", channel],
            capture_output=True, text=True, timeout=60, cwd=str(ROOT))
        assert pub_stats.stdout.strip() == "0", pub_stats.stderr
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        stop(proc)
    assert not any(channel in p for p in os.listdir("/dev/shm"))
    assert SESSION in channel
