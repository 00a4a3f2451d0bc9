"""Liveness across pid namespaces and without /proc (docs/design.md, "Containers").

Containers that share /dev/shm but not pids (``docker --ipc=host``, Kubernetes sidecars) see
each other's pids as dead or as somebody else. Here a real private pid namespace
(``unshare -p -f --mount-proc``) holds subscribers, requesters and pullers; the other side
runs outside it and must neither take them for dead while they live nor keep them once they
have died. CI runs as root, which ``unshare`` needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from helpers import ROOT, stop, wait_for_line

from shm_comm import ArrayPublisher, Pusher, Replier, Subscriber
from shm_comm._backend import backend
from shm_comm.utils import poll_until

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0
                       or shutil.which("unshare") is None,
                       reason="needs Linux, root and unshare(1) for pid and mount namespaces"),
    pytest.mark.skipif(not backend.RECORD_LOCKS,
                       reason="liveness by record locks needs OFD locks (Linux >= 3.15)"),
]


def in_namespace(code: str, *args: str, pid_namespace: bool = True,
                 hide_proc: bool = False) -> subprocess.Popen[str]:
    """``python -c code args`` in a private pid namespace with its own /proc, or (with
    ``hide_proc``) in a mount namespace whose /proc is an empty tmpfs."""
    if pid_namespace:
        prefix = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
        command = [*prefix, sys.executable, "-c", code, *args]
    else:
        script = 'mount -t tmpfs none /proc && exec "$0" "$@"' if hide_proc else 'exec "$0" "$@"'
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                   sys.executable, "-c", code, *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))


def tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:  # closing stdin ends each script's loop: it cleans up and exits
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        stop(proc)


VIEW_HOLDER = """
import os, sys
from shm_comm import ArraySubscriber
sub = ArraySubscriber(sys.argv[1], timeout_connect=10)
print("ready", os.getpid(), flush=True)
view = sub.recv(timeout=10)
print("holding", int(view[0]), flush=True)
for command in sys.stdin:
    if command.strip() == "look":
        print("view", int(view[0]), flush=True)
    elif command.strip() == "die":
        os._exit(1)  # no clean-up: its row stays behind, as after a crash
"""


def test_a_zero_copy_view_in_another_pid_namespace_stays_put(
        channel: str, processes: list[subprocess.Popen[str]]) -> None:
    """The issue's reproduction: the publisher's stats() must not reap the namespaced
    subscriber, so the buffer its view pins is never reused; once it really dies, its row is
    reaped."""
    with ArrayPublisher(channel, shape=(4,), dtype=np.uint8, num_slots=4) as pub:
        holder = in_namespace(VIEW_HOLDER, channel)
        processes.append(holder)
        assert wait_for_line(holder, "ready") == "ready 1"  # pid 1: means nothing out here
        pub.send(np.full(4, 7, dtype=np.uint8))
        assert wait_for_line(holder, "holding") == "holding 7"
        assert pub.stats()["subscribers"] == 1  # stats() reaps dead subscribers' rows
        for _ in range(3 * pub.num_slots):
            pub.send(np.full(4, 107, dtype=np.uint8))
        pub.stats()
        tell(holder, "look")
        assert wait_for_line(holder, "view") == "view 7"
        assert pub.stats()["subscribers"] == 1
        tell(holder, "die")
        holder.wait(10)
        assert pub.stats()["subscribers"] == 0  # dead for real: reaped


REQUESTER = """
import os, sys
from shm_comm import Requester
req = Requester(sys.argv[1], timeout_connect=10)
print("ready", flush=True)
for command in sys.stdin:
    if command.strip() == "ask":
        print("reply", req.request("ping", timeout=10), flush=True)
    elif command.strip() == "die-while-writing":
        Requester._write_request = lambda *args: os._exit(3)  # dies between claim and publish
        req.send("lost")
"""


def test_request_reply_across_pid_namespaces(channel: str,
                                             processes: list[subprocess.Popen[str]]) -> None:
    """A live requester in another pid namespace keeps its row and gets its reply; one that
    dies there between claiming a queue slot and publishing it does not wedge the replier."""
    with Replier(channel) as rep:
        live = in_namespace(REQUESTER, channel)
        dying = in_namespace(REQUESTER, channel)
        processes += [live, dying]
        wait_for_line(live, "ready")
        wait_for_line(dying, "ready")
        assert rep.stats()["requesters"] == 2  # stats() reaps dead requesters' rows
        tell(live, "ask")
        assert rep.recv(timeout=10) == "ping"
        assert rep.stats()["requesters"] == 2
        assert rep.send("pong") is True  # not orphaned: the row is still the requester's
        assert wait_for_line(live, "reply") == "reply pong"

        tell(dying, "die-while-writing")
        assert dying.wait(10) == 3
        tell(live, "ask")
        # The dead claim comes first in the queue; the replier frees it and serves the next.
        assert rep.recv(timeout=10) == "ping"
        stats = rep.stats()
        assert (stats["abandoned"], stats["requesters"]) == (1, 1)
        rep.send("pong")
        assert wait_for_line(live, "reply") == "reply pong"


PULLER = """
import sys
from shm_comm import Puller
pull = Puller(sys.argv[1], timeout_connect=10)
print("ready", flush=True)
for command in sys.stdin:
    print("item", pull.recv(timeout=10), flush=True)
"""


def test_pullers_in_another_pid_namespace_are_not_reaped(
        channel: str, processes: list[subprocess.Popen[str]]) -> None:
    with Pusher(channel) as push:
        puller = in_namespace(PULLER, channel)
        processes.append(puller)
        wait_for_line(puller, "ready")
        assert push.stats()["pullers"] == 1
        push.send("job")
        tell(puller, "next")
        assert wait_for_line(puller, "item") == "item job"
        assert push.stats()["pullers"] == 1


PUBLISHER_WITHOUT_PROC = """
import os, sys
from shm_comm import Publisher
assert not os.path.exists("/proc/self"), "/proc is still there"
pub = Publisher(sys.argv[1])
print("ready", flush=True)
for command in sys.stdin:
    print("subscribers", pub.stats()["subscribers"], flush=True)
"""


def test_liveness_needs_no_proc(channel: str, processes: list[subprocess.Popen[str]]) -> None:
    """A publisher that cannot read /proc (hidden, or mounted with hidepid) keeps its live
    subscribers and still reaps dead ones."""
    publisher = in_namespace(PUBLISHER_WITHOUT_PROC, channel, pid_namespace=False,
                             hide_proc=True)
    processes.append(publisher)
    wait_for_line(publisher, "ready")
    sub = Subscriber(channel, timeout_connect=10)
    tell(publisher, "stats")
    assert wait_for_line(publisher, "subscribers") == "subscribers 1"
    leaver = subprocess.run(
        [sys.executable, "-c", "import os, sys\nfrom shm_comm import Subscriber\n"
         "s = Subscriber(sys.argv[1])\nos._exit(0)", channel], timeout=30, cwd=str(ROOT))
    assert leaver.returncode == 0
    assert poll_until(lambda: sub.stats()["publisher_alive"], timeout=5)
    tell(publisher, "stats")
    assert wait_for_line(publisher, "subscribers") == "subscribers 1"  # only we are left
    sub.close()
    tell(publisher, "stats")
    assert wait_for_line(publisher, "subscribers") == "subscribers 0"
    assert publisher.stdin is not None
    publisher.stdin.close()
    assert publisher.wait(10) == 0
